"""The embedded stack: real services up, idempotent `up`, clean `down`, readable status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catools.localstack import LocalStack

from catools.procs import http_json, port_open, process_alive

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, str(REPO / "scripts" / "localstack")]


def _cli(*args, env=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, env=env, check=False)


def test_session_stack_serves_mtls_jetstream_and_pki(stack, bao_client):
    servers = stack["clusters"][0]["servers"]
    assert len(servers) == 3
    for server in servers:
        status, varz = http_json(f"{server['monitor_url']}/varz")
        assert status == 200
        assert varz["tls_required"] and varz["tls_verify"], "client port must require mTLS"
        assert varz["cluster"]["tls_required"] and varz["cluster"]["tls_verify"], "route port must require mTLS"
        assert varz["system_account"] == "SYS"
        status, jsz = http_json(f"{server['monitor_url']}/jsz")
        assert status == 200 and jsz["meta_cluster"]["cluster_size"] == 3
        assert Path(server["ca_file"]).read_text() == Path(stack["pki"]["bundle_file"]).read_text()
    issuers = bao_client.list(f"{stack['pki']['int_mount']}/issuers")["data"]["key_info"]
    names = {v["issuer_name"] for v in issuers.values()}
    assert f"epoch-{stack['pki']['bootstrap_epoch']}" in names
    key = bao_client.read(f"{stack['pki']['transit_mount']}/keys/{stack['pki']['transit_key']}")["data"]
    assert key["type"] == "ed25519"
    for secret in ("token_file",):
        assert os.stat(stack["openbao"][secret]).st_mode & 0o077 == 0
    for secret in ("app_password_file", "sys_password_file", "client_key_file"):
        assert os.stat(stack["nats_auth"][secret]).st_mode & 0o077 == 0


def test_up_twice_is_a_noop_and_down_stops_everything(tmp_path):
    state = tmp_path / "state"
    inventory = tmp_path / "inventory"
    env = dict(os.environ, CA_ROTATION_STACK_DIR=str(state))
    first = _cli("--inventory", str(inventory), "up", "--json", env=env)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["changed"] is True
    second = _cli("--inventory", str(inventory), "up", env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    again = json.loads(Path(state, "stack.json").read_text())
    pids = [again["openbao"]["pid"]] + [s["pid"] for s in again["clusters"][0]["servers"]]
    assert pids == [info["openbao"]["pid"]] + [s["pid"] for s in info["clusters"][0]["servers"]]

    generated = (inventory / "group_vars" / "all" / "localstack.yml").read_text()
    token = Path(info["openbao"]["token_file"]).read_text().strip()
    assert token not in generated
    for name in ("nats-app-password", "nats-sys-password"):
        assert Path(state, "secrets", name).read_text() not in generated

    status = _cli("status", "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    exports = _cli("env", env=env)
    assert "BAO_ADDR" in exports.stdout and token not in exports.stdout

    ports = [info["openbao"]["port"]] + [s[p] for s in info["clusters"][0]["servers"] for p in ("client_port", "cluster_port", "monitor_port")]
    down = _cli("--inventory", str(inventory), "down", env=env)
    assert down.returncode == 0, down.stderr
    markers = [(info["openbao"]["pid"], info["openbao"]["marker"])] + [(s["pid"], s["config_file"]) for s in info["clusters"][0]["servers"]]
    assert not any(process_alive(pid, marker) for pid, marker in markers)
    assert not any(port_open(port) for port in ports)
    assert not state.exists()
    assert not (inventory / "group_vars" / "all" / "localstack.yml").exists()
    assert "not running" in _cli("status", env=env).stdout


def test_up_restarts_a_stopped_server_and_keeps_the_rest(tmp_path):
    stack = LocalStack(tmp_path / "s")
    try:
        info = stack.up()
        victim = info["clusters"][0]["servers"][1]
        bao_pid = info["openbao"]["pid"]
        from catools.procs import stop_process
        stop_process(victim["pid"], victim["config_file"])
        assert stack.status()["running"] is False
        again = LocalStack(tmp_path / "s").up()
        assert again["changed"] is True
        assert again["openbao"]["pid"] == bao_pid
        assert LocalStack(tmp_path / "s").status()["running"] is True
    finally:
        LocalStack(tmp_path / "s").down()


def test_bad_schedule_is_refused_with_the_option_named(tmp_path):
    result = _cli("--state-dir", str(tmp_path / "x"), "up", "--epoch-duration", "6h", "--lead-time", "7h")
    assert result.returncode == 2
    assert "lead_time" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args", [["status"], ["env"]])
def test_commands_on_a_stack_that_is_not_running(tmp_path, args):
    result = _cli("--state-dir", str(tmp_path / "none"), *args)
    if args == ["status"]:
        assert result.returncode == 0 and "not running" in result.stdout
    else:
        assert result.returncode == 1 and "not running" in result.stderr


def test_a_server_just_spawned_counts_as_running(tmp_path):
    """Right after fork the kernel shows an empty command line until the exec completes: a check at that moment must
    not call a healthy, starting server dead (the stack then stopped it: 'nats-server nats-0 exited')."""
    import signal

    from catools.procs import find_binary, spawn

    config = tmp_path / "n.conf"
    config.write_text("listen: 127.0.0.1:-1\n")
    dead = 0
    for _attempt in range(300):
        proc = spawn([find_binary("nats-server"), "-c", str(config)], tmp_path / "n.log")
        try:
            dead += not process_alive(proc.pid, str(config))
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    assert dead == 0


def test_cmdline_read_during_exec_is_retried(monkeypatch, tmp_path):
    from catools import procs

    reads = iter([b"", b"", b"nats-server\0-c\0/x.conf\0"])
    real_open = open

    class Fake:
        def __init__(self, data):
            self.data = data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.data

    def fake_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("/cmdline"):
            return Fake(next(reads))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert procs.process_alive(os.getpid(), "/x.conf") is True


def test_a_server_that_exits_is_reported_with_its_last_log_lines(tmp_path):
    from catools.procs import StackError, log_tail

    log = tmp_path / "nats.log"
    log.write_text("".join(f"line {n}\n" for n in range(20)) + "[FTL] listen tcp 127.0.0.1:4222: bind: address already in use\n")
    tail = log_tail(log)
    assert "address already in use" in tail and "line 13" in tail and "line 12" not in tail
    assert log_tail(tmp_path / "missing.log") == ""
    assert issubclass(StackError, Exception)


def test_a_stack_whose_openbao_died_is_rebuilt_only_when_asked(tmp_path):
    from catools.procs import stop_process

    state = tmp_path / "state"
    env = dict(os.environ, CA_ROTATION_STACK_DIR=str(state))
    first = _cli("up", "--json", env=env)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    try:
        root = Path(info["pki"]["root_pem_file"]).read_text()
        stop_process(info["openbao"]["pid"], info["openbao"]["marker"])
        refused = _cli("up", env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "--rebuild" in refused.stderr and "in-memory PKI is lost" in refused.stderr
        assert "nats-0" in refused.stderr  # what still runs is named
        # nothing was changed: the servers still run with the same PKI and ports
        servers = info["clusters"][0]["servers"]
        assert all(process_alive(s["pid"], s["config_file"]) for s in servers)
        assert Path(info["pki"]["root_pem_file"]).read_text() == root

        rebuilt = _cli("up", "--rebuild", env=env)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "rebuilt the stack" in rebuilt.stdout and "root CA" in rebuilt.stdout
        again = json.loads(Path(state, "stack.json").read_text())
        assert again["rebuilt"]["stopped"] == [s["name"] for s in servers]
        assert Path(again["pki"]["root_pem_file"]).read_text() != root
        assert not any(process_alive(s["pid"], s["config_file"]) for s in servers)
    finally:
        _cli("down", env=env)


def test_one_server_stack_runs_standalone_jetstream_and_rotates(tmp_path):
    import shutil

    from helpers import ansible_env

    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(REPO / "inventories" / "local" / "hosts.yml", inventory / "hosts.yml")
    shutil.copy(REPO / "inventories" / "local" / "group_vars" / "all" / "main.yml", inventory / "group_vars" / "all" / "main.yml")
    stack = LocalStack(tmp_path / "s", clusters=(("local", 1),), inventory_dir=inventory, epoch_duration="1m")
    try:
        info = stack.up()
        server = info["clusters"][0]["servers"][0]
        assert "cluster {" not in Path(server["config_file"]).read_text()
        status, jsz = http_json(f"{server['monitor_url']}/jsz")
        assert status == 200 and jsz.get("config", {}).get("store_dir")
        assert stack.inventory_vars()["ca_rotation_authority_stream"]["replicas"] == 1
        run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                              str(REPO / "playbooks" / "rotate.yml")], capture_output=True, text=True, timeout=300,
                             env=ansible_env(), check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        assert "local=ok" in run.stdout
    finally:
        stack.down()


@pytest.mark.parametrize("servers", ["0", "8"])
def test_server_count_out_of_range_is_refused(tmp_path, servers):
    result = _cli("--state-dir", str(tmp_path / "x"), "up", "--servers", servers)
    assert result.returncode == 2 and "--servers" in result.stderr, result.stderr
    assert not (tmp_path / "x").exists()

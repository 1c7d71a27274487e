"""Fault injection against rotate.yml on a private 3-node stack (20 s epochs): every case ends with the next
run converging (every server holds the run's bundle, the default issuer is trusted by every server)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import converged, default_issuer_trusted, read_state, until_new_epoch_due
from helpers import REPO, ansible_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _shas(rs):
    return {s["name"]: hashlib.sha256(Path(s["ca_file"]).read_bytes()).hexdigest() for s in rs.servers}


def _poll(cond, timeout=60, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return False


def test_two_concurrent_runs_never_both_rotate(frs):
    runs = [None, None]

    def go(i):
        runs[i] = frs.playbook("rotate.yml")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(r["rc"] == 0 for r in runs), [r["stdout"][-2000:] for r in runs]
    # a run takes about 2 s: they may or may not overlap; when they do, the loser changed nothing
    for run in runs:
        if run["report"]["locked_out"]:
            assert run["report"]["changed"] is False and "locked" in run["stdout"]
    converged(frs, frs.playbook("rotate.yml"))


def test_run_while_another_holds_the_lock_changes_nothing(frs):
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import utcnow
    holder = "other-controller-run"
    assert _state.acquire_lock(frs.bao(), holder, 600, utcnow())["acquired"]
    try:
        before_state, before_version = read_state(frs)
        before_files = _shas(frs)
        run = frs.playbook("rotate.yml")
        assert run["rc"] == 0, run["stdout"][-3000:]
        assert run["report"]["locked_out"] and run["report"]["changed"] is False and "locked by other-controller-run" in run["stdout"]
        assert read_state(frs) == (before_state, before_version) and _shas(frs) == before_files
    finally:
        _state.release_lock(frs.bao(), holder)
    converged(frs, frs.playbook("rotate.yml"))


def test_controller_behind_refuses_to_go_back_in_time(frs):
    before_state, before_version = read_state(frs)
    before_files = _shas(frs)
    default = frs.default_issuer_epoch()
    run = frs.playbook("rotate.yml", extra_vars={"ca_rotation_now": int(time.time()) - 600})
    assert run["rc"] != 0
    assert "clock is behind" in run["stdout"] and "Nothing was changed" in run["stdout"]
    state, version = read_state(frs)
    assert state["generation"] == before_state["generation"] and state["last_epoch"] == before_state["last_epoch"]
    assert state.get("lock") is None or state["lock"].get("holder") is None, state["lock"]  # released by the rescue
    assert _shas(frs) == before_files and frs.default_issuer_epoch() == default
    assert version >= before_version
    converged(frs, frs.playbook("rotate.yml"))


def test_bad_schedule_is_refused_before_the_lock_and_reported(frs):
    before_state, before_version = read_state(frs)
    before_files = _shas(frs)
    run = frs.playbook("rotate.yml", extra_vars={"ca_rotation_schedule": {"epoch_duration": "20s", "validity": "10s"}})
    assert run["rc"] != 0
    assert "ca_rotation_schedule.validity" in run["stdout"] and "Nothing was changed" in run["stdout"], run["stdout"][-3000:]
    assert run["report"] and run["report"]["ok"] is False and "validity" in run["report"]["error"], run["report"]
    state, version = read_state(frs)
    assert version == before_version and state == before_state, "not even the lock was taken"
    assert _shas(frs) == before_files


def test_controller_ahead_is_refused_and_changes_nothing(fresh_rs, tmp_path):
    # emulated with a pinned ca_rotation_now: openbao_intermediate compares with the real clock and refuses epochs
    # more than one epoch ahead, so nothing is issued, announced or activated (a controller whose *system* clock is
    # ahead is not caught by that guard; see the report)
    first = fresh_rs.playbook("rotate.yml")
    assert first["rc"] == 0, first["stdout"][-3000:]
    before_state, _unused = read_state(fresh_rs)
    default = fresh_rs.default_issuer_epoch()
    ahead = fresh_rs.playbook("rotate.yml", extra_vars={"ca_rotation_now": int(time.time()) + 600})
    assert ahead["rc"] != 0 and "more than one epoch ahead" in ahead["stdout"], ahead["stdout"][-3000:]
    state, _unused = read_state(fresh_rs)
    assert state["last_epoch"] == before_state["last_epoch"] and state["generation"] == before_state["generation"]
    assert fresh_rs.default_issuer_epoch() == default
    results = default_issuer_trusted(fresh_rs, tmp_path)
    assert all(ok for ok, _detail in results.values()), results
    converged(fresh_rs, fresh_rs.playbook("rotate.yml"))


def test_controller_killed_mid_run_next_run_converges(frs):
    # the run is made to wait inside the cluster step while it holds the lock (one server's CA file must be repaired
    # and that server is stopped, so its reload cannot be proven), and is killed -9 there
    env = ansible_env()
    report = frs.base / "killed-report.json"
    victim = frs.servers[0]
    root = Path(frs.info["pki"]["root_pem_file"]).read_text()
    Path(victim["ca_file"]).write_text(root)
    extra = {"ca_rotation_report_file": str(report), "ca_rotation_authority_lock_ttl": "5s",
             "ca_rotation_nats_reload_reload_timeout": 120, "ca_rotation_nats_reload_propagation_timeout": 120}
    argv = [str(Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "ansible-playbook"), str(REPO / "playbooks" / "rotate.yml"),
            "-i", str(frs.inventory), "-e", json.dumps(extra)]
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert _poll(lambda: (read_state(frs)[0].get("lock") or {}).get("holder") is not None, timeout=120), "the run never took the lock"
            assert _poll(lambda: Path(victim["ca_file"]).read_text() != root, timeout=120), "the run never reached the cluster step"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    finally:
        os.kill(victim["pid"], signal.SIGCONT)
    assert not report.exists()
    assert (read_state(frs)[0].get("lock") or {}).get("holder") is not None, "killed while holding the lock"
    assert _poll(lambda: False, timeout=6) is False  # let the 5 s lock go stale (the lock's own TTL, no poll possible)
    run = frs.playbook("rotate.yml", extra_vars={"ca_rotation_authority_lock_ttl": "5s"})
    converged(frs, run)


def test_tampered_live_ca_file_is_repaired(frs):
    victim = frs.servers[2]
    Path(victim["ca_file"]).write_text(Path(frs.info["pki"]["root_pem_file"]).read_text())
    run = frs.playbook("rotate.yml")
    report = converged(frs, run)
    assert report["clusters"]["local"]["reloaded"] is True


def test_nats_unavailable_during_announcement(frs):
    before_state, _unused = read_state(frs)
    # the announcing client is pointed at a closed port: the announcement cannot be made
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    main = (frs.inventory / "group_vars" / "all" / "main.yml").read_text()
    assert "ca_rotation_nats_clusters.local.servers" in main
    bad = {"ca_rotation_authority_nats": {"servers": [f"tls://127.0.0.1:{dead}"], "connect_timeout": 2,
                                          "ca_file": frs.info["nats_auth"]["ca_file"], "cert_file": frs.info["nats_auth"]["client_cert_file"],
                                          "key_file": frs.info["nats_auth"]["client_key_file"], "user": "app",
                                          "password_file": frs.info["nats_auth"]["app_password_file"]}}
    # run when the bundle has something new to announce: the preparation of an epoch newer than the last one
    # announced (derived from the schedule, 20 s epochs with a 5 s lead, and from the recorded state: an
    # earlier case of this module may already have prepared the next epoch)
    gen = before_state["generation"]
    time.sleep(until_new_epoch_due(int(before_state["last_epoch"])))
    run = frs.playbook("rotate.yml", extra_vars=bad)
    assert run["rc"] != 0 and "The announcement failed" in run["stdout"], run["stdout"][-2000:]
    state, _unused = read_state(frs)
    assert state["generation"] == gen and (state.get("lock") or {}).get("holder") is None
    report = converged(frs, frs.playbook("rotate.yml"))
    assert report["generation"] == gen + 1


def test_automatic_rollback_reports_what_each_server_loaded(frs):
    """A stopped server fails the proof of a new bundle: the previous one goes back, and the report says exactly which
    servers reloaded it and which did not (not 'No rollback was done' while every CA file was put back)."""
    before_state, _unused = read_state(frs)
    time.sleep(until_new_epoch_due(int(before_state["last_epoch"])))
    before = _shas(frs)
    assert len(set(before.values())) == 1
    previous = next(iter(before.values()))
    victim = frs.servers[1]
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        run = frs.playbook("rotate.yml", extra_vars={"ca_rotation_nats_reload_reload_timeout": 3,
                                                     "ca_rotation_nats_reload_propagation_timeout": 3})
        after = _shas(frs)
    finally:
        os.kill(victim["pid"], signal.SIGCONT)
    assert run["rc"] != 0, run["stdout"][-3000:]
    cluster = run["report"]["clusters"]["local"]
    assert cluster["ok"] is False and cluster["rolled_back"] is False, cluster
    rollback = cluster["rollback"]
    assert rollback["sha256"] == previous and rollback["restored"] is True and rollback["complete"] is False, rollback
    others = sorted(s["name"] for s in frs.servers if s is not victim)
    assert sorted(rollback["reloaded"]) == others, rollback
    assert [n["name"] for n in rollback["not_reloaded"]] == [victim["name"]], rollback
    assert set(after.values()) == {previous}, "every CA file is back on the previous bundle"
    loaded = {s["target"]: s["loaded"] for s in cluster["servers"]}
    assert all(loaded[name].startswith("previous bundle") for name in others), loaded
    assert not loaded[victim["name"]].startswith("previous bundle"), loaded
    assert "No rollback was done" not in run["stdout"]
    assert f"NOT reloaded: {victim['name']}" in run["stdout"] and "was put back" in run["stdout"]
    for _attempt in range(3):  # the resumed server catches up; converge within a few runs
        run = frs.playbook("rotate.yml")
        if run["rc"] == 0:
            break
    converged(frs, run)


def test_one_nats_server_stopped_during_reload(frs):
    victim = frs.servers[1]
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        run = frs.playbook("rotate.yml", extra_vars={"ca_rotation_nats_reload_reload_timeout": 5,
                                                     "ca_rotation_nats_reload_propagation_timeout": 5})
        # a failed cluster fails the run loudly (the failure may also come from leaf renewal after activation)
        if not run["report"]["ok"]:
            assert run["rc"] != 0
    finally:
        os.kill(victim["pid"], signal.SIGCONT)
    # whatever was activated is trusted by every server, the stopped one included
    results = default_issuer_trusted(frs, frs.base / "after-stop")
    assert all(ok for ok, _detail in results.values()), results
    for _attempt in range(3):  # a stopped server can leave the next phase boundary in between; converge within a few runs
        run = frs.playbook("rotate.yml")
        if run["rc"] == 0:
            break
    converged(frs, run)


def test_openbao_stopped_during_run(frs):
    bao_pid = frs.info["openbao"]["pid"]
    short = {"ca_rotation_openbao": {"url": frs.info["openbao"]["addr"], "token_file": frs.info["openbao"]["token_file"],
                                     "timeout": 3, "retries": 0},
             "ca_rotation_authority_lock_ttl": "5s"}
    result = {}

    def go():
        result["run"] = frs.playbook("rotate.yml", extra_vars=short)

    thread = threading.Thread(target=go)
    thread.start()
    try:
        assert _poll(lambda: (read_state(frs)[0].get("lock") or {}).get("holder") is not None, timeout=120)
        os.kill(bao_pid, signal.SIGSTOP)
        thread.join(timeout=20)  # the run hits its 3 s OpenBao timeouts meanwhile
    finally:
        os.kill(bao_pid, signal.SIGCONT)
    thread.join(timeout=300)
    # a lock the failed run could not release lapses by its own expires_at (the 5 s TTL)
    lock = read_state(frs)[0].get("lock") or {}
    if lock.get("expires_at"):
        expires = datetime.datetime.fromisoformat(lock["expires_at"].replace("Z", "+00:00")).timestamp()
        time.sleep(max(0.0, expires - time.time() + 0.05))
    converged(frs, frs.playbook("rotate.yml"))


def test_vvv_output_never_contains_secrets(frs):
    env = ansible_env()
    argv = [str(REPO / ".venv" / "bin" / "ansible-playbook"), str(REPO / "playbooks" / "rotate.yml"), "-i", str(frs.inventory), "-vvv"]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-2000:]
    secrets = {
        "openbao root token": Path(frs.info["openbao"]["token_file"]).read_text().strip(),
        "app password": Path(frs.info["nats_auth"]["app_password_file"]).read_text().strip(),
        "sys password": Path(frs.info["nats_auth"]["sys_password_file"]).read_text().strip(),
    }
    for name, value in secrets.items():
        assert value and value not in text, f"{name} appears in -vvv output"
    assert "PRIVATE KEY" not in text

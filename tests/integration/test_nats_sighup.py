# -*- coding: utf-8 -*-
"""nats_sighup against the session's real 3-node mTLS NATS cluster: every transport reloads every server.

Nothing here changes what the servers trust (the session stack is shared): they are reloaded with the
bundle they already have, which NATS treats as a full reload (``config_load_time`` moves). Each test
checks the servers directly through their monitoring ``/varz``, independently of the module. The
``kubernetes`` transport goes through the emulated Kubernetes API whose pods are these same servers
(no Secret is created, so the emulator never touches the stack's CA files).

Destructive cases (bad bundle, server down, a new CA arriving late) are in test_nats_sighup_faults.py,
on a private stack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.request

import pytest

pytest.importorskip("kubernetes")
pytest.importorskip("nats")

from catools.procs import find_binary  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import (  # noqa: E402  pylint: disable=wrong-import-position
    EmulatedCluster, ExecResult, PodBackend, User,
)
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator._exec import Shell  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.timeout(240)

MODULE = "nats_sighup"
NO_EXEC = User.service_account("ops", "no-exec", deny=["pods/exec"])
NO_LIST = User.service_account("ops", "no-list", allow=["pods/exec"])


# ---- helpers -------------------------------------------------------------------------------------------
def servers_of(stack):
    return stack["clusters"][0]["servers"]


def varz(server):
    with urllib.request.urlopen(server["monitor_url"] + "/varz", timeout=10) as response:
        return json.loads(response.read().decode())


def load_times(stack):
    return {s["name"]: varz(s)["config_load_time"] for s in servers_of(stack)}


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def probe(stack):
    auth = stack["nats_auth"]
    return {"cert_file": auth["client_cert_file"], "key_file": auth["client_key_file"], "ca_file": auth["ca_file"]}


def local_targets(stack, keys=("name", "pid_file", "ca_file", "monitor_url", "log_file", "url")):
    return [{k: s[k] for k in keys} for s in servers_of(stack)]


def nats_sys(stack):
    auth = stack["nats_auth"]
    return {"servers": [s["url"] for s in servers_of(stack)], "ca_file": auth["ca_file"], "cert_file": auth["client_cert_file"],
            "key_file": auth["client_key_file"], "user": auth["sys_user"], "password_file": auth["sys_password_file"]}


def assert_all_reloaded(result, stack, before, transport):
    """The module says so, and each server's own /varz agrees."""
    assert not result.get("failed"), result["msg"]
    assert result["changed"] is True
    assert result["transport"] == transport
    assert result["ok_count"] == result["total"] == result["reloaded"] == 3
    after = load_times(stack)
    by_name = {r["target"]: r for r in result["targets"]}
    assert sorted(by_name) == sorted(before)
    for name, res in by_name.items():
        assert res["ok"] and res["changed"] and res["signalled"] and res["error"] is None
        assert res["load_time_before"] == before[name]
        assert res["load_time_after"] not in (None, before[name])
        assert after[name] != before[name]  # the server itself says it loaded its configuration again
        assert isinstance(res["reload_ms"], int) and res["reload_ms"] >= 0
        assert res["server_name"] == name and res["server_id"]
    return by_name


def assert_nothing_reloaded(stack, before):
    assert load_times(stack) == before


@pytest.fixture
def before(stack):
    return load_times(stack)


@pytest.fixture(scope="module")
def cluster(stack):
    """An emulated cluster whose three pods are the session stack's servers (no Secret: files untouched)."""
    pods = [PodBackend.from_localstack_server(s) for s in servers_of(stack)]
    with EmulatedCluster(name="sighup", pods=pods, namespaces=["nats"], secret_sync_delay=0, users=[NO_EXEC, NO_LIST]) as emulated:
        yield emulated


def k8s(cluster, user=None):
    return {"kubeconfig": cluster.kubeconfig, "context": cluster.context_for(user)}


# ---- every transport reloads all three servers and proves it ----------------------------------------------
def test_signal_reloads_every_server(stack, run_module, before):
    bundle_sha = sha256(servers_of(stack)[0]["ca_file"])
    result = run_module(MODULE, {"transport": "signal", "targets": local_targets(stack), "expect_sha256": bundle_sha,
                                 "probe": probe(stack)})
    by_name = assert_all_reloaded(result, stack, before, "signal")
    for res in by_name.values():
        assert res["sha256_seen"] == bundle_sha and res["sha256_ok"] is True
        assert res["probe_ok"] is True, res["probe_detail"]


def test_signal_with_pid_instead_of_pid_file(stack, run_module, before):
    targets = [{"name": s["name"], "pid": int(open(s["pid_file"], encoding="utf-8").read()), "monitor_url": s["monitor_url"],
                "server_id": varz(s)["server_id"]} for s in servers_of(stack)]
    result = run_module(MODULE, {"transport": "signal", "targets": targets})
    assert_all_reloaded(result, stack, before, "signal")


def test_command_reloads_every_server(stack, run_module, before):
    result = run_module(MODULE, {"transport": "command", "targets": local_targets(stack),
                                 "nats_server_path": find_binary("nats-server"), "probe": probe(stack)})
    by_name = assert_all_reloaded(result, stack, before, "command")
    assert all(r["probe_ok"] for r in by_name.values())


def test_system_reloads_every_server(stack, run_module, before):
    targets = [{"name": s["name"], "ca_file": s["ca_file"]} for s in servers_of(stack)]
    bundle_sha = sha256(servers_of(stack)[0]["ca_file"])
    result = run_module(MODULE, {"transport": "system", "nats": nats_sys(stack), "targets": targets, "expect_sha256": bundle_sha,
                                 "probe": probe(stack)})
    by_name = assert_all_reloaded(result, stack, before, "system")
    ids = {s["name"]: varz(s)["server_id"] for s in servers_of(stack)}
    for name, res in by_name.items():
        assert res["server_id"] == ids[name]
        assert res["sha256_ok"] is True and res["probe_ok"] is True


def test_system_discovers_servers_without_targets(stack, run_module, before):
    result = run_module(MODULE, {"transport": "system", "nats": nats_sys(stack)})
    assert_all_reloaded(result, stack, before, "system")


def test_kubernetes_reloads_every_pod(stack, run_module, cluster, before):
    bundle_sha = sha256(servers_of(stack)[0]["ca_file"])
    start = len(cluster.exec_log)
    result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster), "expect_sha256": bundle_sha,
                                 "probe": probe(stack)})
    by_name = assert_all_reloaded(result, stack, before, "kubernetes")
    for res in by_name.values():
        assert res["sha256_seen"] == bundle_sha and res["ca_file"] == "nats/%s:/etc/nats/ca/ca.crt" % res["target"]
        assert res["probe_ok"] is True
    execs = cluster.exec_log[start:]
    reloads = [e for e in execs if e.command == ["kill", "-HUP", "1"]]
    assert sorted(e.pod for e in reloads) == sorted(by_name) and all(e.exit_code == 0 for e in reloads)
    assert all(e.container == "nats" and e.namespace == "nats" for e in execs)


def test_kubernetes_nats_server_signal_command(stack, run_module, cluster, before):
    start = len(cluster.exec_log)
    result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster),
                                 "reload_command": ["nats-server --signal reload"]})
    assert_all_reloaded(result, stack, before, "kubernetes")
    assert {tuple(e.command) for e in cluster.exec_log[start:]} == {("nats-server", "--signal", "reload")}


def test_kubernetes_execs_all_pods_in_parallel(stack, run_module, before):
    """Each pod's reload waits until all three have started: a one-by-one exec would never get there."""
    arrived = []
    gate = asyncio.Event()

    async def gated_kill(argv, pod):
        arrived.append(pod.name)
        if len(arrived) == 3:
            gate.set()
        await asyncio.wait_for(gate.wait(), 45)
        shell = Shell(pod)
        code = await shell.cmd_kill(argv[1:])
        return ExecResult(code, bytes(shell.out), bytes(shell.err))

    pods = [PodBackend.from_localstack_server(s, commands={"kill": gated_kill}) for s in servers_of(stack)]
    with EmulatedCluster(name="parallel", pods=pods, namespaces=["nats"], secret_sync_delay=0) as emulated:
        result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(emulated)})
    assert sorted(arrived) == ["nats-0", "nats-1", "nats-2"]
    assert_all_reloaded(result, stack, before, "kubernetes")


# ---- check mode ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["signal", "system", "kubernetes"])
def test_check_mode_discovers_and_signals_nothing(stack, run_module, cluster, before, transport):
    params = {"transport": transport, "expect_sha256": "0" * 64}
    if transport == "signal":
        params["targets"] = local_targets(stack)
    elif transport == "system":
        params.update(nats=nats_sys(stack), targets=[{"name": s["name"], "ca_file": s["ca_file"]} for s in servers_of(stack)])
    else:
        params["kubernetes"] = k8s(cluster)
    start = len(cluster.exec_log)
    result = run_module(MODULE, params, check_mode=True)
    assert not result.get("failed"), result["msg"]
    assert result["changed"] is True and result["total"] == 3 and result["reloaded"] == 0
    for res in result["targets"]:
        assert res["load_time_before"] == before[res["target"]]
        assert res["signalled"] is False and res["load_time_after"] is None
        assert res["sha256_ok"] is False  # the (made-up) expected bundle is not there: reported, not waited for
    assert_nothing_reloaded(stack, before)
    assert all(e.command[0] == "sha256sum" for e in cluster.exec_log[start:])


# ---- permissions ---------------------------------------------------------------------------------------------
def test_exec_forbidden_names_the_missing_permission(stack, run_module, cluster, before):
    result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster, NO_EXEC)})
    assert result["failed"] and result["changed"] is False and result["ok_count"] == 0
    for res in result["targets"]:
        assert "forbidden" in res["error"]
        assert "'create' on 'pods/exec'" in res["error"] and "namespace 'nats'" in res["error"]
        assert res["signalled"] is False
    assert "'create' on 'pods/exec'" in result["msg"]
    assert_nothing_reloaded(stack, before)


def test_exec_forbidden_fails_fast_while_waiting_for_the_bundle(stack, run_module, cluster, before):
    result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster, NO_EXEC), "expect_sha256": "1" * 64,
                                 "propagation_timeout": 600})
    assert result["failed"]
    assert all("'create' on 'pods/exec'" in r["error"] for r in result["targets"])
    assert_nothing_reloaded(stack, before)


def test_listing_pods_forbidden_names_the_missing_permission(run_module, cluster):
    result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster, NO_LIST)})
    assert result["failed"] and result["option"] == "label_selector"
    assert "'list' on 'pods'" in result["msg"] and "namespace 'nats'" in result["msg"]


def test_no_pods_match_the_selector(run_module, cluster):
    result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster), "label_selector": "app=nothing"})
    assert result["failed"] and "no NATS server found" in result["msg"]


def test_system_transport_needs_a_system_account_user(stack, run_module, before):
    auth = stack["nats_auth"]
    params = dict(nats_sys(stack), user=auth["app_user"], password_file=auth["app_password_file"])
    result = run_module(MODULE, {"transport": "system", "nats": params})
    assert result["failed"] and "system account" in result["msg"]
    assert_nothing_reloaded(stack, before)


def test_probe_with_an_untrusted_certificate_fails(stack, run_module, tmp_path, before):
    """A certificate from a CA the servers do not trust: reloaded, but not proven to trust it -> failed."""
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel
    import datetime as dt  # pylint: disable=import-outside-toplevel

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    result = run_module(MODULE, {"transport": "signal", "targets": local_targets(stack),
                                 "probe": {"cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")}})
    assert result["failed"] and result["ok_count"] == 0
    for res in result["targets"]:
        assert res["changed"] is True and res["probe_ok"] is False
        assert "rejected the probe certificate" in res["error"] and "UNKNOWN_CA" in res["error"].upper()

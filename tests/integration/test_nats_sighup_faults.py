# -*- coding: utf-8 -*-
"""nats_sighup when things go wrong, on a private 3-node stack (the session stack stays untouched).

- a bad bundle: a CA file readable from here that does not parse as nats-server reads it (a broken certificate,
  PEM blocks glued together) is refused before any reload; where the file is not read from here ($SYS, Kubernetes)
  NATS keeps its old configuration and the module fails with the server's own message (its $SYS reply or its pod
  log); the servers keep serving;
- a server down: reported, and ``min_success`` decides;
- a new CA arriving late (the emulated kubelet's Secret sync delay): waited for by polling, then
  reloaded, and a client certificate of the new CA is accepted only afterwards.

Every test puts the good bundle back and reloads before it ends.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import signal
import threading
import time
import urllib.request

import pytest

pytest.importorskip("kubernetes")
pytest.importorskip("nats")

from cryptography import x509  # noqa: E402  pylint: disable=wrong-import-position
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402  pylint: disable=wrong-import-position
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402  pylint: disable=wrong-import-position
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402  pylint: disable=wrong-import-position

from catools.localstack import LocalStack  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import base as reload_base  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import probe as reload_probe  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import EmulatedCluster, PodBackend  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.timeout(300)

MODULE = "nats_sighup"
GARBAGE = b"-----BEGIN CERTIFICATE-----\nthis is not a certificate\n-----END CERTIFICATE-----\n"
PARSE_ERROR = "failed to parse root ca certificate"
POLL_TIMEOUT = 60.0


# ---- the private stack ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("sighup-faults") / "state", clusters=[("faults", 3)], jetstream=False)
    stack.up()
    yield stack
    stack.down()


@pytest.fixture
def fstack(fault_stack):
    """The private stack's info; afterwards every server runs, has the good bundle and has reloaded it."""
    info = fault_stack.info
    good = open(info["nats_auth"]["ca_file"], "rb").read()
    yield info
    if not all(p["running"] for p in fault_stack.processes()):
        fault_stack.up()  # restarts the NATS servers that were stopped
    for server in servers_of(info):
        if read(server["ca_file"]) != good:
            with open(server["ca_file"], "wb") as handle:
                handle.write(good)
    reload_all(info)


def servers_of(info):
    return info["clusters"][0]["servers"]


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def varz(server):
    with urllib.request.urlopen(server["monitor_url"] + "/varz", timeout=10) as response:
        return json.loads(response.read().decode())


def load_times(info, skip=()):
    return {s["name"]: varz(s)["config_load_time"] for s in servers_of(info) if s["name"] not in skip}


def reload_all(info):
    """SIGHUP every running server and wait until each /varz shows the new load time (test plumbing, not the module)."""
    for server in servers_of(info):
        before = varz(server)["config_load_time"]
        os.kill(int(read(server["pid_file"])), signal.SIGHUP)
        poll(lambda s=server, b=before: varz(s)["config_load_time"] != b, "reload of %s" % server["name"])


def poll(condition, what, timeout=POLL_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.05)


def local_targets(info):
    return [{k: s[k] for k in ("name", "pid_file", "ca_file", "monitor_url", "log_file", "url")} for s in servers_of(info)]


def nats_params(info, system=True, servers=None):
    auth = info["nats_auth"]
    user = auth["sys_user"] if system else auth["app_user"]
    password_file = auth["sys_password_file"] if system else auth["app_password_file"]
    return {"servers": servers or [s["url"] for s in servers_of(info)], "ca_file": auth["ca_file"],
            "cert_file": auth["client_cert_file"], "key_file": auth["client_key_file"], "user": user, "password_file": password_file}


def still_serving(info):
    """Each server accepts a NEW mTLS client connection and round-trips a message (checked with nats-py directly)."""
    async def one(server):
        client = await nats_client.connect(nats_params(info, system=False, servers=[server["url"]]), allow_reconnect=False)
        try:
            sub = await client.subscribe("sighup.check")
            await client.publish("sighup.check", b"ping")
            msg = await sub.next_msg(timeout=10)
            return msg.data == b"ping"
        finally:
            await nats_client.close(client)

    for server in servers_of(info):
        with urllib.request.urlopen(server["monitor_url"] + "/healthz", timeout=10) as response:
            assert response.status == 200
        assert nats_client.run(one(server)), server["name"]


def new_ca(tmp_path, name="Epoch next test CA"):
    """A new CA (standing in for the next epoch) and a client certificate it issued: (ca_pem, cert_file, key_file)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe-client")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "probe.pem", tmp_path / "probe-key.pem"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM), str(cert_file), str(key_file)


def probe_accepted(info, cert_file, key_file):
    """Whether each server accepts the client certificate right now (a direct TLS handshake)."""
    ctx = reload_probe.probe_context({"cert_file": cert_file, "key_file": key_file})
    out = {}
    for server in servers_of(info):
        host, port = reload_base.host_port(server["url"])
        out[server["name"]] = reload_probe.tls_probe(host, port, ctx)[0]
    return out


def emulated(info, delay=0.0, bundle=None):
    pods = [PodBackend.from_localstack_server(s) for s in servers_of(info)]
    secret = {"metadata": {"name": "nats-ca-tls", "namespace": "nats"}, "type": "Opaque",
              "data": {"ca.crt": base64.b64encode(bundle or read(info["nats_auth"]["ca_file"])).decode()}}
    return EmulatedCluster(name="faults", pods=pods, namespaces=["nats"], secrets=[secret], secret_sync_delay=delay)


def k8s(cluster):
    return {"kubeconfig": cluster.kubeconfig, "context": cluster.context}


def by_name(result):
    return {r["target"]: r for r in result["targets"]}


# ---- a bad bundle: the old configuration stays, the module fails with NATS's own words --------------------------
def assert_kept_old_config(result, info, before):
    assert result["failed"] and result["changed"] is False and result["ok_count"] == 0 and result["reloaded"] == 0
    for res in result["targets"]:
        assert res["signalled"] is True and res["changed"] is False and not res["ok"]
        assert "kept" in res["error"] and PARSE_ERROR in res["error"], res["error"]
    assert PARSE_ERROR in result["msg"]
    assert load_times(info) == before  # the servers themselves say nothing was loaded
    still_serving(info)


def assert_not_reloaded(result, info, before, why):
    """The CA file was checked before the reload and refused: no server was signalled, none loaded anything."""
    assert result["failed"] and result["changed"] is False and result["ok_count"] == 0 and result["reloaded"] == 0
    for res in result["targets"]:
        assert res["signalled"] is False and not res["ok"], res
        assert "not reloaded" in res["error"] and why in res["error"] and res["ca_file"] in res["error"], res["error"]
    assert load_times(info) == before
    still_serving(info)


def test_signal_bad_bundle_is_refused_before_the_reload(fstack, run_module):
    # a certificate block that does not parse: refused before any signal (the server would refuse it too, see the
    # system and Kubernetes cases, which do not read the file from here)
    before = load_times(fstack)
    for server in servers_of(fstack):
        with open(server["ca_file"], "wb") as handle:
            handle.write(GARBAGE)
    result = run_module(MODULE, {"transport": "signal", "targets": local_targets(fstack), "expect_sha256": sha256(GARBAGE)})
    assert_not_reloaded(result, fstack, before, "does not parse")


def test_glued_pem_blocks_are_refused_before_the_reload(fstack, run_module):
    """Two certificates glued together (-----END CERTIFICATE----------BEGIN): nats-server would reload "successfully"
    and silently drop the first (DESIGN §10); the module refuses to reload such a file and names the block."""
    good = read(fstack["nats_auth"]["ca_file"])
    blocks = [b.strip() + b"-----END CERTIFICATE-----" for b in good.split(b"-----END CERTIFICATE-----") if b"BEGIN" in b]
    assert len(blocks) >= 2, "the stack's bundle has a root and an intermediate"
    glued = blocks[0] + b"\n".join(blocks[1:]) + b"\n"  # the first END line runs on into the second BEGIN
    before = load_times(fstack)
    for server in servers_of(fstack):
        with open(server["ca_file"], "wb") as handle:
            handle.write(glued)
    result = run_module(MODULE, {"transport": "signal", "targets": local_targets(fstack), "expect_sha256": sha256(glued)})
    assert_not_reloaded(result, fstack, before, "block 1 has text on its END line")


def test_system_bad_bundle_fails_with_the_error_reply(fstack, run_module):
    before = load_times(fstack)
    for server in servers_of(fstack):
        with open(server["ca_file"], "wb") as handle:
            handle.write(GARBAGE)
    result = run_module(MODULE, {"transport": "system", "nats": nats_params(fstack)})
    assert_kept_old_config(result, fstack, before)
    assert all(r["error"].startswith("NATS refused the reload and kept its old configuration") for r in result["targets"])


def test_command_bad_bundle_on_one_server_min_success(fstack, run_module):
    from catools.procs import find_binary  # pylint: disable=import-outside-toplevel

    bad = servers_of(fstack)[1]
    before = load_times(fstack)
    with open(bad["ca_file"], "wb") as handle:
        handle.write(GARBAGE)
    params = {"transport": "command", "targets": local_targets(fstack), "nats_server_path": find_binary("nats-server")}
    result = run_module(MODULE, params)
    assert result["failed"] and result["changed"] is True and result["ok_count"] == 2
    assert "does not parse" in by_name(result)[bad["name"]]["error"] and not by_name(result)[bad["name"]]["signalled"]
    result = run_module(MODULE, dict(params, min_success=2))
    assert not result.get("failed") and result["ok_count"] == 2 and result["failed_count"] == 1
    assert load_times(fstack)[bad["name"]] == before[bad["name"]]
    still_serving(fstack)


def test_kubernetes_bad_bundle_fails_with_the_pod_log(fstack, run_module):
    before = load_times(fstack)
    with emulated(fstack) as cluster:
        cluster.apply_secret("nats", "nats-ca-tls", {"ca.crt": GARBAGE})
        result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster), "expect_sha256": sha256(GARBAGE)})
        assert_kept_old_config(result, fstack, before)
        for res in result["targets"]:
            assert res["sha256_seen"] == sha256(GARBAGE)
        cluster.apply_secret("nats", "nats-ca-tls", {"ca.crt": read(fstack["nats_auth"]["ca_file"])})
        good = sha256(read(fstack["nats_auth"]["ca_file"]))
        result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster), "expect_sha256": good})
        assert not result.get("failed"), result["msg"]
        assert all(r["sha256_seen"] == good for r in result["targets"])


# ---- one server down ---------------------------------------------------------------------------------------------
@pytest.fixture
def one_down(fstack):
    """nats-2 stopped (by its PID); the fstack fixture starts it again afterwards."""
    server = servers_of(fstack)[2]
    pid = int(read(server["pid_file"]))
    os.kill(pid, signal.SIGTERM)
    poll(lambda: not _alive(pid), "nats-2 to exit")
    return server


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_server_down_signal(fstack, one_down, run_module):
    before = load_times(fstack, skip=[one_down["name"]])
    result = run_module(MODULE, {"transport": "signal", "targets": local_targets(fstack)})
    assert result["failed"] and result["changed"] is True and result["ok_count"] == 2
    down = by_name(result)[one_down["name"]]
    assert not down["ok"] and not down["signalled"] and "not reachable" in down["error"]
    assert "nats-2" in result["msg"]
    result = run_module(MODULE, {"transport": "signal", "targets": local_targets(fstack), "min_success": 2})
    assert not result.get("failed") and result["ok_count"] == 2 and result["failed_count"] == 1
    after = load_times(fstack, skip=[one_down["name"]])
    assert all(after[name] != before[name] for name in before)


def test_server_down_system(fstack, one_down, run_module):
    targets = [{"name": s["name"]} for s in servers_of(fstack)]
    result = run_module(MODULE, {"transport": "system", "nats": nats_params(fstack, servers=[s["url"] for s in servers_of(fstack)[:2]]),
                                 "targets": targets})
    assert result["failed"] and result["ok_count"] == 2
    assert "did not answer $SYS.REQ.SERVER.PING" in by_name(result)[one_down["name"]]["error"]
    result = run_module(MODULE, {"transport": "system", "nats": nats_params(fstack, servers=[s["url"] for s in servers_of(fstack)[:2]]),
                                 "targets": targets, "min_success": 2})
    assert not result.get("failed") and result["changed"]


def test_server_down_kubernetes(fstack, one_down, run_module):
    with emulated(fstack) as cluster:
        result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster)})
        assert result["failed"] and result["ok_count"] == 2 and result["total"] == 3
        assert "is not running" in by_name(result)[one_down["name"]]["error"]
        assert not any(e.pod == one_down["name"] and e.command[0] == "kill" for e in cluster.exec_log)
        result = run_module(MODULE, {"transport": "kubernetes", "kubernetes": k8s(cluster), "min_success": 2})
        assert not result.get("failed") and result["reloaded"] == 2


# ---- the new trust, proven ---------------------------------------------------------------------------------------
def test_signal_new_ca_is_trusted_only_after_the_reload(fstack, run_module, tmp_path):
    ca_pem, cert_file, key_file = new_ca(tmp_path)
    assert not any(probe_accepted(fstack, cert_file, key_file).values())
    bundle = read(fstack["nats_auth"]["ca_file"]) + ca_pem
    for server in servers_of(fstack):
        with open(server["ca_file"], "wb") as handle:
            handle.write(bundle)
    assert not any(probe_accepted(fstack, cert_file, key_file).values())  # the file alone changes nothing
    result = run_module(MODULE, {"transport": "signal", "targets": local_targets(fstack), "expect_sha256": sha256(bundle),
                                 "probe": {"cert_file": cert_file, "key_file": key_file, "ca_file": fstack["nats_auth"]["ca_file"]}})
    assert not result.get("failed"), result["msg"]
    assert all(r["probe_ok"] and r["sha256_ok"] for r in result["targets"])
    assert all(probe_accepted(fstack, cert_file, key_file).values())


def test_kubernetes_late_secret_is_waited_for(fstack, run_module, tmp_path):
    """The module starts polling before the Secret even changes; kubelet (emulated, 1-3 s) delivers later."""
    ca_pem, cert_file, key_file = new_ca(tmp_path)
    good = read(fstack["nats_auth"]["ca_file"])
    bundle = good + ca_pem
    with emulated(fstack, delay=(1.0, 3.0)) as cluster:
        out = {}
        params = {"transport": "kubernetes", "kubernetes": k8s(cluster), "expect_sha256": sha256(bundle), "propagation_timeout": 120,
                  "probe": {"cert_file": cert_file, "key_file": key_file}}
        worker = threading.Thread(target=lambda: out.update(result=run_module(MODULE, params)))
        worker.start()
        try:
            # every pod has been looked at (and still holds the old bundle) before the new Secret exists
            poll(lambda: {e.pod for e in cluster.exec_log if e.command[0] == "sha256sum" and e.finished} == {"nats-0", "nats-1", "nats-2"},
                 "the module to read each pod's CA file")
            assert not any(e.command[0] == "kill" for e in cluster.exec_log)
            assert all(sha256(good) in e.stdout.decode() for e in cluster.exec_log if e.command[0] == "sha256sum")
            cluster.apply_secret("nats", "nats-ca-tls", {"ca.crt": bundle})
        finally:
            worker.join(timeout=240)
        result = out["result"]
        assert not result.get("failed"), result["msg"]
        assert all(r["sha256_seen"] == sha256(bundle) and r["probe_ok"] for r in result["targets"])
        synced = {v["pod"]: v["synced_at"] for v in cluster.volume_log if v["changed_at"] is not None}
        for record in cluster.exec_log:
            if record.command[0] == "kill":
                assert record.started >= synced[record.pod], "%s was reloaded before kubelet delivered the bundle" % record.pod
    assert all(probe_accepted(fstack, cert_file, key_file).values())

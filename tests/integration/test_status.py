"""playbooks/status.yml as a user runs it, on a private stack (6h epochs, 3-node mTLS cluster).

Converged -> no mismatch; then tampering is flagged where it happened: a server's CA file replaced by another valid
bundle (and reloaded), a server whose CA file changed without a reload ("not loaded"), a bogus bundle_sha256 in the
rotation state; rotate.yml repairs the files (it redelivers because its delivery sees a different SHA-256) and the
report is clean again. On an emulated Kubernetes API with the same servers as pods, a tampered live Secret is flagged.
Facts are checked independently of the code under test (files, OpenBao and /varz read directly). A few steps run the
module in-process (real main(), real services) instead of the playbook, to keep the file within about 90 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from helpers import run_module
from rotation_harness import RotationStack

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import base as reload_base
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import EmulatedCluster, ExecResult, PodBackend

STATE_PATH = "ca-rotation/state"


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    stack = RotationStack(tmp_path_factory.mktemp("status"), epoch_duration="6h")
    first = stack.playbook("rotate.yml")
    assert first["rc"] == 0, first["stdout"][-3000:]
    yield stack
    stack.down()


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _status(rs: RotationStack, path: Path, **extra) -> tuple[dict, dict]:
    run = rs.playbook("status.yml", extra_vars={"ca_rotation_status_json": str(path), **extra})
    assert path.exists(), run["stdout"][-3000:] + run["stderr"][-2000:]
    return run, json.loads(path.read_text())


def _codes(report: dict, where: str | None = None, severity: str = "mismatch") -> set[str]:
    return {f["code"] for f in report["findings"] if f["severity"] == severity and (where is None or f["where"] == where)}


def _state(rs: RotationStack) -> tuple[dict, int]:
    resp = rs.bao().secrets.kv.v2.read_secret_version(path=STATE_PATH, mount_point="secret", raise_on_deleted_version=True)
    return resp["data"]["data"], resp["data"]["metadata"]["version"]


def _module(rs: RotationStack, scope: str, **params) -> dict:
    """The rotation_status module in-process against the stack (real main(), real services); returns its facts."""
    token = Path(rs.info["openbao"]["token_file"]).read_text().strip()
    params = dict({"announcement": False}, **params)
    result = run_module("rotation_status", dict(params, scope=scope, openbao={"url": rs.info["openbao"]["addr"], "token": token},
                                                **rs.info["epoch"]))
    assert not result.get("failed"), result
    return result["facts"]


def _authority_nats(rs: RotationStack) -> dict:
    auth = rs.info["nats_auth"]
    return {"servers": [s["url"] for s in rs.servers], "ca_file": auth["ca_file"], "cert_file": auth["client_cert_file"],
            "key_file": auth["client_key_file"], "user": auth["app_user"], "password_file": auth["app_password_file"]}


def _report(authority: dict, clusters: list) -> dict:
    return run_module("rotation_status", {"scope": "report", "authority": authority, "clusters_facts": clusters})


def _kv_pem(rs: RotationStack, epoch: int) -> str:
    resp = rs.bao().secrets.kv.v2.read_secret_version(path=f"ca-bundles/epoch-{epoch}", mount_point="secret",
                                                      raise_on_deleted_version=True)
    return resp["data"]["data"]["ca-bundle.pem"]


def _load_time(server: dict) -> int:
    return reload_base.parse_load_time(reload_base.http_varz(server["monitor_url"])["config_load_time"])


def _sighup_and_wait(servers: list[dict]) -> None:
    before = {s["name"]: _load_time(s) for s in servers}
    for server in servers:
        os.kill(int(Path(server["pid_file"]).read_text().strip()), signal.SIGHUP)
    deadline = time.monotonic() + 60
    pending = set(before)
    while pending and time.monotonic() < deadline:
        pending = {s["name"] for s in servers if s["name"] in pending and _load_time(s) <= before[s["name"]]}
        if pending:
            time.sleep(0.05)
    assert not pending, f"servers did not reload: {pending}"


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tamper"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


def test_status_flags_tampering_and_rotate_repairs(rs, tmp_path):
    servers = {s["name"]: s for s in rs.servers}
    state, _version = _state(rs)
    kv_pem = _kv_pem(rs, state["last_epoch"])
    assert _sha(kv_pem) == state["bundle_sha256"]

    # converged: nothing mismatches, strict passes, and the facts are what is really there
    run, report = _status(rs, tmp_path / "clean.json", ca_rotation_status_strict=True)
    assert run["rc"] == 0, run["stdout"][-4000:]
    assert report["ok"] and report["mismatch_count"] == 0, report["findings"]
    assert "CA rotation status at" in run["stdout"] and ": OK" in run["stdout"]
    auth = report["authority"]
    assert auth["state"]["generation"] == state["generation"] and auth["state"]["bundle_sha256"] == state["bundle_sha256"]
    assert auth["kv_bundle"]["sha256"] == _sha(kv_pem)
    assert auth["announcement"]["signature_ok"] is True and auth["announcement"]["generation"] == state["generation"]
    (cluster,) = report["clusters"]
    for server in cluster["servers"]:
        assert server["ca_sha256"] == _sha(Path(servers[server["name"]]["ca_file"]).read_bytes())
        assert server["load_time_ns"] == _load_time(servers[server["name"]])
        assert server["tls"]["issuer_epoch"] == rs.default_issuer_epoch()

    # tamper: nats-1 gets another valid bundle (the root only) and reloads it; nats-2's file changes without a reload
    root_pem = Path(rs.info["pki"]["root_pem_file"]).read_text()
    _write(servers["nats-1"]["ca_file"], root_pem)
    _sighup_and_wait([servers["nats-1"]])
    _write(servers["nats-2"]["ca_file"], root_pem)
    run, report = _status(rs, tmp_path / "tampered.json", ca_rotation_status_strict=True)
    assert run["rc"] != 0 and "mismatch(es)" in run["stdout"], run["stdout"][-3000:]
    assert not report["ok"]
    assert _codes(report, "local/nats-0") == set()
    assert _codes(report, "local/nats-1") == {"ca_file_sha256"}
    assert _codes(report, "local/nats-2") == {"ca_file_sha256", "not_loaded"}
    assert {f["where"] for f in report["findings"] if f["severity"] == "mismatch"} == {"local/nats-1", "local/nats-2"}

    # tamper: a bogus bundle_sha256 in the rotation state (written with check-and-set, like the collection does)
    state, version = _state(rs)
    bogus = dict(state, bundle_sha256="0" * 64)
    rs.bao().secrets.kv.v2.create_or_update_secret(path=STATE_PATH, secret=bogus, cas=version, mount_point="secret")
    # (the module in-process, to keep the file fast - the playbook runs the same three steps - and the cluster read
    # over the system account: $SYS.REQ.SERVER.PING / VARZ instead of /varz)
    members = [{k: s[k] for k in ("name", "url", "ca_file")} for s in rs.servers]
    system = dict(_authority_nats(rs), user=rs.info["nats_auth"]["sys_user"], password_file=rs.info["nats_auth"]["sys_password_file"])
    auth = _module(rs, "authority", clusters=["local"], announcement=True, nats=_authority_nats(rs))
    facts = _module(rs, "cluster", cluster="local", transport="system", targets=members, nats=system)
    assert sorted(s["name"] for s in facts["servers"]) == ["nats-0", "nats-1", "nats-2"]
    assert all(s["load_time_ns"] == _load_time(servers[s["name"]]) for s in facts["servers"])
    report = _report(auth, [facts])
    assert not report["ok"]
    assert {"kv_bundle_sha256", "announcement_sha256"} <= _codes(report)
    assert "cluster_record_sha256" in _codes(report, "cluster local")
    assert "ca_file_sha256" in _codes(report, "local/nats-0")

    # rotate.yml repairs: its delivery sees the different SHA-256 on nats-1 and nats-2, rewrites and reloads
    loads = {name: _load_time(s) for name, s in servers.items()}
    repair = rs.playbook("rotate.yml")
    assert repair["rc"] == 0, repair["stdout"][-3000:]
    assert repair["report"]["clusters"]["local"]["reloaded"] is True
    repaired, _version = _state(rs)
    assert repaired["generation"] == state["generation"] + 1 and repaired["bundle_sha256"] == _sha(kv_pem)
    for name, server in servers.items():
        assert _sha(Path(server["ca_file"]).read_bytes()) == repaired["bundle_sha256"], name
        assert _load_time(server) > loads[name], name

    run, report = _status(rs, tmp_path / "repaired.json", ca_rotation_status_strict=True)
    assert run["rc"] == 0, run["stdout"][-4000:]
    assert report["ok"], report["findings"]
    assert report["authority"]["announcement"]["generation"] == repaired["generation"]


def _stat(argv, pod):
    """`stat -L -c %Y <file>` for the emulated pods (busybox/coreutils both have it; the emulator does not)."""
    host = pod.host_path(argv[-1])
    if argv[1:4] != ["-L", "-c", "%Y"] or host is None or not os.path.exists(host):
        return ExecResult(1, b"", f"stat: can't stat '{argv[-1]}'\n".encode())
    return ExecResult(0, f"{int(os.stat(host).st_mtime)}\n".encode(), b"")


def test_status_kubernetes_flags_tampered_live_secret(rs, tmp_path):
    state, _version = _state(rs)
    epoch = state["history"][0]["epoch"]
    pem = _kv_pem(rs, epoch)
    assert _sha(pem) == state["bundle_sha256"]
    pods = [PodBackend.from_localstack_server(s, commands={"stat": _stat}) for s in rs.servers]
    with EmulatedCluster(name="status", pods=pods, namespaces=["nats", "openbao"], secret_sync_delay=0) as cluster:
        cluster.apply_secret("nats", "nats-ca-tls", {"ca.crt": pem},
                             annotations={"rotation.watcher.io/sha256": _sha(pem), "rotation.watcher.io/epoch": str(epoch)})
        cluster.apply_secret("openbao", f"nats-ca-bundle-epoch-{epoch}", {"ca-bundle.pem": pem}, labels={"epoch": str(epoch)})
        cluster.wait_for_volume_sync()
        _sighup_and_wait(rs.servers)  # the servers load the mounted copy (same bytes, newer file)
        kube = {"kubeconfig": cluster.kubeconfig, "context": cluster.context}

        # consistent (the module in-process, to keep the file fast): nothing mismatches on the Kubernetes path either
        auth = _module(rs, "authority", clusters=["local"], epoch_secret={}, kubernetes=kube)
        facts = _module(rs, "cluster", cluster="local", transport="kubernetes", kubernetes=kube, live_secret={})
        report = _report(auth, [facts])
        assert report["ok"], report["findings"]
        assert facts["live_secret"]["sha256"] == _sha(pem) and auth["epoch_secret"]["sha256"] == _sha(pem)
        assert sorted(s["name"] for s in facts["servers"]) == ["nats-0", "nats-1", "nats-2"]
        assert all(s["ca_sha256"] == _sha(pem) and s["ca_mtime_ns"] and s["load_time_ns"] > s["ca_mtime_ns"] for s in facts["servers"])
        commands = [record.command[0] for record in cluster.exec_log]
        assert commands.count("sha256sum") == 3 and commands.count("stat") == 3 and "kill" not in commands  # read only

        # someone edits the live Secret by hand: another valid bundle (the root only), annotations left as they were.
        # `stat -c %Y` has whole seconds: let the clock pass the second of the last reload first
        last_load = max(s["load_time_ns"] for s in facts["servers"]) // 1_000_000_000
        while int(time.time()) <= last_load:
            time.sleep(0.05)
        root_pem = Path(rs.info["pki"]["root_pem_file"]).read_text()
        cluster.apply_secret("nats", "nats-ca-tls", {"ca.crt": root_pem},
                             annotations={"rotation.watcher.io/sha256": _sha(pem), "rotation.watcher.io/epoch": str(epoch)})
        cluster.wait_for_volume_sync()
        assert cluster.secret_data("nats", "nats-ca-tls")["ca.crt"] == root_pem.encode()
        extra = {"ca_rotation_nats_reload_transport": "kubernetes", "ca_rotation_nats_reload_kubernetes": kube,
                 "ca_rotation_authority_epoch_secret": True, "ca_rotation_authority_kubernetes": kube}
        run, report = _status(rs, tmp_path / "k8s-tampered.json", ca_rotation_status_strict=True, **extra)
        assert run["rc"] != 0, run["stdout"][-3000:]
        (facts,) = report["clusters"]
        assert facts["transport"] == "kubernetes" and facts["live_secret"]["sha256"] == _sha(root_pem)
        assert _codes(report, "cluster local secret nats/nats-ca-tls") == {"live_secret_sha256", "live_secret_annotation"}
        # kubelet put the edited Secret into every pod, which did not reload it; OpenBao, KV and the epoch Secret are fine
        for name in ("nats-0", "nats-1", "nats-2"):
            assert _codes(report, f"local/{name}") == {"ca_file_sha256", "not_loaded"}
        assert {f["where"] for f in report["findings"] if f["severity"] == "mismatch"} == {
            "cluster local secret nats/nats-ca-tls", "local/nats-0", "local/nats-1", "local/nats-2"}


def test_status_flags_a_stored_bundle_the_root_did_not_sign(rs, tmp_path):
    """A bundle record written without verification (a 'Rogue CA' beside the real root) is flagged, whichever epoch
    it claims; records the root signed are not."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rogue CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    rogue = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    root = Path(rs.info["pki"]["root_pem_file"]).read_text()
    epoch = _state(rs)[0]["last_epoch"] - 1
    path = f"ca-bundles/epoch-{epoch}"
    client = rs.bao()
    before = None
    try:
        before = client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    except Exception:  # noqa: BLE001 - no record for that epoch
        pass
    client.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret",
                                                 secret={"ca-bundle.pem": rogue + root, "sha256": _sha(rogue + root)})
    try:
        _run, report = _status(rs, tmp_path / "rogue.json")
        foreign = [f for f in report["findings"] if f["code"] == "kv_record_foreign"]
        assert len(foreign) == 1 and "Rogue CA" in foreign[0]["msg"] and path in foreign[0]["msg"], report["findings"]
    finally:
        if before is not None:
            client.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=before)
        else:
            client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")
    _run, report = _status(rs, tmp_path / "clean.json")
    assert "kv_record_foreign" not in {f["code"] for f in report["findings"]}

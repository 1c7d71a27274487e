"""distrust.yml end to end, on a private 3-node mTLS cluster: stop trusting an epoch's intermediate now.

The schedule (1 h epochs) puts the run 10 minutes before an epoch boundary, in the lead window: the first
rotate.yml leaves two intermediates trusted - the current epoch (the default issuer) and the prepared next one -
and no boundary is crossed while the test runs.

Proves: bad input (no epoch, an epoch without an intermediate, a bundle that includes the root without the force
option) fails with a clear message and changes nothing; check mode predicts and changes nothing; distrusting the
default issuer revokes it, replaces it trust-first with ``epoch-<n>-r1``, re-issues the server leaves, and every
server then refuses a leaf of it - sent alone and with its intermediate, on client and route ports - while leaves of
the other epochs and of the replacement connect; a re-run and the next rotate.yml change nothing; distrusting the
prepared epoch during a rollback hold takes it out of the held bundle (and issues its replacement); rollback.yml
never puts a distrusted intermediate back; both distrusts are in the audit log; under JetStream traffic nothing acked
is lost, and open connections of a distrusted certificate are kept (a reload does not re-check them); status.yml
lists the distrusted epochs and flags a CA file that holds one again.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from helpers import REPO
from rotation_harness import RotationStack, Traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCH = 3600
EXTRA = {"ca_rotation_authority_include_root": False, "ca_rotation_nats_reload_propagation_timeout": 30}


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    # epoch 100 starts 11 minutes from now: the stack comes up inside epoch 99's lead window (the last 15 minutes)
    boundary = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(minutes=11)
    zero = boundary - datetime.timedelta(seconds=100 * EPOCH)
    stack = RotationStack(tmp_path_factory.mktemp("distrust"), epoch_duration=f"{EPOCH}s",
                          epoch_zero=zero.strftime("%Y-%m-%dT%H:%M:%SZ"))
    yield stack
    stack.down()


def _certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def _key_id(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _sha(pem: str) -> str:
    """SHA-256 of the DER certificate (as the state records a distrusted intermediate)."""
    return _certs(pem)[0].fingerprint(hashes.SHA256()).hex()


def _cert_shas(pem: str) -> set[str]:
    return {c.fingerprint(hashes.SHA256()).hex() for c in _certs(pem)}


def _issuers(rs) -> dict[str, dict]:
    """issuer name -> {id, default, revoked, sha256}"""
    client, mount = rs.bao(), rs.info["pki"]["int_mount"]
    listed = client.list(f"{mount}/issuers")["data"]["key_info"]
    out = {}
    for issuer_id, meta in listed.items():
        data = client.read(f"{mount}/issuer/{issuer_id}")["data"]
        out[meta.get("issuer_name") or issuer_id] = {
            "id": issuer_id, "default": bool(meta.get("is_default")), "revoked": bool(data.get("revoked")),
            "sha256": _sha(data["certificate"]), "key_id": _key_id(_certs(data["certificate"])[0])}
    return out


def _state(rs) -> dict:
    return rs.bao().secrets.kv.v2.read_secret_version(path="ca-rotation/state", mount_point="secret",
                                                      raise_on_deleted_version=True)["data"]["data"]


def _snapshot(rs) -> dict:
    state = _state(rs)
    return {"issuers": _issuers(rs), "ca_files": sorted(rs.ca_file_sha256s()),
            "state": {k: state.get(k) for k in ("generation", "distrusted", "distrust_pending", "hold", "bundle_sha256")}}


def _servers_ca_shas(rs) -> set[str]:
    out = set()
    for server in rs.servers:
        out |= _cert_shas(Path(server["ca_file"]).read_text())
    return out


def _leaves(rs, base: Path, ref: str) -> dict[str, tuple[str, str]]:
    return {"leaf_only": rs.issue_client_leaf(base / f"{ref}-leaf", ref, leaf_only=True),
            "with_intermediate": rs.issue_client_leaf(base / f"{ref}-chain", ref)}


def _verdicts(rs, leaves) -> set[bool]:
    return {rs.handshake(cert, key, server)[0] for cert, key in leaves.values() for server in rs.servers}


def _failed(run) -> str:
    return run["stdout"][-4000:] + run["stderr"][-2000:]


def test_distrust_replaces_the_default_and_every_server_refuses_it(rs, tmp_path):
    first = rs.playbook("rotate.yml", extra_vars=EXTRA)
    assert first["rc"] == 0, _failed(first)
    # the traffic's clients connect with the stack's application certificate, which epoch n (the default) signed;
    # a copy is kept: the run renews the file from the replacement
    auth = rs.info["nats_auth"]
    app_cert, app_key = tmp_path / "app.pem", tmp_path / "app-key.pem"
    app_cert.write_bytes(Path(auth["client_cert_file"]).read_bytes())
    app_key.write_bytes(Path(auth["client_key_file"]).read_bytes())
    traffic = Traffic(rs)
    traffic.start()
    assert traffic.ready.wait(30), traffic.errors
    n = first["report"]["current_epoch"]
    assert rs.default_issuer_epoch() == n
    issuers = _issuers(rs)
    app_signer = _certs(app_cert.read_text())[0].extensions.get_extension_for_class(
        x509.AuthorityKeyIdentifier).value.key_identifier
    assert app_signer == issuers[f"epoch-{n}"]["key_id"], "the application certificate is not from epoch %d" % n
    assert {f"epoch-{n}", f"epoch-{n + 1}"} <= set(issuers), sorted(issuers)  # current + prepared, both trusted
    assert {issuers[f"epoch-{n}"]["sha256"], issuers[f"epoch-{n + 1}"]["sha256"]} <= _servers_ca_shas(rs)
    current, prepared = _leaves(rs, tmp_path, f"epoch-{n}"), _leaves(rs, tmp_path, f"epoch-{n + 1}")
    assert _verdicts(rs, current) == {True} and _verdicts(rs, prepared) == {True}

    # bad input: a clear message naming the option, nothing changed
    before = _snapshot(rs)
    for extra, words in (
            ({}, "ca_rotation_distrust_epoch"),
            ({"ca_rotation_distrust_epoch": n - 1}, f"epoch {n - 1}"),
            ({"ca_rotation_distrust_epoch": n, "ca_rotation_authority_include_root": True},
             "ca_rotation_distrust_force_intermediates_only")):
        bad = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, **extra))
        assert bad["rc"] != 0, _failed(bad)
        assert words.lower() in (bad["stdout"] + bad["stderr"]).lower(), _failed(bad)
        assert _snapshot(rs) == before, f"a refused distrust ({extra}) changed something"

    # check mode predicts the replacement and changes nothing
    check = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, ca_rotation_distrust_epoch=n), check=True)
    assert check["rc"] == 0, _failed(check)
    assert check["report"]["distrust"]["replacement"] == f"epoch-{n}-r1", check["report"]["distrust"]
    assert check["report"]["changed"] is True
    assert _snapshot(rs) == before, "check mode changed something"

    # distrust the default issuer
    run = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, ca_rotation_distrust_epoch=n))
    assert run["rc"] == 0, _failed(run)
    report = run["report"]
    assert report["ok"] and report["kind"] == "distrust", report
    dis = report["distrust"]
    assert dis["stage"] == "complete" and dis["issuer_name"] == f"epoch-{n}" and dis["replacement"] == f"epoch-{n}-r1", dis
    proof = report["clusters"]["local"]["distrust_proof"]
    assert proof["ok"] and len(proof["servers"]) == 2 * len(rs.servers), proof  # client + route port of each server
    assert all(s["leaf_only"] == "refused" and s["with_intermediate"] == "refused" for s in proof["servers"]), proof
    issuers = _issuers(rs)
    assert issuers[f"epoch-{n}"]["revoked"] and not issuers[f"epoch-{n}"]["default"]
    assert issuers[f"epoch-{n}-r1"]["default"] and not issuers[f"epoch-{n}-r1"]["revoked"]
    assert rs.bao().read(f"{rs.info['pki']['root_mount']}/cert/{dis['serial']}")["data"].get("revocation_time"), \
        "the intermediate is not revoked on the root's CRL"
    shas = _servers_ca_shas(rs)
    assert issuers[f"epoch-{n}"]["sha256"] not in shas
    assert {issuers[f"epoch-{n}-r1"]["sha256"], issuers[f"epoch-{n + 1}"]["sha256"]} <= shas
    for server in rs.servers:  # the servers' own leaves come from the replacement
        leaf = _certs(Path(server["cert_file"]).read_text())[0]
        assert "replacement 1" in leaf.issuer.rfc4514_string(), (server["name"], leaf.issuer.rfc4514_string())
    # our own handshakes agree with the proof; the other epochs and the replacement still connect
    assert _verdicts(rs, current) == {False}
    assert _verdicts(rs, prepared) == {True}
    assert _verdicts(rs, _leaves(rs, tmp_path, "default")) == {True}
    assert _state(rs)["distrusted"][0]["sha256"] == issuers[f"epoch-{n}"]["sha256"]
    acked_at_distrust = len(traffic.acked)

    # a re-run confirms the same distrust; the next rotate.yml converges without it
    after = _snapshot(rs)
    again = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, ca_rotation_distrust_epoch=n))
    assert again["rc"] == 0 and again["report"]["changed"] is False, _failed(again)
    rotate = rs.playbook("rotate.yml", extra_vars=EXTRA)
    assert rotate["rc"] == 0 and rotate["report"]["changed"] is False, _failed(rotate)
    assert _snapshot(rs) == after

    # a rollback after the distrust restores the epoch's bundle without the distrusted intermediate, and holds it
    rollback = rs.playbook("rollback.yml", extra_vars=dict(EXTRA, ca_rotation_rollback_epoch=n + 1))
    assert rollback["rc"] == 0 and rollback["report"]["ok"], _failed(rollback)
    assert _state(rs)["hold"] and issuers[f"epoch-{n}"]["sha256"] not in _servers_ca_shas(rs)

    # during the hold: the prepared epoch (not the default) is taken out in one stage, and the hold keeps the bundle
    # without it; being due, the epoch gets a replacement at once
    run = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, ca_rotation_distrust_epoch=n + 1))
    assert run["rc"] == 0, _failed(run)
    dis = run["report"]["distrust"]
    assert dis["stage"] == "complete" and dis["issuer_name"] == f"epoch-{n + 1}", dis
    assert dis["replacement"] == f"epoch-{n + 1}-r1", dis
    assert run["report"]["clusters"]["local"]["distrust_proof"]["ok"]
    assert _state(rs)["hold"]["sha256"] == run["report"]["bundle_sha256"]
    assert _verdicts(rs, prepared) == {False} and _verdicts(rs, current) == {False}
    assert _verdicts(rs, _leaves(rs, tmp_path, f"epoch-{n}-r1")) == {True}
    issuers = _issuers(rs)
    assert issuers[f"epoch-{n}-r1"]["default"] and issuers[f"epoch-{n + 1}"]["revoked"]
    distrusted = {issuers[f"epoch-{n}"]["sha256"], issuers[f"epoch-{n + 1}"]["sha256"]}
    assert not distrusted & _servers_ca_shas(rs)
    after = _snapshot(rs)
    rotate = rs.playbook("rotate.yml", extra_vars=EXTRA)
    assert rotate["rc"] == 0 and rotate["report"]["changed"] is False, _failed(rotate)
    assert _snapshot(rs) == after

    # the stored bundle of epoch n + 1 still holds its distrusted intermediate: a rollback to it leaves it out
    rollback = rs.playbook("rollback.yml", extra_vars=dict(EXTRA, ca_rotation_rollback_epoch=n + 1))
    assert rollback["rc"] == 0 and rollback["report"]["ok"], _failed(rollback)
    assert not distrusted & _servers_ca_shas(rs), _failed(rollback)
    assert _verdicts(rs, current) == {False} and _verdicts(rs, prepared) == {False}

    # every distrust is in the audit log
    shown = subprocess.run([sys.executable, str(REPO / "scripts" / "ca-audit"), "show", "--stack", str(rs.base / "state"),
                            "--json"], capture_output=True, text=True, timeout=240, check=False)
    assert shown.returncode == 0, shown.stderr
    kinds = [(e["record"] or {}).get("kind") for e in json.loads(shown.stdout)]
    assert kinds.count("distrust") == 2, kinds

    # open connections are not re-checked by a reload: the traffic's clients, whose certificate the distrusted epoch
    # signed, kept publishing and consuming without a loss; a new connection with that certificate is refused
    acked_before_stop = len(traffic.acked)
    traffic.stop()
    assert traffic.errors == [], traffic.errors[:5]
    assert traffic.reconnects == 0 and acked_before_stop > acked_at_distrust > 0
    assert set(traffic.acked) <= traffic.consumed and traffic.stream_messages == len(traffic.acked)
    assert {rs.handshake(str(app_cert), str(app_key), server)[0] for server in rs.servers} == {False}

    # status.yml lists both distrusted epochs, held nowhere; a CA file that holds one again is flagged where it is
    status_json = tmp_path / "status.json"
    status = rs.playbook("status.yml", extra_vars=dict(EXTRA, ca_rotation_status_json=str(status_json)))
    report = json.loads(status_json.read_text())
    assert [(d["epoch"], d["held_by"]) for d in report["distrusted"]] == [(n, []), (n + 1, [])], report["distrusted"]
    assert not {f["code"] for f in report["findings"]} & {"distrusted_held", "distrusted_not_revoked"}, report["findings"]
    assert any(line.startswith("distrusted: epoch %d" % n) for line in report["table"]), status["stdout"][-3000:]
    victim = Path(rs.servers[1]["ca_file"])
    victim.write_text(victim.read_text() + rs.bao().read(
        f"{rs.info['pki']['int_mount']}/issuer/{issuers[f'epoch-{n}']['id']}")["data"]["certificate"].strip() + "\n")
    strict = dict(EXTRA, ca_rotation_status_json=str(status_json), ca_rotation_status_strict=True)
    status = rs.playbook("status.yml", extra_vars=strict)
    report = json.loads(status_json.read_text())
    assert status["rc"] != 0
    assert ("distrusted_held", f"local/{rs.servers[1]['name']}") in {(f["code"], f["where"]) for f in report["findings"]}, \
        report["findings"]

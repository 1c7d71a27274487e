"""distrust.yml end to end, on a private 3-node mTLS cluster: stop trusting an epoch's intermediate now.

The schedule (1 h epochs) puts the run 10 minutes before an epoch boundary, in the lead window: the first
rotate.yml leaves two intermediates trusted - the current epoch (the default issuer) and the prepared next one -
and no boundary is crossed while the test runs.

Proves: bad input (no epoch, an epoch without an intermediate, a bundle that includes the root without the force
option) fails with a clear message and changes nothing; check mode predicts and changes nothing; distrusting the
default issuer (a client of the default issuer - it, then its replacement - accepted by every server at every
moment) without renewing the announcer's certificate (which it signed) replaces it but keeps it in every CA
file and fails naming the file; the re-run with the renewal on completes it: it revokes it, replaces it trust-first
with ``epoch-<n>-r1``, re-issues the server leaves, and every
server then refuses a leaf of it - sent alone and with its intermediate, on client and route ports, where a leaf of
the replacement is accepted by the same attempt - while leaves of the other epochs and of the replacement connect; the
last announcement is a signed ``kind: distrust`` of a newer generation whose bundle leaves the intermediate out; the
state records the distrust (epoch, issuer, SHA-256, reason); a re-run and the next rotate.yml change nothing; distrusting the
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
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from helpers import REPO
from rotation_harness import Observer, RotationStack, Traffic

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import verify_with_transit
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.probe import probe_context
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import refusal
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import STREAM_DEFAULTS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCH = 3600
EXTRA = {"ca_rotation_authority_include_root": False, "ca_rotation_nats_reload_propagation_timeout": 30}
SUBJECT = "metadata.client.ca-cert"  # the announcement subject (stream METADATA_CA_CLIENT)
REASON = "integration test: the epoch's key leaked"


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


def _route_verdicts(rs, leaves) -> dict[tuple[str, str], tuple[str, str]]:
    """``{(address, presentation): (verdict, detail)}`` of ``refusal.attempt`` - the attempt the distrust proof makes -
    on every server's route port (the server's certificate verified against the root first: a verdict is the server's)."""
    out = {}
    for server in rs.servers:
        routes = [(host, port) for label, host, port in refusal.ports(server) if label == "route"]
        assert len(routes) == 1, (server["name"], refusal.ports(server))
        for label, (cert, key) in leaves.items():
            ctx = probe_context({"cert_file": cert, "key_file": key, "ca_file": rs.info["pki"]["root_pem_file"]})
            out[("%s:%s" % routes[0], label)] = refusal.attempt(*routes[0], ctx)
    return out


async def _read_last(params: dict, stream: str):
    client = await nats_client.connect(params)
    try:
        return await jetstream.last_message(client, stream, SUBJECT, jetstream.Deadline(30))
    finally:
        await nats_client.close(client)


def _announcement(rs, newer_than: int | None = None) -> dict:
    """The last announcement on the subject, read as the application's client and verified against the transit key
    exactly as ca-bundle-sync does (``newer_than``: the generation it must be newer than)."""
    auth, pki = rs.info["nats_auth"], rs.info["pki"]
    params = {"servers": [s["url"] for s in rs.servers], "ca_file": auth["ca_file"], "cert_file": auth["client_cert_file"],
              "key_file": auth["client_key_file"], "user": auth["app_user"], "password_file": auth["app_password_file"]}
    last = nats_client.run(_read_last(params, jetstream.stream_options(STREAM_DEFAULTS, SUBJECT)[0]))
    assert last is not None, f"no announcement on {SUBJECT}"
    return verify_with_transit(rs.bao(), pki["transit_mount"], pki["transit_key"], last["data"], newer_than=newer_than)


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
    announced = _announcement(rs)
    assert announced["generation"] == first["report"]["generation"] and announced["kind"] == "rotation", \
        {k: announced.get(k) for k in ("generation", "kind", "epoch")}

    # distrust the default issuer - first without renewing the announcer's certificate, which epoch n signed: the
    # replacement is issued, proven and made the default, but the distrusted intermediate stays in every CA file (the
    # announcer would be locked out) and the run fails naming the file and the switch
    # trust first, watched throughout: a client of whatever issuer is the default (epoch-n, then its replacement) is
    # accepted by every server at every moment
    watch = Observer(rs, tmp_path / "observer", by_name=True)
    watch.start()
    deadline = time.monotonic() + 30
    while not watch.checks and not watch.failures and time.monotonic() < deadline:  # its leaf of epoch-n, before the revoke
        time.sleep(0.05)
    assert watch.checks and not watch.failures, watch.failures[:5]
    blocked = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, ca_rotation_distrust_epoch=n, ca_rotation_distrust_reason=REASON,
                                                          ca_rotation_authority_renew_client_leaf=False))
    assert blocked["rc"] != 0, _failed(blocked)
    for words in ("ca_rotation_authority_nats.cert_file", "ca_rotation_authority_renew_client_leaf is off",
                  "The distrusted intermediate stays in the bundle"):
        assert words in blocked["stdout"], _failed(blocked)
    issuers = _issuers(rs)
    assert issuers[f"epoch-{n}"]["revoked"] and issuers[f"epoch-{n}-r1"]["default"], issuers
    assert issuers[f"epoch-{n}"]["sha256"] in _servers_ca_shas(rs)
    assert (_state(rs).get("distrust_pending") or {}).get("epoch") == n, _state(rs).get("distrust_pending")
    assert Path(auth["client_cert_file"]).read_bytes() == app_cert.read_bytes()  # not renewed
    # the re-run, with the renewal on (the local inventory's setting), re-issues it and completes the distrust
    run = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, ca_rotation_distrust_epoch=n, ca_rotation_distrust_reason=REASON))
    watch.stop()
    assert watch.failures == [] and watch.checks > 0, watch.failures[:5]
    assert watch.epochs_seen[:1] == [f"epoch-{n}"] and f"epoch-{n}-r1" in watch.epochs_seen, watch.epochs_seen
    assert run["rc"] == 0, _failed(run)
    report = distrust_report = run["report"]
    assert report["ok"] and report["kind"] == "distrust", report
    dis = report["distrust"]
    assert dis["stage"] == "complete" and dis["issuer_name"] == f"epoch-{n}" and dis["replacement"] == f"epoch-{n}-r1", dis
    proof = report["clusters"]["local"]["distrust_proof"]
    assert proof["ok"] and len(proof["servers"]) == 2 * len(rs.servers), proof  # client + route port of each server
    assert all(s["leaf_only"] == "refused" and s["with_intermediate"] == "refused" for s in proof["servers"]), proof
    # the positive control of the route ports: on the very addresses where the proof saw the witness refused, the same
    # attempt with a leaf of the replacement (a trusted epoch), alone and with its intermediate, is accepted - so that
    # "refused" on a route port is the server's verdict about the distrusted leaf, not what any client gets there
    replacement = _leaves(rs, tmp_path, f"epoch-{n}-r1")
    accepted = _route_verdicts(rs, replacement)
    assert {v[0] for v in accepted.values()} == {"accepted"}, accepted
    assert set(accepted) == {(s["address"], label) for s in proof["servers"] if s["port"] == "route"
                             for label in ("leaf_only", "with_intermediate")}, (accepted, proof)
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
    assert _verdicts(rs, replacement) == {True}
    # the state's record of the distrust: what was distrusted, why, by which run
    entry = _state(rs)["distrusted"][0]
    assert {k: entry.get(k) for k in ("epoch", "issuer_name", "sha256", "serial", "reason")} == {
        "epoch": n, "issuer_name": f"epoch-{n}", "sha256": issuers[f"epoch-{n}"]["sha256"], "serial": dis["serial"],
        "reason": REASON}, entry
    assert entry.get("by") and entry.get("at"), entry
    # clients learn it from a signed announcement of kind distrust, newer than the last one, without the intermediate
    distrust_msg = _announcement(rs, newer_than=announced["generation"])
    assert distrust_msg["kind"] == "distrust" and distrust_msg["generation"] > announced["generation"], \
        {k: distrust_msg.get(k) for k in ("generation", "kind", "epoch")}
    assert distrust_msg["generation"] == report["generation"] and distrust_msg["bundle_sha256"] == report["bundle_sha256"]
    announced_shas = _cert_shas(distrust_msg["bundle_pem"])
    assert issuers[f"epoch-{n}"]["sha256"] not in announced_shas | {c["sha256"] for c in distrust_msg["certificates"]}
    assert {issuers[f"epoch-{n}-r1"]["sha256"], issuers[f"epoch-{n + 1}"]["sha256"]} <= announced_shas, announced_shas
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
    assert _verdicts(rs, replacement) == {True}
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
    records = [e["record"] or {} for e in json.loads(shown.stdout)]
    kinds = [r.get("kind") for r in records]
    assert kinds.count("distrust") == 2, kinds
    # the first distrust's record is the record of that run: its generation and bundle (the audit schema has no fields
    # for the distrusted issuer, its SHA-256 or the reason: those are in the state's record, checked above)
    first_distrust = next(r for r in records if r.get("kind") == "distrust")
    assert (first_distrust["generation"], first_distrust["bundle_sha256"], first_distrust["epoch"]) == (
        distrust_report["generation"], distrust_report["bundle_sha256"], distrust_report["epoch"]), first_distrust

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

"""Dual mode end to end (DESIGN section 12): rotate.yml with ``ca_rotation_pki.mldsa`` issues a classical (EC) and an
ML-DSA-65 intermediate every epoch, under an EC root and an ML-DSA root, carries both families in one bundle and proves
every server accepts a client of each family before either family's new epoch becomes its mount's default issuer.

On a private 3-node mTLS cluster with short epochs (20 s, valid 80 s) and continuous JetStream traffic over nats-py
(Python's ssl, classical only): four epochs rotated; a classical and an ML-DSA (pyOpenSSL) client holding leaves of
each family's default issuer connect to every server at every moment; 0 lost messages and 0 reconnects; each
family's expired epoch is refused; switching the ML-DSA family off drops it from every server's CA file (ML-DSA
clients refused, classical ones unaffected) and switching it on brings it back; rollback.yml puts back a bundle of
both families.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rotation_harness import Observer, RotationStack, Traffic

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import certificate_family, load_cert
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCH = 20
EXTRA = {"ca_rotation_authority_include_root": False, "ca_rotation_nats_reload_propagation_timeout": 30,
         "ca_rotation_nats_reload_leaf_renew_before": "15s", "ca_rotation_authority_client_leaf_renew_before": "15s"}
MLDSA_INT = "pki_int_mldsa"


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    stack = RotationStack(tmp_path_factory.mktemp("dual-mode"), epoch_duration=f"{EPOCH}s", mldsa_family=65)
    yield stack
    stack.down()


def _counts(path) -> dict:
    """``{family: certificates}`` of a CA file (classical, mldsa)."""
    out: dict = {}
    for block in pem_certificates(Path(path).read_text(), "ca_file"):
        family = certificate_family(load_cert(block))
        out[family] = out.get(family, 0) + 1
    return out


def _pki(rs, enabled: bool) -> dict:
    pki = dict(rs.stack.inventory_vars()["ca_rotation_pki"])
    pki["mldsa"] = dict(pki["mldsa"], enabled=enabled)
    return pki


def _not_after(cert_file: str) -> float:
    from cryptography import x509
    return x509.load_pem_x509_certificate(Path(cert_file).read_bytes()).not_valid_after_utc.timestamp()


def test_dual_mode_four_epochs_under_traffic_family_off_and_on_then_rollback(rs, tmp_path):
    assert rs.info["pki"]["mldsa"]["int_mount"] == MLDSA_INT
    traffic = Traffic(rs, stream="DUAL")
    traffic.start()
    assert traffic.ready.wait(30), traffic.errors
    first = rs.playbook("rotate.yml", extra_vars=EXTRA)
    assert first["rc"] == 0, first["stdout"][-3000:]
    start = first["report"]["current_epoch"]
    # distrust.yml does not handle two families yet: refused before anything changes, naming the option
    before = rs.ca_file_sha256s()
    refused = rs.playbook("distrust.yml", extra_vars=dict(EXTRA, ca_rotation_distrust_epoch=start))
    assert refused["rc"] != 0 and "ca_rotation_pki.mldsa is set" in refused["stdout"], refused["stdout"][-3000:]
    assert "Nothing was changed" in refused["stdout"] and refused["report"]["changed"] is False, refused["report"]
    assert rs.ca_file_sha256s() == before
    for mount in ("pki_int", MLDSA_INT):
        assert not any(rs.bao().read(f"{mount}/issuer/{i}")["data"].get("revoked")
                       for i in rs.bao().list(f"{mount}/issuers")["data"]["keys"]), mount
    early = {"classical": rs.issue_client_leaf(tmp_path / "early-ec", f"epoch-{start}"),
             "mldsa": rs.issue_client_leaf(tmp_path / "early-mldsa", f"epoch-{start}", int_mount=MLDSA_INT)}
    classical = Observer(rs, tmp_path / "observer-ec")
    pq = Observer(rs, tmp_path / "observer-mldsa", int_mount=MLDSA_INT)
    classical.start()
    pq.start()
    try:
        # four epochs rotated, and on until the first epoch's leaves have expired
        deadline = time.monotonic() + 12 * EPOCH
        while time.monotonic() < deadline:
            run = rs.playbook("rotate.yml", extra_vars=EXTRA)
            assert run["rc"] == 0, run["stdout"][-3000:] + run["stderr"][-3000:]
            assert run["report"]["ok"], run["report"]
            if run["report"]["current_epoch"] >= start + 4 and time.time() > max(_not_after(c) for c, _k in early.values()):
                break
        else:
            pytest.fail("four epochs were not rotated in time: " + ", ".join(
                f"{r['seconds']:.0f}s/e{(r['report'] or {}).get('current_epoch')}" for r in rs.runs))
    finally:
        classical.stop()
        pq.stop()
    reloading = [r for r in rs.runs if r["report"] and (r["report"]["clusters"].get("local") or {}).get("reloaded")]
    assert len(reloading) >= 4
    for run in reloading:  # every reload proven with a probe of each family
        for server in run["report"]["clusters"]["local"]["servers"]:
            assert server["ok"] and [p["name"] for p in server["probes"]] == ["classical", "mldsa"], server
            assert all(p["ok"] for p in server["probes"]), server

    # trust first, per family: each family's default issuer was accepted by every server at every check
    for observer in (classical, pq):
        assert observer.checks > 0 and observer.failures == [], observer.failures[:5]
        assert len(set(observer.epochs_seen)) >= 4, observer.epochs_seen
    now = rs.playbook("rotate.yml", extra_vars=EXTRA)["report"]["current_epoch"]
    assert rs.default_issuer_epoch() == rs.default_issuer_epoch(MLDSA_INT) == now
    # every server's CA file holds both families (intermediates only: no roots), each family's epochs the same
    for server in rs.servers:
        counts = _counts(server["ca_file"])
        assert counts.get("mldsa", 0) >= 3 and counts.get("mldsa") == counts.get("classical"), counts
    # each family's expired epoch is refused, the valid ones connect (client and ML-DSA leaves alike)
    for family, (cert, key) in early.items():
        for server in rs.servers:
            ok, detail = rs.handshake(cert, key, server)
            assert not ok, f"expired {family} epoch {start} accepted by {server['name']}"
    for observer in (classical, pq):
        for epoch, (cert, key) in observer.leaves.items():
            if _not_after(cert) > time.time() + 2:
                for server in rs.servers:
                    ok, detail = rs.handshake(cert, key, server)
                    assert ok, f"valid epoch {epoch} ({observer.int_mount or 'classical'}) refused by {server['name']}: {detail}"
    # rollback.yml puts back the bundle of the generation before: both families, proven with both probes; the hold
    # keeps it until it is released
    for _attempt in range(3):
        state = rs.bao().secrets.kv.v2.read_secret_version(path="ca-rotation/state", mount_point="secret",
                                                           raise_on_deleted_version=True)["data"]["data"]
        rb = rs.playbook("rollback.yml", extra_vars=EXTRA)
        if rb["rc"] == 0:
            break
        assert "less than the safe margin" in rb["stdout"] or "No bundle is stored" in rb["stdout"], rb["stdout"][-3000:]
        newest = state["last_epoch"]
        while time.time() < (newest + 1) * EPOCH - EPOCH // 4 + 0.5:  # the next epoch's preparation: a new generation
            time.sleep(0.2)
        assert rs.playbook("rotate.yml", extra_vars=EXTRA)["rc"] == 0
    else:
        pytest.fail("rollback.yml was refused three times: " + rb["stdout"][-2000:])
    for server in rb["report"]["clusters"]["local"]["servers"]:
        assert server["ok"] and all(p["ok"] for p in server["probes"]), server
    for server in rs.servers:
        counts = _counts(server["ca_file"])
        assert counts.get("mldsa", 0) >= 1 and counts.get("classical", 0) >= 1, counts
    held = rs.playbook("rotate.yml", extra_vars=EXTRA)
    assert held["rc"] == 0 and held["report"]["hold"], held["report"]
    assert set(_counts(rs.servers[0]["ca_file"])) == {"classical", "mldsa"}
    released = rs.playbook("rotate.yml", extra_vars=dict(EXTRA, ca_rotation_release_hold=True))
    assert released["rc"] == 0 and released["report"]["ok"] and not released["report"]["hold"], released["stdout"][-3000:]

    ec_leaf = classical.leaves[max(classical.leaves)]
    pq_leaf = pq.leaves[max(pq.leaves)]

    # the ML-DSA family switched off: it leaves every CA file; ML-DSA clients are refused, classical ones are not
    # (both runs plan for one moment: an epoch boundary between them would be a change of its own)
    pinned = dict(EXTRA, ca_rotation_pki=_pki(rs, False), ca_rotation_now=int(time.time()))
    before = rs.ca_file_sha256s()
    predicted = rs.playbook("rotate.yml", extra_vars=pinned, check=True)  # check mode predicts, writes nothing
    assert predicted["rc"] == 0 and predicted["report"]["changed"] is True, predicted["stdout"][-3000:]
    assert rs.ca_file_sha256s() == before
    off = rs.playbook("rotate.yml", extra_vars=pinned)
    assert off["rc"] == 0 and off["report"]["ok"], off["stdout"][-3000:]
    for server in rs.servers:
        assert set(_counts(server["ca_file"])) == {"classical"}, server["name"]
        assert not rs.handshake(*pq_leaf, server)[0], f"ML-DSA client accepted by {server['name']} with the family off"
        ok, detail = rs.handshake(*ec_leaf, server)
        assert ok, detail
    again = rs.playbook("rotate.yml", extra_vars=pinned)
    assert again["rc"] == 0 and again["report"]["changed"] is False, again["stdout"][-3000:]
    # and on again: the ML-DSA part is back, its clients connect
    moment = int(time.time())  # status.yml below judges the bundle at the moment this run planned for
    on = rs.playbook("rotate.yml", extra_vars=dict(EXTRA, ca_rotation_now=moment))
    assert on["rc"] == 0 and on["report"]["ok"], on["stdout"][-3000:]
    for server in rs.servers:
        assert _counts(server["ca_file"]).get("mldsa", 0) >= 1
        ok, detail = rs.handshake(*rs.issue_client_leaf(tmp_path / "back", int_mount=MLDSA_INT), server)
        assert ok, detail

    # status.yml reads and checks each family's issuers: both families' certificates belong in the bundle
    report_file = tmp_path / "status.json"
    status = rs.playbook("status.yml", extra_vars={"ca_rotation_status_json": str(report_file),
                                                   "ca_rotation_status_strict": True, "ca_rotation_now": moment})
    report = json.loads(report_file.read_text())
    assert status["rc"] == 0 and report["mismatch_count"] == 0, [f for f in report["findings"] if f["severity"] == "mismatch"]
    part = report["authority"]["families"]["mldsa"]
    assert part["int_mount"] == MLDSA_INT and part["default_issuer"]["epoch"] == rs.default_issuer_epoch(MLDSA_INT)
    assert part["root"]["sha256"] != report["authority"]["root"]["sha256"]

    traffic.stop()
    assert traffic.errors == [], traffic.errors[:5]
    assert traffic.reconnects == 0 and traffic.disconnects_during == 0
    assert len(traffic.acked) > 100 and set(traffic.acked) <= traffic.consumed
    assert traffic.stream_messages == len(traffic.acked) == traffic.stream_last_seq


@pytest.fixture(scope="module")
def pq_world(tmp_path_factory):
    """A classical cluster (the announcer's) and a cluster whose servers present ML-DSA leaves."""
    stack = RotationStack(tmp_path_factory.mktemp("dual-leaves"), epoch_duration="6h", clusters=(("local", 3), ("pq", 1)),
                          mldsa_family=65)
    stack.write_hosts({
        "local": {"ca_rotation_nats_reload_targets": "{{ ca_rotation_nats_clusters.local.members }}",
                  "ca_rotation_nats_reload_renew_leaves": True},
        "pq": {"ca_rotation_nats_reload_targets": "{{ ca_rotation_nats_clusters.pq.members }}",
               "ca_rotation_nats_reload_renew_leaves": True, "ca_rotation_nats_reload_leaf_family": "mldsa"}})
    yield stack
    stack.down()


def test_a_cluster_presenting_mldsa_leaves_is_renewed_and_proven_with_both_families(pq_world, tmp_path):
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import base as reload_base
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import probe as reload_probe

    rs = pq_world
    (pq_server,) = [s for c in rs.info["clusters"] if c["name"] == "pq" for s in c["servers"]]
    # bad input first: refused up front, naming the option, and nothing changed
    before = rs.ca_file_sha256s()
    for mldsa, words in (({"key_bits": 66}, "always chosen: OpenBao would take 44; 65 is the one nats-server is known to serve and verify), got 66"),
                         ({"key_bits": 0}, "ca_rotation_pki.mldsa.key_bits must be 44, 65 or 87")):
        pki = dict(rs.stack.inventory_vars()["ca_rotation_pki"])
        pki["mldsa"] = dict(pki["mldsa"], **mldsa)
        bad = rs.playbook("rotate.yml", extra_vars={"ca_rotation_pki": pki})
        assert bad["rc"] != 0 and words in bad["stdout"], bad["stdout"][-3000:]
    assert rs.ca_file_sha256s() == before and set(_counts(pq_server["cert_file"])) == {"classical"}
    assert rs.bao().list(f"{MLDSA_INT}/issuers")["data"]["keys"] and len(rs.bao().list(f"{MLDSA_INT}/issuers")["data"]["keys"]) == 1
    assert set(_counts(pq_server["cert_file"])) == {"classical"}  # the stack starts it with a classical leaf
    run = rs.playbook("rotate.yml")
    assert run["rc"] == 0 and run["report"]["ok"], run["stdout"][-4000:]
    pq_result = run["report"]["clusters"]["pq"]
    assert pq_result["renewed"] == [pq_server["name"]], pq_result
    assert set(_counts(pq_server["cert_file"])) == {"mldsa"}  # leaf and its ML-DSA intermediate
    assert set(_counts(rs.servers[0]["cert_file"])) == {"classical"}  # the other cluster keeps classical leaves
    again = rs.playbook("rotate.yml")
    assert again["rc"] == 0 and again["report"]["changed"] is False, again["stdout"][-3000:]

    # the ML-DSA server is verified against the bundle by both families' clients through pyOpenSSL ...
    host, port = reload_base.host_port(pq_server["url"])
    bundle = pq_server["ca_file"]
    ec_leaf = rs.issue_client_leaf(tmp_path / "ec")
    pq_leaf = rs.issue_client_leaf(tmp_path / "pq", int_mount=MLDSA_INT)
    for cert, key in (ec_leaf, pq_leaf):
        ctx = reload_probe.probe_context({"cert_file": cert, "key_file": key, "ca_file": bundle, "partial_chain": True,
                                          "pyopenssl": True})
        ok, detail = reload_probe.tls_probe(host, port, ctx, timeout=10)
        assert ok, detail
    # ... and not by Python's ssl, which cannot verify an ML-DSA server (the reason classical probes switch stacks)
    ctx = client_context(ca_file=bundle, cert_file=ec_leaf[0], key_file=ec_leaf[1], partial_chain=True, check_hostname=False)
    ok, detail = reload_probe.tls_probe(host, port, ctx, timeout=10)
    assert not ok, detail
    classical_host, classical_port = reload_base.host_port(rs.servers[0]["url"])  # the same client, a classical server
    ok, detail = reload_probe.tls_probe(classical_host, classical_port, ctx, timeout=10)
    assert ok, detail

    # the ML-DSA family switched off while a cluster presents ML-DSA leaves: refused up front (its servers' leaves
    # would not chain to the bundle), naming the option, and nothing changed
    off = dict(rs.stack.inventory_vars()["ca_rotation_pki"])
    off["mldsa"] = dict(off["mldsa"], enabled=False)
    before = rs.ca_file_sha256s(), Path(pq_server["ca_file"]).read_bytes()
    refused = rs.playbook("rotate.yml", extra_vars={"ca_rotation_pki": off})
    assert refused["rc"] != 0, refused["stdout"][-3000:]
    assert "cluster host pq: ca_rotation_nats_reload_leaf_family is mldsa" in refused["stdout"], refused["stdout"][-3000:]
    assert (rs.ca_file_sha256s(), Path(pq_server["ca_file"]).read_bytes()) == before

"""Recovery after an outage longer than the validity: the rotator does not run for 2 x the validity, so every
intermediate, every server leaf and the announcer's leaf it issued has expired; ONE rotate.yml run must converge,
traffic flows again and the JetStream messages acked before the outage are all consumed after it.

Private stacks with 10 s epochs valid two epochs (20 s), so that the outages stay short; every wait is computed from the schedule and the certificates."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import ssl
import time
from pathlib import Path

import pytest
from conftest import converged, default_issuer_trusted, read_state
from cryptography import x509
from rotation_harness import RotationStack, Traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCH = 10
VALIDITY = 2 * EPOCH
STREAM = "OUTAGE"
DURABLE = "outage-consumer"


@pytest.fixture
def ors(tmp_path):
    rs = RotationStack(tmp_path / "stack", epoch_duration=f"{EPOCH}s", validity=f"{VALIDITY}s")
    try:
        yield rs
    finally:
        rs.down()


def _not_after(path) -> float:
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.not_valid_after_utc.timestamp()


def _leaf_files(rs):
    return [s["cert_file"] for s in rs.servers] + [rs.info["nats_auth"]["client_cert_file"]]


def _outage(rs, last_run_ended: float) -> float:
    """Stop rotating for 2 x the validity after the last run; returns the outage's length in seconds.

    The wait is the schedule's (validity from the stack's epoch parameters), and it is checked against the certificates:
    by its end every server leaf and the announcer's leaf has expired."""
    validity = int(rs.info["epoch"]["validity"])
    end = last_run_ended + 2 * validity
    latest_leaf = max(_not_after(p) for p in _leaf_files(rs))
    assert latest_leaf < end, "a leaf outlives the outage: the case would prove nothing"
    time.sleep(max(0.0, end - time.time()))
    now = time.time()
    assert all(_not_after(p) < now for p in _leaf_files(rs))
    return now - last_run_ended


def _tls(rs):
    auth = rs.info["nats_auth"]
    ctx = ssl.create_default_context(cafile=rs.info["pki"]["root_pem_file"])
    ctx.load_cert_chain(auth["client_cert_file"], auth["client_key_file"])
    return ctx


async def _connect(rs):
    import nats  # pylint: disable=import-outside-toplevel
    auth = rs.info["nats_auth"]
    password = Path(auth["app_password_file"]).read_text(encoding="utf-8").strip()
    servers = [s["url"] for s in rs.servers]
    return await nats.connect(servers, tls=_tls(rs), tls_hostname="127.0.0.1", user="app", password=password,
                              connect_timeout=5, max_reconnect_attempts=2, name="outage-test")


async def _close(nc):
    try:
        await asyncio.wait_for(nc.close(), timeout=10)
    except Exception:  # noqa: BLE001 - closing is best effort (nats-py can hang after a failed handshake)
        pass


async def _publish(rs, count, tag):
    """``count`` messages published and acked by JetStream (R3); returns their stream sequences."""
    nc = await _connect(rs)
    try:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[f"{STREAM.lower()}.>"], num_replicas=3)
        await js.pull_subscribe(f"{STREAM.lower()}.>", durable=DURABLE)  # the durable consumer exists before the messages
        seqs = []
        for i in range(count):
            ack = await js.publish(f"{STREAM.lower()}.msg", f"{tag}-{i}".encode(), timeout=10)
            seqs.append(ack.seq)
        return seqs
    finally:
        await _close(nc)


async def _consume(rs, wanted, timeout=60):
    """Fetch from the durable consumer until every sequence in ``wanted`` was delivered (and acked)."""
    nc = await _connect(rs)
    try:
        psub = await nc.jetstream().pull_subscribe(f"{STREAM.lower()}.>", durable=DURABLE)
        got = set()
        deadline = time.monotonic() + timeout
        while not set(wanted) <= got and time.monotonic() < deadline:
            try:
                msgs = await psub.fetch(100, timeout=1)
            except asyncio.TimeoutError:
                continue
            for msg in msgs:
                got.add(msg.metadata.sequence.stream)
                await msg.ack()
        return got
    finally:
        await _close(nc)


def _recovery(rs, run, workdir):
    """ONE run converged: every server holds its bundle, the default issuer is trusted everywhere and current."""
    report = converged(rs, run)
    results = default_issuer_trusted(rs, workdir)
    assert all(ok for ok, _detail in results.values()), results
    schedule_now = int(time.time())
    assert rs.default_issuer_epoch() >= schedule_now // EPOCH - 1, "the default issuer is not the current epoch"
    state, _version = read_state(rs)
    assert (state.get("lock") or {}).get("holder") is None, state.get("lock")
    assert all(_not_after(p) > time.time() for p in _leaf_files(rs)), "a leaf is still expired"
    return report


def test_outage_of_twice_the_validity_one_run_recovers_under_traffic(ors, tmp_path, record_property):
    first = ors.playbook("rotate.yml")
    assert first["rc"] == 0, first["stdout"][-3000:]
    before = asyncio.run(_publish(ors, 50, "before"))
    assert len(before) == 50
    traffic = Traffic(ors, stream="OUTAGETRAFFIC", rate=20.0)  # long-lived connections through the whole case
    traffic.start()
    assert traffic.ready.wait(60) and not traffic.errors, traffic.errors
    outage = _outage(ors, time.time())
    run = ors.playbook("rotate.yml")
    record_property("outage_seconds", round(outage, 1))
    record_property("recovery_seconds", round(run["seconds"], 2))
    print(f"outage {outage:.1f} s (2 x validity {ors.info['epoch']['validity']} s); recovery run {run['seconds']:.2f} s")
    print("recovery run step timings:", json.dumps((run["report"] or {}).get("timings"), sort_keys=True))
    _recovery(ors, run, tmp_path / "leaf")
    consumed = asyncio.run(_consume(ors, before))
    assert set(before) <= consumed, sorted(set(before) - consumed)
    after = asyncio.run(_publish(ors, 20, "after"))  # new connections, with the renewed leaves: traffic flows again
    assert set(after) <= asyncio.run(_consume(ors, after))
    traffic.stop()
    assert not traffic.errors, traffic.errors[:5]
    assert set(traffic.acked) <= traffic.consumed
    again = ors.playbook("rotate.yml")
    converged(ors, again)


def test_lock_of_a_killed_run_that_outlives_the_leaves(ors, tmp_path):
    # a run killed -9 leaves its lock; this one was taken with a TTL of ten validities (as a configuration without the
    # cap on the lock TTL would): after an outage of twice the validity it still looks active, and one run recovers
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import utcnow
    first = ors.playbook("rotate.yml")
    assert first["rc"] == 0, first["stdout"][-3000:]
    validity = int(ors.info["epoch"]["validity"])
    assert _state.acquire_lock(ors.bao(), "killed-run", 10 * validity, utcnow())["acquired"]
    _outage(ors, time.time())
    lock = read_state(ors)[0]["lock"]
    assert lock["holder"] == "killed-run"
    assert datetime.datetime.fromisoformat(lock["expires_at"].replace("Z", "+00:00")).timestamp() > time.time()
    run = ors.playbook("rotate.yml")
    _recovery(ors, run, tmp_path / "leaf")


def test_too_long_lock_ttl_is_capped_to_one_epoch(ors):
    run = ors.playbook("rotate.yml", extra_vars={"ca_rotation_authority_lock_ttl": "1h"})
    assert run["rc"] == 0, run["stdout"][-3000:]
    assert "ca_rotation_authority_lock_ttl" in run["stdout"] and "capped" in run["stdout"], run["stdout"][-3000:]


def test_outage_with_leaves_issued_by_someone_else_stops_with_one_instruction(ors, tmp_path):
    first = ors.playbook("rotate.yml")
    assert first["rc"] == 0, first["stdout"][-3000:]
    _outage(ors, time.time())
    unmanaged = {"ca_rotation_nats_reload_renew_leaves": False}
    before = {s["name"]: Path(s["ca_file"]).read_text(encoding="utf-8") for s in ors.servers}
    run = ors.playbook("rotate.yml", extra_vars=unmanaged)
    assert run["rc"] != 0
    report = run["report"]
    assert report and report["ok"] is False
    text = run["stdout"]
    assert "expired" in text and "issuer/epoch-" in text, text[-3000:]
    assert (read_state(ors)[0].get("lock") or {}).get("holder") is None
    assert {s["name"]: Path(s["ca_file"]).read_text(encoding="utf-8") for s in ors.servers} == before, "nothing is delivered"
    # the instruction: issue each server a leaf from the named issuer, install it, run rotate.yml again
    issuer = re.search(r"issuer/(epoch-\d+)/", text).group(1)
    for server in ors.servers:
        data = ors.bao().write_data(f"{ors.info['pki']['int_mount']}/issuer/{issuer}/issue/{ors.info['pki']['role']}",
                                    data={"common_name": server["name"], "alt_names": "localhost",
                                          "ip_sans": "127.0.0.1"})["data"]
        Path(server["cert_file"]).write_text(data["certificate"].strip() + "\n" + data["issuing_ca"].strip() + "\n", encoding="utf-8")
        Path(server["key_file"]).write_text(data["private_key"].strip() + "\n", encoding="utf-8")
    run = ors.playbook("rotate.yml", extra_vars=unmanaged)
    converged(ors, run)
    results = default_issuer_trusted(ors, tmp_path / "leaf")
    assert all(ok for ok, _detail in results.values()), results


# ---------------------------------------------------------------- every failure releases the lock and writes the report
# (issue 16, item 2; on the module's 20 s stack ``frs``): a step before the finish step that fails as a task drops its
# host from the later plays, so the finish step would not release the lock or write the report.

def _lock_holder(rs):
    return (read_state(rs)[0].get("lock") or {}).get("holder")


def test_failure_in_the_activate_step_releases_the_lock_and_writes_the_report(frs):
    # a value that is bad only when the activate step reads it (after the authority step, before activation's result)
    bad = {"ca_rotation_activate_enabled": "{{ 'bad' if (ca_rotation_authority_result is defined and "
                                           "ca_rotation_activation_result is not defined) else true }}"}
    run = frs.playbook("rotate.yml", extra_vars=bad)
    assert run["rc"] != 0, run["stdout"][-3000:]
    report = run["report"]
    assert report is not None, "no run report: the finish step did not run"
    assert report["ok"] is False and "ca_rotation_activate_enabled" in (report["activation_error"] or ""), report
    assert "ca_rotation_activate_enabled" in run["stdout"]
    assert _lock_holder(frs) is None, "the lock is still held"
    converged(frs, frs.playbook("rotate.yml"))


def test_undefined_variable_in_the_authority_step_is_reported_and_changes_nothing(frs):
    before = read_state(frs)
    run = frs.playbook("rotate.yml", extra_vars={"ca_rotation_authority_nats": "{{ no_such_variable_anywhere }}"})
    assert run["rc"] != 0
    report = run["report"]
    assert report is not None, "no run report: the finish step did not run"
    assert report["ok"] is False and "no_such_variable_anywhere" in report["error"] and "Nothing was changed" in report["error"]
    assert read_state(frs) == before, "not even the lock was taken"


def test_cluster_step_that_crashes_fails_the_run_and_releases_the_lock(frs):
    # bad only once the authority step has a result: in the cluster step (and in the activate step that reads it)
    bad = {"ca_rotation_nats_reload_reload_timeout": "{{ no_such_variable_anywhere if "
                                                     "hostvars['authority']['ca_rotation_authority_result'] is defined else 30 }}"}
    run = frs.playbook("rotate.yml", extra_vars=bad)
    assert run["rc"] != 0, run["stdout"][-3000:]
    report = run["report"]
    assert report is not None, "no run report: the finish step did not run"
    assert report["ok"] is False and report["clusters"]["local"]["ok"] is False, report
    assert "no_such_variable_anywhere" in report["clusters"]["local"]["error"]
    assert _lock_holder(frs) is None, "the lock is still held"
    converged(frs, frs.playbook("rotate.yml"))

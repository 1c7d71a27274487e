"""Soak: ``playbooks/rotate.yml``, run by ansible-playbook as a user would, for SOAK_EPOCHS (default 100) consecutive
epochs of 10 s (valid 40 s, lead time 2 s) on a private 3-node mTLS cluster under continuous JetStream load.

Scheduling - a timer on the schedule's phase boundaries: a run starts at each epoch's preparation
(start - lead time) and at each epoch's start; a boundary that passes while a run is still going starts the next
run as soon as that one ends (never two runs at once, passed boundaries coalesce into one run, as a convergent
playbook allows). No wait assumes how long a run takes: waits are computed from the schedule, conditions are polled.

Load - an R3 stream with a publisher (acked publishes) and a durable pull consumer, both on nats-0; the stream's and
the consumer's leaders are moved to nats-0 first, so that stopping another server (below) stops only a follower.
A pull that fails meanwhile (JetStream can answer 503) is retried, as a client would, and counted; a publish whose
acknowledgement times out is sent again with its ``Nats-Msg-Id`` (deduplicated by the stream), counted, and allowed
only while the injected fault has a server stopped.

Observer (tests/soak/soak_observer.py) - knows only OpenBao and NATS: issues its own leaf from every ``epoch-<n>``
issuer and samples leaf-only handshakes of each against every server every lead time (a server accepts a leaf-only
handshake only if that epoch's intermediate is in its CA file), and reads the default issuer around each sample.

In the middle: one ``rollback.yml`` run (right after an epoch's preparation, so it takes the prepared epoch back out)
followed by the resuming run (``-e ca_rotation_release_hold=true``); later one automatic rollback (a rotate.yml run
during whose reload a follower nats-server is SIGSTOPped, with reload/propagation timeouts of one lead time). Both
must converge on the next run.

Required: every run's report ok (the injected run's: failed and rolled back), 0 lost messages, 0 reconnects, every
valid epoch accepted by every server from the end of the first good run after it was due until it expires (epochs
newer than a rollback's restored one excepted while that rollback lasts), every expired epoch refused, the default
issuer accepted by every server at every sample. Prints one line of figures and writes them to soak-summary.json
in the test's tmp dir.

    make soak                      # SOAK_EPOCHS=100, about 17 minutes
    make soak-short                # SOAK_EPOCHS=5 (part of make test)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from rotation_harness import RotationStack, Traffic  # noqa: E402  pylint: disable=wrong-import-position
from soak_observer import LeafObserver, Schedule, judge  # noqa: E402  pylint: disable=wrong-import-position

EPOCHS = int(os.environ.get("SOAK_EPOCHS", "100"))
DURATION = 10
STREAM, CONSUMER = "SOAK", "e2e-consumer"   # the stream Traffic uses, and its durable consumer's name
ANNOUNCE_STREAM = "METADATA_CA_CLIENT"

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.timeout(EPOCHS * DURATION * 3 + 600)]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _poll(cond, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def _good(run) -> bool:
    rep = run.get("report") or {}
    return run["rc"] == 0 and rep.get("ok") is True and not rep.get("locked_out")


def _why(run) -> str:
    rep = run.get("report") or {}
    return (f"{run['playbook']} ({run['kind']}) rc={run['rc']} ok={rep.get('ok')} error={rep.get('error')!r} "
            f"msg={rep.get('msg')!r}\n{run['stdout'][-2500:]}\n{run['stderr'][-1000:]}")


class JetStreamAdmin:
    """Short-lived connections (never the traffic's) for stream setup and leader placement."""

    def __init__(self, rs: RotationStack, server: dict):
        self.rs, self.server = rs, server
        auth = rs.info["nats_auth"]
        self.password = Path(auth["app_password_file"]).read_text().strip()

    def _tls(self):
        auth = self.rs.info["nats_auth"]
        ctx = ssl.create_default_context(cafile=self.rs.info["pki"]["root_pem_file"])
        ctx.load_cert_chain(auth["client_cert_file"], auth["client_key_file"])
        return ctx

    def _call(self, fn):
        async def main():
            import nats  # pylint: disable=import-outside-toplevel
            nc = await nats.connect([self.server["url"]], tls=self._tls(), tls_hostname="127.0.0.1", user="app",
                                    password=self.password, allow_reconnect=False, name="soak-admin")
            try:
                return await fn(nc, nc.jetstream())
            finally:
                await nc.close()
        return asyncio.run(main())

    def create_stream(self):
        from nats.js import api  # pylint: disable=import-outside-toplevel

        async def go(_nc, js):
            # the same stream Traffic asks for (add_stream is idempotent), and the durable it binds to
            await js.add_stream(name=STREAM, subjects=[f"{STREAM.lower()}.>"], num_replicas=3)
            await js.add_consumer(STREAM, api.ConsumerConfig(durable_name=CONSUMER, name=CONSUMER, filter_subject=f"{STREAM.lower()}.>",
                                                             ack_policy=api.AckPolicy.EXPLICIT))
        self._call(go)

    def leaders(self) -> dict:
        async def go(_nc, js):
            out = {}
            for key, info in ((STREAM, lambda: js.stream_info(STREAM)), (f"{STREAM}/{CONSUMER}", lambda: js.consumer_info(STREAM, CONSUMER)),
                              (ANNOUNCE_STREAM, lambda: js.stream_info(ANNOUNCE_STREAM))):
                try:
                    out[key] = (await info()).cluster.leader
                except Exception:  # noqa: BLE001 - no leader right now (an election), or no such stream yet
                    out[key] = None
            return out
        return self._call(go)

    def move_leaders(self, to: str, which=(STREAM, f"{STREAM}/{CONSUMER}")) -> dict:
        """Ask the leaders of ``which`` to step down in favour of server ``to``; poll until they have."""
        subjects = {STREAM: f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}", f"{STREAM}/{CONSUMER}": f"$JS.API.CONSUMER.LEADER.STEPDOWN.{STREAM}.{CONSUMER}",
                    ANNOUNCE_STREAM: f"$JS.API.STREAM.LEADER.STEPDOWN.{ANNOUNCE_STREAM}"}

        async def stepdown(nc, _js, key):
            try:
                await nc.request(subjects[key], json.dumps({"placement": {"preferred": to}}).encode(), timeout=5)
            except Exception:  # noqa: BLE001 - polled below
                pass

        for key in which:
            for _attempt in range(5):
                if self.leaders().get(key) == to:
                    break
                self._call(lambda nc, js, k=key: stepdown(nc, js, k))
                _poll(lambda k=key: self.leaders().get(k) is not None, timeout=15, interval=0.2)
        return self.leaders()


def test_soak_rotate_yml_under_load(tmp_path):
    assert EPOCHS >= 5, "the soak needs at least 5 epochs (a rollback and an automatic rollback in the middle)"
    rs = RotationStack(tmp_path / "soak", epoch_duration=f"{DURATION}s")
    sched = Schedule.from_info(rs.info["epoch"])
    assert (sched.duration, sched.validity, sched.lead) == (DURATION, 4 * DURATION, DURATION // 4), rs.info["epoch"]
    servers = rs.servers
    names = [s["name"] for s in servers]
    home = servers[0]                                   # where the traffic's clients and the stream's leaders live
    runs: list[dict] = []
    failures: list[str] = []
    exempt: list[tuple[float, float, int]] = []         # (from, to, newest epoch trusted) around each rollback
    events: dict = {}
    traffic = observer = None
    admin = JetStreamAdmin(rs, home)
    logs = tmp_path / "runs"           # every run's output, for a failure's post-mortem
    logs.mkdir()
    # the safe margin a rollback must leave the servers' and the announcer's certificates: one epoch
    min_validity = sched.duration

    def run(playbook, kind, extra=None):
        started = time.time()
        r = rs.playbook(playbook, extra_vars=extra)
        r.update(kind=kind, started=started, ended=time.time())
        runs.append(r)
        (logs / f"run-{len(runs):03d}-{kind}-{Path(playbook).stem}.log").write_text(
            f"rc={r['rc']} seconds={r['seconds']:.2f}\n{r['stdout']}\n--- stderr\n{r['stderr']}\n")
        return r

    def converged(r, what):
        """The run was good and every server's CA file holds its bundle."""
        if not _good(r):
            failures.append(f"{what}: " + _why(r))
            return False
        shas = {_sha(s["ca_file"]) for s in servers}
        if shas != {r["report"]["bundle_sha256"]}:
            failures.append(f"{what}: CA files {sorted(shas)} != the run's bundle {r['report']['bundle_sha256']}")
            return False
        return True

    try:
        admin.create_stream()
        placed = admin.move_leaders(home["name"])
        events["leaders_at_start"] = placed
        traffic = Traffic(rs, stream=STREAM, rate=50.0, servers=[home["url"]], fetch_retry=True, publish_retry=3)
        traffic.start()
        assert traffic.ready.wait(60), traffic.errors
        observer = LeafObserver(rs, tmp_path / "observer", sched, interval=sched.lead, handshake_timeout=DURATION / 2)
        observer.start()

        first = run("rotate.yml", "bootstrap")
        assert _good(first), _why(first)
        first_epoch = int(first["report"]["current_epoch"])
        target = first_epoch + EPOCHS
        rollback_due = first_epoch + max(1, EPOCHS // 3)     # rollback.yml after the preparation of rollback_due + 1 ...
        fault_due = first_epoch + max(3, (2 * EPOCHS) // 3)  # ... the automatic rollback from the preparation of fault_due + 1
        give_up = sched.start(target) + max(5, EPOCHS // 10) * sched.duration  # the rollback windows never came
        last_fire = first["started"]

        while True:
            default = rs.default_issuer_epoch()
            if default is not None and default >= target and _good(runs[-1]) and "rollback" in events and "fault" in events:
                break
            if time.time() > give_up:
                failures.append(f"the soak ran {max(5, EPOCHS // 10)} epochs past its planned end without finishing: {events}")
                break
            if len([r for r in runs[-3:] if r["kind"] == "scheduled" and not _good(r)]) == 3:
                failures.append("three scheduled runs failed in a row; stopping")
                break
            # the timer: the next phase boundary after the last firing (at once if a run overran it)
            fire = sched.next_boundary(last_fire)
            delay = fire - time.time()
            if delay > 0:
                time.sleep(delay)
            last_fire = max(fire, time.time())

            if "rollback" in events and "fault" not in events and fire >= sched.prepare(fault_due + 1):
                result = _inject_stopped_server(rs, admin, observer, sched, run, home)
                events.setdefault("fault_attempts", []).append({k: v for k, v in result.items() if k != "run"})
                r = result["run"]
                if result["stopped"] and not _good(r):
                    events["fault"] = result
                    rep = r["report"] or {}
                    cluster = (rep.get("clusters") or {}).get("local") or {}
                    checks = {"rc != 0": r["rc"] != 0, "report not ok": rep.get("ok") is False, "cluster not ok": cluster.get("ok") is False,
                              "not reloaded": cluster.get("reloaded") is False,
                              "every CA file back on the previous bundle": result["shas_after"] == {result["sha_before"]},
                              "nothing activated": result["default_after"] == result["default_before"]}
                    events["fault"]["checks"] = checks
                    if not all(checks.values()):
                        failures.append(f"automatic rollback: {checks}\n" + _why(r))
                    # convergence: the next run, at once
                    healed = run("rotate.yml", "recovery")
                    converged(healed, "the run after the automatic rollback")
                    exempt.append((r["started"], healed["ended"], result["newest_before"]))
                    events["fault_window"] = (r["started"], healed["ended"])
                elif len(events["fault_attempts"]) >= 3:
                    failures.append(f"could not stop a server during a reload in 3 attempts: {events['fault_attempts']}")
                    events["fault"] = result
                elif not _good(r):
                    failures.append("a run with no server stopped failed: " + _why(r))
                continue

            r = run("rotate.yml", "scheduled")
            if not _good(r):
                failures.append("scheduled run: " + _why(r))
                continue
            if "rollback" not in events and r["started"] >= sched.prepare(rollback_due + 1):
                # a user rolls back to the previous generation right after a preparation, then resumes rotation. The
                # restored epoch (newest - 1) must still have min_validity left once the rollback has run (the product
                # refuses otherwise) and outlive the resuming run, which renews the leaves the rollback issued from it
                # (each run estimated by the longest of the last three good runs), else wait for the next preparation
                newest = int(r["report"]["epoch"])
                longest = max(x["seconds"] for x in [x for x in runs if x["playbook"] == "rotate.yml" and _good(x)][-3:])
                left = sched.expiry(newest - 1) - time.time()
                if left < longest + max(min_validity, longest):
                    events.setdefault("rollback_postponed", []).append(
                        {"epoch": newest - 1, "left_s": round(left, 1), "longest_run_s": round(longest, 1)})
                    rollback_due = sched.epoch(time.time()) + 1
                    fault_due = max(fault_due, rollback_due + 2)
                    continue
                rb = run("rollback.yml", "rollback", {"ca_rotation_rollback_min_validity": min_validity})
                rb_shas = {_sha(s["ca_file"]) for s in servers}
                rb_default = rs.default_issuer_epoch()
                rel = run("rotate.yml", "release", {"ca_rotation_release_hold": True})
                rep = rb.get("report") or {}
                restored = rep.get("epoch")
                events["rollback"] = {"prepared": newest, "restored_epoch": restored, "default_after": rb_default,
                                      "kind": rep.get("kind"), "hold": rep.get("hold"), "msg": rep.get("msg"),
                                      "seconds": round(rb["seconds"], 2), "left_s": round(left, 1)}
                if not _good(rb):
                    failures.append("rollback.yml: " + _why(rb))
                else:
                    checks = {"restored an earlier bundle": restored is not None and int(restored) < newest,
                              "every CA file holds it": rb_shas == {rep.get("bundle_sha256")},
                              "default issuer not after it": rb_default is not None and rb_default <= int(restored),
                              "held": (rep.get("hold") or {}).get("epoch") == restored}
                    events["rollback"]["checks"] = checks
                    if not all(checks.values()):
                        failures.append(f"rollback.yml: {checks}")
                converged(rel, "the run releasing the rollback hold")
                exempt.append((rb["started"], rel["ended"], int(restored) if restored is not None else newest - 1))
                fault_due = max(fault_due, sched.epoch(time.time()) + 1)

        # the final state is sampled at least twice by the observer before it stops
        rounds = observer.rounds
        assert _poll(lambda: observer.rounds >= rounds + 2, timeout=DURATION * 2), "the observer stalled"
        end = time.time()
        rs_default_at_end = rs.default_issuer_epoch() or first_epoch
        observer.stop()
        traffic.stop()
    finally:
        if observer is not None and observer.is_alive():
            observer.stop()
        if traffic is not None and traffic.is_alive():
            traffic.stop()
        rs.down()

    # ---------------------------------------------------------------- verdict
    def ok_rotate(r):
        return r["playbook"] == "rotate.yml" and r["kind"] in ("bootstrap", "scheduled", "release", "recovery") and _good(r)

    last = max(first_epoch, rs_default_at_end)
    span = range(first_epoch + 1, last + 1)
    good = [r for r in runs if ok_rotate(r)]
    # from the schedule and the measured runs: a good run that started once epoch n was due (its preparation) makes
    # every server trust n from the run's end until n expires; a good run that lay wholly inside [prepare(n), start(n+1))
    # (or [start(n), start(n+1))) must have issued n (activated n). An epoch no run reached in time may be skipped
    # (a convergent run goes straight to what is due now): counted, not required.
    required_from = {}
    for n in range(first_epoch, last + 2):
        ends = [r["ended"] for r in good if r["started"] >= sched.prepare(n)]
        if ends:
            required_from[n] = min(ends)
    due_issue = [n for n in span if any(r["started"] >= sched.prepare(n) and r["ended"] <= sched.start(n + 1) for r in good)]
    due_activate = [n for n in span if any(r["started"] >= sched.start(n) and r["ended"] <= sched.start(n + 1) for r in good)]
    issued = set(observer.leaves)
    required = [n for n in span if (n in issued or n in due_issue) and n in required_from
                and required_from[n] < sched.expiry(n) - 2 * observer.interval]
    verdict = judge(observer.samples, sched, names, required_from, exempt, required, end - 2 * observer.interval)
    violations = verdict.violations + [f"observer: {e}" for e in observer.errors]
    violations += [f"epoch {n} was due while a good run ran start to end, but was never issued" for n in due_issue if n not in issued]
    defaults_seen = {d for _t, d in observer.defaults if d is not None}
    activated = {int(r["report"]["activated_epoch"]) for r in runs if r.get("report") and r["report"].get("activated_epoch") is not None}
    never_default = [n for n in span if n not in defaults_seen | activated]
    missing_epochs = [n for n in never_default if n in due_activate]
    skipped = [n for n in span if n not in issued]

    rotate_times = sorted(r["seconds"] for r in runs if ok_rotate(r))
    kinds: dict = {}
    for r in runs:
        kinds[f"{r['playbook']}:{r['kind']}"] = kinds.get(f"{r['playbook']}:{r['kind']}", 0) + 1
    acked, consumed = len(traffic.acked), len(traffic.consumed)
    lost = len(set(traffic.acked) - traffic.consumed)
    # a publish acknowledged late (and sent again with its Nats-Msg-Id) is allowed only while a server was stopped and
    # for one publish timeout after it resumed (its peers catch it up)
    fault_from, fault_to = events.get("fault_window") or (0.0, 0.0)
    fault_to += Traffic.PUBLISH_TIMEOUT
    retries_outside = [x for x in traffic.publish_retries if not fault_from <= x[0] <= fault_to]
    figures = {
        "epochs": EPOCHS, "epoch_duration_s": sched.duration, "validity_s": sched.validity, "lead_time_s": sched.lead,
        "first_epoch": first_epoch, "last_epoch": last, "epochs_rotated": len(span), "epochs_issued": len(set(span) & issued),
        "epochs_activated": len(span) - len(never_default), "epochs_skipped": skipped, "epochs_not_activated": never_default,
        "runs": len(runs), "runs_by_kind": kinds, "runs_ok": sum(_good(r) for r in runs),
        "rotate_yml_s": {"min": round(rotate_times[0], 2), "median": round(statistics.median(rotate_times), 2),
                         "max": round(rotate_times[-1], 2)} if rotate_times else None,
        "messages_acked": acked, "messages_consumed": consumed, "messages_lost": lost,
        "stream_messages": getattr(traffic, "stream_messages", None), "stream_last_seq": getattr(traffic, "stream_last_seq", None),
        "traffic_errors": traffic.errors[:5], "reconnects": traffic.reconnects,
        "publish_retries": len(traffic.publish_retries), "publish_retries_outside_fault": len(retries_outside),
        "publish_retries_first": traffic.publish_retries[:5],
        "consumer_fetch_errors": len(traffic.fetch_errors), "consumer_fetch_errors_first": traffic.fetch_errors[:5],
        "disconnects": getattr(traffic, "disconnects_during", traffic.disconnects),
        **verdict.summary(), "violations": len(violations), "observer_rounds": observer.rounds,
        "rollback": events.get("rollback"), "automatic_rollback": {k: v for k, v in (events.get("fault") or {}).items() if k != "run"},
        "failures": [f.splitlines()[0][:300] for f in failures], "violations_first": violations[:10],
        "load_average": os.getloadavg(),
    }
    summary = tmp_path / "soak-summary.json"
    summary.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")
    rt = figures["rotate_yml_s"] or {}
    print(f"\nsoak: {len(span)} epochs of {sched.duration}s ({figures['epochs_issued']} issued, {figures['epochs_activated']} activated), "
          f"{len(runs)} runs ({figures['runs_ok']} ok; "
          f"{', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), messages {acked} acked / {consumed} consumed / {lost} lost, "
          f"{traffic.reconnects} reconnects ({len(traffic.fetch_errors)} pulls, {len(traffic.publish_retries)} publishes retried), "
          f"handshakes {verdict.accepted} accepted / {verdict.refused} refused "
          f"({verdict.refused_expired} expired, {verdict.refused_exempt} during rollbacks) / {verdict.errors} errors, "
          f"{verdict.default_checks} default-issuer checks, {len(violations)} violations, "
          f"rotate.yml {rt.get('min')}/{rt.get('median')}/{rt.get('max')} s min/median/max, load {figures['load_average'][0]:.1f}; {summary}")
    for line in (failures + violations)[:15]:
        print("  " + line.splitlines()[0][:300])

    assert failures == [], "\n\n".join(failures[:5])
    assert violations == [], violations[:10]
    assert missing_epochs == [], f"epochs never activated although a good run lay within their term: {missing_epochs}"
    assert "rollback" in events and "fault" in events and events["fault"].get("stopped"), events
    assert traffic.errors == [], traffic.errors[:5]
    assert retries_outside == [], f"publishes retried outside the stopped-server window: {retries_outside[:5]}"
    assert traffic.reconnects == 0 and figures["disconnects"] == 0
    assert acked > 0 and lost == 0
    assert traffic.stream_messages == acked == traffic.stream_last_seq
    assert verdict.expired_epochs >= 1


def _inject_stopped_server(rs, admin, observer, sched, run, home) -> dict:
    """A rotate.yml run during whose reload a follower nats-server is SIGSTOPped.

    The victim holds no traffic client and no leader of the traffic's stream/consumer (so the load never waits for it).
    It is stopped the moment its CA file changes (the run has delivered and is reloading; reload and propagation
    timeouts of one lead time), and resumed once the automatic rollback has put the previous bundle back in its CA
    file (or the run has ended), so that the rollback can reload it.
    """
    leaders = admin.leaders()
    busy = {leaders.get(STREAM), leaders.get(f"{STREAM}/{CONSUMER}")}
    candidates = [s for s in rs.servers if s["name"] != home["name"] and s["name"] not in busy]
    if not candidates:
        leaders = admin.move_leaders(home["name"])
        busy = {leaders.get(STREAM), leaders.get(f"{STREAM}/{CONSUMER}")}
        candidates = [s for s in rs.servers if s["name"] != home["name"] and s["name"] not in busy]
    assert candidates, f"every server other than {home['name']} leads the traffic's stream or consumer: {leaders}"
    candidates.sort(key=lambda s: s["name"] == leaders.get(ANNOUNCE_STREAM))
    victim = candidates[0]
    sha_before = {_sha(s["ca_file"]) for s in rs.servers}
    before = Path(victim["ca_file"]).read_bytes()
    default_before = rs.default_issuer_epoch()
    newest_before = max((int(r["report"]["epoch"]) for r in reversed(rs.runs) if _good_plain(r)), default=None)
    extra = {"ca_rotation_nats_reload_reload_timeout": sched.lead, "ca_rotation_nats_reload_propagation_timeout": sched.lead}
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(run=run("rotate.yml", "fault", extra)))
    stopped = stopped_at = resumed_at = None
    thread.start()
    try:
        if _poll(lambda: Path(victim["ca_file"]).read_bytes() != before or not thread.is_alive(), timeout=600, interval=0.002) \
                and thread.is_alive():
            observer.skip.add(victim["name"])
            os.kill(victim["pid"], signal.SIGSTOP)
            stopped, stopped_at = True, time.time()
            # it comes back once the rollback has put the previous bundle back in its CA file (or the run is over)
            _poll(lambda: Path(victim["ca_file"]).read_bytes() == before or not thread.is_alive(), timeout=600, interval=0.01)
            os.kill(victim["pid"], signal.SIGCONT)
            resumed_at = time.time()
        thread.join()
    finally:
        if stopped and resumed_at is None:
            os.kill(victim["pid"], signal.SIGCONT)
            resumed_at = time.time()
        observer.skip.discard(victim["name"])
    return {"run": holder["run"], "victim": victim["name"], "leaders": leaders, "stopped": bool(stopped),
            "stopped_s": round(resumed_at - stopped_at, 2) if stopped else None,
            "sha_before": next(iter(sha_before)) if len(sha_before) == 1 else sorted(sha_before),
            "shas_after": {_sha(s["ca_file"]) for s in rs.servers}, "default_before": default_before,
            "default_after": rs.default_issuer_epoch(), "newest_before": newest_before,
            "rc": holder["run"]["rc"], "seconds": round(holder["run"]["seconds"], 2),
            "msg": ((holder["run"].get("report") or {}).get("msg") or "")[:300]}


def _good_plain(r) -> bool:
    return r.get("report") is not None and r["playbook"] == "rotate.yml" and _good(r)

"""Evidence benchmark: the rotation measured side by side in one run (a benchmark, not a test: no assertions).

  1. rotate.yml wall time on the embedded 3-node stack (20 s epochs), per play and per task (a timing callback written at run time),
     with an ansible-playbook start-up baseline (one debug task) to show the fixed cost of Ansible itself;
  2. a no-op run (second run in the same phase, ``ca_rotation_now`` pinned);
  3. client disruption: JetStream publish latency p50/p99 while rotate.yml runs vs steady state, reconnects,
     disconnects, lost messages (acked but never consumed);
  4. the floor: the same steps called directly from Python through module_utils (issue intermediate, build
     bundle, deliver to the servers' CA files, build + sign the announcement, publish it, reload + prove);
  5. three clusters of 3 vs one cluster of 3 (rotate.yml, first run and no-op);
  6. reload + verify for 3 vs 30 servers (bench/bench_reload.py's ``bench_size``, signal + system transports).

Results: bench/results/evidence.json, evidence.md and evidence.png (when matplotlib is importable).

    python bench/bench_evidence.py                 # everything (about 5-8 minutes on 2 cores)
    BENCH_ROTATE_RUNS=4 BENCH_SKIP=reload python bench/bench_evidence.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

from catools import ensure_collection_importable  # noqa: E402  pylint: disable=wrong-import-position

ensure_collection_importable()
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".build" / "collections"))

# pylint: disable=wrong-import-position
import bench_reload  # noqa: E402
from helpers import ansible_env, ansible_playbook  # noqa: E402
from rotation_harness import RotationStack, Traffic  # noqa: E402

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import (  # noqa: E402
    _bundle, _epoch, _message, _nats, _openbao, _reload,
)

RESULTS = REPO / "bench" / "results"
ROTATE_RUNS = int(os.environ.get("BENCH_ROTATE_RUNS", "6"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
TARGETS = {"rotate_s": 3.0, "noop_s": 2.0, "reload_30_over_3": 2.0, "lost": 0, "reconnects": 0}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pct(values, p):
    return bench_reload.percentile(values, p) if values else None


TIMING_CALLBACK = r'''
from __future__ import annotations
import json, os, time
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: bench_timing
    type: aggregate
    short_description: per-play and per-task wall times as JSON lines (bench only)
    description: [Writes one JSON line per finished task to $BENCH_TIMING_FILE.]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_timing'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.out = open(os.environ['BENCH_TIMING_FILE'], 'a', encoding='utf-8')
        self.play = None
        self.task = None
        self.t0 = None
        self.changed = False
        self.skipped = True

    def _emit(self, doc):
        self.out.write(json.dumps(doc) + chr(10))
        self.out.flush()

    def _flush(self):
        if self.task is not None:
            self._emit({'play': self.play, 'task': self.task, 'start': self.t0, 'end': time.time(),
                        'changed': self.changed, 'skipped': self.skipped})
        self.task = None

    def v2_playbook_on_play_start(self, play):
        self._flush()
        self.play = play.get_name()
        self._emit({'play_start': self.play, 't': time.time()})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._flush()
        self.task, self.t0, self.changed, self.skipped = task.get_name(), time.time(), False, True

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _result(self, result, skipped=False):
        self.changed = self.changed or bool(result._result.get('changed'))
        self.skipped = self.skipped and skipped

    def v2_runner_on_ok(self, result):
        self._result(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result)

    def v2_runner_on_skipped(self, result):
        self._result(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        self._flush()
        self._emit({'end': time.time()})
'''


def run_playbook(base: Path, inventory: Path, name="rotate.yml", extra=None, tag="run"):
    """ansible-playbook (default output) plus a timing callback: wall time, rc, run report and per-task durations."""
    cb_dir = base / "callback_plugins"
    if not (cb_dir / "bench_timing.py").exists():
        cb_dir.mkdir(parents=True, exist_ok=True)
        (cb_dir / "bench_timing.py").write_text(TIMING_CALLBACK)
    stamp = time.monotonic_ns()
    report = base / f"report-{tag}-{stamp}.json"
    timing = base / f"timing-{tag}-{stamp}.jsonl"
    extra_vars = {"ca_rotation_report_file": str(report)}
    extra_vars.update(extra or {})
    env = ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(cb_dir), ANSIBLE_CALLBACKS_ENABLED="bench_timing", BENCH_TIMING_FILE=str(timing))
    started = time.monotonic()
    t0 = time.time()
    proc = ansible_playbook(REPO / "playbooks" / name, inventory=inventory, extra_vars=extra_vars, env=env)
    seconds = time.monotonic() - started
    t_end = time.time()
    plays, tasks, first = [], [], None
    events = [json.loads(line) for line in timing.read_text().splitlines()] if timing.exists() else []
    play_starts = [(e["play_start"], e["t"]) for e in events if "play_start" in e]
    ends = [e["end"] for e in events if "end" in e and "task" not in e]
    if play_starts:
        first = play_starts[0][1]
        bounds = [start for _name, start in play_starts[1:]] + [ends[0] if ends else t_end]
        plays = [{"play": n, "seconds": b - t} for (n, t), b in zip(play_starts, bounds)]
    for e in events:
        if "task" in e:
            tasks.append({"play": e["play"], "task": e["task"], "seconds": e["end"] - e["start"], "changed": e["changed"], "skipped": e["skipped"]})
    rep = json.loads(report.read_text()) if report.exists() else None
    return {"rc": proc.returncode, "seconds": seconds, "wall_start": t0, "wall_end": t_end, "report": rep,
            "changed": bool(rep and rep.get("changed")), "plays": plays, "tasks": tasks,
            "startup_seconds": (first - t0) if first else None,
            "shutdown_seconds": (t_end - ends[0]) if ends else None, "stdout": proc.stdout[-3000:]}


def ansible_baseline(base: Path):
    """ansible-playbook start-up + one trivial task: the fixed cost before any rotation work."""
    pb = base / "noop-play.yml"
    pb.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n")
    times = []
    for _attempt in range(3):
        started = time.monotonic()
        ansible_playbook(pb, "-i", "localhost,", "-c", "local")
        times.append(time.monotonic() - started)
    return {"runs": times, "median_s": statistics.median(times)}


def wait_for_phase_change(schedule, margin=0.5):
    """Sleep until just after the next preparation or epoch start, so the next run has work to do."""
    now = datetime.now(timezone.utc)
    nxt = min(schedule.next_preparation(now), schedule.start(schedule.epoch(now) + 1))
    delay = (nxt - now).total_seconds() + margin
    if delay > 0:
        time.sleep(delay)


def floor_steps(rs: RotationStack, iterations=3):
    """The rotation steps straight from Python on the same stack (future epochs, so every step does real work)."""
    info = rs.info
    pki = info["pki"]
    token = Path(info["openbao"]["token_file"]).read_text().strip()
    client = _openbao.connect({"url": info["openbao"]["addr"], "token": token})
    schedule = _epoch.EpochSchedule.from_params(dict(info["epoch"]))
    servers = rs.servers
    auth = info["nats_auth"]
    nats_params = {"servers": [s["url"] for s in servers], "ca_file": pki["root_pem_file"], "cert_file": auth["client_cert_file"],
                   "key_file": auth["client_key_file"], "user": auth["app_user"], "password_file": auth["app_password_file"]}
    signer = _message.transit_signer(client, pki["transit_mount"], pki["transit_key"])
    name, wanted = _nats.stream_options({"name": "METADATA_CA_CLIENT", "subjects": ["metadata.client.ca-cert"], "replicas": 3})
    rows = []
    for k in range(iterations):
        # intermediates are issued at most one epoch ahead: remove the next epoch's issuer and issue it again
        now = datetime.now(timezone.utc)
        epoch = schedule.epoch(now)
        _openbao.remove_epoch_intermediate(client, pki["int_mount"], epoch + 1)
        step = {}
        t = time.perf_counter()
        _openbao.ensure_epoch_intermediate(client, schedule, epoch, root_mount=pki["root_mount"], int_mount=pki["int_mount"],
                                           cn_prefix=pki["cn_prefix"], now=now)
        _openbao.ensure_epoch_intermediate(client, schedule, epoch + 1, root_mount=pki["root_mount"], int_mount=pki["int_mount"],
                                           cn_prefix=pki["cn_prefix"], now=now)
        step["issue_intermediates"] = time.perf_counter() - t
        t = time.perf_counter()
        bundle = _bundle.bundle_from_openbao(client, schedule, now, int_mount=pki["int_mount"], root_mount=pki["root_mount"])
        step["build_bundle"] = time.perf_counter() - t
        t = time.perf_counter()
        for s in servers:
            _bundle.deliver_file(s["ca_file"], bundle["pem"])
        step["deliver_files"] = time.perf_counter() - t
        t = time.perf_counter()
        certs = bundle["certificates"]
        msg = _message.build_announcement(epoch=bundle["epoch"], generation=10_000 + k, kind="rotation", bundle_pem=bundle["pem"],
                                          certificates=certs, kv_location=f"secret/ca-bundles/epoch-{bundle['epoch']}",
                                          valid_from=max(c["not_before"] for c in certs), valid_until=min(c["not_after"] for c in certs),
                                          created_at=datetime.now(timezone.utc))
        msg = _message.sign_announcement(msg, signer)
        step["build_sign_message"] = time.perf_counter() - t
        t = time.perf_counter()

        async def pub(message=msg):  # pylint: disable=dangerous-default-value
            nc = await _nats.connect(nats_params)
            try:
                deadline = _nats.Deadline(30)
                await _nats.ensure_stream(nc, name, wanted, deadline)
                return await _nats.publish(nc, "metadata.client.ca-cert", _message.canonical_json(message), deadline,
                                           msg_id=_message.msg_id(message), stream=name)
            finally:
                await _nats.close(nc)
        _nats.run(pub())
        step["publish"] = time.perf_counter() - t
        t = time.perf_counter()
        targets = [{k2: s[k2] for k2 in ("name", "pid_file", "ca_file", "monitor_url", "log_file", "url")} for s in servers]
        transport = _reload.LocalTransport("signal", targets)
        try:
            result = _reload.reload_servers(transport, expect_sha256=bundle["sha256"], reload_timeout=30,
                                            probe={"cert_file": auth["client_cert_file"], "key_file": auth["client_key_file"],
                                                   "ca_file": pki["root_pem_file"]})
        finally:
            transport.close()
        step["reload_prove"] = time.perf_counter() - t
        step["reload_failed"] = bool(result["failed"])
        step["total"] = sum(v for key, v in step.items() if not key.endswith("failed"))
        rows.append(step)
        log("  floor iteration %d: %.2fs" % (k, step["total"]))
    return rows


def multi_cluster_inventory(rs: RotationStack):
    names = [c["name"] for c in rs.info["clusters"]]
    hosts = ["all:", "  children:", "    ca_authority:", "      hosts:", "        authority:",
             "          ca_rotation_authority_nats_servers_cluster: %s" % names[0], "    nats_clusters:", "      hosts:"]
    for n in names:
        hosts += [f"        {n}:", "          ca_rotation_nats_reload_transport: signal",
                  f"          ca_rotation_nats_reload_targets: \"{{{{ ca_rotation_nats_clusters.{n}.members }}}}\"",
                  "          ca_rotation_nats_reload_renew_leaves: true"]
    (rs.inventory / "hosts.yml").write_text("---\n" + "\n".join(hosts) + "\n")
    main = rs.inventory / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text().replace("ca_rotation_nats_clusters.local.servers", f"ca_rotation_nats_clusters.{names[0]}.servers"))


def summarize_runs(runs):
    return {"n": len(runs), "median_s": statistics.median([r["seconds"] for r in runs]) if runs else None,
            "min_s": min((r["seconds"] for r in runs), default=None), "max_s": max((r["seconds"] for r in runs), default=None)}


def task_profile(runs, top=12):
    per_task = defaultdict(list)
    per_play = defaultdict(list)
    for r in runs:
        for t in r["tasks"]:
            per_task[f"{t['play'][:30]} / {t['task']}"].append(t["seconds"])
        for p in r["plays"]:
            per_play[p["play"]].append(p["seconds"])
    tasks = sorted(({"task": k, "mean_s": statistics.mean(v), "runs": len(v)} for k, v in per_task.items()),
                   key=lambda x: -x["mean_s"])
    plays = [{"play": k, "mean_s": statistics.mean(v)} for k, v in per_play.items()]
    return {"plays": plays, "top_tasks": tasks[:top], "task_count": len(per_task)}


def main():  # noqa: C901  pylint: disable=too-many-locals,too-many-statements
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"started_at": datetime.now(timezone.utc).isoformat(), "targets": TARGETS, "host": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        tmp = Path(tmp)
        log("== ansible-playbook baseline")
        out["ansible_baseline"] = ansible_baseline(tmp)
        log("   %.2fs" % out["ansible_baseline"]["median_s"])

        log("== 3-node stack, 20 s epochs")
        rs = RotationStack(tmp / "one", epoch_duration="20s")
        schedule = _epoch.EpochSchedule.from_params(dict(rs.info["epoch"]))
        try:
            traffic = Traffic(rs, stream="BENCH")
            traffic.start()
            traffic.ready.wait(30)
            first = run_playbook(tmp, rs.inventory, tag="first")
            log("   first run %.2fs rc=%d" % (first["seconds"], first["rc"]))
            time.sleep(5)  # steady state window before rotating
            runs = []
            for i in range(ROTATE_RUNS):
                wait_for_phase_change(schedule)
                run = run_playbook(tmp, rs.inventory, tag=f"rot{i}")
                runs.append(run)
                log("   rotate run %d: %.2fs rc=%d changed=%s" % (i, run["seconds"], run["rc"], run["changed"]))
            time.sleep(3)
            pinned = {"ca_rotation_now": int(time.time())}
            run_playbook(tmp, rs.inventory, extra=pinned, tag="noop-prep")
            noops = [run_playbook(tmp, rs.inventory, extra=pinned, tag=f"noop{i}") for i in range(3)]
            log("   no-op runs: %s" % ", ".join("%.2fs" % r["seconds"] for r in noops))
            time.sleep(5)  # steady state window after
            traffic.stop()
            windows = [(r["wall_start"], r["wall_end"]) for r in [first] + runs + noops]
            inside = [lat for t, lat in traffic.samples if any(a <= t <= b for a, b in windows)]
            outside = [lat for t, lat in traffic.samples if not any(a - 1 <= t <= b + 1 for a, b in windows)]
            lost = len(set(traffic.acked) - traffic.consumed)
            out["disruption"] = {
                "published_acked": len(traffic.acked), "consumed": len(traffic.consumed), "lost": lost,
                "publish_errors": len(traffic.errors), "errors": traffic.errors[:5],
                "reconnects": traffic.reconnects, "disconnects": traffic.disconnects_during,
                "during_rotation": {"n": len(inside), "p50_ms": pct(inside, 50), "p99_ms": pct(inside, 99), "max_ms": max(inside, default=None)},
                "steady_state": {"n": len(outside), "p50_ms": pct(outside, 50), "p99_ms": pct(outside, 99), "max_ms": max(outside, default=None)},
            }
            changed = [r for r in runs if r["changed"] and r["rc"] == 0]
            out["rotate_one_cluster"] = {"first": {"seconds": first["seconds"], "rc": first["rc"]},
                                         "changed_runs": summarize_runs(changed),
                                         "all_runs": [{"seconds": r["seconds"], "rc": r["rc"], "changed": r["changed"],
                                                       "reloaded": bool(r["report"] and any(c.get("reloaded") for c in r["report"]["clusters"].values())),
                                                       "activated": (r["report"] or {}).get("activated_epoch"),
                                                       "startup_s": r["startup_seconds"]} for r in runs],
                                         "profile": task_profile(changed or runs)}
            out["noop"] = {**summarize_runs(noops), "changed": [r["changed"] for r in noops],
                           "changed_tasks": [[t["task"] for t in r["tasks"] if t["changed"]] for r in noops],
                           "profile": task_profile(noops)}
            log("== floor (module_utils from Python)")
            try:
                floor = floor_steps(rs)
            except Exception as exc:  # noqa: BLE001 - keep the other figures
                log("   floor failed: %r" % exc)
                floor = [{"total": float("nan"), "error": repr(exc)}]
            out["floor"] = {"iterations": floor, "median_total_s": statistics.median(r["total"] for r in floor),
                            "median_steps_s": {k: statistics.median(r[k] for r in floor) for k in floor[0] if k not in ("reload_failed", "error")}}
        finally:
            rs.down()

        if "clusters" not in SKIP:
            log("== three clusters of 3")
            rs3 = RotationStack(tmp / "three", epoch_duration="20s", clusters=(("a", 3), ("b", 3), ("c", 3)))
            try:
                multi_cluster_inventory(rs3)
                first3 = run_playbook(tmp, rs3.inventory, tag="three-first")
                log("   first run %.2fs rc=%d %s" % (first3["seconds"], first3["rc"], "" if first3["rc"] == 0 else first3["stdout"][-800:]))
                runs3 = []
                for i in range(2):
                    wait_for_phase_change(schedule)
                    runs3.append(run_playbook(tmp, rs3.inventory, tag=f"three{i}"))
                pinned = {"ca_rotation_now": int(time.time())}
                run_playbook(tmp, rs3.inventory, extra=pinned, tag="three-noop-prep")
                noop3 = [run_playbook(tmp, rs3.inventory, extra=pinned, tag=f"three-noop{i}") for i in range(2)]
                out["three_clusters"] = {"first": {"seconds": first3["seconds"], "rc": first3["rc"],
                                                   "clusters_ok": {k: v.get("ok") for k, v in ((first3["report"] or {}).get("clusters") or {}).items()}},
                                         "changed_runs": summarize_runs([r for r in runs3 if r["changed"] and r["rc"] == 0]),
                                         "rotate_runs": [{"seconds": r["seconds"], "rc": r["rc"], "changed": r["changed"]} for r in runs3],
                                         "noop": summarize_runs(noop3), "profile": task_profile([r for r in runs3 if r["rc"] == 0] or runs3)}
            finally:
                rs3.down()

        if "reload" not in SKIP:
            log("== reload + verify, 3 vs 30 servers (bench_reload.bench_size)")
            rows = []
            for size in (3, 30):
                rows.extend(bench_reload.bench_size(size, ["signal", "system"], 3, tmp / "reload", log))
            out["reload"] = rows

    out["finished_at"] = datetime.now(timezone.utc).isoformat()
    (RESULTS / "evidence.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    md = render_markdown(out)
    (RESULTS / "evidence.md").write_text(md)
    print(md)
    plot(out)
    return 0


def _f(v, fmt="%.2f"):
    return "-" if v is None else fmt % v


def render_markdown(out):  # pylint: disable=too-many-locals
    lines = ["# Rotation evidence benchmark", "", f"Measured {out['started_at']} on {out['host']['cpus']} CPUs "
             "(OpenBao dev server + nats-server on 127.0.0.1, 20 s epochs).", "",
             "| measurement | value | target | met |", "| --- | --- | --- | --- |"]
    rot = out.get("rotate_one_cluster", {})
    ch = rot.get("changed_runs", {})
    noop = out.get("noop", {})
    dis = out.get("disruption", {})
    fl = out.get("floor", {})
    lines.append(f"| ansible-playbook start-up + 1 debug task | {_f(out['ansible_baseline']['median_s'])} s | - | - |")
    lines.append(f"| floor: rotation steps from Python (median) | {_f(fl.get('median_total_s'))} s | - | - |")
    if ch.get("median_s") is not None:
        lines.append(f"| rotate.yml, changing run, 3 nodes (median of {ch['n']}; min {_f(ch['min_s'])}, max {_f(ch['max_s'])}) | "
                     f"{_f(ch['median_s'])} s | <= 3 s | {'yes' if ch['median_s'] <= 3 else 'NO'} |")
    lines.append(f"| rotate.yml first run (issues 2 intermediates) | {_f(rot.get('first', {}).get('seconds'))} s | - | - |")
    if noop.get("median_s") is not None:
        lines.append(f"| no-op run, pinned now (median of {noop['n']}; changed={noop['changed']}) | {_f(noop['median_s'])} s | <= 2 s | "
                     f"{'yes' if noop['median_s'] <= 2 else 'NO'} |")
    if dis:
        lines.append(f"| publish latency steady p50 / p99 | {_f(dis['steady_state']['p50_ms'], '%.1f')} / {_f(dis['steady_state']['p99_ms'], '%.1f')} ms "
                     f"(n={dis['steady_state']['n']}) | - | - |")
        lines.append(f"| publish latency during rotate.yml p50 / p99 | {_f(dis['during_rotation']['p50_ms'], '%.1f')} / "
                     f"{_f(dis['during_rotation']['p99_ms'], '%.1f')} ms (n={dis['during_rotation']['n']}) | - | - |")
        lost_ok = 'yes' if dis['lost'] == 0 else 'NO'
        lines.append(f"| lost messages (acked {dis['published_acked']}, consumed {dis['consumed']}) | {dis['lost']} | 0 | {lost_ok} |")
        lines.append(f"| reconnects / disconnects / publish errors | {dis['reconnects']} / {dis['disconnects']} / {dis['publish_errors']} | 0 | "
                     f"{'yes' if dis['reconnects'] == 0 and dis['disconnects'] == 0 and dis['publish_errors'] == 0 else 'NO'} |")
    three = out.get("three_clusters")
    if three:
        c3 = three["changed_runs"]
        one_first = _f(rot.get('first', {}).get('seconds'))
        lines.append(f"| rotate.yml first run, 3 clusters x 3 vs 1 x 3 | {_f(three['first']['seconds'])} s vs {one_first} s | - | - |")
        lines.append(f"| rotate.yml changing run, 3 clusters (median of {c3['n']}) vs 1 | {_f(c3['median_s'])} s vs {_f(ch.get('median_s'))} s | - | - |")
        lines.append(f"| no-op run, 3 clusters vs 1 | {_f(three['noop']['median_s'])} s vs {_f(noop.get('median_s'))} s | - | - |")
    rel = out.get("reload")
    if rel:
        by = {(r["servers"], r["transport"]): r for r in rel}
        for tr in ("signal", "system"):
            if (3, tr) in by and (30, tr) in by:
                a, b = by[(3, tr)]["run_ms_median"], by[(30, tr)]["run_ms_median"]
                lines.append(f"| reload + verify {tr}: 30 vs 3 servers (median) | {b:.0f} ms vs {a:.0f} ms = {b / a:.2f}x | <= 2x | "
                             f"{'yes' if b / a <= 2 else 'NO'} |")
    if fl:
        lines += ["", "## Floor: steps from Python (median seconds)", "", "| step | s |", "| --- | --- |"]
        lines += [f"| {k} | {v:.3f} |" for k, v in fl["median_steps_s"].items()]
    if rot.get("profile"):
        lines += ["", "## rotate.yml profile (changing runs, mean seconds)", "", "| play | s |", "| --- | --- |"]
        lines += [f"| {p['play']} | {p['mean_s']:.2f} |" for p in rot["profile"]["plays"]]
        lines += ["", f"Slowest tasks (of {rot['profile']['task_count']}):", "", "| task | s |", "| --- | --- |"]
        lines += [f"| {t['task']} | {t['mean_s']:.2f} |" for t in rot["profile"]["top_tasks"]]
        starts = [r["startup_s"] for r in rot["all_runs"] if r.get("startup_s") is not None]
        if starts:
            lines += ["", f"ansible-playbook start-up before the first play (inventory, collection loading): median {statistics.median(starts):.2f} s"]
    if noop.get("profile"):
        lines += ["", "## no-op profile (mean seconds)", "", "| task | s |", "| --- | --- |"]
        lines += [f"| {t['task']} | {t['mean_s']:.2f} |" for t in noop["profile"]["top_tasks"][:8]]
    if rel:
        lines += ["", "## reload + verify (bench_reload)", "", "| servers | transport | run median ms | reload p50 ms | reload p95 ms | failed rounds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['servers']} | {r['transport']} | {r['run_ms_median']:.0f} | {r['reload_ms_p50']:.0f} | "
                  f"{r['reload_ms_p95']:.0f} | {r['failed_rounds']} |"
                  for r in rel]
    return "\n".join(lines) + "\n"


def plot(out):
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        log("matplotlib not installed: no PNG")
        return
    labels, values, targets = [], [], []
    rot = out.get("rotate_one_cluster", {})
    for label, value, target in (
        ("ansible start-up", out["ansible_baseline"]["median_s"], None),
        ("floor (Python)", out.get("floor", {}).get("median_total_s"), None),
        ("rotate.yml 1x3", rot.get("changed_runs", {}).get("median_s"), 3.0),
        ("no-op", out.get("noop", {}).get("median_s"), 2.0),
        ("rotate.yml 3x3", (out.get("three_clusters") or {}).get("changed_runs", {}).get("median_s"), None),
    ):
        if value is not None:
            labels.append(label)
            values.append(value)
            targets.append(target)
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(labels, values, color=["#888", "#4a4", "#48c", "#48c", "#84c"][:len(values)])
    for rect, target in zip(bars, targets):
        if target:
            ax.hlines(target, rect.get_x(), rect.get_x() + rect.get_width(), colors="red", linestyles="dashed")
    ax.set_ylabel("seconds (median)")
    ax.set_title("CA rotation: wall time (red dashes: targets)")
    for rect, v in zip(bars, values):
        ax.text(rect.get_x() + rect.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(RESULTS / "evidence.png", dpi=90)
    log("wrote %s" % (RESULTS / "evidence.png"))


if __name__ == "__main__":
    sys.exit(main())

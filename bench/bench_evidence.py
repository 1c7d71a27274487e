"""Evidence benchmark: the rotation engine measured side by side with its floor in one run (a benchmark, not a
test: it prints figures, it asserts nothing).

  1. Ansible's own cost: ansible-playbook start-up with 1 play of one debug task, and with 5 plays of one debug
     task each on the same inventory as rotate.yml (its 5 plays: the fairer floor for Ansible itself);
  2. rotate.yml on the embedded 3-node stack (20 s epochs), changing runs (just after a phase change) under
     JetStream traffic: wall time, CPU seconds and peak RSS of the ansible-playbook process tree, per play and
     per task (a timing callback written at run time), tasks and module processes per run, and the engine's
     per-step ``timings`` from the run report (plan, lock, issue, bundle, store, announce, deliver, reload,
     record, activate, renew, ...);
  3. a no-op run (``ca_rotation_now`` pinned, second run in the same phase): wall and CPU seconds;
  4. client disruption while rotate.yml runs: JetStream publish latency p50/p99 vs steady state, reconnects,
     disconnects, lost messages (acked but never consumed);
  5. rollback.yml (each followed, after the next phase change, by a rotate.yml that releases the hold);
  6. the floor: the rotation steps called directly from Python through module_utils (issue intermediate, build
     bundle, deliver to the servers' CA files, build + sign the announcement, publish it, reload + prove);
     rotate.yml, no-op and rollback are each shown as a ratio to it;
  7. 10 emulated clusters of 3 servers (JetStream only on the first, which carries the announcements) vs 1
     cluster of 3: changing rotate.yml runs with the same ``forks``;
  8. reload + verify for 3 vs 30 servers (bench/bench_reload.py's ``bench_size``, signal + system transports).

CPU seconds and peak memory come from ``os.wait4`` on the ansible-playbook process: the kernel's rusage of that
process and every descendant it reaped (the same figures as ``getrusage(RUSAGE_CHILDREN)`` deltas around the
subprocess). ``ru_maxrss`` is the largest resident set of any one process of that tree. Module processes are
counted through a Python interpreter wrapper passed as ``ansible_python_interpreter``: each module Ansible runs
on a host starts it once; the engine's controller-side action plugins start none.

Results: bench/results/evidence.json, evidence.md and evidence.png (when matplotlib is importable).

    python bench/bench_evidence.py                 # everything (about 8-12 minutes on 2 cores)
    BENCH_ROTATE_RUNS=2 BENCH_SKIP=reload python bench/bench_evidence.py
    knobs: BENCH_ROTATE_RUNS (6), BENCH_NOOP_RUNS (3), BENCH_QUIET_RUNS (2), BENCH_ROLLBACK_RUNS (3),
           BENCH_CLUSTERS (10), BENCH_CLUSTER_RUNS (3), BENCH_FORKS (10),
           BENCH_SKIP (comma-separated: rollback, floor, clusters, reload)
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import pkgutil
import statistics
import subprocess
import sys
import tempfile
import threading
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
import rotation_harness  # noqa: E402
from catools.localstack import LocalStack  # noqa: E402
from helpers import ansible_env  # noqa: E402
from rotation_harness import RotationStack, Traffic  # noqa: E402

MU = "ansible_collections.securetransport.ca_rotation.plugins.module_utils"
RESULTS = REPO / "bench" / "results"
ROTATE_RUNS = int(os.environ.get("BENCH_ROTATE_RUNS", "6"))
NOOP_RUNS = int(os.environ.get("BENCH_NOOP_RUNS", "3"))
QUIET_RUNS = int(os.environ.get("BENCH_QUIET_RUNS", "2"))
ROLLBACK_RUNS = int(os.environ.get("BENCH_ROLLBACK_RUNS", "3"))
CLUSTERS = int(os.environ.get("BENCH_CLUSTERS", "10"))
CLUSTER_RUNS = int(os.environ.get("BENCH_CLUSTER_RUNS", "3"))
FORKS = int(os.environ.get("BENCH_FORKS", "10"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
TARGETS = {"rotate_s": 3.0, "noop_s": 1.5, "noop_cpu_s": 1.5, "rollback_s": 3.0, "over_floor_x": 10.0,
           "clusters_10_over_1_x": 1.5, "reload_30_over_3_x": 2.0, "lost": 0, "reconnects": 0}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pct(values, p):
    return bench_reload.percentile(values, p) if values else None


def load():
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------- module_utils
def mu(name):
    """A module_utils module by its short name (``_openbao``...), whether it is a module or (after a
    reorganisation) a package."""
    return importlib.import_module(f"{MU}.{name}")


def fn(module, attr):
    """``module.attr``, else the first submodule of the package ``module`` that defines it (modules are being
    moved into packages: follow them instead of breaking the bench)."""
    mod = mu(module)
    if hasattr(mod, attr):
        return getattr(mod, attr)
    for info in pkgutil.walk_packages(getattr(mod, "__path__", []), prefix=mod.__name__ + "."):
        sub = importlib.import_module(info.name)
        if hasattr(sub, attr):
            return getattr(sub, attr)
    raise AttributeError(f"{module}.{attr} not found in {mod.__name__} or its submodules")


def epoch_schedule(info):
    return fn("_epoch", "EpochSchedule").from_params(dict(info["epoch"]))


# ---------------------------------------------------------------------------------------------- measured runs
def run_measured(argv, env, timeout=900, cwd=REPO):
    """Run ``argv`` to completion; wall seconds plus the rusage of its whole process tree (os.wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        wall_start = time.time()
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)  # pylint: disable=consider-using-with
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _pid, status, ru = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "seconds": seconds, "wall_start": wall_start, "wall_end": time.time(),
                "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "cpu_s": ru.ru_utime + ru.ru_stime,
                "maxrss_mb": ru.ru_maxrss / 1024.0,
                "stdout": out.read().decode("utf-8", "replace"), "stderr": err.read().decode("utf-8", "replace")}


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
        self.results = 0

    def _emit(self, doc):
        self.out.write(json.dumps(doc) + chr(10))
        self.out.flush()

    def _flush(self):
        if self.task is not None:
            self._emit({'play': self.play, 'task': self.task, 'action': self.action, 'start': self.t0, 'end': time.time(),
                        'changed': self.changed, 'skipped': self.skipped, 'results': self.results})
        self.task = None

    def v2_playbook_on_play_start(self, play):
        self._flush()
        self.play = play.get_name()
        self._emit({'play_start': self.play, 't': time.time()})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._flush()
        self.task, self.action, self.t0, self.changed, self.skipped, self.results = (
            task.get_name(), task.action, time.time(), False, True, 0)

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _result(self, result, skipped=False):
        self.results += 1
        self.changed = self.changed or bool(result._result.get('changed'))
        self.skipped = self.skipped and (skipped or bool(result._result.get('skipped')))

    def v2_runner_on_ok(self, result):
        self._result(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result)

    def v2_runner_on_skipped(self, result):
        self._result(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._result(result)

    def v2_playbook_on_stats(self, stats):
        self._flush()
        self._emit({'end': time.time()})
'''


class Runner:
    """ansible-playbook with the timing callback and the module-counting interpreter, ``-f FORKS``."""

    def __init__(self, base: Path):
        self.base = base
        self.cb_dir = base / "callback_plugins"
        self.cb_dir.mkdir(parents=True, exist_ok=True)
        (self.cb_dir / "bench_timing.py").write_text(TIMING_CALLBACK)
        # every module process Ansible starts on a (local) host runs this interpreter once
        self.python = base / "bench-python"
        self.python.write_text('#!/bin/sh\n[ -n "$BENCH_MODULE_LOG" ] && echo "$$ $*" >> "$BENCH_MODULE_LOG"\n'
                               f'exec "{sys.executable}" "$@"\n')
        self.python.chmod(0o755)

    def run(self, playbook: Path, inventory, extra=None, tag="run", args=()):
        stamp = time.monotonic_ns()
        report = self.base / f"report-{tag}-{stamp}.json"
        timing = self.base / f"timing-{tag}-{stamp}.jsonl"
        modules = self.base / f"modules-{tag}-{stamp}.log"
        extra_vars = {"ca_rotation_report_file": str(report), "ansible_python_interpreter": str(self.python)}
        extra_vars.update(extra or {})
        env = ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(self.cb_dir), ANSIBLE_CALLBACKS_ENABLED="bench_timing",
                          BENCH_TIMING_FILE=str(timing), BENCH_MODULE_LOG=str(modules), ANSIBLE_FORKS=str(FORKS))
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook), "-i", str(inventory),
                "-f", str(FORKS), "-e", json.dumps(extra_vars), *args]
        proc = run_measured(argv, env)
        events = [json.loads(line) for line in timing.read_text().splitlines()] if timing.exists() else []
        plays, tasks = [], []
        play_starts = [(e["play_start"], e["t"]) for e in events if "play_start" in e]
        ends = [e["end"] for e in events if "end" in e and "task" not in e]
        first = play_starts[0][1] if play_starts else None
        if play_starts:
            bounds = [start for _name, start in play_starts[1:]] + [ends[0] if ends else proc["wall_end"]]
            plays = [{"play": n, "seconds": b - t} for (n, t), b in zip(play_starts, bounds)]
        for e in events:
            if "task" in e:
                tasks.append({"play": e["play"], "task": e["task"], "action": e.get("action"), "seconds": e["end"] - e["start"],
                              "changed": e["changed"], "skipped": e["skipped"], "results": e.get("results", 0)})
        rep = None
        if report.exists():
            try:
                rep = json.loads(report.read_text())
            except ValueError:
                rep = None
        module_lines = modules.read_text().splitlines() if modules.exists() else []
        out = dict(proc)
        out.update({"tag": tag, "report": rep, "changed": bool(rep and rep.get("changed")), "ok": bool(rep and rep.get("ok")),
                    "plays": plays, "tasks": tasks, "task_count": len(tasks),
                    "host_results": sum(t["results"] for t in tasks), "module_processes": len(module_lines),
                    "startup_seconds": (first - proc["wall_start"]) if first else None,
                    "shutdown_seconds": (proc["wall_end"] - ends[0]) if ends else None,
                    "steps": step_times(rep), "stdout": proc["stdout"][-3000:], "stderr": proc["stderr"][-2000:]})
        return out


def short(run):
    """What the JSON keeps of one run."""
    keys = ("tag", "rc", "seconds", "cpu_s", "user_s", "sys_s", "maxrss_mb", "changed", "ok", "task_count", "host_results",
            "module_processes", "startup_seconds", "shutdown_seconds", "steps")
    out = {k: run.get(k) for k in keys}
    rep = run.get("report") or {}
    out.update(current_epoch=rep.get("current_epoch"), activated=rep.get("activated_epoch"), kind=rep.get("kind"),
               reloaded=bool(rep and any(c.get("reloaded") for c in (rep.get("clusters") or {}).values())))
    if run.get("rc"):
        out["stdout_tail"] = run["stdout"][-1500:]
    return out


def step_times(report):
    """The run report's ``timings`` flattened to ``{section/step: s}``; cluster steps are the slowest cluster's
    (clusters run in parallel forks), plus ``engine`` = authority + activation + the slowest cluster's total."""
    if not report or not isinstance(report.get("timings"), dict):
        return {}
    timings = report["timings"]
    out = {}
    for section in ("authority", "activation"):
        for step, s in (timings.get(section) or {}).items():
            out[f"{section}/{step}"] = float(s)
    clusters = {name: {k: float(v) for k, v in (steps or {}).items()} for name, steps in (timings.get("clusters") or {}).items()}
    for step in sorted({k for steps in clusters.values() for k in steps}):
        out[f"cluster/{step}"] = max(steps.get(step, 0.0) for steps in clusters.values())
    out["engine"] = (sum(v for k, v in out.items() if not k.startswith("cluster/"))
                     + max((sum(steps.values()) for steps in clusters.values()), default=0.0))
    return out


def mean_steps(runs):
    """Mean seconds per step over ``runs`` (a step that did not run counts as 0), in the order first seen."""
    keys = []
    for r in runs:
        for k in r.get("steps") or {}:
            if k not in keys:
                keys.append(k)
    return {k: statistics.mean((r.get("steps") or {}).get(k, 0.0) for r in runs) for k in keys} if runs else {}


def summarize_runs(runs):
    if not runs:
        return {"n": 0, "median_s": None, "mean_s": None, "min_s": None, "max_s": None}

    def med(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None
    return {"n": len(runs), "median_s": med("seconds"), "mean_s": statistics.mean(r["seconds"] for r in runs), "min_s": min(r["seconds"] for r in runs),
            "max_s": max(r["seconds"] for r in runs), "median_cpu_s": med("cpu_s"), "median_user_s": med("user_s"),
            "median_sys_s": med("sys_s"), "max_cpu_s": max(r["cpu_s"] for r in runs),
            "median_maxrss_mb": med("maxrss_mb"), "peak_maxrss_mb": max(r["maxrss_mb"] for r in runs),
            "tasks_per_run": sorted({r["task_count"] for r in runs}), "host_results_per_run": sorted({r["host_results"] for r in runs}),
            "module_processes_per_run": sorted({r["module_processes"] for r in runs}),
            "median_startup_s": med("startup_seconds"), "steps_mean_s": mean_steps(runs),
            "rc": [r["rc"] for r in runs], "changed": [r["changed"] for r in runs]}


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


# ---------------------------------------------------------------------------------------------- baselines
def ansible_baseline(runner: Runner):
    """ansible-playbook start-up + one trivial task on localhost: the fixed cost before any work."""
    pb = runner.base / "noop-play.yml"
    pb.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n")
    runs = [runner.run(pb, "localhost,", tag="baseline1", args=("-c", "local")) for _run in range(3)]
    return {**summarize_runs(runs), "runs": [r["seconds"] for r in runs]}


def five_play_baseline(runner: Runner, inventory: Path, tag="baseline5"):
    """rotate.yml's shape (5 plays: authority, clusters, authority, clusters, authority) with one debug task each,
    on the same inventory: Ansible's own cost of such a playbook (inventory, variables, forks, 5 plays)."""
    pb = runner.base / "five-plays.yml"
    groups = ("ca_authority", "nats_clusters", "ca_authority", "nats_clusters", "ca_authority")
    pb.write_text("".join(f"- name: play {i}\n  hosts: {g}\n  gather_facts: false\n  tasks:\n"
                          f"    - name: one debug task\n      ansible.builtin.debug:\n        msg: \"{{{{ inventory_hostname }}}}\"\n"
                          for i, g in enumerate(groups)))
    runs = [runner.run(pb, inventory, tag=tag) for _run in range(3)]
    bad = [r for r in runs if r["rc"]]
    if bad:
        log("   5-play baseline rc=%d: %s" % (bad[0]["rc"], bad[0]["stdout"][-500:]))
    return {**summarize_runs(runs), "runs": [r["seconds"] for r in runs]}


def wait_for_phase_change(schedule, margin=0.5):
    """Sleep until just after the next preparation or epoch start, so the next run has work to do."""
    now = datetime.now(timezone.utc)
    nxt = min(schedule.next_preparation(now), schedule.start(schedule.epoch(now) + 1))
    delay = (nxt - now).total_seconds() + margin
    if delay > 0:
        time.sleep(delay)


# ---------------------------------------------------------------------------------------------- floor
def floor_steps(rs: RotationStack, iterations=3):
    """The rotation steps straight from Python on the same stack (future epochs, so every step does real work)."""
    info = rs.info
    pki = info["pki"]
    token = Path(info["openbao"]["token_file"]).read_text().strip()
    client = fn("_openbao", "connect")({"url": info["openbao"]["addr"], "token": token})
    schedule = epoch_schedule(info)
    servers = rs.servers
    auth = info["nats_auth"]
    nats_params = {"servers": [s["url"] for s in servers], "ca_file": pki["root_pem_file"], "cert_file": auth["client_cert_file"],
                   "key_file": auth["client_key_file"], "user": auth["announcer_user"], "password_file": auth["announcer_password_file"]}
    signer = fn("_openbao", "transit_signer")(client, pki["transit_mount"], pki["transit_key"])
    nats = {k: fn("_nats", k) for k in ("stream_options", "connect", "Deadline", "ensure_stream", "publish", "close", "run")}
    canonical_json, msg_id = fn("_message", "canonical_json"), fn("_message", "msg_id")
    name, wanted = nats["stream_options"]({"name": "METADATA_CA_CLIENT", "subjects": ["metadata.client.ca-cert"], "replicas": 3})
    rows = []
    for k in range(iterations):
        # intermediates are issued at most one epoch ahead: remove the next epoch's issuer and issue it again
        now = datetime.now(timezone.utc)
        epoch = schedule.epoch(now)
        fn("_openbao", "remove_epoch_intermediate")(client, pki["int_mount"], epoch + 1)
        step = {}
        t = time.perf_counter()
        ensure = fn("_openbao", "ensure_epoch_intermediate")
        ensure(client, schedule, epoch, root_mount=pki["root_mount"], int_mount=pki["int_mount"], cn_prefix=pki["cn_prefix"], now=now)
        ensure(client, schedule, epoch + 1, root_mount=pki["root_mount"], int_mount=pki["int_mount"], cn_prefix=pki["cn_prefix"], now=now)
        step["issue_intermediates"] = time.perf_counter() - t
        t = time.perf_counter()
        bundle = fn("_bundle", "bundle_from_openbao")(client, schedule, now, int_mount=pki["int_mount"], root_mount=pki["root_mount"])
        step["build_bundle"] = time.perf_counter() - t
        t = time.perf_counter()
        for s in servers:
            fn("_bundle", "deliver_file")(s["ca_file"], bundle["pem"])
        step["deliver_files"] = time.perf_counter() - t
        t = time.perf_counter()
        certs = bundle["certificates"]
        msg = fn("_message", "build_announcement")(
            epoch=bundle["epoch"], generation=10_000 + k, kind="rotation", bundle_pem=bundle["pem"], certificates=certs,
            kv_location=f"secret/ca-bundles/epoch-{bundle['epoch']}", valid_from=max(c["not_before"] for c in certs),
            valid_until=min(c["not_after"] for c in certs), created_at=datetime.now(timezone.utc))
        msg = fn("_message", "sign_announcement")(msg, signer)
        step["build_sign_message"] = time.perf_counter() - t
        t = time.perf_counter()

        async def pub(message=msg):
            nc = await nats["connect"](nats_params)
            try:
                deadline = nats["Deadline"](30)
                await nats["ensure_stream"](nc, name, wanted, deadline)
                return await nats["publish"](nc, "metadata.client.ca-cert", canonical_json(message), deadline,
                                             msg_id=msg_id(message), stream=name)
            finally:
                await nats["close"](nc)
        nats["run"](pub())
        step["publish"] = time.perf_counter() - t
        t = time.perf_counter()
        targets = [{k2: s[k2] for k2 in ("name", "pid_file", "ca_file", "monitor_url", "log_file", "url")} for s in servers]
        transport = fn("_reload", "LocalTransport")("signal", targets)
        try:
            result = fn("_reload", "reload_servers")(transport, expect_sha256=bundle["sha256"], reload_timeout=30,
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


# ---------------------------------------------------------------------------------------------- many clusters
class _JetStreamFirstCluster(LocalStack):
    """A LocalStack whose first cluster alone runs JetStream (it carries the announcements); the others are plain
    mTLS clusters, which keeps 30 servers light on 2 cores."""

    def _nats_config(self, server, servers, cluster_name, *args, **kwargs):  # pylint: disable=arguments-differ
        keep = self.jetstream
        self.jetstream = keep and cluster_name == self.clusters[0][0]
        try:
            return super()._nats_config(server, servers, cluster_name, *args, **kwargs)
        finally:
            self.jetstream = keep


@contextlib.contextmanager
def _harness_stack_class(cls):
    saved = rotation_harness.LocalStack
    rotation_harness.LocalStack = cls
    try:
        yield
    finally:
        rotation_harness.LocalStack = saved


def many_clusters_stack(base: Path, n: int, size=3):
    """RotationStack of ``n`` clusters of ``size`` servers; JetStream on the first only when LocalStack's config
    rendering can be hooked (else everywhere). Returns (stack, where JetStream runs)."""
    clusters = tuple((f"c{i}", size) for i in range(n))
    if callable(getattr(LocalStack, "_nats_config", None)):
        with _harness_stack_class(_JetStreamFirstCluster):
            return RotationStack(base, epoch_duration="20s", clusters=clusters), "first cluster only"
    log("   LocalStack has no _nats_config hook: JetStream on every cluster")
    return RotationStack(base, epoch_duration="20s", clusters=clusters), "every cluster"


def multi_cluster_inventory(rs: RotationStack):
    """One inventory host per cluster (signal reload of its members, leaf renewal); the authority announces on the
    first cluster."""
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


# ---------------------------------------------------------------------------------------------- main
def _log_run(label, run):
    log("   %s: %.2fs cpu %.2fs rss %.0f MB rc=%d changed=%s tasks=%d modules=%d%s" % (
        label, run["seconds"], run["cpu_s"], run["maxrss_mb"], run["rc"], run["changed"], run["task_count"],
        run["module_processes"], "" if run["rc"] == 0 else "\n" + run["stdout"][-1200:] + run["stderr"][-600:]))


def main():  # noqa: C901  pylint: disable=too-many-locals,too-many-statements,too-many-branches
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"started_at": datetime.now(timezone.utc).isoformat(), "targets": TARGETS,
           "host": {"cpus": os.cpu_count(), "loadavg_start": load()}, "forks": FORKS, "loadavg": {},
           "settings": {"rotate_runs": ROTATE_RUNS, "noop_runs": NOOP_RUNS, "quiet_runs": QUIET_RUNS, "rollback_runs": ROLLBACK_RUNS,
                        "clusters": CLUSTERS, "cluster_runs": CLUSTER_RUNS, "skip": sorted(SKIP)}}
    log(f"== forks {FORKS} (ansible-playbook -f {FORKS}, ANSIBLE_FORKS={FORKS}); load {load()}")
    rotate_pb, rollback_pb = REPO / "playbooks" / "rotate.yml", REPO / "playbooks" / "rollback.yml"
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        tmp = Path(tmp)
        runner = Runner(tmp)
        log("== ansible-playbook baseline (1 play, 1 debug task, localhost)")
        out["ansible_baseline"] = ansible_baseline(runner)
        log("   %.2fs (cpu %.2fs)" % (out["ansible_baseline"]["median_s"], out["ansible_baseline"]["median_cpu_s"]))

        log("== 3-node stack, 20 s epochs")
        rs = RotationStack(tmp / "one", epoch_duration="20s")
        schedule = epoch_schedule(rs.info)
        try:
            out["five_play_baseline"] = five_play_baseline(runner, rs.inventory)
            log("   5-play baseline %.2fs (cpu %.2fs)" % (out["five_play_baseline"]["median_s"], out["five_play_baseline"]["median_cpu_s"]))
            out["loadavg"]["rotate"] = load()
            traffic = Traffic(rs, stream="BENCH")
            traffic.start()
            traffic.ready.wait(30)
            first = runner.run(rotate_pb, rs.inventory, tag="first")
            _log_run("first run", first)
            time.sleep(5)  # steady state window before rotating
            runs = []
            for i in range(ROTATE_RUNS):
                wait_for_phase_change(schedule)
                run = runner.run(rotate_pb, rs.inventory, tag=f"rot{i}")
                runs.append(run)
                _log_run(f"rotate run {i}", run)
            time.sleep(3)
            pinned = {"ca_rotation_now": int(time.time())}
            runner.run(rotate_pb, rs.inventory, extra=pinned, tag="noop-prep")
            noops = [runner.run(rotate_pb, rs.inventory, extra=pinned, tag=f"noop{i}") for i in range(NOOP_RUNS)]
            for i, r in enumerate(noops):
                _log_run(f"no-op run {i}", r)
            time.sleep(5)  # steady state window after
            traffic.stop()
            windows = [(r["wall_start"], r["wall_end"]) for r in [first] + runs + noops]
            inside = [lat for t, lat in traffic.samples if any(a <= t <= b for a, b in windows)]
            outside = [lat for t, lat in traffic.samples if not any(a - 1 <= t <= b + 1 for a, b in windows)]
            lost = len(set(traffic.acked) - traffic.consumed)
            out["disruption"] = {
                "published_acked": len(traffic.acked), "consumed": len(traffic.consumed), "lost": lost,
                "publish_errors": len(traffic.errors), "errors": traffic.errors[:5],
                "reconnects": traffic.reconnects, "disconnects": getattr(traffic, "disconnects_during", traffic.disconnects),
                "during_rotation": {"n": len(inside), "p50_ms": pct(inside, 50), "p99_ms": pct(inside, 99), "max_ms": max(inside, default=None)},
                "steady_state": {"n": len(outside), "p50_ms": pct(outside, 50), "p99_ms": pct(outside, 99), "max_ms": max(outside, default=None)},
            }
            changed = [r for r in runs if r["changed"] and r["rc"] == 0]
            out["rotate_one_cluster"] = {"first": short(first), "changed_runs": summarize_runs(changed),
                                         "all_runs": [short(r) for r in runs], "profile": task_profile(changed or runs)}
            out["noop"] = {**summarize_runs(noops), "report_changed": [r["changed"] for r in noops],
                           "changed_tasks": [[t["task"] for t in r["tasks"] if t["changed"]] for r in noops],
                           "runs": [short(r) for r in noops], "profile": task_profile(noops)}

            log("== rotate.yml without traffic (%d changing runs)" % QUIET_RUNS)
            quiet = []
            for i in range(QUIET_RUNS):
                wait_for_phase_change(schedule)
                quiet.append(runner.run(rotate_pb, rs.inventory, tag=f"quiet{i}"))
                _log_run(f"quiet run {i}", quiet[-1])
            out["rotate_quiet"] = {**summarize_runs([r for r in quiet if r["changed"] and r["rc"] == 0]),
                                   "runs": [short(r) for r in quiet]}

            if "rollback" not in SKIP:
                log("== rollback.yml (%d, each followed by rotate.yml releasing the hold)" % ROLLBACK_RUNS)
                out["loadavg"]["rollback"] = load()
                rollbacks, resumes = [], []
                for i in range(ROLLBACK_RUNS):
                    rb = runner.run(rollback_pb, rs.inventory, tag=f"rollback{i}")
                    rollbacks.append(rb)
                    _log_run(f"rollback run {i}", rb)
                    wait_for_phase_change(schedule)
                    resumes.append(runner.run(rotate_pb, rs.inventory, extra={"ca_rotation_release_hold": True}, tag=f"resume{i}"))
                    _log_run(f"  rotate.yml releasing the hold {i}", resumes[-1])
                good = [r for r in rollbacks if r["rc"] == 0 and r["ok"]]
                out["rollback"] = {**summarize_runs(good), "runs": [short(r) for r in rollbacks],
                                   "resume_runs": [short(r) for r in resumes], "profile": task_profile(good or rollbacks)}

            if "floor" not in SKIP:
                log("== floor (module_utils from Python)")
                try:
                    floor = floor_steps(rs)
                except Exception as exc:  # noqa: BLE001 - keep the other figures
                    log("   floor failed: %r" % exc)
                    floor = [{"total": float("nan"), "error": repr(exc)}]
                out["floor"] = {"iterations": floor, "median_total_s": statistics.median(r["total"] for r in floor),
                                "median_steps_s": {k: statistics.median(r[k] for r in floor) for k in floor[0]
                                                   if k not in ("reload_failed", "error")}}
        finally:
            rs.down()

        if "clusters" not in SKIP:
            log(f"== {CLUSTERS} clusters of 3 (forks {FORKS})")
            started = time.monotonic()
            rsn, jetstream_on = many_clusters_stack(tmp / "many", CLUSTERS)
            up_s = time.monotonic() - started
            log("   %d servers up in %.1fs (JetStream: %s)" % (len(rsn.servers), up_s, jetstream_on))
            try:
                multi_cluster_inventory(rsn)
                base_n = five_play_baseline(runner, rsn.inventory, tag="baseline5-many")
                out["loadavg"]["clusters"] = load()
                first_n = runner.run(rotate_pb, rsn.inventory, tag="many-first")
                _log_run("first run", first_n)
                runs_n = []
                for i in range(CLUSTER_RUNS):
                    wait_for_phase_change(schedule)
                    runs_n.append(runner.run(rotate_pb, rsn.inventory, tag=f"many{i}"))
                    _log_run(f"rotate run {i}", runs_n[-1])
                pinned = {"ca_rotation_now": int(time.time())}
                runner.run(rotate_pb, rsn.inventory, extra=pinned, tag="many-noop-prep")
                noop_n = [runner.run(rotate_pb, rsn.inventory, extra=pinned, tag=f"many-noop{i}") for i in range(2)]
                for i, r in enumerate(noop_n):
                    _log_run(f"no-op run {i}", r)
                rep = first_n["report"] or {}
                good_n = [r for r in runs_n if r["changed"] and r["rc"] == 0]
                out["many_clusters"] = {
                    "clusters": CLUSTERS, "servers": len(rsn.servers), "forks": FORKS, "jetstream": jetstream_on, "stack_up_s": up_s,
                    "five_play_baseline": base_n, "first": short(first_n),
                    "clusters_ok": {k: v.get("ok") for k, v in (rep.get("clusters") or {}).items()},
                    "changed_runs": summarize_runs(good_n), "rotate_runs": [short(r) for r in runs_n],
                    "noop": summarize_runs(noop_n), "noop_runs": [short(r) for r in noop_n],
                    "profile": task_profile(good_n or runs_n)}
            finally:
                rsn.down()

        if "reload" not in SKIP:
            log("== reload + verify, 3 vs 30 servers (bench_reload.bench_size)")
            out["loadavg"]["reload"] = load()
            rows = []
            for size in (3, 30):
                rows.extend(bench_reload.bench_size(size, ["signal", "system"], 3, tmp / "reload", log))
            out["reload"] = rows

    out["finished_at"] = datetime.now(timezone.utc).isoformat()
    out["host"]["loadavg_end"] = load()
    (RESULTS / "evidence.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    md = render_markdown(out)
    (RESULTS / "evidence.md").write_text(md)
    print(md)
    plot(out)
    return 0


# ---------------------------------------------------------------------------------------------- rendering
def _f(v, fmt="%.2f"):
    return "-" if v is None or math.isnan(v) else fmt % v


def _met(ok):
    return "-" if ok is None else ("yes" if ok else "NO")


def _le(v, target):
    return None if v is None or math.isnan(v) else v <= target


def _ratio(a, b):
    return a / b if a is not None and b and not math.isnan(b) else None


STEP_ORDER = ("plan", "lock", "issue", "bundle", "store", "announce", "state", "probe_leaf", "prune", "deliver", "reload", "record",
              "renew", "renew_reload", "rollback", "activate")


def _step_key(k):
    section, _sep, step = k.partition("/")
    return (("authority", "cluster", "activation", "engine").index(section) if section in ("authority", "cluster", "activation", "engine")
            else 9, STEP_ORDER.index(step) if step in STEP_ORDER else 99, k)


def _short_task(name, width=110):
    return name if len(name) <= width else name[:width - 3] + "..."


def render_markdown(out):  # noqa: C901  pylint: disable=too-many-locals,too-many-statements,too-many-branches
    host = out["host"]
    lines = ["# Rotation evidence benchmark", "",
             f"Measured {out['started_at']} on {host['cpus']} CPUs (OpenBao dev server + nats-server on 127.0.0.1, 20 s epochs), "
             f"forks {out.get('forks')} (`ansible-playbook -f {out.get('forks')}`). Load average (1/5/15 min) at the start "
             f"{host.get('loadavg_start')}, at the end {host.get('loadavg_end')}"
             + "".join(f", {k} section {v}" for k, v in (out.get("loadavg") or {}).items())
             + ": other test runs may have shared the 2 cores.", "",
             "CPU = user + system seconds of the whole ansible-playbook process tree (os.wait4 rusage); RSS = the largest "
             "resident set of one process in that tree (ru_maxrss). Ratios are to the floor (the rotation steps called from "
             "Python) measured in the same run.", "",
             "| measurement | value | target | met |", "| --- | --- | --- | --- |"]
    rot = out.get("rotate_one_cluster", {})
    ch = rot.get("changed_runs", {})
    quiet = out.get("rotate_quiet", {})
    noop = out.get("noop", {})
    rb = out.get("rollback", {})
    dis = out.get("disruption", {})
    fl = out.get("floor", {})
    floor = fl.get("median_total_s")
    base1, base5 = out.get("ansible_baseline", {}), out.get("five_play_baseline", {})
    lines.append(f"| ansible-playbook start-up + 1 play of 1 debug task (median of {base1.get('n')}) | {_f(base1.get('median_s'))} s, "
                 f"CPU {_f(base1.get('median_cpu_s'))} s | - | - |")
    if base5:
        lines.append(f"| ansible-playbook, 5 plays of 1 debug task each, rotate.yml's hosts (median of {base5.get('n')}) | "
                     f"{_f(base5.get('median_s'))} s, CPU {_f(base5.get('median_cpu_s'))} s, RSS {_f(base5.get('median_maxrss_mb'), '%.0f')} MB | - | - |")
    lines.append(f"| floor: rotation steps from Python (median of {len(fl.get('iterations', []))}) | {_f(floor)} s | - | - |")
    if ch.get("median_s") is not None:
        lines.append(f"| rotate.yml, changing run, 3 nodes, under traffic (median of {ch['n']}; min {_f(ch['min_s'])}, max {_f(ch['max_s'])}) | "
                     f"{_f(ch['median_s'])} s | <= {TARGETS['rotate_s']:g} s | {_met(_le(ch['median_s'], TARGETS['rotate_s']))} |")
        r = _ratio(ch["median_s"], floor)
        lines.append(f"| rotate.yml changing / floor | {_f(r, '%.1f')}x | <= {TARGETS['over_floor_x']:g}x | {_met(_le(r, TARGETS['over_floor_x']))} |")
        lines.append(f"| rotate.yml changing: CPU (median) / peak RSS (median, max) | {_f(ch['median_cpu_s'])} CPU-s / "
                     f"{_f(ch['median_maxrss_mb'], '%.0f')} MB, {_f(ch['peak_maxrss_mb'], '%.0f')} MB | - | - |")
        if ch.get("steps_mean_s", {}).get("engine") is not None:
            eng = ch["steps_mean_s"]["engine"]
            lines.append(f"| rotate.yml changing: engine steps (run report `timings`, mean) vs the rest (Ansible, config, logins) | "
                         f"{eng:.2f} s vs {ch['mean_s'] - eng:.2f} s (of a {ch['mean_s']:.2f} s mean) | - | - |")
        lines.append(f"| rotate.yml: tasks / host results / module processes per run | {ch['tasks_per_run']} / {ch['host_results_per_run']} / "
                     f"{ch['module_processes_per_run']} | - | - |")
    if quiet.get("median_s") is not None:
        lines.append(f"| rotate.yml, changing run, 3 nodes, no traffic (median of {quiet['n']}) | {_f(quiet['median_s'])} s, "
                     f"CPU {_f(quiet['median_cpu_s'])} s | <= {TARGETS['rotate_s']:g} s | {_met(_le(quiet['median_s'], TARGETS['rotate_s']))} |")
    lines.append(f"| rotate.yml first run (issues 2 intermediates) | {_f(rot.get('first', {}).get('seconds'))} s | - | - |")
    if noop.get("median_s") is not None:
        lines.append(f"| no-op run, pinned now (median of {noop['n']}; report changed={noop['report_changed']}) | {_f(noop['median_s'])} s | "
                     f"<= {TARGETS['noop_s']:g} s | {_met(_le(noop['median_s'], TARGETS['noop_s']))} |")
        lines.append(f"| no-op run CPU (median; max {_f(noop['max_cpu_s'])}) | {_f(noop['median_cpu_s'])} CPU-s | <= {TARGETS['noop_cpu_s']:g} CPU-s | "
                     f"{_met(_le(noop['median_cpu_s'], TARGETS['noop_cpu_s']))} |")
        r = _ratio(noop["median_s"], floor)
        lines.append(f"| no-op / floor | {_f(r, '%.1f')}x | <= {TARGETS['over_floor_x']:g}x | {_met(_le(r, TARGETS['over_floor_x']))} |")
        lines.append(f"| no-op: tasks / module processes per run; tasks reporting changed | {noop['tasks_per_run']} / "
                     f"{noop['module_processes_per_run']}; {sum(len(t) for t in noop['changed_tasks'])} | - | - |")
    if rb.get("median_s") is not None:
        lines.append(f"| rollback.yml, 3 nodes (median of {rb['n']}; min {_f(rb['min_s'])}, max {_f(rb['max_s'])}) | {_f(rb['median_s'])} s, "
                     f"CPU {_f(rb['median_cpu_s'])} s | <= {TARGETS['rollback_s']:g} s | {_met(_le(rb['median_s'], TARGETS['rollback_s']))} |")
        r = _ratio(rb["median_s"], floor)
        lines.append(f"| rollback.yml / floor | {_f(r, '%.1f')}x | <= {TARGETS['over_floor_x']:g}x | {_met(_le(r, TARGETS['over_floor_x']))} |")
    elif rb.get("runs"):
        lines.append(f"| rollback.yml | failed: rc {[r['rc'] for r in rb['runs']]} | <= {TARGETS['rollback_s']:g} s | NO |")
    if dis:
        lines.append(f"| publish latency steady p50 / p99 | {_f(dis['steady_state']['p50_ms'], '%.1f')} / {_f(dis['steady_state']['p99_ms'], '%.1f')} ms "
                     f"(n={dis['steady_state']['n']}) | - | - |")
        lines.append(f"| publish latency during rotate.yml p50 / p99 | {_f(dis['during_rotation']['p50_ms'], '%.1f')} / "
                     f"{_f(dis['during_rotation']['p99_ms'], '%.1f')} ms (n={dis['during_rotation']['n']}) | - | - |")
        lines.append(f"| lost messages (acked {dis['published_acked']}, consumed {dis['consumed']}) | {dis['lost']} | 0 | {_met(dis['lost'] == 0)} |")
        lines.append(f"| reconnects / disconnects / publish errors | {dis['reconnects']} / {dis['disconnects']} / {dis['publish_errors']} | 0 | "
                     f"{_met(dis['reconnects'] == 0 and dis['disconnects'] == 0 and dis['publish_errors'] == 0)} |")
    many = out.get("many_clusters")
    if many:
        cn, n = many["changed_runs"], many["clusters"]
        one = quiet if quiet.get("median_s") is not None else ch
        one_label = "no traffic" if one is quiet else "under traffic"
        r = _ratio(cn.get("median_s"), one.get("median_s"))
        tried = many.get("rotate_runs") or []
        if cn["n"] < len(tried):
            lines.append(f"| {n} clusters: runs that did not change or failed | {len(tried) - cn['n']} of {len(tried)} (rc "
                         f"{[r['rc'] for r in tried]}, changed {[r['changed'] for r in tried]}; first run rc {many['first']['rc']}) | - | NO |")
        lines.append(f"| rotate.yml changing run, {n} clusters x 3 (median of {cn['n']}, forks {many['forks']}) vs 1 x 3 ({one_label}) | "
                     f"{_f(cn.get('median_s'))} s vs {_f(one.get('median_s'))} s = {_f(r)}x | <= {TARGETS['clusters_10_over_1_x']:g}x | "
                     f"{_met(_le(r, TARGETS['clusters_10_over_1_x']))} |")
        lines.append(f"| {n} clusters changing: CPU / peak RSS (median) | {_f(cn.get('median_cpu_s'))} CPU-s / {_f(cn.get('median_maxrss_mb'), '%.0f')} MB "
                     f"(1 x 3: {_f(one.get('median_cpu_s'))} CPU-s / {_f(one.get('median_maxrss_mb'), '%.0f')} MB) | - | - |")
        lines.append(f"| {n} clusters: 5-play debug baseline vs 1 cluster | {_f(many['five_play_baseline'].get('median_s'))} s vs "
                     f"{_f(base5.get('median_s'))} s | - | - |")
        lines.append(f"| rotate.yml first run, {n} clusters vs 1 | {_f(many['first']['seconds'])} s vs {_f(rot.get('first', {}).get('seconds'))} s "
                     f"(clusters ok: {sum(1 for v in many['clusters_ok'].values() if v)}/{len(many['clusters_ok'])}) | - | - |")
        lines.append(f"| no-op run, {n} clusters vs 1 | {_f(many['noop'].get('median_s'))} s vs {_f(noop.get('median_s'))} s | - | - |")
    rel = out.get("reload")
    if rel:
        by = {(r["servers"], r["transport"]): r for r in rel}
        for tr in ("signal", "system"):
            if (3, tr) in by and (30, tr) in by:
                a, b = by[(3, tr)]["run_ms_median"], by[(30, tr)]["run_ms_median"]
                lines.append(f"| reload + verify {tr}: 30 vs 3 servers (median) | {b:.0f} ms vs {a:.0f} ms = {b / a:.2f}x | "
                             f"<= {TARGETS['reload_30_over_3_x']:g}x | {_met(b / a <= TARGETS['reload_30_over_3_x'])} |")

    # per-step breakdown from the run reports
    columns = [("rotate 1x3 (traffic)", ch), ("rotate 1x3 (quiet)", quiet), ("no-op 1x3", noop), ("rollback 1x3", rb)]
    if many:
        columns.append((f"rotate {many['clusters']}x3", many["changed_runs"]))
    columns = [(label, s) for label, s in columns if s and s.get("steps_mean_s")]
    if columns:
        keys = sorted({k for _label, s in columns for k in s["steps_mean_s"]}, key=_step_key)
        lines += ["", "## Engine steps from the run report's `timings` (mean seconds over the runs; cluster steps: the slowest cluster)", "",
                  "| step | " + " | ".join(f"{label} (n={s['n']})" for label, s in columns) + " |",
                  "| --- | " + " | ".join("---" for _column in columns) + " |"]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(_f(s["steps_mean_s"].get(k), "%.3f") for _label, s in columns) + " |")
        lines.append("| wall (median) | " + " | ".join(_f(s.get("median_s"), "%.3f") for _label, s in columns) + " |")
        lines.append("| CPU (median) | " + " | ".join(_f(s.get("median_cpu_s"), "%.3f") for _label, s in columns) + " |")
        lines.append("| ansible-playbook start-up before the first play (median) | "
                     + " | ".join(_f(s.get("median_startup_s"), "%.3f") for _label, s in columns) + " |")
        counts = [f"{s['tasks_per_run']} / {s['module_processes_per_run']}" for _label, s in columns]
        lines.append("| tasks / module processes per run | " + " | ".join(counts) + " |")
        lines += ["", "`engine` = authority + activation + the slowest cluster's steps; the finish step (lock release, report) is "
                  "not in the report's timings: see its task time below."]
    if fl.get("median_steps_s"):
        lines += ["", "## Floor: steps from Python (median seconds)", "", "| step | s |", "| --- | --- |"]
        lines += [f"| {k} | {_f(v, '%.3f')} |" for k, v in fl["median_steps_s"].items()]
    for title, section in (("rotate.yml profile (changing runs under traffic, mean seconds)", rot),
                           ("no-op profile (mean seconds)", noop), ("rollback.yml profile (mean seconds)", rb),
                           (f"rotate.yml profile, {many['clusters'] if many else 0} clusters (changing runs, mean seconds)", many or {})):
        prof = section.get("profile")
        if not prof:
            continue
        lines += ["", f"## {title}", "", "| play | s |", "| --- | --- |"]
        lines += [f"| {p['play']} | {p['mean_s']:.2f} |" for p in prof["plays"]]
        lines += ["", f"Tasks ({prof['task_count']}):", "", "| task | s |", "| --- | --- |"]
        lines += [f"| {_short_task(t['task'])} | {t['mean_s']:.2f} |" for t in prof["top_tasks"]]
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
    many = out.get("many_clusters") or {}
    for label, value, target in (
        ("ansible 1 play", out.get("ansible_baseline", {}).get("median_s"), None),
        ("ansible 5 plays", out.get("five_play_baseline", {}).get("median_s"), None),
        ("floor (Python)", out.get("floor", {}).get("median_total_s"), None),
        ("rotate.yml 1x3", out.get("rotate_one_cluster", {}).get("changed_runs", {}).get("median_s"), TARGETS["rotate_s"]),
        ("no-op", out.get("noop", {}).get("median_s"), TARGETS["noop_s"]),
        ("rollback.yml", out.get("rollback", {}).get("median_s"), TARGETS["rollback_s"]),
        (f"rotate.yml {many.get('clusters', '?')}x3", many.get("changed_runs", {}).get("median_s"), None),
    ):
        if value is not None:
            labels.append(label)
            values.append(value)
            targets.append(target)
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = ["#888", "#888", "#4a4", "#48c", "#48c", "#48c", "#84c"]
    bars = ax.bar(labels, values, color=colors[:len(values)])
    for rect, target in zip(bars, targets):
        if target:
            ax.hlines(target, rect.get_x(), rect.get_x() + rect.get_width(), colors="red", linestyles="dashed")
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"CA rotation: wall time (red dashes: targets; forks {out.get('forks')})")
    for rect, v in zip(bars, values):
        ax.text(rect.get_x() + rect.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(RESULTS / "evidence.png", dpi=90)
    log("wrote %s" % (RESULTS / "evidence.png"))


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: run rotate.yml against the embedded stack for a few short epochs and print a timeline.

Each run's report (``-e ca_rotation_report_file=...``) gives the epoch, what happened (new bundle, reload,
activation) and every server's reload time; the timeline shows one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import COLLECTION_ROOT
from .localstack import LocalStack


def _phase(report: dict) -> str:
    if report.get("locked_out"):
        return "locked out"
    parts = []
    if report.get("changed"):
        cluster_reloaded = any(c.get("reloaded") for c in report.get("clusters", {}).values())
        if cluster_reloaded:
            parts.append("new bundle, reloaded + proven")
        if report.get("activated_epoch") is not None:
            parts.append(f"activated epoch-{report['activated_epoch']}")
    return ", ".join(parts) or "no-op (converged)"


def run(playbook: Path, inventory: Path, collections: Path, epochs: int, extra: list[str]) -> int:
    stack = LocalStack(inventory_dir=inventory)
    if not stack.info:
        print("the local stack is not running; run 'scripts/localstack up' first", file=sys.stderr)
        return 2
    duration = stack.info["epoch"]["epoch_duration"]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1")
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    start_epoch = None
    print(f"{'time (UTC)':<20} {'epoch':>10} {'gen':>4} {'secs':>5}  what happened / per-server reload ms")
    rc = 0
    deadline = time.monotonic() + (epochs + 2) * duration + 120
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        while time.monotonic() < deadline:
            report_file = Path(tmp) / f"report-{n}.json"
            started = time.monotonic()
            proc = subprocess.run([ansible_playbook, str(playbook), "-i", str(inventory),
                                   "-e", f"ca_rotation_report_file={report_file}", *extra],
                                  env=env, capture_output=True, text=True, check=False)
            secs = time.monotonic() - started
            if not report_file.exists():
                print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
                return proc.returncode or 1
            report = json.loads(report_file.read_text())
            reloads = ", ".join(
                f"{s.get('target') or s.get('name')}={s.get('reload_ms')}ms" for c in report.get("clusters", {}).values()
                for s in c.get("servers", []) if s.get("reload_ms") is not None)
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()):<20} {report.get('current_epoch')!s:>10} "
                  f"{report.get('generation')!s:>4} {secs:5.1f}  {_phase(report)}{'; ' + reloads if reloads else ''}"
                  f"{'' if report.get('ok') else '  FAILED'}")
            if proc.returncode != 0:
                rc = proc.returncode
                print(proc.stdout[-2000:])
                break
            start_epoch = start_epoch if start_epoch is not None else report.get("current_epoch")
            if report.get("current_epoch", 0) >= start_epoch + epochs:
                break
            n += 1
            # next run: at the next preparation moment or epoch start, whichever comes first (polled, not a fixed nap)
            lead = stack.info["epoch"]["lead_time"]
            now = time.time()
            into = (now - 0) % duration
            wake = min(t for t in (duration - lead - into, duration - into + 1) if t > 0)
            time.sleep(max(0.5, min(wake, duration)))
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rotate the embedded stack for a few epochs and print a timeline")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--inventory", default=str(COLLECTION_ROOT / "inventories" / "local"))
    parser.add_argument("--collections", default=str(COLLECTION_ROOT / ".build" / "installed"))
    args, extra = parser.parse_known_args(argv)
    return run(COLLECTION_ROOT / "playbooks" / "rotate.yml", Path(args.inventory), Path(args.collections), args.epochs, extra)

"""The per-VM cost of rotate.yml over an SSH fleet (scripts/localstack up --vms): 1 VM against 10 (a benchmark,
not a test; needs root, openssh-server and sudo, like the fleet).

For each fleet size it starts a private LocalStack (one local server) and the fleet, then times, as a user runs
them (ansible-playbook), with the same stack:

  floor   rotate.yml on the local group only: changing (its first run: reload and proof) and no-op
  fleet   rotate.yml on the local group and every VM: changing (the VMs' first run) and no-op

and prints them side by side with the per-VM cost ((fleet - floor) / VMs). Each VM costs its module calls over
SSH with sudo (a no-op: one leaf look and deliver_reload; the first run more) plus the trust probe from the controller.

    python bench/bench_ssh_fleet.py                   # 1 and 10 VMs
    python bench/bench_ssh_fleet.py --sizes 1,3 --forks 10 --json bench/results/ssh_fleet.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

from catools import ensure_collection_importable  # noqa: E402  pylint: disable=wrong-import-position

ensure_collection_importable()

# pylint: disable=wrong-import-position
from catools.localstack import LocalStack  # noqa: E402
from catools.procs import StackError  # noqa: E402
from catools.vmfleet import VmFleet, requirements  # noqa: E402
from helpers import ansible_env, ansible_playbook  # noqa: E402


def timed_run(inventory: list[Path], report: Path, forks: int) -> dict:
    args = [arg for path in inventory[1:] for arg in ("-i", str(path))] + ["--forks", str(forks)]
    started = time.monotonic()
    proc = ansible_playbook(REPO / "playbooks" / "rotate.yml", *args, inventory=inventory[0],
                            extra_vars={"ca_rotation_report_file": str(report)}, env=ansible_env())
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"rotate.yml failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-1500:]}")
    data = json.loads(report.read_text(encoding="utf-8"))
    return {"seconds": round(seconds, 2), "changed": bool(data["changed"])}


def measure(size: int, forks: int, base: Path) -> dict:
    inventory = base / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(REPO / "inventories" / "local" / "hosts.yml", inventory / "hosts.yml")
    shutil.copy(REPO / "inventories" / "local" / "group_vars" / "all" / "main.yml", inventory / "group_vars" / "all" / "main.yml")
    stack = LocalStack(base / "state", epoch_duration="6h", clusters=(("local", 1),), inventory_dir=inventory)
    stack.up()
    try:
        fleet = VmFleet(stack, size)
        fleet.up()
        fleet_inventory = fleet.write_inventory(base / "vmfleet.yml")
        out = {"vms": size}
        out["floor_changing"] = timed_run([inventory], base / "r1.json", forks)
        out["floor_noop"] = timed_run([inventory], base / "r2.json", forks)
        out["fleet_changing"] = timed_run([inventory, fleet_inventory], base / "r3.json", forks)
        out["fleet_noop"] = timed_run([inventory, fleet_inventory], base / "r4.json", forks)
        for kind in ("changing", "noop"):
            extra = out[f"fleet_{kind}"]["seconds"] - out[f"floor_{kind}"]["seconds"]
            out[f"per_vm_{kind}"] = round(extra / size, 2)
        return out
    finally:
        stack.down()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10", help="fleet sizes, comma-separated (default 1,10)")
    parser.add_argument("--forks", type=int, default=20, help="ansible-playbook --forks (default 20: every host at once)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated numbers of VMs, got {args.sizes!r}")
    if args.forks < 1:
        parser.error(f"--forks must be at least 1, got {args.forks}")
    try:
        requirements(sys.executable)
    except StackError as exc:
        print(f"bench_ssh_fleet: skipped: {exc}")
        return 0
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-fleet-{size}-") as tmp:
            rows.append(measure(size, args.forks, Path(tmp)))
    print(f"rotate.yml wall time in seconds (ansible-playbook, --forks {args.forks}, {os.cpu_count()} CPUs); "
          "floor: the local group alone, same stack, same run")
    print(f"{'VMs':>4}  {'floor change':>12}  {'fleet change':>12}  {'per VM':>7}  {'floor no-op':>11}  {'fleet no-op':>11}  {'per VM':>7}")
    for row in rows:
        print(f"{row['vms']:>4}  {row['floor_changing']['seconds']:>12.2f}  {row['fleet_changing']['seconds']:>12.2f}  "
              f"{row['per_vm_changing']:>7.2f}  {row['floor_noop']['seconds']:>11.2f}  {row['fleet_noop']['seconds']:>11.2f}  "
              f"{row['per_vm_noop']:>7.2f}")
        if row["fleet_noop"]["changed"] or row["floor_noop"]["changed"]:
            print(f"     note: a no-op run of the {row['vms']}-VM fleet reported a change")
        if not (row["fleet_changing"]["changed"] and row["floor_changing"]["changed"]):
            print(f"     note: a changing run of the {row['vms']}-VM fleet reported no change")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

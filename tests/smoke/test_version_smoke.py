"""The rotate smoke for the ansible-core version matrix (noxfile.py, make test-matrix): on a private 3-node stack with
short epochs, as a user runs the playbooks: a changing rotate.yml, a repeated one that changes nothing (report and
recap), a second generation in the next epoch, and rollback.yml back to the first one.

Short on purpose (one stack, five runs): it proves the playbooks and plugins work under the ansible-core it runs
with; tests/integration and tests/faults prove the rotation itself.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from rotation_harness import RotationStack  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [pytest.mark.timeout(600)]

EPOCH = 20
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@pytest.fixture
def rs(tmp_path):
    stack = RotationStack(tmp_path / "stack", epoch_duration=f"{EPOCH}s")
    try:
        yield stack
    finally:
        stack.down()


def _ok(run):
    assert run["rc"] == 0, run["stdout"][-3000:] + run["stderr"][-3000:]
    assert run["report"] and run["report"]["ok"] and not run["report"]["locked_out"], run["report"]
    return run["report"]


def _recap(run) -> dict[str, tuple[int, int, int, int]]:
    recap = run["stdout"].rsplit("PLAY RECAP", 1)[-1]
    hosts = {m[0]: tuple(int(x) for x in m[1:]) for m in RECAP.findall(recap)}
    assert hosts, run["stdout"][-2000:]
    return hosts


def _changed_tasks(run) -> list[str]:
    return [block.splitlines()[0] for block in run["stdout"].split("TASK [")[1:] if "\nchanged:" in block]


def test_rotate_noop_rollback(rs):
    # the first two runs share one pinned 'now', so the second sees exactly the phase the first converged to
    pinned = {"ca_rotation_now": int(time.time())}
    first = _ok(rs.playbook("rotate.yml", extra_vars=pinned))
    assert first["changed"] is True and first["kind"] == "rotation", first
    assert rs.ca_file_sha256s() == {first["bundle_sha256"]}

    again_run = rs.playbook("rotate.yml", extra_vars=pinned)
    again = _ok(again_run)
    assert again["changed"] is False, (again, _changed_tasks(again_run))
    assert _changed_tasks(again_run) == []
    recap = _recap(again_run)
    assert all(changed == 0 and failed == 0 and unreachable == 0 for _ok_count, changed, unreachable, failed in recap.values()), recap
    assert again["generation"] == first["generation"] and again["bundle_sha256"] == first["bundle_sha256"]

    # a second generation: wait, from the schedule, for the preparation of the epoch after the bundle's newest
    # (lead time = epoch_duration // 4)
    while time.time() < (first["epoch"] + 1) * EPOCH - EPOCH // 4 + 0.5:
        time.sleep(0.2)
    second = _ok(rs.playbook("rotate.yml"))
    assert second["generation"] == first["generation"] + 1 and second["bundle_sha256"] != first["bundle_sha256"], second
    assert rs.ca_file_sha256s() == {second["bundle_sha256"]}

    # rollback.yml puts the first generation's bundle back on every server; the margin is one the first bundle's
    # epoch still has however slowly the runs before went (tests/faults/test_rollback_margin.py tests the margin)
    back = _ok(rs.playbook("rollback.yml", extra_vars={"ca_rotation_rollback_min_validity": f"{EPOCH // 2}s"}))
    assert back["kind"] == "rollback" and back["bundle_sha256"] == first["bundle_sha256"], back
    assert rs.ca_file_sha256s() == {first["bundle_sha256"]}
    print(" | ".join(f"{r['playbook']} {r['seconds']:.1f}s" for r in rs.runs))
    # what this ansible-core says it will stop supporting (shown, not failed: the matrix's early warning)
    deprecations = sorted({line.strip() for r in rs.runs for line in (r["stdout"] + r["stderr"]).splitlines()
                           if "DEPRECATION WARNING" in line})
    for line in deprecations:
        print(line)

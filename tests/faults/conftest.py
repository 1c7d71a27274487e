"""Fault-injection fixtures: the end-to-end harness (tests/integration/rotation_harness.py) on private stacks."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from rotation_harness import RotationStack  # noqa: E402  pylint: disable=wrong-import-position

EPOCH = 20


@pytest.fixture(scope="module")
def frs(tmp_path_factory):
    """A private 3-node stack with 20 s epochs, rotated once so every case starts converged."""
    rs = RotationStack(tmp_path_factory.mktemp("faults"), epoch_duration=f"{EPOCH}s")
    try:
        first = rs.playbook("rotate.yml")
        assert first["rc"] == 0, first["stdout"][-3000:]
        yield rs
    finally:
        rs.down()


@pytest.fixture
def fresh_rs(tmp_path):
    """A private stack for cases that leave state a shared stack must not inherit (clock ahead)."""
    rs = RotationStack(tmp_path / "stack", epoch_duration=f"{EPOCH}s")
    try:
        yield rs
    finally:
        rs.down()


def until_new_epoch_due(last_epoch, margin=0.5):
    """Seconds until an epoch after ``last_epoch`` is due: prepared ``EPOCH // 4`` (the lead time) before it starts."""
    return max(0.0, (int(last_epoch) + 1) * EPOCH - EPOCH // 4 - time.time()) + margin


def read_state(rs):
    resp = rs.bao().secrets.kv.v2.read_secret_version(path="ca-rotation/state", mount_point="secret", raise_on_deleted_version=True)
    return resp["data"]["data"], resp["data"]["metadata"]["version"]


def converged(rs, run):
    """The run succeeded and every server's CA file holds the run's bundle."""
    assert run["rc"] == 0, run["stdout"][-3000:]
    report = run["report"]
    assert report and report["ok"] and not report["locked_out"], report
    shas = {hashlib.sha256(Path(s["ca_file"]).read_bytes()).hexdigest() for s in rs.servers}
    assert shas == {report["bundle_sha256"]}, (shas, report["bundle_sha256"])
    default = rs.default_issuer_epoch()
    assert default is not None
    return report


def default_issuer_trusted(rs, workdir):
    """A leaf of OpenBao's current default issuer is accepted by every server (activation never ahead of trust)."""
    epoch = rs.default_issuer_epoch()
    cert, key = rs.issue_client_leaf(Path(workdir) / f"leaf-{epoch}", f"epoch-{epoch}")
    return {s["name"]: rs.handshake(cert, key, s) for s in rs.servers}

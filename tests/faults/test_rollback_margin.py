"""The rollback safety margin: a rollback whose restored issuer would leave servers and the announcer with certificates
about to expire is refused before anything changes; a rollback hold ends when its epoch reaches the margin."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from conftest import EPOCH, converged, read_state, until_new_epoch_due

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _shas(rs):
    return {s["name"]: hashlib.sha256(Path(s["ca_file"]).read_bytes()).hexdigest() for s in rs.servers}


def test_rollback_margin_and_hold_expiry(fresh_rs):
    rs = fresh_rs
    first = converged(rs, rs.playbook("rotate.yml"))
    time.sleep(until_new_epoch_due(int(read_state(rs)[0]["last_epoch"])))
    second = converged(rs, rs.playbook("rotate.yml"))
    assert second["generation"] == first["generation"] + 1 and second["bundle_sha256"] != first["bundle_sha256"]

    # a margin the restored issuer cannot give: refused, nothing changed anywhere
    state_before, version_before = read_state(rs)
    shas_before, default_before = _shas(rs), rs.default_issuer_epoch()
    validity = 4 * EPOCH
    refused = rs.playbook("rollback.yml", extra_vars={"ca_rotation_rollback_min_validity": f"{validity - 1}s"})
    assert refused["rc"] != 0, refused["stdout"][-2000:]
    assert "less than the safe margin" in refused["stdout"] and "Nothing was changed" in refused["stdout"], refused["stdout"][-2000:]
    assert "ca_rotation_rollback_min_validity" in refused["stdout"]
    state_after, version_after = read_state(rs)
    # the lock was taken and released: nothing else in the state moved
    assert {k: v for k, v in state_after.items() if k != "lock"} == {k: v for k, v in state_before.items() if k != "lock"}
    assert (state_after.get("lock") or {}).get("holder") is None and version_after >= version_before
    assert _shas(rs) == shas_before and rs.default_issuer_epoch() == default_before

    # with the default margin (two epochs) the same rollback goes ahead, and says how long the restored issuer lasts
    done = rs.playbook("rollback.yml")
    report = converged(rs, done)
    assert report["kind"] == "rollback" and report["bundle_sha256"] == first["bundle_sha256"], report
    assert "valid until" in done["stdout"] and "the margin is 40s" in done["stdout"], done["stdout"][-2000:]
    assert read_state(rs)[0]["hold"]["sha256"] == first["bundle_sha256"]

    # the hold keeps the restored bundle ...
    held = converged(rs, rs.playbook("rotate.yml"))
    assert held["bundle_sha256"] == first["bundle_sha256"] and held["hold"], held
    # ... until its epoch reaches the margin: rotation resumes with a new bundle
    resumed_run = rs.playbook("rotate.yml", extra_vars={"ca_rotation_rollback_min_validity": f"{validity - 1}s"})
    resumed = converged(rs, resumed_run)
    assert "Rollback hold released" in resumed_run["stdout"], resumed_run["stdout"][-2000:]
    assert resumed["hold"] is None and resumed["bundle_sha256"] != first["bundle_sha256"], resumed
    assert read_state(rs)[0].get("hold") is None

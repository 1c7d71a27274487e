"""Loss of the rotation state document: generations survive it (the count continues from the last signed
announcement on the stream), status.yml flags it, and the next run converges."""

from __future__ import annotations

import json
import time

import pytest
from conftest import converged, read_state, until_new_epoch_due

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.announce import last_announcement
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import STREAM_DEFAULTS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SUBJECT = "metadata.client.ca-cert"


def _last(rs):
    auth, pki = rs.info["nats_auth"], rs.info["pki"]
    params = {"servers": [s["url"] for s in rs.servers], "ca_file": auth["ca_file"], "cert_file": auth["client_cert_file"],
              "key_file": auth["client_key_file"], "user": auth["app_user"], "password_file": auth["app_password_file"]}
    return last_announcement(rs.bao(), params, STREAM_DEFAULTS, SUBJECT, pki["transit_mount"], pki["transit_key"])


def _delete_state(rs):
    rs.bao().secrets.kv.v2.delete_metadata_and_all_versions(path="ca-rotation/state", mount_point="secret")


def test_deleted_state_continues_the_generation_count(fresh_rs, tmp_path):
    rs = fresh_rs
    first = converged(rs, rs.playbook("rotate.yml"))
    time.sleep(until_new_epoch_due(int(read_state(rs)[0]["last_epoch"])))
    # the runs until the state is resynced plan for one moment: an intermediate that expires in between would change the
    # bundle (and so its generation) for a reason this test is not about
    pinned = {"ca_rotation_now": int(time.time())}
    second = converged(rs, rs.playbook("rotate.yml", extra_vars=pinned))
    assert second["generation"] == first["generation"] + 1
    announced = _last(rs)
    assert announced["generation"] == second["generation"]

    _delete_state(rs)
    # status.yml flags a state behind the announcement clients have seen
    status_file = tmp_path / "status.json"
    rs.playbook("status.yml", extra_vars={"ca_rotation_status_json": str(status_file)})
    codes = {f["code"] for f in json.loads(status_file.read_text())["findings"] if f["severity"] == "mismatch"}
    assert "state_behind_announcement" in codes, codes

    # the same bundle: the state takes the announced generation back, nothing is announced again
    run = rs.playbook("rotate.yml", extra_vars=pinned)
    report = converged(rs, run)
    assert report["generation"] == announced["generation"], report
    assert "behind the last signed announcement" in run["stdout"]
    after = _last(rs)
    assert after["seq"] == announced["seq"], (announced, after)
    state, _version = read_state(rs)
    assert state["generation"] == announced["generation"] and state["bundle_sha256"] == announced["bundle_sha256"]
    assert state["history"][0]["resynced_from"]["generation"] == announced["generation"]
    rs.playbook("status.yml", extra_vars={"ca_rotation_status_json": str(status_file)})
    codes = {f["code"] for f in json.loads(status_file.read_text())["findings"] if f["severity"] == "mismatch"}
    assert "state_behind_announcement" not in codes and "announcement_generation" not in codes, codes

    # a new bundle after the loss gets the generation after the announced one, never a restarted count
    _delete_state(rs)
    time.sleep(until_new_epoch_due(int(announced["epoch"])))
    report = converged(rs, rs.playbook("rotate.yml"))
    assert report["generation"] == announced["generation"] + 1, report
    latest = _last(rs)
    assert latest["generation"] == announced["generation"] + 1 and latest["seq"] > announced["seq"]

"""rotation_state against a real OpenBao: single-flight lock, stale takeover, generations, holds."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def state_args(openbao_params):
    return {"openbao": openbao_params, "path": f"ca-rotation-test/{uuid.uuid4().hex}/state"}


def _kv(bao_client, path):
    try:
        return bao_client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    except Exception:  # noqa: BLE001 - absent
        return None


def test_lock_is_single_flight_and_check_mode_writes_nothing(run_module, state_args, bao_client):
    predicted = run_module("rotation_state", dict(state_args, action="acquire", holder="run-a"), check_mode=True)
    assert predicted["changed"] and predicted["acquired"]
    assert _kv(bao_client, state_args["path"]) is None, "check mode must not write"

    first = run_module("rotation_state", dict(state_args, action="acquire", holder="run-a"))
    assert first["changed"] and first["acquired"]
    assert _kv(bao_client, state_args["path"])["lock"]["holder"] == "run-a"

    other = run_module("rotation_state", dict(state_args, action="acquire", holder="run-b"))
    assert other["changed"] is False and other["acquired"] is False
    assert "locked by run-a" in other["msg"]
    assert _kv(bao_client, state_args["path"])["lock"]["holder"] == "run-a"

    released = run_module("rotation_state", dict(state_args, action="release", holder="run-a"))
    assert released["changed"] and _kv(bao_client, state_args["path"])["lock"] is None
    again = run_module("rotation_state", dict(state_args, action="release", holder="run-a"))
    assert again["changed"] is False


def test_stale_lock_is_taken_over(run_module, state_args, bao_client):
    run_module("rotation_state", dict(state_args, action="acquire", holder="crashed", lock_ttl="1m", now="2026-01-01T00:00:00Z"))
    later = run_module("rotation_state", dict(state_args, action="acquire", holder="next", now="2026-01-01T00:02:00Z"))
    assert later["acquired"] and later["stale_lock_taken_over"]
    assert _kv(bao_client, state_args["path"])["lock"]["holder"] == "next"


def test_generations_are_monotonic_and_rerun_safe(run_module, state_args, bao_client):
    run_module("rotation_state", dict(state_args, action="acquire", holder="r"))
    rec = run_module("rotation_state", dict(state_args, action="record", holder="r", epoch=7, sha256="a" * 64, generation=1))
    assert rec["changed"] and rec["generation"] == 1
    same = run_module("rotation_state", dict(state_args, action="record", holder="r", epoch=7, sha256="a" * 64, generation=1))
    assert same["changed"] is False
    skip = run_module("rotation_state", dict(state_args, action="record", holder="r", epoch=8, sha256="b" * 64, generation=3))
    assert skip["failed"] and "does not follow" in skip["msg"]
    rb = run_module("rotation_state", dict(state_args, action="record", holder="r", epoch=6, sha256="c" * 64, generation=2, kind="rollback"))
    assert rb["changed"]
    doc = _kv(bao_client, state_args["path"])
    assert doc["generation"] == 2 and doc["last_epoch"] == 7, "a rollback must not move last_epoch backwards"
    assert [h["generation"] for h in doc["history"]] == [2, 1]
    foreign = run_module("rotation_state", dict(state_args, action="record", holder="intruder", epoch=8, sha256="d" * 64, generation=3))
    assert foreign["failed"] and "does not hold the rotation lock" in foreign["msg"]


def test_cluster_records_and_bad_input(run_module, state_args, bao_client):
    first = run_module("rotation_state", dict(state_args, action="record_cluster", cluster="east", sha256="e" * 64, epoch=5))
    assert first["changed"]
    second = run_module("rotation_state", dict(state_args, action="record_cluster", cluster="east", sha256="e" * 64, epoch=5))
    assert second["changed"] is False
    read = run_module("rotation_state", dict(state_args, action="read_cluster", cluster="east"))
    assert read["record"]["sha256"] == "e" * 64
    bad = run_module("rotation_state", dict(state_args, action="acquire"))
    assert bad["failed"] and "holder" in bad["msg"]
    bad_ttl = run_module("rotation_state", dict(state_args, action="acquire", holder="x", lock_ttl="soon"))
    assert bad_ttl["failed"] and "lock_ttl" in bad_ttl["msg"]


def test_a_wrong_kv_mount_names_the_kv_engine(run_module, state_args):
    bad = run_module("rotation_state", dict(state_args, action="read", kv_mount="no-such-kv"))
    assert bad["failed"], bad
    assert "nothing is mounted at 'no-such-kv/'" in bad["msg"], bad["msg"]
    assert "bao secrets enable -path=no-such-kv kv-v2" in bad["msg"], bad["msg"]

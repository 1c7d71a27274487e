# -*- coding: utf-8 -*-
"""The real main() of openbao_intermediate / openbao_leaf with bad input (patched module args, no OpenBao)."""

from __future__ import annotations

import json

import pytest

from helpers import run_module  # tests/helpers.py (tests/ is put on sys.path by tests/conftest.py)

DEAD = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("BAO_ADDR", "VAULT_ADDR", "BAO_TOKEN", "VAULT_TOKEN", "BAO_CACERT", "VAULT_CACERT", "BAO_NAMESPACE",
                 "VAULT_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def inter(**params):
    return run_module("openbao_intermediate", dict({"openbao": {"url": DEAD, "token": "s3cr3t-token", "retries": 0}},
                                                   **params))


def leaf(**params):
    base = {"openbao": {"url": DEAD, "token": "s3cr3t-token", "retries": 0}, "role": "r", "common_name": "cn",
            "cert_file": "/tmp/none/c.pem", "key_file": "/tmp/none/k.pem"}
    base.update(params)
    return run_module("openbao_leaf", {k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("params,option,text", [
    ({"epoch_duration": "often"}, "epoch_duration", "Invalid epoch_duration 'often'"),
    ({"epoch_duration": "1h", "validity": "30m"}, "validity", "validity"),
    ({"prune_grace": "-5m"}, "prune_grace", "Invalid prune_grace"),
    ({"epoch": -1}, "epoch", "epoch must not be negative"),
    ({"now": "2025-01-01T00:00:00"}, "now", "no timezone given"),
    ({"state": "absent", "default": True}, "default", "contradict"),
])
def test_intermediate_bad_input(params, option, text):
    res = inter(**params)
    assert res["failed"] is True and text in res["msg"], res
    assert res.get("option") == option


def test_intermediate_argument_errors():
    res = inter(key_type="dsa")
    assert res["failed"] is True and "key_type" in res["msg"] and "ec, rsa, ed25519" in res["msg"]
    res = inter(openbao={"url": DEAD, "token": "x", "port": 1})
    assert res["failed"] is True and "port" in res["msg"]
    res = inter(state="gone")
    assert res["failed"] is True and "state" in res["msg"]


def test_intermediate_connection_problems():
    res = run_module("openbao_intermediate", {"openbao": {"token": "x"}})
    assert res["failed"] is True and "No OpenBao address: set openbao.url" in res["msg"], res
    res = run_module("openbao_intermediate", {"openbao": {"url": DEAD}})
    assert res["failed"] is True and "No OpenBao token" in res["msg"], res
    res = run_module("openbao_intermediate", {"openbao": {"url": DEAD, "auth_method": "approle"}})
    assert res["failed"] is True and "role_id is not set" in res["msg"], res
    res = inter()
    assert res["failed"] is True and res["msg"].startswith(f"Cannot reach OpenBao at {DEAD}"), res
    assert "s3cr3t-token" not in json.dumps(res)  # token is no_log


def test_env_fallbacks_reach_the_nested_options(clean_env):
    clean_env.setenv("BAO_ADDR", DEAD)
    clean_env.setenv("BAO_TOKEN", "from-env")
    res = run_module("openbao_intermediate", {"openbao": {"retries": 0}})
    assert res["failed"] is True and f"Cannot reach OpenBao at {DEAD}" in res["msg"], res
    assert res["invocation"]["module_args"]["openbao"]["url"] == DEAD
    res = run_module("openbao_intermediate", {})  # no openbao option at all: defaults + environment apply
    assert f"Cannot reach OpenBao at {DEAD}" in res["msg"], res


@pytest.mark.parametrize("params,text", [
    ({"role": None}, "missing required arguments: role"),
    ({"renew_before": "150%"}, "between 0 and 100"),
    ({"renew_before": "whenever"}, "Invalid renew_before"),
    ({"mode": "rw-r--r--"}, "not an octal file mode"),
    ({"key_source": "hsm"}, "key_source"),
    ({"key_type": "dsa"}, "key_type"),
    ({"epoch_duration": "0"}, "epoch_duration"),
])
def test_leaf_bad_input(params, text):
    res = leaf(**params)
    assert res["failed"] is True and text in res["msg"], res


def test_leaf_unreachable():
    res = leaf()
    assert res["failed"] is True and f"Cannot reach OpenBao at {DEAD}" in res["msg"], res
    assert "s3cr3t-token" not in json.dumps(res)

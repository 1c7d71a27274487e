"""Bad inputs per module: a clear error naming the option, and no state change in OpenBao (session stack)."""

from __future__ import annotations

import pytest


def _openbao(stack, bao_token):
    return {"url": stack["openbao"]["addr"], "token": bao_token}


# (module, params builder, option that the message must name)
CASES = [
    ("ca_epoch", lambda s, t: {"epoch_duration": "0"}, "epoch_duration"),
    ("ca_epoch", lambda s, t: {"epoch_duration": "6h", "validity": "1h"}, "validity"),
    ("ca_epoch", lambda s, t: {"epoch_duration": "6h", "lead_time": "7h"}, "lead_time"),
    ("ca_epoch", lambda s, t: {"epoch_duration": "soon"}, "epoch_duration"),
    ("ca_epoch", lambda s, t: {"now": "yesterday-ish"}, "now"),
    ("openbao_intermediate", lambda s, t: {"openbao": _openbao(s, t), "epoch": 1, "key_type": "dsa"}, "key_type"),
    ("openbao_intermediate", lambda s, t: {"openbao": _openbao(s, t), "epoch": 1, "epoch_duration": "-5m"}, "epoch_duration"),
    ("openbao_intermediate", lambda s, t: {"openbao": dict(_openbao(s, t), token="not-a-token"), "epoch": 1}, "token"),
    ("openbao_leaf", lambda s, t: {"openbao": _openbao(s, t), "role": "nats-leaf", "common_name": "x"}, "cert_file"),
    ("openbao_leaf", lambda s, t: {"openbao": _openbao(s, t), "role": "nats-leaf", "common_name": "x", "cert_file": "/tmp/c.pem",
                                   "key_file": "/tmp/k.pem", "key_source": "hsm"}, "key_source"),
    ("ca_bundle", lambda s, t: {"source": "pem", "pem": "not a certificate", "destinations": {}}, "pem"),
    ("ca_bundle", lambda s, t: {"source": "git"}, "source"),
    ("jetstream_publish", lambda s, t: {"nats": {"servers": ["tls://127.0.0.1:1"]}}, "payload"),
    ("jetstream_publish", lambda s, t: {"nats": {"servers": ["tls://127.0.0.1:1"]}, "payload": "x", "timeout": 0}, "timeout"),
    ("jetstream_publish", lambda s, t: {"nats": {"servers": ["tls://127.0.0.1:1"]}, "payload": "x", "stream": {"name": "bad.name"}}, "stream.name"),
    ("nats_sighup", lambda s, t: {"transport": "carrier-pigeon"}, "transport"),
    ("nats_sighup", lambda s, t: {"transport": "signal", "targets": [{"name": "n", "pid": 1, "monitor_url": "http://127.0.0.1:1"}],
                                  "expect_sha256": "xyz"}, "expect_sha256"),
    ("rotation_state", lambda s, t: {"openbao": _openbao(s, t), "action": "steal"}, "action"),
    ("rotation_state", lambda s, t: {"openbao": _openbao(s, t), "action": "record", "kind": "sideways"}, "kind"),
]


def _snapshot(bao_client):
    issuers = sorted(bao_client.list("pki_int/issuers")["data"]["keys"])
    state = bao_client.secrets.kv.v2.read_secret_version(path="ca-rotation/state", mount_point="secret",
                                                         raise_on_deleted_version=False) if _exists(bao_client) else None
    return issuers, (state or {}).get("data", {}).get("metadata", {}).get("version")


def _exists(bao_client):
    try:
        bao_client.secrets.kv.v2.read_secret_metadata(path="ca-rotation/state", mount_point="secret")
        return True
    except Exception:  # noqa: BLE001 - absent
        return False


@pytest.mark.parametrize("module,build,option", CASES, ids=[f"{case[0]}-{case[2]}-{i}" for i, case in enumerate(CASES)])
def test_bad_input_fails_clearly_and_changes_nothing(stack, bao_token, bao_client, run_module, module, build, option):
    before = _snapshot(bao_client)
    result = run_module(module, build(stack, bao_token))
    assert result.get("failed") is True, result
    assert result.get("changed", False) is False, result
    assert option.split(".")[-1] in result["msg"] or result.get("option") == option, result["msg"]
    assert _snapshot(bao_client) == before

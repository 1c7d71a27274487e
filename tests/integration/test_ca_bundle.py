# -*- coding: utf-8 -*-
"""ca_bundle against a real OpenBao (the session stack) and the emulated Kubernetes API (tests/k8s_emulator).

The module gets its own PKI mounts (a root ``bndroot_*`` and an intermediate mount ``bndint_*`` with the
``epoch-<n>`` issuers of epochs 7..11, 1h epochs, ``now`` fixed 50 minutes into epoch 10, so epoch 11 is prepared).
Tests that need defective issuers sign them themselves into fresh intermediate mounts. Every destination is
read back directly (os, hvac, the kubernetes client / emulator store), never through the module.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

kubernetes = pytest.importorskip("kubernetes")
pytest.importorskip("aiohttp")

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import deliver as bundle_deliver  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (  # noqa: E402
    EpochSchedule, isoformat, utcnow,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.intermediate import ensure_epoch_intermediate  # noqa: E402
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import EmulatedCluster, User  # noqa: E402

pytestmark = pytest.mark.timeout(300)

UTC = dt.timezone.utc
EPOCHS = (11, 10, 9, 8, 7)  # newest first: prepared 11, current 10, valid back to 7


# ----------------------------------------------------------------------------- fixtures
def _uid() -> str:
    return uuid.uuid4().hex[:8]


def new_pki_mount(client: hvac.Client, prefix: str) -> str:
    mount = f"{prefix}_{_uid()}"
    client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    return mount


def new_root(client: hvac.Client, cn: str) -> tuple[str, str]:
    mount = new_pki_mount(client, "bndroot")
    data = client.write_data(f"{mount}/root/generate/internal",
                             data={"common_name": cn, "key_type": "ec", "ttl": "87000h", "issuer_name": "root"})["data"]
    return mount, data["certificate"].strip() + "\n"


@pytest.fixture(scope="module")
def pki(bao_client):
    """Root + intermediate mounts with valid epoch issuers 7..11 for a schedule fixed around the real clock."""
    real_now = utcnow().replace(microsecond=0)
    zero = real_now - dt.timedelta(hours=10, minutes=50)
    params = {"epoch_zero": isoformat(zero), "epoch_duration": "1h", "skew_allowance": "5m"}
    sched = EpochSchedule.from_params(params)
    assert sched.epoch(real_now) == 10 and sched.prepared_epoch(real_now) == 11
    root_mount, root_pem = new_root(bao_client, "Bundle Test Root")
    other_mount, other_pem = new_root(bao_client, "Bundle Foreign Root")
    int_mount = new_pki_mount(bao_client, "bndint")
    for n in sorted(EPOCHS):
        ensure_epoch_intermediate(bao_client, sched, n, root_mount=root_mount, int_mount=int_mount, now=real_now)
    info = {"schedule": sched, "epoch_params": dict(params, now=isoformat(real_now)), "now": real_now,
            "root_mount": root_mount, "root_pem": root_pem, "int_mount": int_mount,
            "other_mount": other_mount, "other_pem": other_pem}
    yield info
    for mount in (int_mount, root_mount, other_mount):
        bao_client.sys.disable_secrets_engine(mount)


@pytest.fixture(scope="module")
def cluster():
    emulated = EmulatedCluster(name="bundle", namespaces=("nats", "openbao"),
                               users=[User(name="reader", allow=("read secrets",))])
    emulated.start()
    yield emulated
    emulated.stop()


@pytest.fixture(scope="module")
def api(cluster):
    return cluster.core_api()


@pytest.fixture
def names():
    """Per-test unique destination names, so tests sharing the cluster and KV never see each other."""
    tag = _uid()
    return {"tag": tag, "kv_path": f"bt-{tag}/epoch-{{epoch}}", "epoch_name": f"bundle-{tag}-epoch-{{epoch}}",
            "live_name": f"live-{tag}"}


def base_params(pki, openbao_params, cluster, **extra) -> dict:
    params = dict(pki["epoch_params"], openbao=dict(openbao_params), int_mount=pki["int_mount"],
                  root_mount=pki["root_mount"], kubernetes={"kubeconfig": cluster.kubeconfig, "context": cluster.context})
    params.update(extra)
    return params


def all_destinations(tmp_path: Path, names: dict) -> dict:
    return {"file": {"path": str(tmp_path / "ca.crt")},
            "kv": {"path": names["kv_path"]},
            "epoch_secret": {"name": names["epoch_name"]},
            "live_secret": {"name": names["live_name"]}}


# ----------------------------------------------------------------------------- independent reads
def expected_bundle(bao_client: hvac.Client, pki: dict, epochs=EPOCHS, include_root=True) -> str:
    """The bundle built here, without the code under test: issuer certificates read from OpenBao, re-encoded."""
    parts = []
    for n in epochs:
        pem = bao_client.read(f"{pki['int_mount']}/issuer/epoch-{n}/json")["data"]["certificate"]
        parts.append(x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.PEM).decode())
    if include_root:
        parts.append(x509.load_pem_x509_certificate(pki["root_pem"].encode()).public_bytes(serialization.Encoding.PEM).decode())
    return "".join(parts)


def kv_read(client: hvac.Client, path: str, mount: str = "secret"):
    """(version, data) of a KV v2 entry, (0, None) if absent."""
    try:
        resp = client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
    except hvac.exceptions.InvalidPath:
        return 0, None
    return resp["data"]["metadata"]["version"], resp["data"]["data"]


def secret_read(cluster: EmulatedCluster, namespace: str, name: str):
    """The stored Secret object (straight from the emulator's store) or None."""
    return cluster.store.find("secrets", namespace, name)


def secret_bytes(obj, key):
    return base64.b64decode(obj["data"][key]) if obj and key in (obj.get("data") or {}) else None


def snapshot(tmp_path: Path, bao_client: hvac.Client, cluster: EmulatedCluster, names: dict, epoch: int = 11) -> dict:
    path = tmp_path / "ca.crt"
    kv_path = names["kv_path"].replace("{epoch}", str(epoch))
    epoch_name = names["epoch_name"].replace("{epoch}", str(epoch))
    return {
        "file": (path.read_bytes(), path.stat().st_ino) if path.exists() else None,
        "dir": sorted(p.name for p in tmp_path.iterdir()),
        "kv": kv_read(bao_client, kv_path),
        "epoch_secret": secret_read(cluster, "openbao", epoch_name),
        "live_secret": secret_read(cluster, "nats", names["live_name"]),
    }


def seed_previous(tmp_path: Path, bao_client: hvac.Client, cluster: EmulatedCluster, names: dict, epoch: int = 11):
    """Put a 'previous bundle' into every destination, so that 'unchanged' is meaningful."""
    old = b"previous bundle\n"
    (tmp_path / "ca.crt").write_bytes(old)
    bao_client.secrets.kv.v2.create_or_update_secret(path=names["kv_path"].replace("{epoch}", str(epoch)),
                                                     secret={"ca-bundle.pem": old.decode(), "sha256": "old"})
    cluster.apply_secret("openbao", names["epoch_name"].replace("{epoch}", str(epoch)), {"ca-bundle.pem": old},
                         labels={"epoch": str(epoch)})
    cluster.apply_secret("nats", names["live_name"], {"ca.crt": old},
                         annotations={"rotation.watcher.io/ts": "2020-01-01T00:00:00Z"})


# ----------------------------------------------------------------------------- the normal path
def test_check_mode_run_and_rerun_every_destination(run_module, bao_client, pki, openbao_params, cluster, names, tmp_path):
    params = base_params(pki, openbao_params, cluster, destinations=all_destinations(tmp_path, names), return_content=True)
    expected = expected_bundle(bao_client, pki)
    sha = hashlib.sha256(expected.encode()).hexdigest()
    empty = snapshot(tmp_path, bao_client, cluster, names)

    checked = run_module("ca_bundle", params, check_mode=True, diff=True)
    assert not checked.get("failed"), checked
    assert checked["changed"] is True
    assert all(d["changed"] for d in checked["destinations"].values())
    assert checked["pem"] == expected and checked["sha256"] == sha
    assert snapshot(tmp_path, bao_client, cluster, names) == empty  # check mode wrote nothing anywhere
    assert [d["before_header"] for d in checked["diff"]] == [
        "kv secret/" + names["kv_path"].replace("{epoch}", "11"),
        "secret openbao/%s[ca-bundle.pem]" % names["epoch_name"].replace("{epoch}", "11"),
        str(tmp_path / "ca.crt"), "secret nats/%s[ca.crt]" % names["live_name"]]

    first = run_module("ca_bundle", params, diff=True)
    assert not first.get("failed"), first
    assert first["changed"] is True
    assert first["epoch"] == 11 and first["epochs"] == list(EPOCHS)
    assert first["pem"] == expected and first["sha256"] == sha
    assert [c["epoch"] for c in first["certificates"]] == list(EPOCHS) + [None]
    assert first["missing"] == [] and first["skipped"] == []

    # file
    assert (tmp_path / "ca.crt").read_text() == expected
    # KV v2
    version, data = kv_read(bao_client, names["kv_path"].replace("{epoch}", "11"))
    assert version == 1
    assert data["ca-bundle.pem"] == expected and data["sha256"] == sha and data["epoch"] == 11
    assert data["expires_at"] == isoformat(pki["schedule"].expiry(11))
    assert [i["issuer_name"] for i in data["issuers"]] == ["epoch-%d" % n for n in EPOCHS]
    assert data["created_at"].endswith("Z")
    # per-epoch Secret
    per_epoch = secret_read(cluster, "openbao", names["epoch_name"].replace("{epoch}", "11"))
    assert secret_bytes(per_epoch, "ca-bundle.pem") == expected.encode()
    assert per_epoch["metadata"]["labels"] == {"epoch": "11", "app.kubernetes.io/managed-by": "securetransport.ca_rotation"}
    assert per_epoch["metadata"]["annotations"]["rotation.watcher.io/sha256"] == sha
    # live Secret
    live = secret_read(cluster, "nats", names["live_name"])
    assert secret_bytes(live, "ca.crt") == expected.encode()
    annotations = live["metadata"]["annotations"]
    assert annotations["rotation.watcher.io/epoch"] == "11"
    assert annotations["rotation.watcher.io/sha256"] == sha
    assert annotations["rotation.watcher.io/ts"].endswith("Z")
    assert first["destinations"]["live_secret"]["created"] is True
    assert first["destinations"]["live_secret"]["resource_version"] == live["metadata"]["resourceVersion"]

    after_first = snapshot(tmp_path, bao_client, cluster, names)
    second = run_module("ca_bundle", params, diff=True)
    assert not second.get("failed"), second
    assert second["changed"] is False
    assert not any(d["changed"] for d in second["destinations"].values())
    assert second["diff"] == []
    assert second["pem"] == first["pem"] and second["sha256"] == first["sha256"]  # identical bytes across runs
    assert snapshot(tmp_path, bao_client, cluster, names) == after_first  # same inode, KV version, resourceVersions, ts
    assert second["destinations"]["live_secret"]["before_sha256"] == sha
    assert first["destinations"]["kv"]["before_sha256"] is None and first["destinations"]["kv"]["after_sha256"] == sha
    assert second["destinations"]["kv"]["before_sha256"] == sha and second["destinations"]["kv"]["version"] == 1
    assert {d["after_sha256"] for d in first["destinations"].values()} == {sha}


def test_other_keys_labels_and_annotations_of_the_live_secret_are_kept(run_module, pki, openbao_params, cluster, names):
    cluster.apply_secret("nats", names["live_name"], {"ca.crt": b"old", "extra.pem": b"keep me"},
                         labels={"app": "nats"}, annotations={"team": "messaging"})
    params = base_params(pki, openbao_params, cluster, destinations={"live_secret": {"name": names["live_name"]}})
    result = run_module("ca_bundle", params)
    assert result["changed"] is True, result
    live = secret_read(cluster, "nats", names["live_name"])
    assert secret_bytes(live, "extra.pem") == b"keep me"
    assert live["metadata"]["labels"] == {"app": "nats"}
    assert live["metadata"]["annotations"]["team"] == "messaging"
    assert result["destinations"]["live_secret"]["before_sha256"] == hashlib.sha256(b"old").hexdigest()


def test_annotation_drift_alone_is_repaired(run_module, pki, openbao_params, cluster, names):
    """Same bytes but a stale sha256 annotation: changed (and ts moves); then stable."""
    params = base_params(pki, openbao_params, cluster, destinations={"live_secret": {"name": names["live_name"]}})
    run_module("ca_bundle", params)
    live = secret_read(cluster, "nats", names["live_name"])
    annotations = dict(live["metadata"]["annotations"], **{"rotation.watcher.io/sha256": "stale"})
    cluster.apply_secret("nats", names["live_name"], {"ca.crt": secret_bytes(live, "ca.crt")}, annotations=annotations)
    repaired = run_module("ca_bundle", params)
    assert repaired["changed"] is True
    assert secret_read(cluster, "nats", names["live_name"])["metadata"]["annotations"]["rotation.watcher.io/sha256"] \
        == repaired["sha256"]
    assert run_module("ca_bundle", params)["changed"] is False


def test_include_root_false_and_the_bound(run_module, bao_client, pki, openbao_params, cluster, tmp_path):
    params = base_params(pki, openbao_params, cluster, include_root=False, return_content=True,
                         destinations={"file": {"path": str(tmp_path / "ca.crt"), "mode": "0640"}})
    result = run_module("ca_bundle", params)
    assert result["changed"] is True, result
    assert result["pem"] == expected_bundle(bao_client, pki, include_root=False)
    assert (tmp_path / "ca.crt").stat().st_mode & 0o777 == 0o640
    bounded = run_module("ca_bundle", dict(params, max_certificates=3, destinations={"file": {"path": str(tmp_path / "b.crt")}}))
    assert bounded["failed"] is True
    assert "would hold 5 intermediates (epochs 11, 10, 9, 8, 7), more than max_certificates=3" in bounded["msg"]
    assert not (tmp_path / "b.crt").exists()


def test_before_the_lead_time_the_next_epoch_is_left_out(run_module, bao_client, pki, openbao_params, cluster):
    earlier = isoformat(pki["schedule"].start(10) + dt.timedelta(minutes=30))
    result = run_module("ca_bundle", base_params(pki, openbao_params, cluster, now=earlier, return_content=True))
    assert result["epochs"] == [10, 9, 8, 7], result
    assert result["pem"] == expected_bundle(bao_client, pki, epochs=[10, 9, 8, 7])


def test_session_stack_layout_with_defaults(run_module, stack, openbao_params, tmp_path):
    """The stack's own pki / pki_int with its schedule: the default mounts and options just work."""
    params = dict(stack["epoch"], openbao=dict(openbao_params), destinations={"file": {"path": str(tmp_path / "ca.crt")}},
                  return_content=True)
    result = run_module("ca_bundle", params)
    assert not result.get("failed"), result
    sched = EpochSchedule.from_params(stack["epoch"])
    assert set(result["epochs"]) <= set(sched.desired_epochs(utcnow()))
    root = Path(stack["pki"]["root_pem_file"]).read_text()
    assert result["pem"].endswith(root.strip() + "\n")
    assert (tmp_path / "ca.crt").read_text() == result["pem"]


# ----------------------------------------------------------------------------- bad issuers / inputs: nothing written
def add_issuer(client: hvac.Client, int_mount: str, root_mount: str, name: str, cn: str, not_after: dt.datetime) -> str:
    """Sign an intermediate ourselves (any NotAfter, even in the past) and import it as issuer ``name``.

    NotBefore is NotAfter - 4h (OpenBao sets it as signing time - not_before_duration)."""
    not_before_duration = int((utcnow() - (not_after - dt.timedelta(hours=4))).total_seconds())
    csr = client.write_data(f"{int_mount}/intermediate/generate/internal",
                            data={"common_name": cn, "key_type": "ec", "key_name": f"{name}-{_uid()}"})["data"]["csr"]
    cert = client.write_data(f"{root_mount}/root/sign-intermediate",
                             data={"csr": csr, "common_name": cn, "format": "pem", "use_csr_values": False,
                                   "not_after": isoformat(not_after), "not_before_duration": not_before_duration})["data"]["certificate"]
    imported = client.write_data(f"{int_mount}/intermediate/set-signed", data={"certificate": cert})["data"]["imported_issuers"]
    client.write_data(f"{int_mount}/issuer/{imported[0]}", data={"issuer_name": name})
    return cert


@pytest.fixture
def bad_mount(bao_client):
    mount = new_pki_mount(bao_client, "bndbad")
    yield mount
    bao_client.sys.disable_secrets_engine(mount)


@pytest.mark.parametrize("defect, fragment", [
    ("wrong_not_after", "epoch 9): NotAfter is {late}, expected exactly {expiry}"),
    ("foreign_root", "epoch 9): not signed by the root issuer"),
    ("empty", "No usable intermediate on"),
])
def test_defective_issuers_write_nothing(run_module, bao_client, pki, openbao_params, cluster, names, tmp_path, bad_mount,
                                         defect, fragment):
    sched = pki["schedule"]
    if defect != "empty":
        ensure_epoch_intermediate(bao_client, sched, 10, root_mount=pki["root_mount"], int_mount=bad_mount, now=pki["now"])
    if defect == "wrong_not_after":
        late = sched.expiry(9) + dt.timedelta(hours=1)
        add_issuer(bao_client, bad_mount, pki["root_mount"], "epoch-9", "NATS Intermediate CA Epoch 9", late)
        fragment = fragment.format(late=isoformat(late), expiry=isoformat(sched.expiry(9)))
    elif defect == "foreign_root":
        add_issuer(bao_client, bad_mount, pki["other_mount"], "epoch-9", "NATS Intermediate CA Epoch 9", sched.expiry(9))
    seed_previous(tmp_path, bao_client, cluster, names, epoch=10)
    before = snapshot(tmp_path, bao_client, cluster, names, epoch=10)
    params = base_params(pki, openbao_params, cluster, int_mount=bad_mount, destinations=all_destinations(tmp_path, names),
                         prune={"keep_epochs": 0})
    for check_mode in (True, False):
        result = run_module("ca_bundle", params, check_mode=check_mode)
        assert result.get("failed") is True, result
        assert fragment in result["msg"]
        if defect != "empty":
            assert "nothing was written" in result["msg"]
        assert snapshot(tmp_path, bao_client, cluster, names, epoch=10) == before


@pytest.mark.parametrize("defect, fragment", [
    ("expired", "epoch 5) expired at"),
    ("glued", "has text on its END line after the dashes"),
    ("garbage", "pem certificate 2 is not a valid PEM certificate"),
    ("private_key", "is a PRIVATE KEY, not a CERTIFICATE"),
    ("root_only", "No intermediate to put in the CA bundle"),
])
def test_bad_pem_writes_nothing(run_module, bao_client, pki, openbao_params, cluster, names, tmp_path, bad_mount, defect,
                                fragment):
    sched = pki["schedule"]
    good = expected_bundle(bao_client, pki, epochs=[10], include_root=False)
    if defect == "expired":
        # NotAfter exactly expiry(5), which is in the past: OpenBao signs it, the bundle must refuse it
        # OpenBao returns the PEM without a final newline: one is added so the blocks are not glued
        extra = add_issuer(bao_client, bad_mount, pki["root_mount"], "epoch-5", "NATS Intermediate CA Epoch 5",
                           sched.expiry(5)).strip() + "\n"
    elif defect == "glued":
        # END and the next BEGIN on one line: Go's PEM decoder (nats-server) would skip the block silently
        good, extra = good.strip(), ""
    elif defect == "garbage":
        extra = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    elif defect == "private_key":
        extra = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    else:
        good, extra = "", ""
    seed_previous(tmp_path, bao_client, cluster, names, epoch=10)
    before = snapshot(tmp_path, bao_client, cluster, names, epoch=10)
    params = base_params(pki, openbao_params, cluster, source="pem", pem=good + extra + pki["root_pem"],
                         destinations=all_destinations(tmp_path, names))
    result = run_module("ca_bundle", params)
    assert result.get("failed") is True, result
    assert fragment in result["msg"]
    assert snapshot(tmp_path, bao_client, cluster, names, epoch=10) == before


def test_rollback_bundle_from_pem(run_module, bao_client, pki, openbao_params, cluster, names):
    """An earlier bundle (epoch 10's, read from KV like the rollback play does) delivered with source=pem."""
    params = base_params(pki, openbao_params, cluster, now=isoformat(pki["schedule"].start(10) + dt.timedelta(minutes=30)),
                         destinations={"kv": {"path": names["kv_path"]}})
    assert run_module("ca_bundle", params)["epoch"] == 10
    _version, record = kv_read(bao_client, names["kv_path"].replace("{epoch}", "10"))
    back = run_module("ca_bundle", base_params(pki, openbao_params, cluster, source="pem", pem=record["ca-bundle.pem"],
                                               destinations={"live_secret": {"name": names["live_name"]}}))
    assert not back.get("failed"), back
    assert back["epoch"] == 10 and back["sha256"] == record["sha256"]
    live = secret_read(cluster, "nats", names["live_name"])
    assert secret_bytes(live, "ca.crt").decode() == record["ca-bundle.pem"]
    assert live["metadata"]["annotations"]["rotation.watcher.io/epoch"] == "10"


# ----------------------------------------------------------------------------- concurrency: 409 and check-and-set
def racing(cluster: EmulatedCluster, monkeypatch, namespace: str, name: str, times, operation: str = "replace"):
    """Make another writer change Secret namespace/name just before each of our next ``times`` writes."""
    store = cluster.store
    original_replace, original_create = store.replace, store.create
    state = {"left": times, "raced": 0}

    def concurrent_write():
        state["raced"] += 1
        body = {"metadata": {"name": name, "namespace": namespace, "annotations": {"other-writer": str(state["raced"])}},
                "data": {"ca.crt": base64.b64encode(b"other writer %d\n" % state["raced"]).decode()}}
        if store.find("secrets", namespace, name) is None:
            original_create("secrets", namespace, body)
        else:
            original_replace("secrets", namespace, name, body)

    def hooked(method, original):
        def call(resource, ns, *args, **kwargs):
            target = args[0] if method == "replace" else (args[0].get("metadata") or {}).get("name")
            if resource == "secrets" and ns == namespace and target == name and state["left"]:
                state["left"] -= 1
                concurrent_write()
            return original(resource, ns, *args, **kwargs)
        return call

    if operation == "replace":
        monkeypatch.setattr(store, "replace", hooked("replace", original_replace))
    else:
        monkeypatch.setattr(store, "create", hooked("create", original_create))
    return state


def test_conflict_on_replace_is_retried(run_module, pki, openbao_params, cluster, names, monkeypatch):
    cluster.apply_secret("nats", names["live_name"], {"ca.crt": b"old\n"})
    state = racing(cluster, monkeypatch, "nats", names["live_name"], times=2)
    params = base_params(pki, openbao_params, cluster, destinations={"live_secret": {"name": names["live_name"]}})
    result = run_module("ca_bundle", params)
    assert not result.get("failed"), result
    assert state["raced"] == 2
    live_result = result["destinations"]["live_secret"]
    assert live_result["changed"] is True and live_result["attempts"] == 3
    live = secret_read(cluster, "nats", names["live_name"])
    assert hashlib.sha256(secret_bytes(live, "ca.crt")).hexdigest() == result["sha256"]
    assert live["metadata"]["annotations"]["other-writer"] == "2"  # the other writer's annotation survives the merge


def test_conflict_on_create_is_retried(run_module, pki, openbao_params, cluster, names, monkeypatch):
    state = racing(cluster, monkeypatch, "nats", names["live_name"], times=1, operation="create")
    params = base_params(pki, openbao_params, cluster, destinations={"live_secret": {"name": names["live_name"]}})
    result = run_module("ca_bundle", params)
    assert not result.get("failed"), result
    assert state["raced"] == 1
    assert result["destinations"]["live_secret"]["attempts"] == 2
    assert result["destinations"]["live_secret"]["created"] is False
    assert hashlib.sha256(secret_bytes(secret_read(cluster, "nats", names["live_name"]), "ca.crt")).hexdigest() \
        == result["sha256"]


def test_secret_that_keeps_changing_fails_clearly(run_module, bao_client, pki, openbao_params, cluster, names, monkeypatch):
    cluster.apply_secret("nats", names["live_name"], {"ca.crt": b"old\n"})
    state = racing(cluster, monkeypatch, "nats", names["live_name"], times=10 ** 6)
    params = base_params(pki, openbao_params, cluster, secret_attempts=4,
                         destinations={"kv": {"path": names["kv_path"]}, "live_secret": {"name": names["live_name"]}})
    result = run_module("ca_bundle", params)
    assert result.get("failed") is True
    assert "Delivering the CA bundle to live_secret failed" in result["msg"]
    assert "kept changing underneath (HTTP 409 conflict on each of 4 attempts)" in result["msg"]
    assert "Already written: kv; re-run to converge" in result["msg"]
    assert result["failed_destination"] == "live_secret"
    assert result["destinations"]["kv"]["changed"] is True
    assert state["raced"] == 4
    live = secret_read(cluster, "nats", names["live_name"])
    assert secret_bytes(live, "ca.crt") == b"other writer 4\n"  # ours never landed
    assert "rotation.watcher.io/sha256" not in (live["metadata"].get("annotations") or {})


def test_forbidden_write_names_the_permission(run_module, pki, openbao_params, cluster, names):
    params = base_params(pki, openbao_params, cluster, destinations={"live_secret": {"name": names["live_name"]}})
    params["kubernetes"]["context"] = cluster.context_for("reader")
    result = run_module("ca_bundle", params)
    assert result.get("failed") is True
    assert "forbidden" in result["msg"] and "'create' on 'secrets'" in result["msg"] and "namespace 'nats'" in result["msg"]
    assert secret_read(cluster, "nats", names["live_name"]) is None


def test_missing_namespace_is_a_clear_error(run_module, pki, openbao_params, cluster, names):
    params = base_params(pki, openbao_params, cluster,
                         destinations={"live_secret": {"namespace": "no-such-ns", "name": names["live_name"]}})
    result = run_module("ca_bundle", params)
    assert result.get("failed") is True
    assert "namespace 'no-such-ns' does not exist" in result["msg"]


def test_kv_check_and_set_retries_after_a_concurrent_write(bao_client, pki, names, monkeypatch):
    path = names["kv_path"].replace("{epoch}", "11")
    bao_client.secrets.kv.v2.create_or_update_secret(path=path, secret={"sha256": "old"})
    original = bundle_deliver.read_kv
    calls = []

    def read_then_someone_writes(client, mount, p):
        version, data = original(client, mount, p)
        calls.append(version)
        if len(calls) == 1:
            bao_client.secrets.kv.v2.create_or_update_secret(path=path, secret={"sha256": "concurrent"})
        return version, data

    monkeypatch.setattr(bundle_deliver, "read_kv", read_then_someone_writes)
    desired = {"sha256": "ours", "created_at": "now"}
    result = bundle_deliver.deliver_kv(bao_client, "secret", path, desired)
    assert result["changed"] is True and result["attempts"] == 2
    assert calls == [1, 2]
    assert kv_read(bao_client, path) == (3, desired)
    # unchanged apart from created_at: no new version
    again = bundle_deliver.deliver_kv(bao_client, "secret", path, dict(desired, created_at="later"))
    assert again["changed"] is False and kv_read(bao_client, path)[0] == 3


def test_kv_permission_denied_is_clear(bao_client, pki, names, stack):
    policy = f"bundle-ro-{names['tag']}"
    bao_client.sys.create_or_update_policy(policy, 'path "secret/data/*" { capabilities = ["read"] }')
    token = bao_client.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    reader = hvac.Client(url=stack["openbao"]["addr"], token=token)
    path = names["kv_path"].replace("{epoch}", "11")
    with pytest.raises(Exception) as info:
        bundle_deliver.deliver_kv(reader, "secret", path, {"sha256": "x"})
    assert "Permission denied writing 'secret/data/%s': the token needs 'create+update'" % path in str(info.value)
    assert kv_read(bao_client, path) == (0, None)


# ----------------------------------------------------------------------------- pruning
def test_prune_expired_per_epoch_copies(run_module, bao_client, pki, openbao_params, cluster, api, names, tmp_path):
    namespace = f"prune-{names['tag']}"
    api.create_namespace({"metadata": {"name": namespace}})
    managed = {"app.kubernetes.io/managed-by": "securetransport.ca_rotation"}
    for n in range(1, 7):  # epochs 1..6 have expired at now (epoch 10, validity 4h)
        cluster.apply_secret(namespace, f"old-epoch-{n}", {"ca-bundle.pem": b"x"}, labels=dict(managed, epoch=str(n)))
        bao_client.secrets.kv.v2.create_or_update_secret(path=names["kv_path"].replace("{epoch}", str(n)), secret={"n": n})
    cluster.apply_secret(namespace, "foreign-epoch-2", {"ca-bundle.pem": b"x"}, labels={"epoch": "2"})  # not ours
    cluster.apply_secret(namespace, "unlabelled", {"k": b"v"})
    bao_client.secrets.kv.v2.create_or_update_secret(path=f"bt-{names['tag']}/notes", secret={"keep": True})
    params = base_params(pki, openbao_params, cluster, prune={"keep_epochs": 2},
                         destinations={"kv": {"path": names["kv_path"]},
                                       "epoch_secret": {"namespace": namespace, "name": names["epoch_name"]}})

    def state():
        secrets = sorted(s.metadata.name for s in api.list_namespaced_secret(namespace).items)
        keys = sorted(bao_client.secrets.kv.v2.list_secrets(path=f"bt-{names['tag']}", mount_point="secret")["data"]["keys"])
        return secrets, keys

    before = state()
    checked = run_module("ca_bundle", params, check_mode=True)
    assert not checked.get("failed"), checked
    # after delivering epoch 11, the two newest copies are 11 and 6: 1..5 go
    assert [p["epoch"] for p in checked["pruned"]["secrets"]] == [1, 2, 3, 4, 5]
    assert [p["epoch"] for p in checked["pruned"]["kv"]] == [1, 2, 3, 4, 5]
    assert state() == before

    result = run_module("ca_bundle", params)
    assert result["changed"] is True
    assert result["pruned"] == checked["pruned"]
    secrets, keys = state()
    assert secrets == sorted(["foreign-epoch-2", "old-epoch-6", "unlabelled", names["epoch_name"].replace("{epoch}", "11")])
    assert keys == ["epoch-11", "epoch-6", "notes"]

    again = run_module("ca_bundle", params)
    assert again["changed"] is False and again["pruned"] == {"secrets": [], "kv": []}


def test_previous_bundle_is_returned_and_can_be_put_back_exactly(run_module, pki, openbao_params, cluster, names):
    """The automatic rollback path: the bundle live before is returned (previous_pem) and restored byte for byte."""
    before = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(
        x509.load_pem_x509_certificate(pki["root_pem"].encode()).public_bytes(serialization.Encoding.DER)) \
        + b"-----END CERTIFICATE-----"  # 76-column lines, no trailing newline: not canonical on purpose
    cluster.apply_secret("nats", names["live_name"], {"ca.crt": before})
    live = {"live_secret": {"name": names["live_name"]}}
    new = run_module("ca_bundle", base_params(pki, openbao_params, cluster, destinations=live, return_content=True))
    assert new["changed"] is True, new
    previous = new["destinations"]["live_secret"]["previous_pem"]
    assert previous.encode() == before
    recorded = new["destinations"]["live_secret"]["before_sha256"]  # what the run that replaced it recorded
    back = run_module("ca_bundle", base_params(pki, openbao_params, cluster, source="pem", pem=previous, verify=False,
                                               expected_sha256=recorded, destinations=live))
    assert not back.get("failed"), back
    assert back["changed"] is True and back["verified"] is False
    stored = secret_read(cluster, "nats", names["live_name"])
    assert secret_bytes(stored, "ca.crt") == before
    assert back["sha256"] == hashlib.sha256(before).hexdigest()
    assert stored["metadata"]["annotations"]["rotation.watcher.io/sha256"] == back["sha256"]
    assert "rotation.watcher.io/epoch" not in stored["metadata"]["annotations"]  # no stale epoch-11 label left

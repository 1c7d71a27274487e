"""openbao_intermediate against a real OpenBao (the session stack, plus private dev servers for TLS and outages).

Every test uses its own intermediate mount ``pki_int_<random>`` signed by the stack's root in ``pki``, so
tests never interfere with each other or with the stack's ``pki_int``. Results are checked independently of
the code under test: the certificates with ``cryptography``, OpenBao state with plain hvac reads.
"""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import json
import secrets
import threading
import uuid
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from catools.procs import find_binary, free_port, http_json, spawn, stop_process, wait_for

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, utcnow

pytestmark = pytest.mark.timeout(300)

UTC = dt.timezone.utc
SCHED = {"epoch_duration": "1h", "skew_allowance": "5m"}  # validity 4h, lead time 15m


# ----------------------------------------------------------------------------- helpers
def schedule(params=None) -> EpochSchedule:
    return EpochSchedule.from_params(dict(SCHED, **(params or {})))


def new_mount(client: hvac.Client, prefix: str = "pki_int") -> str:
    mount = f"{prefix}_{uuid.uuid4().hex[:10]}"
    client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    return mount


def issuers_of(client: hvac.Client, mount: str) -> dict:
    """{issuer_id: key_info} read directly from OpenBao."""
    try:
        return client.adapter.request("LIST", f"/v1/{mount}/issuers")["data"]["key_info"]
    except hvac.exceptions.InvalidPath:
        return {}


def keys_of(client: hvac.Client, mount: str) -> dict:
    try:
        return client.adapter.request("LIST", f"/v1/{mount}/keys")["data"]["key_info"]
    except hvac.exceptions.InvalidPath:
        return {}


def snapshot(client: hvac.Client, mount: str) -> tuple:
    default = client.read(f"{mount}/config/issuers")["data"]["default"]
    return issuers_of(client, mount), keys_of(client, mount), default


def by_name(client: hvac.Client, mount: str, name: str) -> str | None:
    return next((iid for iid, info in issuers_of(client, mount).items() if info["issuer_name"] == name), None)


def check_intermediate(pem: str, root_pem: str, sched: EpochSchedule, n: int, exact_not_before: bool = True):
    """Independent verification with cryptography (DESIGN section 4 rules)."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    cert.verify_directly_issued_by(root)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    assert cert.not_valid_after_utc == sched.expiry(n)
    if exact_not_before:
        assert cert.not_valid_before_utc == sched.not_before(n)
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == f"NATS Intermediate CA Epoch {n}"
    return cert


@pytest.fixture
def mount(bao_client):
    name = new_mount(bao_client)
    yield name
    bao_client.sys.disable_secrets_engine(name)


@pytest.fixture
def root_pem(stack):
    return Path(stack["pki"]["root_pem_file"]).read_text(encoding="utf-8")


@pytest.fixture
def params(openbao_params, mount):
    return dict(SCHED, openbao=dict(openbao_params), int_mount=mount)


def current_epoch(sched: EpochSchedule) -> int:
    return sched.epoch(utcnow())


# ----------------------------------------------------------------------------- issue
def test_check_mode_then_issue_then_unchanged(run_module, bao_client, params, mount, root_pem):
    sched = schedule()
    n = current_epoch(sched)
    params = dict(params, epoch=n)
    before = snapshot(bao_client, mount)

    check = run_module("openbao_intermediate", params, check_mode=True, diff=True)
    assert not check.get("failed"), check
    assert check["changed"] is True and check["created"] is True
    assert check["issuer_name"] == f"epoch-{n}" and check["certificate"] is None
    assert check["not_after"] == sched.expiry(n).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert check["is_default"] is True  # predicted: first issuer of an empty mount becomes default
    assert check["diff"]["after"]["issuers"] == [f"epoch-{n}"]
    assert snapshot(bao_client, mount) == before  # nothing written

    res = run_module("openbao_intermediate", params, diff=True)
    assert not res.get("failed"), res
    assert res["changed"] is True and res["created"] is True
    cert = check_intermediate(res["certificate"], root_pem, sched, n)
    assert res["not_before"] == check["not_before"]
    assert res["serial"] == ":".join(f"{b:02x}" for b in cert.serial_number.to_bytes(20, "big").lstrip(b"\0"))
    assert res["root_certificate"].strip() == root_pem.strip()
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.key_size == 256

    # OpenBao state, read back directly
    issuers = issuers_of(bao_client, mount)
    assert list(issuers) == [res["issuer_id"]]
    info = bao_client.read(f"{mount}/issuer/{res['issuer_id']}")["data"]
    assert info["issuer_name"] == f"epoch-{n}"
    assert info["leaf_not_after_behavior"] == "truncate"
    assert keys_of(bao_client, mount)[info["key_id"]]["key_name"].startswith(f"epoch-{n}-")
    assert len(keys_of(bao_client, mount)) == 1  # only the intermediate's key; no root imported (format=pem)
    assert res["issuers"][0]["state"] == "active" and res["issuers"][0]["epoch_state"] == "current"

    again = run_module("openbao_intermediate", params)
    assert again["changed"] is False, again
    assert again["issuer_id"] == res["issuer_id"] and again["certificate"] == res["certificate"]
    assert again["created"] is False
    assert len(issuers_of(bao_client, mount)) == 1


@pytest.mark.parametrize("key_type,key_bits,cls,size", [
    ("rsa", 2048, rsa.RSAPublicKey, 2048),
    ("ed25519", 0, ed25519.Ed25519PublicKey, None),
    ("ec", 384, ec.EllipticCurvePublicKey, 384),
])
def test_key_types(run_module, params, root_pem, key_type, key_bits, cls, size):
    sched = schedule()
    n = current_epoch(sched)
    res = run_module("openbao_intermediate", dict(params, epoch=n, key_type=key_type, key_bits=key_bits))
    assert res["changed"] is True, res
    cert = check_intermediate(res["certificate"], root_pem, sched, n)
    assert isinstance(cert.public_key(), cls)
    if size:
        assert cert.public_key().key_size == size


def test_default_epoch_is_prepared_within_lead_time(run_module, params, root_pem):
    sched = schedule()
    now = utcnow()
    n = sched.epoch(now)
    # a `now` inside the lead time of epoch n+1 (still in the real present epoch, so n+1 is the next one)
    inside = sched.start(n + 1) - dt.timedelta(seconds=60)
    outside = sched.start(n) + dt.timedelta(seconds=1)
    check = run_module("openbao_intermediate", dict(params, now=inside.isoformat()), check_mode=True)
    assert check["epoch"] == n + 1, check
    check = run_module("openbao_intermediate", dict(params, now=outside.isoformat()), check_mode=True)
    assert check["epoch"] == n, check

    res = run_module("openbao_intermediate", dict(params, epoch=n + 1))
    # the next epoch has not started: NotBefore is signing time - skew, NotAfter still exactly expiry(n+1)
    cert = check_intermediate(res["certificate"], root_pem, sched, n + 1, exact_not_before=False)
    assert cert.not_valid_before_utc <= utcnow() - dt.timedelta(minutes=5) + dt.timedelta(seconds=5)
    assert cert.not_valid_before_utc >= now - dt.timedelta(minutes=5) - dt.timedelta(seconds=5)


# ----------------------------------------------------------------------------- activation
def test_first_issuer_of_an_empty_mount_is_default_by_itself(run_module, bao_client, params, mount):
    n = current_epoch(schedule())
    check = run_module("openbao_intermediate", dict(params, epoch=n, default=True), check_mode=True)
    assert check["changed"] is True and check["activated"] is False and check["is_default"] is True, check
    res = run_module("openbao_intermediate", dict(params, epoch=n, default=True))
    assert res["changed"] is True and res["activated"] is False and res["is_default"] is True, res
    assert bao_client.read(f"{mount}/config/issuers")["data"]["default"] == res["issuer_id"]


def test_activation_is_honest_and_refuses_revoked(run_module, bao_client, params, mount):
    sched = schedule()
    n = current_epoch(sched)
    first = run_module("openbao_intermediate", dict(params, epoch=n))
    nxt = run_module("openbao_intermediate", dict(params, epoch=n + 1))
    assert nxt["changed"] and nxt["is_default"] is False  # trust first, then issue: no automatic activation
    assert bao_client.read(f"{mount}/config/issuers")["data"]["default"] == first["issuer_id"]
    states = {i["issuer_name"]: i["state"] for i in nxt["issuers"]}
    assert states == {f"epoch-{n}": "active", f"epoch-{n + 1}": "prepared"}

    check = run_module("openbao_intermediate", dict(params, epoch=n + 1, default=True), check_mode=True, diff=True)
    assert check["changed"] is True and check["activated"] is True
    assert check["diff"]["before"]["default_issuer"] == f"epoch-{n}"
    assert check["diff"]["after"]["default_issuer"] == f"epoch-{n + 1}"
    assert bao_client.read(f"{mount}/config/issuers")["data"]["default"] == first["issuer_id"]

    act = run_module("openbao_intermediate", dict(params, epoch=n + 1, default=True))
    assert act["changed"] is True and act["activated"] is True, act
    assert act["previous_default"]["issuer_name"] == f"epoch-{n}"
    assert act["default_issuer"] == {"issuer_id": nxt["issuer_id"], "issuer_name": f"epoch-{n + 1}"}
    assert bao_client.read(f"{mount}/config/issuers")["data"]["default"] == nxt["issuer_id"]

    again = run_module("openbao_intermediate", dict(params, epoch=n + 1, default=True))
    assert again["changed"] is False and again["activated"] is False

    # OpenBao would happily make a revoked issuer the default; the module must not.
    bao_client.write_data(f"{mount}/issuer/epoch-{n}/revoke", data={})
    refused = run_module("openbao_intermediate", dict(params, epoch=n, default=True))
    assert refused["failed"] is True and "revoked" in refused["msg"], refused
    assert bao_client.read(f"{mount}/config/issuers")["data"]["default"] == nxt["issuer_id"]


# ----------------------------------------------------------------------------- pruning
def test_prune_after_expiry_and_grace(run_module, bao_client, params, mount):
    sched = schedule()
    n = current_epoch(sched)
    run_module("openbao_intermediate", dict(params, epoch=n))
    run_module("openbao_intermediate", dict(params, epoch=n + 1, default=True))
    # a key left by an interrupted run of epoch n
    bao_client.write_data(f"{mount}/intermediate/generate/internal",
                          data={"common_name": "x", "key_type": "ec", "key_name": f"epoch-{n}-dead01"})
    expiry_n = sched.expiry(n)

    # before expiry + grace: nothing goes (grace 10m)
    early = run_module("openbao_intermediate", dict(params, epoch=n + 1, prune=True, prune_grace="10m",
                                                    now=(expiry_n + dt.timedelta(minutes=9)).isoformat()))
    assert early["changed"] is False and early["pruned"] == [], early
    assert len(issuers_of(bao_client, mount)) == 2

    later = dict(params, epoch=n + 1, prune=True, prune_grace="10m",
                 now=(expiry_n + dt.timedelta(minutes=10, seconds=1)).isoformat())
    before = snapshot(bao_client, mount)
    check = run_module("openbao_intermediate", later, check_mode=True, diff=True)
    assert check["changed"] is True and [p["issuer_name"] for p in check["pruned"]] == [f"epoch-{n}"]
    assert check["diff"]["after"]["issuers"] == [f"epoch-{n + 1}"]
    assert snapshot(bao_client, mount) == before

    res = run_module("openbao_intermediate", later)
    assert res["changed"] is True and [p["issuer_name"] for p in res["pruned"]] == [f"epoch-{n}"], res
    assert [o["key_name"] for o in res["orphan_keys_deleted"]] == [f"epoch-{n}-dead01"]
    assert [i["issuer_name"] for i in issuers_of(bao_client, mount).values()] == [f"epoch-{n + 1}"]
    assert all(not k["key_name"].startswith(f"epoch-{n}-") for k in keys_of(bao_client, mount).values())
    assert run_module("openbao_intermediate", later)["changed"] is False


def test_prune_never_deletes_the_default(run_module, bao_client, params, mount):
    sched = schedule()
    n = current_epoch(sched)
    first = run_module("openbao_intermediate", dict(params, epoch=n))
    assert first["is_default"] is True
    # time moved past expiry(n) but epoch n is still the default: prune keeps it and says why
    late = (sched.expiry(n) + dt.timedelta(hours=2)).isoformat()
    args = dict(params, epoch=n, issue=False, prune=True, prune_grace=0, now=late)
    res = run_module("openbao_intermediate", args, check_mode=True)
    assert not res.get("failed"), res
    assert res["changed"] is False and res["pruned"] == []
    assert [k["issuer_name"] for k in res["prune_kept"]] == [f"epoch-{n}"] and "default" in res["prune_kept"][0]["reason"]
    res = run_module("openbao_intermediate", args)
    assert res["changed"] is False and res["exists"] is True and res["issuers"][0]["state"] == "active", res
    assert list(issuers_of(bao_client, mount)) == [first["issuer_id"]]


def test_issue_false_only_reports_and_activates_existing(run_module, bao_client, params, mount):
    n = current_epoch(schedule())
    res = run_module("openbao_intermediate", dict(params, epoch=n, issue=False))
    assert res["changed"] is False and res["exists"] is False and res["issuer_id"] is None, res
    res = run_module("openbao_intermediate", dict(params, epoch=n, issue=False, default=True))
    assert res["failed"] is True and "does not exist" in res["msg"], res
    assert issuers_of(bao_client, mount) == {}


# ----------------------------------------------------------------------------- bad input and failures
def test_expired_and_far_future_epochs_refused(run_module, bao_client, params, mount):
    sched = schedule()
    n = current_epoch(sched)
    res = run_module("openbao_intermediate", dict(params, epoch=n - 4))
    assert res["failed"] is True and f"Epoch {n - 4} expired at" in res["msg"], res
    assert "Valid epochs now" in res["msg"]
    res = run_module("openbao_intermediate", dict(params, epoch=n + 2))
    assert res["failed"] is True and "more than one epoch ahead" in res["msg"], res
    assert issuers_of(bao_client, mount) == {} and keys_of(bao_client, mount) == {}


def test_unknown_mounts(run_module, params):
    res = run_module("openbao_intermediate", dict(params, int_mount="nope_" + uuid.uuid4().hex[:6]))
    assert res["failed"] is True and "nothing is mounted at 'nope_" in res["msg"], res
    res = run_module("openbao_intermediate", dict(params, root_mount="noroot_" + uuid.uuid4().hex[:6]))
    assert res["failed"] is True and "nothing is mounted at 'noroot_" in res["msg"], res


def test_policy_limited_token_then_convergence(run_module, bao_client, params, mount):
    """A token without 'update' on the root's sign-intermediate: the error names path and capability; the key it
    generated first is an orphan that the next (authorised) run deletes."""
    policy = f"limited-{mount}"
    bao_client.sys.create_or_update_policy(policy, f"""
path "pki/issuer/*" {{ capabilities = ["read"] }}
path "{mount}/*" {{ capabilities = ["create", "read", "update", "patch", "delete", "list"] }}
""")
    token = bao_client.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    n = current_epoch(schedule())
    limited = dict(params, epoch=n, openbao=dict(params["openbao"], token=token))
    res = run_module("openbao_intermediate", limited)
    assert res["failed"] is True, res
    assert "Permission denied on 'pki/issuer/default/sign-intermediate'" in res["msg"]
    assert "the token needs 'update' on that path" in res["msg"]
    assert issuers_of(bao_client, mount) == {}  # nothing half-imported
    orphans = [k["key_name"] for k in keys_of(bao_client, mount).values()]
    assert len(orphans) == 1 and orphans[0].startswith(f"epoch-{n}-")

    ok = run_module("openbao_intermediate", dict(params, epoch=n))
    assert ok["changed"] is True and ok["created"] is True, ok
    assert [o["key_name"] for o in ok["orphan_keys_deleted"]] == orphans
    assert [k["key_name"] for k in keys_of(bao_client, mount).values()] == [ok["key_name"]]


def test_orphan_key_from_interrupted_run_is_cleaned(run_module, bao_client, params, mount, root_pem):
    """Simulates a crash between key generation and set-signed."""
    sched = schedule()
    n = current_epoch(sched)
    bao_client.write_data(f"{mount}/intermediate/generate/internal",
                          data={"common_name": "x", "key_type": "ec", "key_name": f"epoch-{n}-abc123"})
    check = run_module("openbao_intermediate", dict(params, epoch=n), check_mode=True)
    assert [o["key_name"] for o in check["orphan_keys_deleted"]] == [f"epoch-{n}-abc123"]
    assert len(keys_of(bao_client, mount)) == 1
    res = run_module("openbao_intermediate", dict(params, epoch=n))
    assert res["changed"] is True and res["created"] is True, res
    assert [o["key_name"] for o in res["orphan_keys_deleted"]] == [f"epoch-{n}-abc123"]
    assert [k["key_name"] for k in keys_of(bao_client, mount).values()] == [res["key_name"]]
    check_intermediate(res["certificate"], root_pem, sched, n)


def test_unnamed_issuer_from_interrupted_run_is_adopted(run_module, bao_client, params, mount, root_pem):
    """Simulates a crash between set-signed and naming the issuer: the right certificate is adopted, not re-issued."""
    sched = schedule()
    n = current_epoch(sched)
    csr = bao_client.write_data(f"{mount}/intermediate/generate/internal",
                                data={"common_name": f"NATS Intermediate CA Epoch {n}", "key_type": "ec",
                                      "key_name": f"epoch-{n}-feed42"})["data"]["csr"]
    signed = bao_client.write_data("pki/issuer/default/sign-intermediate", data={
        "csr": csr, "format": "pem", "common_name": f"NATS Intermediate CA Epoch {n}",
        "not_after": sched.expiry(n).strftime("%Y-%m-%dT%H:%M:%SZ"), "not_before_duration": 300})["data"]["certificate"]
    imported = bao_client.write_data(f"{mount}/intermediate/set-signed", data={"certificate": signed})["data"]
    issuer_id = imported["imported_issuers"][0]

    check = run_module("openbao_intermediate", dict(params, epoch=n), check_mode=True, diff=True)
    assert check["changed"] is True and check["adopted"] is True and check["created"] is False, check
    assert check["diff"]["after"]["issuers"] == [f"epoch-{n}"]
    assert bao_client.read(f"{mount}/issuer/{issuer_id}")["data"]["issuer_name"] == ""

    res = run_module("openbao_intermediate", dict(params, epoch=n))
    assert res["changed"] is True and res["adopted"] is True and res["created"] is False, res
    assert res["issuer_id"] == issuer_id and res["key_name"] == f"epoch-{n}-feed42"
    assert list(issuers_of(bao_client, mount)) == [issuer_id]
    assert bao_client.read(f"{mount}/issuer/{issuer_id}")["data"]["issuer_name"] == f"epoch-{n}"
    assert run_module("openbao_intermediate", dict(params, epoch=n))["changed"] is False


def test_wrong_existing_issuer_is_reported_and_state_absent(run_module, bao_client, params, mount):
    sched = schedule()
    n = current_epoch(sched)
    run_module("openbao_intermediate", dict(params, epoch=n))
    run_module("openbao_intermediate", dict(params, epoch=n + 1))
    # a different validity means epoch n+1's NotAfter no longer matches: refuse and say what to do
    res = run_module("openbao_intermediate", dict(params, epoch=n + 1, validity="5h"))
    assert res["failed"] is True and "NotAfter" in res["msg"] and "state: absent" in res["msg"], res

    refused = run_module("openbao_intermediate", dict(params, epoch=n, state="absent"))
    assert refused["failed"] is True and "default issuer" in refused["msg"]

    check = run_module("openbao_intermediate", dict(params, epoch=n + 1, state="absent"), check_mode=True)
    assert check["changed"] is True and len(issuers_of(bao_client, mount)) == 2
    gone = run_module("openbao_intermediate", dict(params, epoch=n + 1, state="absent"))
    assert gone["changed"] is True and [p["issuer_name"] for p in gone["pruned"]] == [f"epoch-{n + 1}"]
    assert [i["issuer_name"] for i in issuers_of(bao_client, mount).values()] == [f"epoch-{n}"]
    assert all(not k["key_name"].startswith(f"epoch-{n + 1}-") for k in keys_of(bao_client, mount).values())
    assert run_module("openbao_intermediate", dict(params, epoch=n + 1, state="absent"))["changed"] is False


def test_approle_auth(run_module, bao_client, params, mount):
    auth_path = f"approle-{uuid.uuid4().hex[:8]}"
    bao_client.sys.enable_auth_method("approle", path=auth_path)
    policy = f"intermediate-{mount}"
    bao_client.sys.create_or_update_policy(policy, f"""
path "pki/issuer/+/sign-intermediate" {{ capabilities = ["update"] }}
path "{mount}/intermediate/*" {{ capabilities = ["update"] }}
path "{mount}/issuer/*" {{ capabilities = ["read", "patch", "update"] }}
path "{mount}/issuers" {{ capabilities = ["list"] }}
path "{mount}/keys" {{ capabilities = ["list"] }}
path "{mount}/key/*" {{ capabilities = ["read", "delete"] }}
path "{mount}/config/issuers" {{ capabilities = ["read", "update"] }}
""")
    try:
        bao_client.auth.approle.create_or_update_approle("rotator", token_policies=[policy], mount_point=auth_path)
        role_id = bao_client.auth.approle.read_role_id("rotator", mount_point=auth_path)["data"]["role_id"]
        secret_id = bao_client.auth.approle.generate_secret_id("rotator", mount_point=auth_path)["data"]["secret_id"]
        url = params["openbao"]["url"]
        approle = {"url": url, "auth_method": "approle", "role_id": role_id, "secret_id": secret_id,
                   "auth_mount_point": auth_path}
        n = current_epoch(schedule())
        res = run_module("openbao_intermediate", dict(params, epoch=n, default=True, openbao=approle))
        assert res["changed"] is True and res["is_default"] is True, res
        assert secret_id not in json.dumps(res) and role_id not in json.dumps(res)  # no_log

        bad = run_module("openbao_intermediate", dict(params, epoch=n, openbao=dict(approle, secret_id="wrong")))
        assert bad["failed"] is True and "AppRole login failed" in bad["msg"], bad
        assert f"auth/{auth_path}/login" in bad["msg"]
    finally:
        bao_client.sys.disable_auth_method(auth_path)


# ----------------------------------------------------------------------------- private dev servers
class DevBao:
    """A private ``bao server -dev`` (optionally with -dev-tls) with a root in ``pki``."""

    def __init__(self, tmp: Path, tls: bool = False):
        self.tmp = tmp
        self.tls = tls
        self.token = "t-" + secrets.token_hex(16)
        self.port = free_port()
        self.marker = f"127.0.0.1:{self.port}"
        self.ca_cert = str(tmp / "tls" / "vault-ca.pem") if tls else None
        self.addr = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        argv = [find_binary("bao"), "server", "-dev", "-dev-no-store-token", f"-dev-root-token-id={self.token}",
                f"-dev-listen-address={self.marker}"]
        if self.tls:
            (self.tmp / "tls").mkdir(parents=True, exist_ok=True)
            argv += ["-dev-tls", f"-dev-tls-cert-dir={self.tmp / 'tls'}"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.tmp)}
        self.proc = spawn(argv, self.tmp / "bao.log", env)

        def healthy():
            assert self.proc.poll() is None, (self.tmp / "bao.log").read_text()
            if self.ca_cert and not Path(self.ca_cert).exists():
                return False
            return http_json(f"{self.addr}/v1/sys/health", cafile=self.ca_cert)[0] == 200

        wait_for(healthy, 60, f"OpenBao on {self.addr}")
        client = self.client()
        client.sys.enable_secrets_engine("pki", path="pki", config={"max_lease_ttl": "87600h"})
        client.write_data("pki/root/generate/internal",
                          data={"common_name": "Test Root", "key_type": "ec", "ttl": "87600h", "issuer_name": "root"})
        client.sys.enable_secrets_engine("pki", path="pki_int", config={"max_lease_ttl": "87600h"})
        return self

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.token, verify=self.ca_cert or True)

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc.pid, self.marker)
            self.proc.wait(timeout=10)


@pytest.fixture
def tls_bao(tmp_path):
    bao = DevBao(tmp_path, tls=True).start()
    yield bao
    bao.stop()


@pytest.fixture
def plain_bao(tmp_path):
    bao = DevBao(tmp_path).start()
    yield bao
    bao.stop()


def test_tls_verification(run_module, tls_bao):
    n = current_epoch(schedule())
    base = dict(SCHED, epoch=n)
    conn = {"url": tls_bao.addr, "token": tls_bao.token}

    res = run_module("openbao_intermediate", dict(base, openbao=dict(conn, ca_cert="/nonexistent/ca.pem")))
    assert res["failed"] is True and "openbao.ca_cert '/nonexistent/ca.pem' does not exist" in res["msg"]

    res = run_module("openbao_intermediate", dict(base, openbao=conn))  # system trust store: must fail
    assert res["failed"] is True and "TLS verification failed" in res["msg"], res
    assert "openbao.ca_cert" in res["msg"]

    res = run_module("openbao_intermediate", dict(base, openbao=dict(conn, ca_cert=tls_bao.ca_cert)))
    assert res["changed"] is True, res
    check_intermediate(res["certificate"], tls_bao.client().read("pki/issuer/root")["data"]["certificate"],
                       schedule(), n)

    res = run_module("openbao_intermediate", dict(base, openbao=dict(conn, validate_certs=False)))
    assert res["changed"] is False, res


class FaultProxy:
    """HTTP proxy in front of a real OpenBao that can drop requests (OpenBao gone mid-run) or answer 503."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.drop = None          # callable(method, path) -> bool: drop the connection without answering
        self.unavailable = 0      # answer this many requests with 503 first
        self.seen = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.seen.append((self.command, self.path))
                if proxy.drop and proxy.drop(self.command, self.path):
                    self.close_connection = True
                    self.connection.close()
                    return
                if proxy.unavailable > 0:
                    proxy.unavailable -= 1
                    payload = b'{"errors":["Vault is sealed"]}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(plain_bao):
    p = FaultProxy(plain_bao.port)
    yield p
    p.close()


def test_openbao_gone_mid_run_then_converges(run_module, plain_bao, proxy):
    """OpenBao disappears right when the root is asked to sign (after the key was generated): clear error,
    nothing imported, and the next run converges and removes the orphan key."""
    sched = schedule()
    n = current_epoch(sched)
    conn = {"url": f"http://127.0.0.1:{proxy.port}", "token": plain_bao.token, "retries": 1}
    base = dict(SCHED, epoch=n, openbao=conn)
    client = plain_bao.client()

    proxy.drop = lambda method, path: "sign-intermediate" in path
    res = run_module("openbao_intermediate", base)
    assert res["failed"] is True, res
    assert f"Cannot reach OpenBao at http://127.0.0.1:{proxy.port}" in res["msg"]
    assert "signing the intermediate with the root on 'pki/issuer/default/sign-intermediate'" in res["msg"]
    assert issuers_of(client, "pki_int") == {}
    assert len(keys_of(client, "pki_int")) == 1  # the key generated before the outage

    proxy.drop = None
    res = run_module("openbao_intermediate", base)
    assert res["changed"] is True and res["created"] is True, res
    assert len(res["orphan_keys_deleted"]) == 1
    check_intermediate(res["certificate"], client.read("pki/issuer/root")["data"]["certificate"], sched, n)
    assert [k["key_name"] for k in keys_of(client, "pki_int").values()] == [res["key_name"]]


def test_retries_on_unavailable_then_succeeds(run_module, plain_bao, proxy):
    n = current_epoch(schedule())
    conn = {"url": f"http://127.0.0.1:{proxy.port}", "token": plain_bao.token, "retries": 3}
    proxy.unavailable = 2  # the first two requests (GETs: root certificate) get 503
    res = run_module("openbao_intermediate", dict(SCHED, epoch=n, openbao=conn))
    assert res["changed"] is True, res
    assert proxy.seen[0] == proxy.seen[1] == proxy.seen[2]  # the same request, retried

    proxy.unavailable = 100
    res = run_module("openbao_intermediate", dict(SCHED, epoch=n, openbao=dict(conn, retries=1)))
    assert res["failed"] is True and "unavailable (HTTP 503" in res["msg"], res


def test_openbao_stopped(run_module, plain_bao):
    n = current_epoch(schedule())
    conn = {"url": plain_bao.addr, "token": plain_bao.token, "retries": 1}
    assert run_module("openbao_intermediate", dict(SCHED, epoch=n, openbao=conn))["changed"] is True
    plain_bao.stop()
    res = run_module("openbao_intermediate", dict(SCHED, epoch=n, openbao=conn))
    assert res["failed"] is True and f"Cannot reach OpenBao at {plain_bao.addr}" in res["msg"], res
    assert "Check openbao.url" in res["msg"]


def test_namespace(run_module, plain_bao):
    """Everything happens inside the OpenBao namespace given by openbao.namespace."""
    client = plain_bao.client()
    client.sys.create_namespace("team1")
    ns = hvac.Client(url=plain_bao.addr, token=plain_bao.token, namespace="team1")
    ns.sys.enable_secrets_engine("pki", path="pki", config={"max_lease_ttl": "87600h"})
    root = ns.write_data("pki/root/generate/internal", data={"common_name": "Team Root", "key_type": "ec",
                                                             "ttl": "87600h"})["data"]["certificate"]
    ns.sys.enable_secrets_engine("pki", path="pki_int", config={"max_lease_ttl": "87600h"})
    sched = schedule()
    n = current_epoch(sched)
    conn = {"url": plain_bao.addr, "token": plain_bao.token, "namespace": "team1"}
    res = run_module("openbao_intermediate", dict(SCHED, epoch=n, openbao=conn))
    assert res["changed"] is True, res
    check_intermediate(res["certificate"], root, sched, n)
    assert [i["issuer_name"] for i in issuers_of(ns, "pki_int").values()] == [f"epoch-{n}"]
    assert issuers_of(client, "pki_int") == {}  # the root namespace's mount is untouched


def test_kubernetes_auth_login_path(run_module, bao_client, params, tmp_path):
    """The Kubernetes login goes to auth/<mount>/login with the JWT file; a rejected login is reported clearly.
    (A successful login needs a Kubernetes TokenReview API, which the test stack does not have.)"""
    auth_path = f"k8s-{uuid.uuid4().hex[:8]}"
    bao_client.sys.enable_auth_method("kubernetes", path=auth_path)
    try:
        jwt = tmp_path / "sa-token"
        jwt.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl\n")
        conn = {"url": params["openbao"]["url"], "auth_method": "kubernetes", "kubernetes_role": "rotator",
                "kubernetes_token_path": str(jwt), "auth_mount_point": auth_path}
        res = run_module("openbao_intermediate", dict(params, openbao=conn))
        assert res["failed"] is True and f"Kubernetes login failed at 'auth/{auth_path}/login'" in res["msg"], res
        assert "eyJhbGciOiJSUzI1NiJ9" not in json.dumps(res)
    finally:
        bao_client.sys.disable_auth_method(auth_path)

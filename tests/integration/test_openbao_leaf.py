"""openbao_leaf against the session stack's real OpenBao (own intermediate mount per test)."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import certs as common_certs
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import intermediate as bao_intermediate

pytestmark = pytest.mark.timeout(300)

SCHED = {"epoch_duration": "1h", "skew_allowance": "5m"}


def certs_in(path) -> list:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def state_of(paths) -> dict:
    return {str(p): (Path(p).read_bytes(), os.stat(p).st_mtime_ns, mode_of(p)) for p in paths if Path(p).exists()}


class Env:
    def __init__(self, client, openbao_params, tmp_path, role_extra=None):
        self.client = client
        self.sched = EpochSchedule.from_params(SCHED)
        self.n = self.sched.epoch(utcnow())
        self.mount = f"pki_leaf_{uuid.uuid4().hex[:10]}"
        client.sys.enable_secrets_engine("pki", path=self.mount, config={"max_lease_ttl": "87600h"})
        self.intermediate = bao_intermediate.ensure_epoch_intermediate(client, self.sched, self.n, int_mount=self.mount)
        role = {"allow_any_name": True, "allow_localhost": True, "allow_ip_sans": True, "enforce_hostnames": False,
                "server_flag": True, "client_flag": True, "key_type": "ec", "key_bits": 256, "ttl": "1h",
                "max_ttl": "200h", "no_store": True}
        role.update(role_extra or {})
        client.write_data(f"{self.mount}/roles/leaf", data=role)
        self.dir = tmp_path / "tls"
        self.dir.mkdir()
        self.params = dict(SCHED, openbao=dict(openbao_params), int_mount=self.mount, role="leaf", common_name="nats-0",
                           alt_names=["localhost"], ip_sans=["127.0.0.1"], cert_file=str(self.dir / "server.pem"),
                           key_file=str(self.dir / "server-key.pem"), chain_file=str(self.dir / "chain.pem"))
        self.files = [self.params["cert_file"], self.params["key_file"], self.params["chain_file"]]

    def issuer_cert(self, name):
        return x509.load_pem_x509_certificate(self.client.read(f"{self.mount}/issuer/{name}")["data"]["certificate"].encode())

    def close(self):
        self.client.sys.disable_secrets_engine(self.mount)


@pytest.fixture
def env(bao_client, openbao_params, tmp_path):
    e = Env(bao_client, openbao_params, tmp_path)
    yield e
    e.close()


def test_issue_check_mode_then_real_then_unchanged(run_module, env, stack):
    check = run_module("openbao_leaf", env.params, check_mode=True)
    assert check["changed"] is True and check["issued"] is True, check
    assert "does not exist" in check["reasons"][0]
    assert state_of(env.files) == {}  # nothing written

    res = run_module("openbao_leaf", env.params)
    assert res["changed"] is True and res["issued"] is True, res
    assert sorted(res["files_written"]) == sorted(env.files)
    assert mode_of(env.params["cert_file"]) == 0o644 and mode_of(env.params["chain_file"]) == 0o644
    assert mode_of(env.params["key_file"]) == 0o600
    assert sorted(os.listdir(env.dir)) == ["chain.pem", "server-key.pem", "server.pem"]  # no temp files left

    leaf, inter = certs_in(env.params["cert_file"])  # full_chain: leaf + issuing CA
    root = x509.load_pem_x509_certificate(Path(stack["pki"]["root_pem_file"]).read_bytes())
    leaf.verify_directly_issued_by(inter)
    inter.verify_directly_issued_by(root)
    assert inter == env.issuer_cert(f"epoch-{env.n}")
    assert certs_in(env.params["chain_file"]) == [inter]
    key = serialization.load_pem_private_key(Path(env.params["key_file"]).read_bytes(), None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert res["issuer_name"] == f"epoch-{env.n}" and res["epoch"] == env.n
    assert res["serial"] == common_certs.serial_hex(leaf.serial_number)

    # the private key is neither returned nor logged
    assert "private_key" not in res
    assert Path(env.params["key_file"]).read_text().strip().splitlines()[1] not in json.dumps(res)

    before = state_of(env.files)
    again = run_module("openbao_leaf", env.params)
    assert again["changed"] is False and again["reasons"] == [] and again["serial"] == res["serial"], again
    assert state_of(env.files) == before


def test_renews_after_activation(run_module, env):
    first = run_module("openbao_leaf", env.params)
    nxt = bao_intermediate.ensure_epoch_intermediate(env.client, env.sched, env.n + 1, int_mount=env.mount)
    assert run_module("openbao_leaf", env.params)["changed"] is False  # n+1 prepared but not active yet

    bao_intermediate.set_default_issuer(env.client, env.mount, f"epoch-{env.n + 1}")
    keep = run_module("openbao_leaf", dict(env.params, renew_if_not_default=False))
    assert keep["changed"] is False, keep

    before = state_of(env.files)
    check = run_module("openbao_leaf", env.params, check_mode=True)
    assert check["changed"] is True and "no longer the default issuer" in check["reasons"][0], check
    assert state_of(env.files) == before

    res = run_module("openbao_leaf", env.params)
    assert res["changed"] is True and res["issuer_name"] == f"epoch-{env.n + 1}", res
    assert res["serial"] != first["serial"]
    leaf, inter = certs_in(env.params["cert_file"])
    leaf.verify_directly_issued_by(env.issuer_cert(nxt["issuer_id"]))
    assert run_module("openbao_leaf", env.params)["changed"] is False


def test_renewal_window(run_module, env):
    first = run_module("openbao_leaf", env.params)
    not_after = dt.datetime.strptime(first["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    soon = (not_after - dt.timedelta(minutes=10)).isoformat()  # 10 of 60 minutes left: inside 33%

    assert run_module("openbao_leaf", dict(env.params, now=soon, renew_before="5m"))["changed"] is False
    before = state_of(env.files)
    check = run_module("openbao_leaf", dict(env.params, now=soon), check_mode=True)
    assert check["changed"] is True and "within the renewal window" in check["reasons"][0], check
    assert state_of(env.files) == before

    res = run_module("openbao_leaf", dict(env.params, now=soon))
    assert res["changed"] is True and res["serial"] != first["serial"], res
    res = run_module("openbao_leaf", dict(env.params, now=(not_after + dt.timedelta(hours=1)).isoformat()))
    assert res["changed"] is True and any("expire" in r for r in res["reasons"]), res


def test_truncated_to_the_intermediate(run_module, env):
    res = run_module("openbao_leaf", dict(env.params, ttl="100h"))
    assert res["not_after"] == env.intermediate["not_after"], res


def test_drift_key_mismatch_and_return_content(run_module, env):
    first = run_module("openbao_leaf", env.params)
    os.chmod(env.params["key_file"], 0o644)
    fixed = run_module("openbao_leaf", env.params)
    assert fixed["changed"] is True and fixed["issued"] is False and fixed["serial"] == first["serial"], fixed
    assert mode_of(env.params["key_file"]) == 0o600

    Path(env.params["chain_file"]).write_text("garbage\n")
    fixed = run_module("openbao_leaf", env.params)
    assert fixed["changed"] is True and fixed["issued"] is False and fixed["files_written"] == [env.params["chain_file"]]
    assert certs_in(env.params["chain_file"]) == [env.issuer_cert(f"epoch-{env.n}")]

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    Path(env.params["key_file"]).write_bytes(other)
    res = run_module("openbao_leaf", dict(env.params, return_content=True))
    assert res["changed"] is True and res["issued"] is True, res
    assert any("does not hold the private key" in r for r in res["reasons"])
    assert res["private_key"] == Path(env.params["key_file"]).read_text()


def test_issuer_removed_and_local_key(run_module, env):
    run_module("openbao_leaf", env.params)
    bao_intermediate.ensure_epoch_intermediate(env.client, env.sched, env.n + 1, int_mount=env.mount)
    bao_intermediate.set_default_issuer(env.client, env.mount, f"epoch-{env.n + 1}")
    bao_intermediate.remove_epoch_intermediate(env.client, env.mount, env.n)

    local = dict(env.params, renew_if_not_default=False, key_source="local", key_type="ec")
    res = run_module("openbao_leaf", local)
    assert res["changed"] is True and "no longer an issuer of the mount" in res["reasons"][0], res
    leaf = certs_in(env.params["cert_file"])[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    key = serialization.load_pem_private_key(Path(env.params["key_file"]).read_bytes(), None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert run_module("openbao_leaf", local)["changed"] is False


def test_issuer_ref(run_module, env):
    bao_intermediate.ensure_epoch_intermediate(env.client, env.sched, env.n + 1, int_mount=env.mount)
    res = run_module("openbao_leaf", dict(env.params, issuer_ref=f"epoch-{env.n + 1}"))
    assert res["issuer_name"] == f"epoch-{env.n + 1}", res
    res = run_module("openbao_leaf", dict(env.params, issuer_ref=f"epoch-{env.n}"))
    assert res["changed"] is True and "not by issuer_ref" in res["reasons"][0], res
    res = run_module("openbao_leaf", dict(env.params, issuer_ref="epoch-1"))
    assert res["failed"] is True and "issuer_ref 'epoch-1' is not an issuer" in res["msg"], res


def test_errors(run_module, env, bao_client):
    res = run_module("openbao_leaf", dict(env.params, role="nope"))
    assert res["failed"] is True and f"'{env.mount}/issue/nope'" in res["msg"], res

    policy = f"leaf-ro-{env.mount}"
    bao_client.sys.create_or_update_policy(policy, f'path "{env.mount}/*" {{ capabilities = ["read", "list"] }}')
    token = bao_client.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    res = run_module("openbao_leaf", dict(env.params, openbao=dict(env.params["openbao"], token=token)))
    assert res["failed"] is True, res
    assert f"Permission denied on '{env.mount}/issue/leaf'" in res["msg"] and "needs 'update'" in res["msg"]
    assert state_of(env.files) == {}

    res = run_module("openbao_leaf", dict(env.params, cert_file=str(env.dir / "missing" / "c.pem")))
    assert res["failed"] is True and "does not exist" in res["msg"], res

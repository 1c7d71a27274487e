"""ML-DSA issuance against a real OpenBao (DESIGN section 12, facts in section 10): an ML-DSA root, epoch intermediates
of each ML-DSA parameter set with the exact NotAfter, leaves with a key made here (only the CSR goes to OpenBao) and
with a key OpenBao makes, and the key size never left to OpenBao's default (ML-DSA-44). Checked with cryptography,
independently of the code under test."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import public_key_der
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, utcnow

pytestmark = pytest.mark.timeout(300)

SCHED = {"epoch_duration": "1h", "skew_allowance": "5m"}
PUBLIC = {44: mldsa.MLDSA44PublicKey, 65: mldsa.MLDSA65PublicKey, 87: mldsa.MLDSA87PublicKey}


def _issuers(client, mount) -> dict:
    try:
        return client.adapter.request("LIST", f"/v1/{mount}/issuers")["data"]["key_info"]
    except Exception:  # noqa: BLE001 - an empty mount answers 404
        return {}


@pytest.fixture
def pq(bao_client, openbao_params, tmp_path):
    """An ML-DSA-65 root on its own mount and an empty intermediate mount."""
    root_mount, int_mount = f"pki_pqroot_{uuid.uuid4().hex[:8]}", f"pki_pqint_{uuid.uuid4().hex[:8]}"
    for mount in (root_mount, int_mount):
        bao_client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    root = bao_client.write_data(f"{root_mount}/root/generate/internal", data={
        "common_name": "NATS PQ Root CA", "key_type": "mldsa", "key_bits": 65, "ttl": "87600h", "issuer_name": "root"})["data"]
    yield {"root_mount": root_mount, "int_mount": int_mount, "root": x509.load_pem_x509_certificate(root["certificate"].encode()),
           "params": dict(SCHED, openbao=dict(openbao_params), root_mount=root_mount, int_mount=int_mount), "dir": tmp_path}
    for mount in (int_mount, root_mount):
        bao_client.sys.disable_secrets_engine(mount)


def test_the_root_is_ml_dsa_65_not_openbaos_default(pq):
    assert isinstance(pq["root"].public_key(), mldsa.MLDSA65PublicKey)


@pytest.mark.parametrize("bits", [44, 65, 87])
def test_ml_dsa_epoch_intermediates_have_the_exact_not_after_and_converge(run_module, bao_client, pq, bits):
    sched = EpochSchedule.from_params(SCHED)
    n = sched.epoch(utcnow())
    res = run_module("openbao_intermediate", dict(pq["params"], epoch=n, key_type="mldsa", key_bits=bits))
    assert res["changed"] is True, res
    cert = x509.load_pem_x509_certificate(res["certificate"].encode())
    assert isinstance(cert.public_key(), PUBLIC[bits])
    cert.verify_directly_issued_by(pq["root"])  # an ML-DSA-65 signature, verified by cryptography
    assert cert.not_valid_after_utc == sched.expiry(n) and cert.not_valid_before_utc == sched.not_before(n)
    assert len(cert.public_bytes(serialization.Encoding.DER)) > 3000  # ML-DSA certificates are several KB
    again = run_module("openbao_intermediate", dict(pq["params"], epoch=n, key_type="mldsa", key_bits=bits))
    assert again["changed"] is False and again["certificate"] == res["certificate"], again


def test_an_ec_intermediate_under_the_ml_dsa_root(run_module, pq):
    sched = EpochSchedule.from_params(SCHED)
    n = sched.epoch(utcnow())
    res = run_module("openbao_intermediate", dict(pq["params"], epoch=n, key_type="ec", key_bits=384))
    cert = x509.load_pem_x509_certificate(res["certificate"].encode())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().key_size == 384
    cert.verify_directly_issued_by(pq["root"])


@pytest.mark.parametrize("key_type, bits, words", [
    ("mldsa", 0, "key_type mldsa needs key_bits: 44, 65 or 87"),
    ("mldsa", 66, "mldsa takes 44, 65, 87"),
    ("ed25519", 256, "ed25519 has no key size"),
])
def test_bad_key_bits_fail_up_front_naming_the_option_and_change_nothing(run_module, bao_client, pq, key_type, bits, words):
    res = run_module("openbao_intermediate", dict(pq["params"], key_type=key_type, key_bits=bits))
    assert res["failed"] is True and res["option"] == "key_bits" and words in res["msg"], res
    assert "nothing was changed" in res["msg"]
    assert _issuers(bao_client, pq["int_mount"]) == {}


def test_ml_dsa_leaves_with_a_local_key_and_with_an_openbao_key(run_module, bao_client, pq):
    sched = EpochSchedule.from_params(SCHED)
    n = sched.epoch(utcnow())
    inter = run_module("openbao_intermediate", dict(pq["params"], epoch=n, key_type="mldsa", key_bits=65, default=True))
    assert inter.get("failed") is not True, inter
    issuer = x509.load_pem_x509_certificate(inter["certificate"].encode())
    bao_client.write_data(f"{pq['int_mount']}/roles/leaf", data={
        "allow_any_name": True, "allow_ip_sans": True, "enforce_hostnames": False, "server_flag": True, "client_flag": True,
        "key_type": "any", "ttl": "1h", "max_ttl": "200h", "no_store": True})
    base = dict(openbao=pq["params"]["openbao"], int_mount=pq["int_mount"], role="leaf", ip_sans=["127.0.0.1"], **SCHED)
    for source, bits in (("local", 65), ("openbao", 87)):
        files = {k: str(pq["dir"] / f"{source}-{k}.pem") for k in ("cert_file", "key_file")}
        res = run_module("openbao_leaf", dict(base, common_name=f"nats-{source}", key_source=source, key_type="mldsa",
                                              key_bits=bits, **files))
        assert res["changed"] is True and res["issued"] is True, res
        leaf = x509.load_pem_x509_certificates(Path(files["cert_file"]).read_bytes())[0]
        assert isinstance(leaf.public_key(), PUBLIC[bits]), (source, type(leaf.public_key()))
        leaf.verify_directly_issued_by(issuer)
        key = serialization.load_pem_private_key(Path(files["key_file"]).read_bytes(), None)
        assert public_key_der(key.public_key()) == public_key_der(leaf.public_key())
        again = run_module("openbao_leaf", dict(base, common_name=f"nats-{source}", key_source=source, key_type="mldsa",
                                                key_bits=bits, **files))
        assert again["changed"] is False, again
    # a changed parameter set re-issues the leaf, and says why
    switched = run_module("openbao_leaf", dict(base, common_name="nats-local", key_source="local", key_type="mldsa", key_bits=44,
                                               cert_file=str(pq["dir"] / "local-cert_file.pem"),
                                               key_file=str(pq["dir"] / "local-key_file.pem")))
    assert switched["changed"] is True and "its key is mldsa 65, not mldsa 44 as configured" in switched["reasons"], switched
    leaf = x509.load_pem_x509_certificates((pq["dir"] / "local-cert_file.pem").read_bytes())[0]
    assert isinstance(leaf.public_key(), mldsa.MLDSA44PublicKey)
    # a leaf request without the parameter set is refused before OpenBao is asked (it would default to 44)
    res = run_module("openbao_leaf", dict(base, common_name="nats-x", key_type="mldsa", cert_file=str(pq["dir"] / "x.pem"),
                                          key_file=str(pq["dir"] / "x-key.pem")))
    assert res["failed"] is True and res["option"] == "key_bits" and not (pq["dir"] / "x.pem").exists(), res

# -*- coding: utf-8 -*-
"""Pure logic of module_utils/_openbao/ (and the certificate helpers of _common/certs.py it uses): error messages,
connection set-up, certificate checks, renewal rules.

No OpenBao here (integration tests cover the API); certificates are made locally with cryptography.
"""

from __future__ import annotations

import datetime as dt

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import certs as common_certs
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import pem as common_pem
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, EpochSchedule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import client as bao_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import errors as bao_errors
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import intermediate as bao_intermediate
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import leaf as bao_leaf
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import pki as bao_pki

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


# ----------------------------------------------------------------------------- tiny CA
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject, key, issuer=None, issuer_key=None, *, ca=False, key_cert_sign=None, not_before=T0,
          not_after=T0 + dt.timedelta(hours=4), dns=(), ips=()):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    kcs = ca if key_cert_sign is None else key_cert_sign
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=kcs, crl_sign=kcs, encipher_only=False, decipher_only=False), critical=True)
    if dns or ips:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki():
    root_key, int_key, leaf_key = _key(), _key(), _key()
    root = _cert("Root", root_key, ca=True, not_before=T0 - dt.timedelta(days=1), not_after=T0 + dt.timedelta(days=365))
    inter = _cert("NATS Intermediate CA Epoch 5", int_key, root, root_key, ca=True)
    leaf = _cert("nats-0", leaf_key, inter, int_key, not_after=T0 + dt.timedelta(hours=1), dns=["localhost"], ips=["127.0.0.1"])
    return dict(root=root, root_key=root_key, inter=inter, int_key=int_key, leaf=leaf, leaf_key=leaf_key)


# ----------------------------------------------------------------------------- certificates
def test_serial_hex_matches_openbao_notation():
    assert common_certs.serial_hex(0x2b197b10) == "2b:19:7b:10"
    assert common_certs.serial_hex(0xabc) == "0a:bc"


@given(st.integers(min_value=1, max_value=2 ** 159))
def test_serial_hex_roundtrip(n):
    text = common_certs.serial_hex(n)
    assert int(text.replace(":", ""), 16) == n
    assert all(len(part) == 2 for part in text.split(":"))


def test_cert_facts(pki):
    facts = common_certs.cert_facts(_pem(pki["inter"]))
    assert facts["common_name"] == "NATS Intermediate CA Epoch 5"
    assert facts["not_before"] == "2025-03-01T12:00:00Z" and facts["not_after"] == "2025-03-01T16:00:00Z"
    assert facts["sha256"] == pki["inter"].fingerprint(hashes.SHA256()).hex()
    assert facts["certificate"].endswith("-----END CERTIFICATE-----\n")


def test_verify_intermediate(pki):
    root_pem = _pem(pki["root"])
    good = _pem(pki["inter"])
    assert common_certs.verify_intermediate(good, root_pem, T0 + dt.timedelta(hours=4)) == []
    assert "NotAfter is 2025-03-01T16:00:00Z, expected exactly 2025-03-01T17:00:00Z" in \
        common_certs.verify_intermediate(good, root_pem, T0 + dt.timedelta(hours=5))
    other_root_key = _key()
    other = _cert("Other", other_root_key, ca=True)
    assert any("not signed by the root" in p for p in common_certs.verify_intermediate(good, _pem(other)))
    not_ca = _cert("x", _key(), pki["root"], pki["root_key"], ca=False)
    assert "BasicConstraints CA is false" in common_certs.verify_intermediate(_pem(not_ca), root_pem)
    no_sign = _cert("x", _key(), pki["root"], pki["root_key"], ca=True, key_cert_sign=False)
    assert "KeyUsage lacks keyCertSign" in common_certs.verify_intermediate(_pem(no_sign), root_pem)


def test_split_pem_certs(pki):
    text = "junk\n" + _pem(pki["leaf"]) + "\n\n" + _pem(pki["inter"]).strip()
    assert common_pem.pem_certificates(text) == [_pem(pki["leaf"]), _pem(pki["inter"])]
    assert common_pem.pem_certificates("") == []


# ----------------------------------------------------------------------------- issuer bookkeeping
def test_orphan_keys_and_epoch_names():
    keys = {"k1": {"key_name": "epoch-5-abc123"}, "k2": {"key_name": "epoch-5-def456"}, "k3": {"key_name": "epoch-6-aaaaaa"},
            "k4": {"key_name": "root"}, "k5": {"key_name": ""}}
    issuers = {"i1": {"issuer_name": "epoch-5", "key_id": "k1"}}
    assert [k["key_name"] for k in bao_intermediate._orphan_keys(keys, issuers, 5)] == ["epoch-5-def456"]
    assert [k["key_name"] for k in bao_intermediate._orphan_keys(keys, issuers)] == ["epoch-5-def456", "epoch-6-aaaaaa"]
    assert bao_pki.epoch_of("epoch-12") == 12 and bao_pki.epoch_of("epoch-12-abc") is None and bao_pki.epoch_of(None) is None


def test_issuer_state():
    sched = EpochSchedule.from_params({"epoch_duration": "1h", "epoch_zero": "2025-03-01T00:00:00Z"})  # validity 4h
    now = T0  # epoch 12

    def issuer(n, default=False, revoked=False):
        return {"epoch": n, "is_default": default, "revoked": revoked,
                "not_after": (sched.expiry(n)).strftime("%Y-%m-%dT%H:%M:%SZ")}

    issuers = [issuer(8), issuer(10), issuer(12, default=True), issuer(13), issuer(11, revoked=True)]
    states = [i["state"] for i in bao_pki.describe_issuers(issuers, sched, now)]
    assert states == ["expired", "valid", "active", "prepared", "revoked"]
    # no default: "prepared" is relative to the current epoch
    assert bao_pki.issuer_state(issuer(13), sched, now) == "prepared"
    assert bao_pki.issuer_state(issuer(12), sched, now) == "valid"


# ----------------------------------------------------------------------------- errors
class _Client:
    url = "http://127.0.0.1:8200"


def test_permission_denied_names_path_and_capability():
    for method, cap in (("POST", "update"), ("GET", "read"), ("LIST", "list"), ("DELETE", "delete"), ("PATCH", "patch")):
        err = bao_errors._status_error(_Client(), 403, ["permission denied"], method, "pki/root/sign-intermediate", "signing")
        assert str(err).startswith(f"Permission denied on 'pki/root/sign-intermediate' (signing): the token needs '{cap}'")
        assert err.status == 403 and err.path == "pki/root/sign-intermediate"


def test_status_messages():
    err = bao_errors._status_error(_Client(), 404, ['no handler for route "nope/issuers/". route entry not found.'], "LIST",
                                   "nope/issuers", "listing issuers")
    assert "nothing is mounted at 'nope/'" in str(err) and "bao secrets enable -path=nope pki" in str(err)
    # the hint names the engine the path is for: a KV v2 document or a transit key is not served by pki
    err = bao_errors._status_error(_Client(), 404, ['no handler for route "kvx/data/ca-rotation/state". route entry not found.'],
                                   "GET", "kvx/data/ca-rotation/state", "reading the rotation state")
    assert "bao secrets enable -path=kvx kv-v2" in str(err) and " pki" not in str(err)
    err = bao_errors._status_error(_Client(), 404, ['no handler for route "tr/sign/k". route entry not found.'], "POST",
                                   "tr/sign/k", "signing")
    assert "bao secrets enable -path=tr transit" in str(err)
    err = bao_errors._status_error(_Client(), 503, ["Vault is sealed"], "GET", "pki/x", "reading")
    assert "unavailable (HTTP 503" in str(err) and "sealed" in str(err)
    err = bao_errors._status_error(_Client(), 400, ["bad thing"], "POST", "pki/x", "doing", login=False)
    assert str(err) == "OpenBao refused doing on 'pki/x' (HTTP 400): bad thing"
    err = bao_errors._status_error(_Client(), 400, ["invalid role or secret ID"], "POST", "auth/approle/login", "AppRole login",
                                   login=True)
    assert str(err).startswith("AppRole login failed at 'auth/approle/login'")


def test_translate_connection_errors():
    err = bao_errors._translate(_Client(), requests.exceptions.ConnectionError("refused"), "GET", "pki/x", "reading")
    assert str(err).startswith("Cannot reach OpenBao at http://127.0.0.1:8200 (reading on 'pki/x')")
    err = bao_errors._translate(_Client(), requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), "GET", "pki/x", "reading")
    assert "TLS verification failed" in str(err) and "openbao.ca_cert" in str(err)
    err = bao_errors._translate(_Client(), hvac.exceptions.Forbidden(errors=["permission denied"]), "POST", "pki/x", "doing")
    assert "needs 'update'" in str(err)


# ----------------------------------------------------------------------------- connect (no network needed)
@pytest.fixture
def clean_env(monkeypatch):
    for name in ("BAO_ADDR", "VAULT_ADDR", "BAO_TOKEN", "VAULT_TOKEN", "BAO_CACERT", "VAULT_CACERT", "BAO_NAMESPACE",
                 "VAULT_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_connect_token_precedence(clean_env, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    clean_env.setenv("BAO_TOKEN", "from-env")
    url = "http://127.0.0.1:1"
    assert bao_client.connect({"url": url, "token": "explicit", "token_file": str(token_file)}).token == "explicit"
    assert bao_client.connect({"url": url, "token_file": str(token_file)}).token == "from-file"
    assert bao_client.connect({"url": url}).token == "from-env"
    clean_env.setenv("BAO_ADDR", url)
    assert bao_client.connect({"openbao": {}}).token == "from-env"  # full module params form


def test_connect_errors(clean_env, tmp_path):
    with pytest.raises(bao_errors.OpenBaoError, match="No OpenBao address: set openbao.url"):
        bao_client.connect({"token": "x"})
    with pytest.raises(bao_errors.OpenBaoError, match="must start with http"):
        bao_client.connect({"url": "127.0.0.1:8200", "token": "x"})
    with pytest.raises(bao_errors.OpenBaoError, match="No OpenBao token"):
        bao_client.connect({"url": "http://127.0.0.1:1"})
    with pytest.raises(bao_errors.OpenBaoError, match="Cannot read openbao.token_file"):
        bao_client.connect({"url": "http://127.0.0.1:1", "token_file": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(bao_errors.OpenBaoError, match="is empty"):
        bao_client.connect({"url": "http://127.0.0.1:1", "token_file": str(tmp_path / "empty")})
    with pytest.raises(bao_errors.OpenBaoError, match="role_id is not set"):
        bao_client.connect({"url": "http://127.0.0.1:1", "auth_method": "approle"})
    with pytest.raises(bao_errors.OpenBaoError, match="kubernetes_role is not set"):
        bao_client.connect({"url": "http://127.0.0.1:1", "auth_method": "kubernetes"})
    with pytest.raises(bao_errors.OpenBaoError, match="Cannot read openbao.kubernetes_token_path"):
        bao_client.connect({"url": "http://127.0.0.1:1", "auth_method": "kubernetes", "kubernetes_role": "r",
                            "kubernetes_token_path": str(tmp_path / "nojwt")})
    with pytest.raises(bao_errors.OpenBaoError, match="ca_cert .* does not exist"):
        bao_client.connect({"url": "https://127.0.0.1:1", "token": "x", "ca_cert": str(tmp_path / "none.pem")})
    with pytest.raises(bao_errors.OpenBaoError, match="timeout must be a positive"):
        bao_client.connect({"url": "http://127.0.0.1:1", "token": "x", "timeout": 0})
    with pytest.raises(bao_errors.OpenBaoError, match="retries must not be negative"):
        bao_client.connect({"url": "http://127.0.0.1:1", "token": "x", "retries": -1})


def test_connect_tls_and_retry_settings(clean_env, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    client = bao_client.connect({"url": "https://127.0.0.1:1", "token": "x", "ca_cert": str(ca), "retries": 5, "namespace": "ns1"})
    session = client.adapter.session
    assert session.verify == str(ca)
    retry = session.get_adapter("https://127.0.0.1:1").max_retries
    assert retry.total == 5 and retry.connect == 5
    assert set(retry.status_forcelist) == {502, 503, 504}  # 500 is not retried (deterministic OpenBao errors)
    assert "POST" not in retry.allowed_methods and "LIST" in retry.allowed_methods
    assert client.adapter.namespace == "ns1"
    insecure = bao_client.connect({"url": "https://127.0.0.1:1", "token": "x", "ca_cert": str(ca), "validate_certs": False})
    assert insecure.adapter.session.verify is False
    clean_env.setenv("BAO_CACERT", str(ca))
    assert bao_client.connect({"url": "https://127.0.0.1:1", "token": "x"}).adapter.session.verify == str(ca)


def test_arg_spec_shape():
    spec = bao_client.OPENBAO_ARG_SPEC["openbao"]
    assert spec["type"] == "dict" and spec["apply_defaults"] is True
    opts = spec["options"]
    assert opts["token"]["no_log"] is True and opts["secret_id"]["no_log"] is True
    assert opts["token_file"]["no_log"] is False and opts["kubernetes_token_path"]["no_log"] is False
    assert opts["validate_certs"]["default"] is True and opts["retries"]["default"] == 3


# ----------------------------------------------------------------------------- leaf renewal rules
def test_parse_renew_before():
    assert bao_leaf.parse_renew_before("33%") == ("fraction", 0.33)
    assert bao_leaf.parse_renew_before("0.5") == ("fraction", 0.5)
    assert bao_leaf.parse_renew_before("2h") == ("seconds", 7200)
    assert bao_leaf.parse_renew_before(600) == ("seconds", 600)
    for bad in ("150%", "0%", "x%", "soon"):
        with pytest.raises(EpochError) as exc:
            bao_leaf.parse_renew_before(bad)
        assert exc.value.option == "renew_before"


def test_renewal_threshold():
    nb, na = T0, T0 + dt.timedelta(hours=3)
    assert bao_leaf.renewal_threshold(("fraction", 1 / 3), nb, na) == T0 + dt.timedelta(hours=2)
    assert bao_leaf.renewal_threshold(("seconds", 600), nb, na) == na - dt.timedelta(minutes=10)


def _issuers(pki, default=True, name="epoch-5"):
    return {"i5": {"issuer_name": name, "is_default": default, "certificate": _pem(pki["inter"])},
            "i6": {"issuer_name": "epoch-6", "is_default": not default, "certificate": _pem(pki["root"])}}


def test_leaf_renewal_reasons(pki):
    leaf = pki["leaf"]
    issuers = _issuers(pki)
    issuer = bao_leaf.find_leaf_issuer(leaf, issuers)
    assert issuer[0] == "i5"
    sched = EpochSchedule.from_params({"epoch_duration": "1h", "epoch_zero": "2025-03-01T07:00:00Z"})  # epoch 5 = 12:00
    base = dict(common_name="nats-0", alt_names=["localhost"], ip_sans=["127.0.0.1"], renew_before=("fraction", 1 / 3),
                issuer=issuer, issuers=issuers, schedule=sched, now=T0)

    def reasons(cert=leaf, **overrides):
        kwargs = dict(base)
        kwargs.update(overrides)
        return bao_leaf.leaf_renewal_reasons(cert, **kwargs)

    assert reasons(now=T0 + dt.timedelta(minutes=30)) == []
    assert "within the renewal window" in reasons(now=T0 + dt.timedelta(minutes=41))[0]
    assert "expired at" in reasons(now=T0 + dt.timedelta(hours=2))[0]
    assert reasons(common_name="nats-1") == ["the common name is 'nats-0', not 'nats-1'"]
    assert reasons(alt_names=["localhost", "nats.example"], ip_sans=["10.0.0.1"]) == \
        ["subject alternative names missing: nats.example, 10.0.0.1"]

    not_default = _issuers(pki, default=False)
    by = bao_leaf.find_leaf_issuer(leaf, not_default)
    assert reasons(issuers=not_default, issuer=by) == \
        ["it was issued by epoch-5, which is no longer the default issuer (epoch-6)"]
    assert reasons(issuers=not_default, issuer=by, renew_if_not_default=False) == []
    assert reasons(issuer_ref="epoch-6") == ["it was issued by epoch-5, not by issuer_ref epoch-6"]
    gone = {"i6": _issuers(pki)["i6"]}
    assert reasons(issuers=gone, issuer=bao_leaf.find_leaf_issuer(leaf, gone)) == \
        ["its issuing CA is no longer an issuer of the mount"]
    # epoch 5 expires at 16:00 (validity 4h); a longer-lived leaf is renewed once its epoch is gone
    long_leaf = _cert("nats-0", pki["leaf_key"], pki["inter"], pki["int_key"], not_after=T0 + dt.timedelta(hours=24),
                      dns=["localhost"], ips=["127.0.0.1"])
    assert reasons(long_leaf, now=T0 + dt.timedelta(hours=4, minutes=1), renew_before=("seconds", 60)) == \
        ["its issuing epoch 5 has expired"]


def test_read_leaf_files(tmp_path, pki):
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    assert "does not exist" in bao_leaf.read_leaf_files(str(cert_file), str(key_file))["problem"]
    cert_file.write_text("nothing")
    assert "holds no valid PEM certificate" in bao_leaf.read_leaf_files(str(cert_file), str(key_file))["problem"]
    cert_file.write_text(_pem(pki["leaf"]) + _pem(pki["inter"]))
    assert "key file" in bao_leaf.read_leaf_files(str(cert_file), str(key_file))["problem"]
    key_pem = pki["leaf_key"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
    key_file.write_text(key_pem)
    disk = bao_leaf.read_leaf_files(str(cert_file), str(key_file))
    assert disk["problem"] is None and disk["key_ok"] is True and disk["cert"] == pki["leaf"]
    assert key_pem not in repr(disk)  # the key itself is never kept
    key_file.write_text(pki["int_key"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()).decode())
    assert "does not hold the private key" in bao_leaf.read_leaf_files(str(cert_file), str(key_file))["problem"]


def test_local_key_and_csr():
    for key_type, bits in (("ec", 0), ("ec", 384), ("rsa", 0), ("ed25519", 0), ("mldsa", 65)):
        key_pem, csr_pem = bao_leaf._local_key_and_csr(key_type, bits, "svc", ["svc.local"], ["10.1.2.3"])
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["svc.local"]
        key = serialization.load_pem_private_key(key_pem.encode(), None)
        assert key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            == csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(bao_errors.OpenBaoError, match="key_type 'rsa' with key_bits 1024: rsa takes 2048, 3072, 4096"):
        bao_leaf._local_key_and_csr("rsa", 1024, "svc")
    with pytest.raises(bao_errors.OpenBaoError, match="key_type 'ec' with key_bits 255: ec takes 256, 384, 521"):
        bao_leaf._local_key_and_csr("ec", 255, "svc")
    with pytest.raises(bao_errors.OpenBaoError, match="key_type mldsa needs key_bits: 44, 65 or 87"):
        bao_leaf._local_key_and_csr("mldsa", 0, "svc")
    with pytest.raises(bao_errors.OpenBaoError, match="Invalid ip_sans"):
        bao_leaf._local_key_and_csr("ec", 0, "svc", (), ["not-an-ip"])

"""The certificate helpers' fallbacks for the older cryptography of a VM's system Python (checked against what the
controller's cryptography says itself)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import certs

NOW = datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=datetime.timezone.utc)


def _cert(key, subject, issuer_key=None, issuer=None, rsa_pss=False):
    issuer_key = issuer_key or key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(hours=1)))
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    if rsa_pss:
        return builder.sign(issuer_key, algorithm, rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                                           salt_length=padding.PSS.DIGEST_LENGTH))
    return builder.sign(issuer_key, algorithm)


class Old:
    """A certificate as cryptography < 40 shows it: no *_utc times, no verify_directly_issued_by, no
    public_key_algorithm_oid (naive UTC datetimes instead)."""

    HIDDEN = ("not_valid_before_utc", "not_valid_after_utc", "verify_directly_issued_by", "public_key_algorithm_oid")

    def __init__(self, cert):
        self._cert = cert

    def __getattr__(self, name):
        if name in self.HIDDEN:
            raise AttributeError(name)
        if name in ("not_valid_before", "not_valid_after"):
            return getattr(self._cert, name + "_utc").replace(tzinfo=None)
        return getattr(self._cert, name)


KEYS = {
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_public_key_oid_from_der_matches_cryptography(kind):
    cert = _cert(KEYS[kind](), "x")
    assert certs.spki_oid(cert.tbs_certificate_bytes) == cert.public_key_algorithm_oid.dotted_string
    assert certs.key_family(Old(cert)) == certs.key_family(cert) == {"ec384": "ec"}.get(kind, kind)


def test_times_are_aware_utc_either_way():
    cert = _cert(KEYS["ec"](), "x")
    for view in (cert, Old(cert)):
        assert certs.cert_not_before(view) == NOW
        assert certs.cert_not_after(view) == NOW + datetime.timedelta(hours=1)


@pytest.mark.parametrize("kind, pss", [("ec", False), ("ec384", False), ("rsa", False), ("rsa", True), ("ed25519", False)])
def test_signature_check_without_verify_directly_issued_by(kind, pss):
    ca_key, other_key = KEYS[kind](), KEYS[kind]()
    ca = _cert(ca_key, "ca", rsa_pss=pss)
    leaf = _cert(KEYS["ec"](), "leaf", issuer_key=ca_key, issuer=ca, rsa_pss=pss)
    forged = _cert(KEYS["ec"](), "leaf", issuer_key=other_key, issuer=ca, rsa_pss=pss)  # the CA's name, another key
    certs.verify_issued_by(Old(leaf), ca)
    certs.verify_issued_by(leaf, ca)
    for view in (Old(forged), forged):
        with pytest.raises(Exception):
            certs.verify_issued_by(view, ca)
    stranger = _cert(KEYS[kind](), "someone else")
    with pytest.raises(ValueError, match="issuer name"):
        certs.verify_issued_by(Old(leaf), stranger)

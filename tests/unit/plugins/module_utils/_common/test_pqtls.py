# -*- coding: utf-8 -*-
"""The pure parts of the ML-DSA TLS client: which certificate chains need it, name matching, error translation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import pqtls

NOW = dt.datetime.now(dt.timezone.utc)


def _cert(key, signer_key, sans=(), subject='leaf', issuer='leaf'):
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
               .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(hours=1)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer_key, None if isinstance(signer_key, mldsa.MLDSA65PrivateKey) else hashes.SHA256())


def test_the_family_follows_every_key_and_signature_in_the_chain(tmp_path):
    ec_key, pq_key = ec.generate_private_key(ec.SECP256R1()), mldsa.MLDSA65PrivateKey.generate()
    cases = {'ec-by-ec': (_cert(ec_key, ec_key), 'classical'), 'pq-by-pq': (_cert(pq_key, pq_key), 'mldsa'),
             'ec-by-pq': (_cert(ec_key, pq_key, issuer='pq ca'), 'mldsa'), 'pq-by-ec': (_cert(pq_key, ec_key), 'mldsa')}
    for name, (cert, family) in cases.items():
        path = tmp_path / (name + '.pem')
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        assert pqtls.file_family(str(path)) == family, name
    assert pqtls.certificate_family(cases['ec-by-pq'][0]) == 'classical'  # the key alone says classical
    mixed = tmp_path / 'chain.pem'  # an EC leaf followed by its ML-DSA CA
    mixed.write_bytes(cases['ec-by-ec'][0].public_bytes(serialization.Encoding.PEM)
                      + cases['pq-by-pq'][0].public_bytes(serialization.Encoding.PEM))
    assert pqtls.file_family(str(mixed)) == 'mldsa'
    assert pqtls.file_family(str(tmp_path / 'missing.pem')) == 'classical'  # the ssl path reports the missing file


@pytest.mark.parametrize('name, expected', [
    ('nats.example', True), ('NATS.example.', True), ('a.svc.example', True), ('b.a.svc.example', False),
    ('svc.example', False), ('other.example', False), ('127.0.0.1', True), ('10.0.0.1', False), ('::1', False),
])
def test_server_names_match_dns_one_wildcard_label_or_an_ip(name, expected):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(key, key, sans=[x509.DNSName('nats.example'), x509.DNSName('*.svc.example'),
                                 x509.IPAddress(ipaddress.ip_address('127.0.0.1'))])
    assert pqtls._name_matches(cert, name) is expected
    assert pqtls._name_matches(_cert(key, key), 'nats.example') is False  # no subjectAltName: no match


def test_pyopenssl_errors_become_ssl_errors_with_the_reason():
    from OpenSSL import SSL  # pylint: disable=import-outside-toplevel  # requirements.txt pins it
    err = pqtls._ssl_error(SSL.Error([('SSL routines', '', 'tlsv1 alert unknown ca')]))
    assert isinstance(err, ssl.SSLError) and err.reason == 'tlsv1 alert unknown ca' and 'unknown ca' in str(err)
    verify = pqtls._verify_error('hostname mismatch')
    assert isinstance(verify, ssl.SSLCertVerificationError) and verify.verify_message == 'hostname mismatch'


def test_a_pyopenssl_too_old_for_as_cryptography_is_named(monkeypatch):
    assert pqtls.pyopenssl_missing() is None  # requirements.txt pins 26.4.0
    monkeypatch.setattr(pqtls.OpenSSL, '__version__', '23.0.0')
    assert 'pyOpenSSL 24.3 or later; this one is 23.0.0' in pqtls.pyopenssl_missing()
    monkeypatch.setattr(pqtls, 'SSL', None)
    assert 'needs pyOpenSSL 24.3 or later' in pqtls.pyopenssl_missing()
    with pytest.raises(pqtls.TLSError, match='needs pyOpenSSL'):
        pqtls.PQContext(verify=False)

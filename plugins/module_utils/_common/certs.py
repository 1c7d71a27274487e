# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""X.509 certificate facts and the intermediate CA checks, shared by OpenBao and the bundle (private).

Needs cryptography (guarded: :data:`CRYPTOGRAPHY_IMPORT_ERROR` says why it is missing).
"""

from __future__ import annotations

import traceback

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    x509 = None
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat


def load_cert(pem):
    """An ``x509.Certificate`` from PEM text or bytes (ValueError when it is not one)."""
    return x509.load_pem_x509_certificate(pem.encode('ascii') if isinstance(pem, str) else pem)


def serial_hex(serial):
    """OpenBao's serial notation: lower-case hex byte pairs joined by ':'."""
    text = '%x' % serial
    if len(text) % 2:
        text = '0' + text
    return ':'.join(text[i:i + 2] for i in range(0, len(text), 2))


def cert_sha256(cert):
    """SHA-256 (lower-case hex) of the certificate's DER encoding (its usual fingerprint)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def canonical_pem(cert):
    """Canonical PEM of a certificate (re-encoded from DER: 64-column lines, '\\n' endings)."""
    return cert.public_bytes(serialization.Encoding.PEM).decode('ascii')


def common_name(name):
    """The first common name of an ``x509.Name`` (a subject or an issuer), else None."""
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def normalize_pem(pem):
    """PEM text (str or bytes) stripped, with exactly one trailing newline."""
    pem = pem.strip() if isinstance(pem, str) else pem.decode('ascii').strip()
    return pem + '\n'


def cert_facts(pem):
    """JSON-safe facts about a PEM certificate."""
    cert = load_cert(pem)
    return {
        'certificate': normalize_pem(pem),
        'common_name': common_name(cert.subject),
        'serial': serial_hex(cert.serial_number),
        'sha256': cert_sha256(cert),
        'not_before': isoformat(cert.not_valid_before_utc),
        'not_after': isoformat(cert.not_valid_after_utc),
    }


#: public-key algorithm OIDs by family (RFC 5480, RFC 8410, FIPS 204 / draft-ietf-lamps-dilithium-certificates)
_FAMILY_OIDS = {
    '1.2.840.10045.2.1': 'ec', '1.2.840.113549.1.1.1': 'rsa', '1.2.840.113549.1.1.10': 'rsa', '1.3.101.112': 'ed25519',
    '1.3.101.113': 'ed448', '2.16.840.1.101.3.4.3.17': 'mldsa', '2.16.840.1.101.3.4.3.18': 'mldsa',
    '2.16.840.1.101.3.4.3.19': 'mldsa',
}


def key_family(cert):
    """The family of a certificate's public key - ``ec``, ``rsa``, ``ed25519``, ``ed448``, ``mldsa`` - or the dotted
    OID of an algorithm not listed (read from the certificate, so it works for keys ``cryptography`` cannot load)."""
    oid = cert.public_key_algorithm_oid.dotted_string
    return _FAMILY_OIDS.get(oid, oid)


def family_counts(blocks):
    """``{family: number of certificates}`` of PEM certificate blocks (each parsed; a block that does not parse
    raises ``ValueError``); ``{'certificates': n}`` where ``cryptography`` is not installed (a VM's Python)."""
    if x509 is None:
        return {'certificates': len(blocks)}
    counts = {}
    for block in blocks:
        family = key_family(load_cert(block))
        counts[family] = counts.get(family, 0) + 1
    return counts


def public_key_der(key):
    """DER (SubjectPublicKeyInfo) of a public key, for comparing keys."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_intermediate(pem, root_pem, expected_not_after=None):
    """Problems (list of str) with an intermediate: signature by the root, CA:true, keyCertSign,
    and NotAfter == ``expected_not_after`` when given. Empty list = good."""
    problems = []
    cert = load_cert(pem)
    root = load_cert(root_pem)
    try:
        cert.verify_directly_issued_by(root)
    except Exception as exc:  # pylint: disable=broad-except
        problems.append('not signed by the root issuer (%s)' % (exc or type(exc).__name__))
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            problems.append('BasicConstraints CA is false')
    except x509.ExtensionNotFound:
        problems.append('no BasicConstraints extension')
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            problems.append('KeyUsage lacks keyCertSign')
    except x509.ExtensionNotFound:
        problems.append('no KeyUsage extension')
    if expected_not_after is not None and cert.not_valid_after_utc != expected_not_after.replace(microsecond=0):
        problems.append('NotAfter is %s, expected exactly %s'
                        % (isoformat(cert.not_valid_after_utc), isoformat(expected_not_after)))
    return problems

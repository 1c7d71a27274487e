# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""X.509 certificate facts and the intermediate CA checks, shared by OpenBao and the bundle (private).

Needs cryptography (guarded: :data:`CRYPTOGRAPHY_IMPORT_ERROR` says why it is missing). The controller has the
pinned version; a VM's system Python may have an older one (Debian 12: 38, RHEL 9: 36), so the few calls newer than
that go through :func:`cert_not_before`, :func:`cert_not_after`, :func:`verify_issued_by` and :func:`key_family`, which fall
back to what those versions have.
"""

from __future__ import annotations

import datetime
import re
import traceback

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    x509 = None
    InvalidSignature = ValueError
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat


def cert_not_before(cert):
    """The certificate's NotBefore as an aware UTC datetime (``not_valid_before_utc`` needs cryptography 42)."""
    value = getattr(cert, 'not_valid_before_utc', None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def cert_not_after(cert):
    """The certificate's NotAfter as an aware UTC datetime (``not_valid_after_utc`` needs cryptography 42)."""
    value = getattr(cert, 'not_valid_after_utc', None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def verify_issued_by(cert, issuer):
    """Raise unless ``issuer``'s key signed ``cert`` (and the names chain): ``verify_directly_issued_by`` from
    cryptography 40, the signature checked by hand before that (RSA PKCS#1 v1.5 / PSS, ECDSA, Ed25519, Ed448)."""
    if hasattr(cert, 'verify_directly_issued_by'):
        cert.verify_directly_issued_by(issuer)
        return
    # pylint: disable-next=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    if cert.issuer != issuer.subject:
        raise ValueError("the certificate's issuer name is not the issuer's subject")
    key = issuer.public_key()
    signature, data = cert.signature, cert.tbs_certificate_bytes
    if isinstance(key, rsa.RSAPublicKey):
        if cert.signature_algorithm_oid.dotted_string == '1.2.840.113549.1.1.10':
            # PSS.AUTO (the salt length the signature has) from cryptography 37; the usual one, the digest's, before
            salt = getattr(padding.PSS, 'AUTO', None) or cert.signature_hash_algorithm.digest_size
            pad = padding.PSS(mgf=padding.MGF1(cert.signature_hash_algorithm), salt_length=salt)
        else:
            pad = padding.PKCS1v15()
        key.verify(signature, data, pad, cert.signature_hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(cert.signature_hash_algorithm))
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        key.verify(signature, data)
    else:
        raise ValueError('cannot check a signature by a %s key with this cryptography version' % type(key).__name__)


def issued_by(cert, issuer):
    """True when ``issuer``'s key signed ``cert`` and the names chain (see :func:`verify_issued_by`)."""
    try:
        verify_issued_by(cert, issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _der_items(data, offset, end):
    """``(tag, content_start, content_end)`` of each DER element in ``data[offset:end]``."""
    while offset < end:
        tag, length = data[offset], data[offset + 1]
        offset += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[offset:offset + count], 'big')
            offset += count
        yield tag, offset, offset + length
        offset += length


def _der_oid(content):
    """The dotted string of a DER OBJECT IDENTIFIER's content octets."""
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return '.'.join(str(a) for a in [first, arcs[0] - 40 * first] + arcs[1:])


def public_key_oid(cert):
    """The dotted OID of the certificate's public-key algorithm (``public_key_algorithm_oid`` from cryptography 41;
    read from the DER before that, which also works for keys the installed version cannot load)."""
    oid = getattr(cert, 'public_key_algorithm_oid', None)
    if oid is not None:
        return oid.dotted_string
    return spki_oid(cert.tbs_certificate_bytes)


def spki_oid(tbs):
    """The dotted public-key algorithm OID in a DER TBSCertificate."""
    _tag, start, end = next(_der_items(tbs, 0, len(tbs)))
    fields = [item for item in _der_items(tbs, start, end) if item[0] != 0xA0]  # without [0] version
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    _tag, spki_start, spki_end = fields[5]
    _tag, alg_start, alg_end = next(_der_items(tbs, spki_start, spki_end))
    _tag, oid_start, oid_end = next(_der_items(tbs, alg_start, alg_end))
    return _der_oid(tbs[oid_start:oid_end])


def load_cert(pem):
    """An ``x509.Certificate`` from PEM text or bytes (ValueError when it is not one)."""
    return x509.load_pem_x509_certificate(pem.encode('ascii') if isinstance(pem, str) else pem)


def load_der_cert(der):
    """An ``x509.Certificate`` from DER bytes (ValueError when it is not one)."""
    return x509.load_der_x509_certificate(der)


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


#: the subject OU of the k-th replacement of an epoch's intermediate (issued after a distrust)
REPLACEMENT_OU = 'replacement %d'
_REPLACEMENT_OU_RE = re.compile(r'^replacement ([1-9][0-9]*)$')


def replacement_number(cert):
    """``k`` of a replacement intermediate (subject OU ``replacement <k>``), else 0."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        match = _REPLACEMENT_OU_RE.match(str(attr.value))
        if match:
            return int(match.group(1))
    return 0


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
        'not_before': isoformat(cert_not_before(cert)),
        'not_after': isoformat(cert_not_after(cert)),
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
    oid = public_key_oid(cert)
    return _FAMILY_OIDS.get(oid, oid)


def certificate_family(cert):
    """``mldsa`` for a certificate with an ML-DSA key, ``classical`` for any other (EC, RSA, Ed25519...): the two
    families of a dual-family bundle, and the two TLS stacks (pyOpenSSL, Python's ``ssl``)."""
    return 'mldsa' if key_family(cert) == 'mldsa' else 'classical'


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
        verify_issued_by(cert, root)
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
    if expected_not_after is not None and cert_not_after(cert) != expected_not_after.replace(microsecond=0):
        problems.append('NotAfter is %s, expected exactly %s'
                        % (isoformat(cert_not_after(cert)), isoformat(expected_not_after)))
    return problems


def san_sets(cert):
    """``(dns names, ip addresses as strings)`` of a certificate's subjectAltName (empty sets without one)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}

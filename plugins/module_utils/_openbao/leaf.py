# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Leaf certificates: issue them (key in OpenBao, or a local key and CSR), read them back from
disk, and decide when to renew them (private)."""

from __future__ import annotations

import datetime
import ipaddress
import re

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - reported through _common.certs.CRYPTOGRAPHY_IMPORT_ERROR
    x509 = None

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    cert_facts,
    cert_not_after,
    cert_not_before,
    load_cert,
    normalize_pem,
    public_key_der,
    san_sets,
    serial_hex,
    verify_issued_by,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import (
    atomic_write,
    file_needs_write,
    set_attributes,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    isoformat,
    parse_duration,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import _data, _request
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import (
    key_spec,
    epoch_of,
    issuer_certificates,
    list_issuers,
)


def _mldsa_key(bits):
    """A new ML-DSA key of parameter set ``bits`` (cryptography 47 or later over an OpenSSL with ML-DSA)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import mldsa  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise OpenBaoError('key_type mldsa needs cryptography with ML-DSA (its mldsa module; 50 or later is known to '
                           'work) where the key is made') from None
    return {44: mldsa.MLDSA44PrivateKey, 65: mldsa.MLDSA65PrivateKey, 87: mldsa.MLDSA87PrivateKey}[bits].generate()


def _local_key_and_csr(key_type, key_bits, common_name, alt_names=(), ip_sans=()):
    try:
        key_type, bits = key_spec(key_type, key_bits)
    except ValueError as exc:
        raise OpenBaoError(str(exc)) from None
    if key_type == 'ec':
        key = ec.generate_private_key({256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}[bits]())
    elif key_type == 'rsa':
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif key_type == 'ed25519':
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = _mldsa_key(bits)
    algorithm = None if key_type in ('ed25519', 'mldsa') else hashes.SHA256()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
    # Roles default to use_csr_sans=true, so the SANs must be in the CSR too.
    sans = [x509.DNSName(n) for n in alt_names]
    try:
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans]
    except ValueError as exc:
        raise OpenBaoError('Invalid ip_sans entry: %s' % exc) from None
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, algorithm)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode('ascii')
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode('ascii')


def issue_leaf(client, *, int_mount, role, common_name, alt_names=(), ip_sans=(), ttl=None, issuer_ref=None,
               key_type=None, key_bits=0, local_key=False, csr=None):
    """Issue a leaf certificate from role ``role`` on ``int_mount``.

    ``local_key`` False: OpenBao generates the key (``issue``); ``key_type``/``key_bits`` are sent
    when given (needed for roles with ``key_type=any``). ``local_key`` True: the key is generated
    here (``key_type`` default ec) and only a CSR goes to OpenBao (``sign``; the role must allow
    that key type). ``csr``: sign this CSR, made wherever its key is (the result has no private key).
    ``issuer_ref`` None uses the mount's default issuer.
    Returns certificate, private_key, ca_chain (list of PEM, issuing CA first), issuing_ca,
    serial, not_before, not_after, issuer_id, issuer_name, epoch.
    """
    base = '%s/issuer/%s' % (int_mount, issuer_ref) if issuer_ref else int_mount
    payload = {'common_name': common_name, 'format': 'pem'}
    if alt_names:
        payload['alt_names'] = ','.join(alt_names)
    if ip_sans:
        payload['ip_sans'] = ','.join(ip_sans)
    if ttl:
        payload['ttl'] = str(ttl)
    if local_key or csr:
        private_key = None
        if csr is None:
            private_key, csr = _local_key_and_csr(key_type or 'ec', key_bits, common_name, alt_names, ip_sans)
        payload['csr'] = csr
        path, operation = '%s/sign/%s' % (base, role), 'signing a leaf certificate'
    else:
        private_key = None
        payload['private_key_format'] = 'pkcs8'
        if key_type:
            try:
                payload['key_type'], payload['key_bits'] = key_spec(key_type, key_bits)  # never OpenBao's default size
            except ValueError as exc:
                raise OpenBaoError(str(exc)) from None
        path, operation = '%s/issue/%s' % (base, role), 'issuing a leaf certificate'
    data = _data(_request(client, 'POST', path, operation, data=payload))
    if not data.get('certificate'):
        raise OpenBaoError('%s at %r returned no certificate' % (operation, path), path=path)
    private_key = private_key or data.get('private_key')
    issuing_ca = normalize_pem(data.get('issuing_ca') or '')
    chain = [normalize_pem(c) for c in data.get('ca_chain') or [issuing_ca] if c and c.strip()]
    facts = cert_facts(data['certificate'])
    issuer_id, issuer_name = _issuer_by_serial(client, int_mount, issuing_ca)
    return {
        'certificate': facts['certificate'], 'private_key': private_key, 'ca_chain': chain,
        'issuing_ca': issuing_ca, 'serial': facts['serial'], 'not_before': facts['not_before'],
        'not_after': facts['not_after'], 'common_name': facts['common_name'], 'sha256': facts['sha256'],
        'issuer_id': issuer_id, 'issuer_name': issuer_name, 'epoch': epoch_of(issuer_name),
    }


def _issuer_by_serial(client, mount, issuing_ca_pem):
    """(issuer_id, issuer_name) of the issuer whose certificate is ``issuing_ca_pem`` (best effort)."""
    try:
        serial = serial_hex(load_cert(issuing_ca_pem).serial_number)
        issuers = list_issuers(client, mount)
    except (OpenBaoError, ValueError):
        return None, None
    for issuer_id, info in issuers.items():
        if (info.get('serial_number') or '').lower() == serial:
            return issuer_id, info.get('issuer_name') or None
    return None, None


def parse_renew_before(value, option='renew_before'):
    """``('fraction', f)`` for ``'33%'`` / ``0.33``-style values, else ``('seconds', n)`` for a duration."""
    text = str(value).strip()
    if text.endswith('%'):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise EpochError('Invalid %s %r: a percentage must be a number followed by %%' % (option, value), option=option) from None
        if not 0 < pct < 100:
            raise EpochError('Invalid %s %r: the percentage must be between 0 and 100 (exclusive)' % (option, value),
                             option=option)
        return ('fraction', pct / 100.0)
    if re.fullmatch(r'0?\.\d+', text):
        return ('fraction', float(text))
    return ('seconds', parse_duration(value, option))


def renewal_threshold(renew_before, not_before, not_after):
    """Moment from which a leaf valid ``not_before``..``not_after`` must be renewed."""
    kind, amount = renew_before
    if kind == 'fraction':
        return not_after - datetime.timedelta(seconds=(not_after - not_before).total_seconds() * amount)
    return not_after - datetime.timedelta(seconds=amount)


def _private_key_matches(cert, key_pem):
    try:
        key = serialization.load_pem_private_key(key_pem.encode('ascii') if isinstance(key_pem, str) else key_pem, None)
    except (ValueError, TypeError):
        return False
    return public_key_der(key.public_key()) == public_key_der(cert.public_key())


def read_leaf_files(cert_file, key_file):
    """What is on disk: ``{'problem': str|None, 'cert': x509|None, 'cert_text': str|None, 'key_ok': bool}``.

    Never returns the key material itself."""
    out = {'problem': None, 'cert': None, 'cert_text': None, 'key_ok': False}
    try:
        with open(cert_file, 'r', encoding='utf-8') as handle:
            out['cert_text'] = handle.read()
    except FileNotFoundError:
        out['problem'] = 'certificate file %s does not exist' % cert_file
        return out
    except (OSError, UnicodeDecodeError) as exc:
        out['problem'] = 'certificate file %s is unreadable (%s)' % (cert_file, exc)
        return out
    blocks = pem_certificates(out['cert_text'])
    try:
        out['cert'] = load_cert(blocks[0]) if blocks else None
    except ValueError:
        out['cert'] = None
    if out['cert'] is None:
        out['problem'] = 'certificate file %s holds no valid PEM certificate' % cert_file
        return out
    try:
        with open(key_file, 'r', encoding='utf-8') as handle:
            out['key_ok'] = _private_key_matches(out['cert'], handle.read())
    except FileNotFoundError:
        out['problem'] = 'key file %s does not exist' % key_file
        return out
    except (OSError, UnicodeDecodeError) as exc:
        out['problem'] = 'key file %s is unreadable (%s)' % (key_file, exc)
        return out
    if not out['key_ok']:
        out['problem'] = 'key file %s does not hold the private key of the certificate' % key_file
    return out


def find_leaf_issuer(cert, issuers):
    """The issuer (from :func:`issuer_certificates`) whose certificate signed ``cert``: ``(id, info)`` or ``(None, None)``."""
    for issuer_id, info in issuers.items():
        if not info.get('certificate'):
            continue
        ca = load_cert(info['certificate'])
        if ca.subject != cert.issuer:
            continue
        try:
            verify_issued_by(cert, ca)
        except Exception:  # pylint: disable=broad-except
            continue
        return issuer_id, info
    return None, None


def key_of(public_key):
    """``(key_type, key_bits)`` of a public key, as :func:`_openbao.pki.key_spec` names them (None: unknown)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return 'ec', public_key.curve.key_size
    if isinstance(public_key, rsa.RSAPublicKey):
        return 'rsa', public_key.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return 'ed25519', 0
    name = type(public_key).__name__  # MLDSA65PublicKey (cryptography 47 or later)
    match = re.match(r'MLDSA(44|65|87)PublicKey$', name)
    return ('mldsa', int(match.group(1))) if match else None


def leaf_renewal_reasons(cert, *, common_name, alt_names=(), ip_sans=(), renew_before=('fraction', 1 / 3.0), now,
                         issuer=None, issuers=None, issuer_ref=None, renew_if_not_default=True, schedule=None,
                         key_type=None, key_bits=0):
    """Why an existing, readable leaf ``cert`` must be re-issued (empty list: keep it).

    ``issuer``: ``(issuer_id, info)`` that signed it (None when not found on the mount);
    ``issuers``: all issuers of the mount (:func:`issuer_certificates`), for the default;
    ``key_type`` / ``key_bits``: the key the leaf must have (a changed configuration re-issues it).
    """
    reasons = []
    if key_type:
        wanted, have = key_spec(key_type, key_bits), key_of(cert.public_key())
        if have != wanted:
            reasons.append('its key is %s, not %s as configured' % (
                ' '.join(str(x) for x in have if x) if have else type(cert.public_key()).__name__,
                ' '.join(str(x) for x in wanted if x)))
    not_before, not_after = cert_not_before(cert), cert_not_after(cert)
    if now >= not_after:
        reasons.append('the certificate expired at %s' % isoformat(not_after))
    elif now >= renewal_threshold(renew_before, not_before, not_after):
        reasons.append('the certificate expires at %s, within the renewal window' % isoformat(not_after))
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != common_name:
        reasons.append('the common name is %r, not %r' % (cn[0].value if cn else None, common_name))
    dns, ips = san_sets(cert)
    missing = sorted(set(alt_names) - dns) + sorted({str(ip) for ip in ip_sans} - ips)
    if missing:
        reasons.append('subject alternative names missing: %s' % ', '.join(missing))
    if issuers is not None:
        issuer_id, info = issuer or (None, None)
        if issuer_id is None:
            reasons.append('its issuing CA is no longer an issuer of the mount')
        else:
            name = info.get('issuer_name') or issuer_id
            n = epoch_of(info.get('issuer_name'))
            if issuer_ref:
                if issuer_ref not in (issuer_id, info.get('issuer_name')):
                    reasons.append('it was issued by %s, not by issuer_ref %s' % (name, issuer_ref))
            elif renew_if_not_default and not info.get('is_default'):
                default = next((i.get('issuer_name') or iid for iid, i in issuers.items() if i.get('is_default')), None)
                reasons.append('it was issued by %s, which is no longer the default issuer (%s)' % (name, default))
            if schedule is not None and n is not None and schedule.state(n, now) == 'expired':
                reasons.append('its issuing epoch %d has expired' % n)
    return reasons


def ensure_leaf(client, *, int_mount, role, common_name, cert_file, key_file, schedule, now, renew_before,
                alt_names=(), ip_sans=(), ttl=None, issuer_ref=None, key_source='openbao', key_type=None, key_bits=0,
                chain_file=None, full_chain=True, mode=0o644, key_mode=0o600, owner=None, group=None,
                renew_if_not_default=True, force=False, check_mode=False, issuers=None, return_content=False):
    """Renew ``cert_file``/``key_file`` when a reason says so; otherwise repair the files' bytes and modes.

    ``renew_before``: parsed (``_openbao.parse_renew_before``). ``issuers``: the mount's issuer
    certificates when the caller already has them (one listing for many leaves). Returns the
    ``openbao_leaf`` result: changed, reasons, issued, files_written and the certificate's facts (and the new
    private key only with ``return_content``).
    """
    alt_names, ip_sans = list(alt_names or []), list(ip_sans or [])
    result = {'reasons': [], 'issued': False, 'files_written': []}
    if issuers is None:
        issuers = issuer_certificates(client, int_mount)
    if issuer_ref and not any(issuer_ref in (iid, info['issuer_name']) for iid, info in issuers.items()):
        raise OpenBaoError('issuer_ref %r is not an issuer of mount %r (issuers: %s)' % (
            issuer_ref, int_mount, ', '.join(sorted(i['issuer_name'] or iid for iid, i in issuers.items())) or 'none'))
    disk = read_leaf_files(cert_file, key_file)
    reasons = ['force is set'] if force else []
    issuer = (None, None)
    if disk['problem']:
        reasons.append(disk['problem'])
    else:
        issuer = find_leaf_issuer(disk['cert'], issuers)
        reasons.extend(leaf_renewal_reasons(
            disk['cert'], common_name=common_name, alt_names=alt_names, ip_sans=ip_sans, renew_before=renew_before,
            now=now, issuer=issuer, issuers=issuers, issuer_ref=issuer_ref, renew_if_not_default=renew_if_not_default,
            # the key is checked only where it is made here: OpenBao makes it as the role says (which may not be key_type)
            schedule=schedule, key_type=key_type if key_source == 'local' else None, key_bits=key_bits))
    result['reasons'] = reasons
    files = [(cert_file, mode), (key_file, key_mode)] + ([(chain_file, mode)] if chain_file else [])
    if reasons:
        result['issued'] = True
        result['files_written'] = [f for f, _m in files]
        if check_mode:
            result.update(changed=True, certificate=None, serial=None, common_name=common_name, sha256=None,
                          not_before=None, not_after=None, renew_at=None, issuer_id=None, issuer_name=None,
                          epoch=None, ca_chain=[])
            return result
        leaf = issue_leaf(client, int_mount=int_mount, role=role, common_name=common_name, alt_names=alt_names,
                          ip_sans=ip_sans, ttl=ttl, issuer_ref=issuer_ref, key_type=key_type, key_bits=key_bits,
                          local_key=key_source == 'local')
        cert_text = leaf['certificate'] + (leaf['issuing_ca'] if full_chain and leaf['issuing_ca'].strip() else '')
        contents = {cert_file: cert_text, key_file: leaf['private_key'].strip() + '\n'}
        if chain_file:
            contents[chain_file] = ''.join(leaf['ca_chain'])
        # key first: a crash between the writes leaves a mismatching pair, which the next run re-issues
        for path, file_mode in [files[1], files[0]] + files[2:]:
            atomic_write(path, contents[path], file_mode, owner, group)
        if return_content:
            result['private_key'] = contents[key_file]
        facts = {k: leaf[k] for k in ('certificate', 'serial', 'common_name', 'sha256', 'not_before', 'not_after',
                                      'issuer_id', 'issuer_name', 'epoch', 'ca_chain')}
        cert = load_cert(leaf['certificate'])
        changed = True
    else:
        cert = disk['cert']
        issuer_id, info = issuer
        leaf_pem = pem_certificates(disk['cert_text'])[0]
        issuing_ca = (info or {}).get('certificate') or ''
        ca_chain = (info or {}).get('ca_chain') or []
        expected = {cert_file: leaf_pem + (issuing_ca.strip() + '\n' if full_chain and issuing_ca else '')}
        if chain_file:
            expected[chain_file] = ''.join(ca_chain)
        changed_attrs = False
        for path, file_mode in files:
            if path in expected:
                differs, attrs = file_needs_write(path, expected[path], file_mode, owner, group)
            else:
                differs, attrs = False, file_needs_write(path, '', file_mode, owner, group)[1]
            if differs:
                result['files_written'].append(path)
                result['reasons'].append('%s is out of date' % path)
                if not check_mode:
                    atomic_write(path, expected[path], file_mode, owner, group)
            elif attrs:
                changed_attrs = True
                result['reasons'].append('mode or owner of %s differ' % path)
                if not check_mode:
                    set_attributes(path, file_mode, owner, group)
        facts = cert_facts(leaf_pem)
        facts.update(issuer_id=issuer_id, issuer_name=(info or {}).get('issuer_name') or None, ca_chain=ca_chain)
        facts['epoch'] = epoch_of(facts['issuer_name'])
        changed = bool(result['files_written']) or changed_attrs
    result.update(facts)
    result['changed'] = changed
    result['renew_at'] = isoformat(renewal_threshold(renew_before, cert_not_before(cert), cert_not_after(cert)))
    return result

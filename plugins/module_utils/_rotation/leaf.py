# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep a leaf certificate + key pair on disk current: renew it from OpenBao only when due.

Used by the engine (probe leaf, server leaves, announcer leaf) and by the module ``openbao_leaf``.
"""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import cert_facts, load_cert, normalize_pem
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import (
    atomic_write,
    file_needs_write,
    set_attributes,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import _data, _request
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import (
    find_leaf_issuer,
    issue_leaf,
    leaf_renewal_reasons,
    read_leaf_files,
    renewal_threshold,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import epoch_of, issuer_certificates


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
            schedule=schedule))
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
    result['renew_at'] = isoformat(renewal_threshold(renew_before, cert.not_valid_before_utc, cert.not_valid_after_utc))
    return result


def sign_csr(client, *, int_mount, role, csr, common_name, alt_names=(), ip_sans=(), ttl=None, issuer_ref=None):
    """Sign a server's CSR with role ``role`` (the key stays where it was made). Returns certificate + issuing CA PEM."""
    base = '%s/issuer/%s' % (int_mount, issuer_ref) if issuer_ref else int_mount
    payload = {'csr': csr, 'common_name': common_name, 'format': 'pem'}
    if alt_names:
        payload['alt_names'] = ','.join(alt_names)
    if ip_sans:
        payload['ip_sans'] = ','.join(ip_sans)
    if ttl:
        payload['ttl'] = str(ttl)
    path = '%s/sign/%s' % (base, role)
    data = _data(_request(client, 'POST', path, 'signing the leaf certificate of %s' % common_name, data=payload))
    if not data.get('certificate'):
        raise OpenBaoError('signing the leaf certificate of %s at %r returned no certificate' % (common_name, path), path=path)
    issuing_ca = normalize_pem(data.get('issuing_ca') or '')
    return normalize_pem(data['certificate']) + (issuing_ca if issuing_ca.strip() else '')

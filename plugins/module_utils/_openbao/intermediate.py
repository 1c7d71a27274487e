# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Epoch intermediates on the PKI mounts: issue, activate, prune, remove (private).

OpenBao behaviour this code relies on (verified against OpenBao 2.7.2, see DESIGN section 10):

* ``<root>/issuer/<ref>/sign-intermediate`` honours ``not_after`` (exact NotAfter, even beyond the
  mount's max TTL and even in the past -- so we refuse expired epochs ourselves) and
  ``not_before_duration`` (NotBefore = server time - duration, whole seconds). Its ``not_before``
  parameter is accepted but IGNORED when signing a CSR, so NotBefore is reached through
  ``not_before_duration`` and checked on the returned certificate (see :func:`_sign_exact`).
* ``format=pem`` returns only the new certificate (``pem_bundle`` would import the root into the
  intermediate mount as a key-less issuer).
* ``intermediate/set-signed`` does not name the issuer; naming + ``leaf_not_after_behavior`` is a
  PATCH on ``issuer/<id>``. The first issuer of an empty mount becomes its default automatically;
  later ones do not (``default_follows_latest_issuer`` stays false).
"""

from __future__ import annotations

import datetime
import re
import secrets
import time

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    REPLACEMENT_OU,
    cert_facts,
    cert_not_after,
    cert_not_before,
    load_cert,
    normalize_pem,
    public_key_der,
    verify_intermediate,
    x509,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import _data, _request
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import (
    _key_epoch,
    _parse_iso,
    epoch_issuer_name,
    key_spec,
    list_epoch_issuers,
    list_issuers,
    list_keys,
    live_epoch_names,
    read_issuer,
    replacement_of,
    root_certificate,
)


def _delete_issuer(client, mount, issuer_id, check_mode):
    if not check_mode:
        _request(client, 'DELETE', '%s/issuer/%s' % (mount, issuer_id), 'deleting issuer')


def _delete_key(client, mount, key_id, check_mode):
    if not check_mode:
        _request(client, 'DELETE', '%s/key/%s' % (mount, key_id), 'deleting key')


def _orphan_keys(keys, issuers, epoch=None):
    """Keys named ``epoch-<n>-*`` (for ``epoch`` if given) that no issuer references."""
    used = {info.get('key_id') for info in issuers.values()}
    out = []
    for key_id, info in keys.items():
        n = _key_epoch(info.get('key_name'))
        if n is None or key_id in used or (epoch is not None and n != epoch):
            continue
        out.append({'key_id': key_id, 'key_name': info.get('key_name'), 'epoch': n})
    return sorted(out, key=lambda k: (k['epoch'], k['key_name']))


def _sign_exact(client, root_mount, root_issuer, csr, common_name, not_after, target_not_before, attempts=3, ou=None):
    """Sign ``csr`` with NotAfter = ``not_after`` and NotBefore as close to ``target_not_before`` as
    OpenBao allows.

    OpenBao ignores ``not_before`` for CSR signing; ``not_before_duration`` d gives NotBefore =
    floor(server_now) - d. We compute d from the local clock, read the NotBefore back, and retry
    (at most ``attempts`` signatures, nothing is imported in between) correcting for the
    server/local clock offset. Returns ``(response, deviation_seconds)``; deviation is
    NotBefore - target (0 in practice; non-zero only if every attempt crossed a second boundary).
    """
    path = '%s/issuer/%s/sign-intermediate' % (root_mount, root_issuer)
    target = target_not_before.replace(microsecond=0)
    offset = 0
    best = None
    for _attempt in range(max(attempts, 1)):
        duration = int(time.time()) - int(target.timestamp()) + offset
        payload = {
            'csr': csr, 'common_name': common_name, 'format': 'pem', 'not_after': isoformat(not_after),
            'not_before_duration': max(duration, 1), 'exclude_cn_from_sans': True, 'max_path_length': 0,
            'use_csr_values': False,
        }
        if ou:
            payload['ou'] = ou
        resp = _request(client, 'POST', path, 'signing the intermediate with the root', data=payload)
        pem = _data(resp).get('certificate')
        if not pem:
            raise OpenBaoError('%r returned no certificate' % path, path=path)
        got = cert_not_before(load_cert(pem))
        deviation = int((got - target).total_seconds())
        if best is None or abs(deviation) < abs(best[1]):
            best = (resp, deviation)
        if deviation == 0 or duration < 1:
            break
        offset += deviation
    return best


def _predicted(schedule, epoch, cn_prefix, real_now, replacement=0):
    return {
        'issuer_id': None, 'issuer_name': epoch_issuer_name(epoch, replacement), 'key_id': None, 'key_name': None,
        'epoch': epoch, 'replacement': replacement, 'certificate': None, 'common_name': '%s Epoch %d' % (cn_prefix, epoch),
        'serial': None, 'sha256': None,
        'not_before': isoformat(min(schedule.start(epoch), real_now) - datetime.timedelta(seconds=schedule.skew)),
        'not_after': isoformat(schedule.expiry(epoch)), 'revoked': False, 'is_default': False,
        'leaf_not_after_behavior': 'truncate',
    }


def _name_issuer(client, mount, issuer_id, name):
    return _request(client, 'PATCH', '%s/issuer/%s' % (mount, issuer_id), 'naming the new issuer %r' % name,
                    data={'issuer_name': name, 'leaf_not_after_behavior': 'truncate'})


def ensure_epoch_intermediate(client, schedule, epoch, *, root_mount='pki', int_mount='pki_int',
                              cn_prefix='NATS Intermediate CA', key_type='ec', key_bits=0, root_issuer='default',
                              check_mode=False, now=None, distrusted=()):
    """Make sure issuer ``epoch-<epoch>`` exists on ``int_mount``, signed by the root on ``root_mount``.

    An epoch whose intermediate was distrusted (its SHA-256 in ``distrusted``; it is revoked) gets a replacement:
    issuer ``epoch-<n>-r<k>`` with the next k, subject OU ``replacement <k>``, the same NotAfter. Without being in
    ``distrusted`` a revoked issuer is refused, as any other invalid one.

    The key is generated inside OpenBao (``internal``) as ``epoch-<n>-<6 hex>``; NotAfter is
    exactly ``schedule.expiry(n)``; NotBefore is ``schedule.not_before(n)`` (start - skew) when
    the epoch has started, else signing time - skew (a certificate must be usable as soon as it
    is activated, which may be before its epoch starts); the issuer gets
    ``leaf_not_after_behavior=truncate``. Keys ``epoch-<n>-*`` left by an interrupted run are
    deleted; an unnamed issuer left between set-signed and naming is adopted (or deleted if it
    does not match). Returns the issuer facts plus ``changed``, ``created``,
    ``orphan_keys_deleted``, ``root_certificate`` and ``warnings``.
    """
    now = now or utcnow()
    real_now = utcnow()
    try:
        key_type, key_bits = key_spec(key_type, key_bits)  # the size explicit: OpenBao's defaults are never relied on
    except ValueError as exc:
        raise OpenBaoError(str(exc)) from None
    expiry = schedule.expiry(epoch)
    if expiry <= now or expiry <= real_now:
        valid = schedule.valid_epochs(now)
        raise OpenBaoError(
            'Epoch %d expired at %s (now %s): an intermediate for it would never be valid. Valid epochs now: %s'
            % (epoch, isoformat(expiry), isoformat(max(now, real_now)), ', '.join(str(n) for n in valid) or 'none'),
            operation='checking the epoch')
    current = schedule.epoch(min(now, real_now))
    if epoch > current + 1:
        raise OpenBaoError(
            'Epoch %d starts at %s, more than one epoch ahead of the current epoch %d: intermediates are issued at most '
            'one epoch in advance' % (epoch, isoformat(schedule.start(epoch)), current), operation='checking the epoch')

    issuers = list_issuers(client, int_mount)
    replacement = replacement_of(live_epoch_names(issuers).get(epoch)) or 0
    name = epoch_issuer_name(epoch, replacement)
    distrusted = set(distrusted or ())
    common_name = '%s Epoch %d' % (cn_prefix, epoch)
    warnings = []
    root_pem = root_certificate(client, root_mount, root_issuer)
    root = load_cert(root_pem)
    if cert_not_after(root) < expiry:
        warnings.append('The root issuer %r on %r expires at %s, before epoch %d ends (%s): chains through it stop '
                        'verifying early' % (root_issuer, root_mount, isoformat(cert_not_after(root)), epoch,
                                             isoformat(expiry)))

    keys = list_keys(client, int_mount)
    result = {'changed': False, 'created': False, 'orphan_keys_deleted': [], 'adopted': False,
              'root_certificate': root_pem, 'warnings': warnings, 'replacement': replacement}

    existing = next((iid for iid, info in issuers.items() if info.get('issuer_name') == name), None)
    if existing:
        facts = read_issuer(client, int_mount, existing)
        if facts['sha256'] in distrusted:
            # distrusted (and revoked): the epoch gets its next replacement, under its own name
            replacement += 1
            name, existing = epoch_issuer_name(epoch, replacement), None
            result['replacement'] = replacement
    if existing:
        problems = verify_intermediate(facts['certificate'], root_pem, expiry)
        if facts['revoked']:
            problems.append('it is revoked')
        if not facts['key_id']:
            problems.append('it has no private key in OpenBao')
        if problems:
            raise OpenBaoError(
                'Issuer %r on %r exists but is not a valid intermediate for epoch %d: %s. Remove it (state: absent, or '
                "'bao delete %s/issuer/%s') and run again to issue a fresh one"
                % (name, int_mount, epoch, '; '.join(problems), int_mount, name), path='%s/issuer/%s' % (int_mount, name))
        if facts['leaf_not_after_behavior'] != 'truncate':
            result['changed'] = True
            if not check_mode:
                _request(client, 'PATCH', '%s/issuer/%s' % (int_mount, existing), 'setting leaf_not_after_behavior',
                         data={'leaf_not_after_behavior': 'truncate'})
            facts['leaf_not_after_behavior'] = 'truncate'
        facts['is_default'] = bool(issuers[existing].get('is_default'))
        facts['key_name'] = (keys.get(facts['key_id']) or {}).get('key_name') or ''
        _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
        result.update(facts)
        return result

    # An issuer imported by an interrupted run but never named: adopt it if it is right.
    for issuer_id, info in sorted(issuers.items()):
        key_name = (keys.get(info.get('key_id')) or {}).get('key_name')
        if info.get('issuer_name') or _key_epoch(key_name) != epoch or not re.match(re.escape(name) + r'-[0-9a-z]+$', key_name or ''):
            continue
        facts = read_issuer(client, int_mount, issuer_id)
        if not facts['revoked'] and not verify_intermediate(facts['certificate'], root_pem, expiry):
            result.update(changed=True, adopted=True)
            if not check_mode:
                _name_issuer(client, int_mount, issuer_id, name)
            facts.update(issuer_name=name, epoch=epoch, leaf_not_after_behavior='truncate', key_name=key_name,
                         is_default=bool(info.get('is_default')))
            issuers[issuer_id] = dict(info, issuer_name=name)
            _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
            result.update(facts)
            return result
        # Wrong certificate (e.g. the schedule changed): drop the issuer; its key becomes an orphan.
        result['changed'] = True
        _delete_issuer(client, int_mount, issuer_id, check_mode)
        issuers.pop(issuer_id)

    _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
    result.update(changed=True, created=True)
    if check_mode:
        result.update(_predicted(schedule, epoch, cn_prefix, real_now, replacement))
        # OpenBao makes the first issuer of a mount without issuers its default.
        result['is_default'] = not issuers
        return result

    key_name = '%s-%s' % (name, secrets.token_hex(3))
    ou = {'ou': REPLACEMENT_OU % replacement} if replacement else {}
    gen = _data(_request(client, 'POST', '%s/intermediate/generate/internal' % int_mount,
                         'generating the key and CSR for epoch %d' % epoch,
                         data=dict({'common_name': common_name, 'key_type': key_type, 'key_bits': int(key_bits or 0),
                                    'key_name': key_name, 'exclude_cn_from_sans': True, 'format': 'pem'}, **ou)))
    csr, key_id = gen.get('csr'), gen.get('key_id')
    if not csr or not key_id:
        raise OpenBaoError('%s/intermediate/generate/internal returned no CSR or key_id' % int_mount)

    target_nb = min(schedule.start(epoch), utcnow()) - datetime.timedelta(seconds=schedule.skew)
    signed, deviation = _sign_exact(client, root_mount, root_issuer, csr, common_name, expiry, target_nb, ou=ou.get('ou'))
    pem = normalize_pem(_data(signed)['certificate'])
    problems = verify_intermediate(pem, root_pem, expiry)
    csr_key = x509.load_pem_x509_csr(csr.encode('ascii')).public_key()
    if public_key_der(load_cert(pem).public_key()) != public_key_der(csr_key):
        problems.append('its public key is not the one of the CSR')
    if problems:
        raise OpenBaoError('The certificate signed for epoch %d is wrong: %s. Nothing was imported; the key %r is '
                           'removed by the next run' % (epoch, '; '.join(problems), key_name))
    if deviation and schedule.start(epoch) <= real_now:
        warnings.append('NotBefore of epoch %d is %+d s off start - skew_allowance (%s): OpenBao only backdates relative '
                        'to its own clock' % (epoch, deviation, isoformat(target_nb)))

    imported = _data(_request(client, 'POST', '%s/intermediate/set-signed' % int_mount,
                              'importing the signed intermediate of epoch %d' % epoch, data={'certificate': pem}))
    issuer_ids = list(imported.get('imported_issuers') or []) + list(imported.get('existing_issuers') or [])
    issuer_id = next((i for i in issuer_ids if (imported.get('mapping') or {}).get(i) == key_id), None)
    if not issuer_id:
        raise OpenBaoError('set-signed on %r did not map the certificate of epoch %d to key %r (mapping %r)'
                           % (int_mount, epoch, key_name, imported.get('mapping')))
    try:
        _name_issuer(client, int_mount, issuer_id, name)
    except OpenBaoError as exc:
        # Lost a race with a concurrent run that named its own epoch-<n>: drop ours.
        if exc.status == 400 and name in list_epoch_names(client, int_mount):
            _delete_issuer(client, int_mount, issuer_id, False)
            _delete_key(client, int_mount, key_id, False)
            retry = ensure_epoch_intermediate(
                client, schedule, epoch, root_mount=root_mount, int_mount=int_mount, cn_prefix=cn_prefix,
                key_type=key_type, key_bits=key_bits, root_issuer=root_issuer, check_mode=check_mode, now=now,
                distrusted=distrusted)
            retry['changed'] = True
            return retry
        raise
    facts = cert_facts(pem)
    facts.update(issuer_id=issuer_id, issuer_name=name, key_id=key_id, key_name=key_name, epoch=epoch,
                 replacement=replacement, revoked=False, leaf_not_after_behavior='truncate',
                 is_default=bool((list_issuers(client, int_mount).get(issuer_id) or {}).get('is_default')))
    result.update(facts)
    return result


def list_epoch_names(client, mount):
    return {info.get('issuer_name') for info in list_issuers(client, mount).values()}


def _cleanup_orphans(client, mount, keys, issuers, epoch, check_mode, result):
    for orphan in _orphan_keys(keys, issuers, epoch):
        _delete_key(client, mount, orphan['key_id'], check_mode)
        keys.pop(orphan['key_id'], None)
        result['orphan_keys_deleted'].append(orphan)
        result['changed'] = True


def set_default_issuer(client, int_mount, issuer_name, check_mode=False, now=None):
    """Make ``issuer_name`` the default issuer of ``int_mount`` (the activation switch).

    Refuses a revoked, expired or not-yet-valid issuer (OpenBao itself would accept them).
    Returns ``changed``, ``previous_default`` and ``default`` (each ``{issuer_id, issuer_name}``).
    """
    now = now or utcnow()
    issuers = list_issuers(client, int_mount)
    target = next((iid for iid, info in issuers.items() if info.get('issuer_name') == issuer_name), None)
    if target is None:
        names = ', '.join(sorted(i.get('issuer_name') or iid for iid, i in issuers.items())) or 'none'
        raise OpenBaoError('Cannot activate %r: no issuer of that name on mount %r (issuers: %s)'
                           % (issuer_name, int_mount, names), path='%s/issuers' % int_mount)
    facts = read_issuer(client, int_mount, target)
    real_now = utcnow()
    if facts['revoked']:
        raise OpenBaoError('Refusing to make %r the default issuer of %r: it is revoked' % (issuer_name, int_mount))
    if _parse_iso(facts['not_after']) <= max(now, real_now):
        raise OpenBaoError('Refusing to make %r the default issuer of %r: its certificate expired at %s'
                           % (issuer_name, int_mount, facts['not_after']))
    if _parse_iso(facts['not_before']) > real_now:
        raise OpenBaoError('Refusing to make %r the default issuer of %r: its certificate is not valid before %s'
                           % (issuer_name, int_mount, facts['not_before']))
    if not facts['key_id']:
        raise OpenBaoError('Refusing to make %r the default issuer of %r: it has no private key' % (issuer_name, int_mount))
    data = _data(_request(client, 'GET', '%s/config/issuers' % int_mount, 'reading the default issuer'))
    previous = data.get('default') or None
    prev = {'issuer_id': previous, 'issuer_name': (issuers.get(previous) or {}).get('issuer_name') if previous else None}
    new = {'issuer_id': target, 'issuer_name': issuer_name}
    if previous == target:
        return {'changed': False, 'previous_default': prev, 'default': new}
    if not check_mode:
        _request(client, 'POST', '%s/config/issuers' % int_mount, 'setting the default issuer to %r' % issuer_name,
                 data={'default': target})
    return {'changed': True, 'previous_default': prev, 'default': new}


def prune_epoch_issuers(client, schedule, int_mount, grace_seconds, now=None, check_mode=False, assume_default=None):
    """Delete epoch issuers whose NotAfter (and schedule expiry) + ``grace_seconds`` has passed,
    then their keys (only keys no remaining issuer uses), then orphan ``epoch-<n>-*`` keys of
    such epochs. Never the default issuer, never an unexpired one.

    ``assume_default``: treat this issuer name as the default instead of what OpenBao says (check
    mode predicting a run that activates another issuer first).
    Returns ``changed``, ``deleted`` (issuer facts without PEM) and ``kept`` (with a reason).
    """
    now = now or utcnow()
    grace = datetime.timedelta(seconds=int(grace_seconds))
    issuers = list_issuers(client, int_mount)
    keys = list_keys(client, int_mount)
    result = {'changed': False, 'deleted': [], 'kept': [], 'orphan_keys_deleted': []}
    pruned_epochs = set()
    for issuer in list_epoch_issuers(client, int_mount, issuers, keys):
        n = issuer['epoch']
        ends = max(_parse_iso(issuer['not_after']), schedule.expiry(n))
        summary = {k: issuer[k] for k in ('epoch', 'issuer_id', 'issuer_name', 'key_id', 'key_name', 'not_after')}
        if now < ends + grace:
            continue
        is_default = issuer['is_default'] if assume_default is None else issuer['issuer_name'] == assume_default
        if is_default:
            result['kept'].append(dict(summary, reason='default issuer (activate a newer epoch first)'))
            continue
        _delete_issuer(client, int_mount, issuer['issuer_id'], check_mode)
        issuers.pop(issuer['issuer_id'], None)
        users = [iid for iid, info in issuers.items() if info.get('key_id') == issuer['key_id']]
        if issuer['key_id'] and not users:
            _delete_key(client, int_mount, issuer['key_id'], check_mode)
            keys.pop(issuer['key_id'], None)
        result['deleted'].append(summary)
        result['changed'] = True
        pruned_epochs.add(n)
    for orphan in _orphan_keys(keys, issuers):
        n = orphan['epoch']
        if n in pruned_epochs or now >= schedule.expiry(n) + grace:
            _delete_key(client, int_mount, orphan['key_id'], check_mode)
            result['orphan_keys_deleted'].append(orphan)
            result['changed'] = True
    return result


def remove_epoch_intermediate(client, int_mount, epoch, check_mode=False):
    """Delete issuer ``epoch-<n>`` and every key ``epoch-<n>-*`` no other issuer uses (state=absent).

    Refuses the default issuer."""
    name = 'epoch-%d' % epoch
    issuers = list_issuers(client, int_mount)
    keys = list_keys(client, int_mount)
    result = {'changed': False, 'deleted': [], 'orphan_keys_deleted': []}
    for issuer_id, info in list(issuers.items()):
        if info.get('issuer_name') != name:
            continue
        if info.get('is_default'):
            raise OpenBaoError('Refusing to delete %r on %r: it is the default issuer; activate another epoch first'
                               % (name, int_mount))
        _delete_issuer(client, int_mount, issuer_id, check_mode)
        issuers.pop(issuer_id)
        result['deleted'].append({'epoch': epoch, 'issuer_id': issuer_id, 'issuer_name': name,
                                  'key_id': info.get('key_id')})
        result['changed'] = True
    _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
    return result

# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the PKI mounts: issuers, keys, the root, and the state of each epoch issuer (private).

OpenBao behaviour this code relies on (verified against OpenBao 2.7.2, see DESIGN section 10):
reading an unknown issuer reference answers HTTP 500, so issuers are always found by LIST first;
``LIST <mount>/issuers`` and ``GET <mount>/issuer/<ref>/json`` need no token.
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import cert_facts, normalize_pem
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import _data, _list, _request
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError

UTC = datetime.timezone.utc

KEY_TYPES = ('ec', 'rsa', 'ed25519', 'mldsa')
#: the key sizes of each family; ``key_bits`` 0 (omitted) means the first one, except for ML-DSA, whose parameter set
#: must be given (OpenBao's own default, ML-DSA-44, is never relied on); ed25519 has no size
KEY_BITS = {'ec': (256, 384, 521), 'rsa': (2048, 3072, 4096, 8192), 'ed25519': (0,), 'mldsa': (44, 65, 87)}


def key_spec(key_type, key_bits=0, option='key_type'):
    """``(key_type, key_bits)`` with the size made explicit, or ValueError naming ``option`` (and its ``key_bits``)
    with what is accepted: an unknown family, a size that family does not have, ML-DSA without its parameter set."""
    bits_option = option[:-len('key_type')] + 'key_bits' if option.endswith('key_type') else 'key_bits'
    if key_type not in KEY_BITS:
        raise ValueError('%s must be one of %s, got %r' % (option, ', '.join(KEY_TYPES), key_type))
    try:
        bits = int(key_bits or 0)
    except (TypeError, ValueError):
        raise ValueError('%s must be a number, got %r' % (bits_option, key_bits)) from None
    sizes = KEY_BITS[key_type]
    if key_type == 'mldsa' and not bits:
        raise ValueError('%s %s needs %s: 44, 65 or 87 (the ML-DSA parameter set; 65 is the one nats-server is known to '
                         'serve and verify)' % (option, key_type, bits_option))
    if key_type == 'ed25519':
        if bits:
            raise ValueError('%s ed25519 has no key size: leave %s out (got %r)' % (option, bits_option, key_bits))
        return key_type, 0
    bits = bits or sizes[0]
    if bits not in sizes:
        raise ValueError('%s %r with %s %r: %s takes %s'
                         % (option, key_type, bits_option, key_bits, key_type, ', '.join(str(n) for n in sizes)))
    return key_type, bits


#: ``epoch-<n>``, or ``epoch-<n>-r<k>``: the k-th replacement of epoch n's intermediate (after a distrust)
EPOCH_ISSUER_RE = re.compile(r'^epoch-(\d+)(?:-r([1-9]\d*))?$')


def _parse_iso(text):
    return datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=UTC)


def list_issuers(client, mount):
    """``{issuer_id: {issuer_name, key_id, is_default, serial_number}}`` of every issuer on ``mount``."""
    return _list(client, '%s/issuers' % mount, 'listing issuers')


def list_keys(client, mount):
    """``{key_id: {key_name, ...}}`` of every key on ``mount``."""
    return _list(client, '%s/keys' % mount, 'listing keys')


def epoch_of(name):
    """Epoch number of an issuer named ``epoch-<n>`` or ``epoch-<n>-r<k>``, else None."""
    match = EPOCH_ISSUER_RE.match(name or '')
    return int(match.group(1)) if match else None


def replacement_of(name):
    """``k`` of an issuer named ``epoch-<n>-r<k>``, 0 for ``epoch-<n>``, None for any other name."""
    match = EPOCH_ISSUER_RE.match(name or '')
    if not match:
        return None
    return int(match.group(2) or 0)


def epoch_issuer_name(epoch, replacement=0):
    """The issuer name of epoch ``epoch``'s intermediate (``replacement`` k > 0: ``epoch-<n>-r<k>``)."""
    return 'epoch-%d' % int(epoch) if not replacement else 'epoch-%d-r%d' % (int(epoch), int(replacement))


def live_epoch_names(issuers):
    """``{epoch: issuer name}`` of the intermediate that stands for each epoch: its newest replacement (one is issued
    only after the one before was distrusted), else ``epoch-<n>``. ``issuers``: ``{id: {issuer_name, ...}}``."""
    best = {}
    for info in issuers.values():
        name = info.get('issuer_name')
        n, k = epoch_of(name), replacement_of(name)
        if n is not None and (n not in best or k > best[n][0]):
            best[n] = (k, name)
    return {n: name for n, (_k, name) in best.items()}


def live_issuer_name(client, int_mount, epoch):
    """The issuer name that stands for ``epoch`` on ``int_mount`` (see :func:`live_epoch_names`)."""
    return live_epoch_names(list_issuers(client, int_mount)).get(int(epoch)) or epoch_issuer_name(epoch)


def _key_epoch(key_name):
    match = re.match(r'^epoch-(\d+)(?:-r\d+)?-[0-9a-z]+$', key_name or '')
    return int(match.group(1)) if match else None


def read_issuer(client, mount, issuer_ref):
    """Full facts of one issuer (authenticated read of ``<mount>/issuer/<ref>``)."""
    path = '%s/issuer/%s' % (mount, issuer_ref)
    data = _data(_request(client, 'GET', path, 'reading issuer'))
    facts = cert_facts(data['certificate'])
    facts.update({
        'issuer_id': data.get('issuer_id'),
        'issuer_name': data.get('issuer_name') or '',
        'key_id': data.get('key_id') or '',
        'revoked': bool(data.get('revoked')),
        'leaf_not_after_behavior': data.get('leaf_not_after_behavior'),
        'usage': data.get('usage'),
        'epoch': epoch_of(data.get('issuer_name')),
        'replacement': replacement_of(data.get('issuer_name')),
    })
    return facts


def list_epoch_issuers(client, int_mount, issuers=None, keys=None):
    """Every issuer named ``epoch-<n>`` (or ``epoch-<n>-r<k>``) on ``int_mount``, ascending by epoch, then replacement.

    Each entry: issuer_id, issuer_name, epoch, replacement, certificate (PEM), common_name, not_before,
    not_after, serial, sha256, is_default, key_id, key_name, revoked, leaf_not_after_behavior.
    """
    issuers = list_issuers(client, int_mount) if issuers is None else issuers
    keys = list_keys(client, int_mount) if keys is None else keys
    out = []
    for issuer_id, info in issuers.items():
        if epoch_of(info.get('issuer_name')) is None:
            continue
        facts = read_issuer(client, int_mount, issuer_id)
        facts['is_default'] = bool(info.get('is_default'))
        facts['key_name'] = (keys.get(facts['key_id']) or {}).get('key_name') or ''
        out.append(facts)
    out.sort(key=lambda i: (i['epoch'], i['replacement']))
    return out


def default_issuer(client, int_mount):
    """``(issuer_id, issuer_name)`` of the mount's default issuer, or ``(None, None)``."""
    data = _data(_request(client, 'GET', '%s/config/issuers' % int_mount, 'reading the default issuer'))
    issuer_id = data.get('default') or None
    if not issuer_id:
        return None, None
    info = list_issuers(client, int_mount).get(issuer_id) or {}
    return issuer_id, info.get('issuer_name') or None


def root_certificate(client, root_mount, root_issuer='default'):
    """PEM of the signing root (unauthenticated ``issuer/<ref>/json``)."""
    path = '%s/issuer/%s/json' % (root_mount, root_issuer)
    data = _data(_request(client, 'GET', path, 'reading the root certificate'))
    if not data.get('certificate'):
        raise OpenBaoError('No certificate for issuer %r on mount %r: is a root CA set up there (root_mount / root_issuer)?'
                           % (root_issuer, root_mount), path=path)
    return normalize_pem(data['certificate'])


def issuer_state(issuer, schedule, now, default_epoch=None):
    """``active`` (default issuer) | ``revoked`` | ``expired`` | ``prepared`` (newer than the active
    epoch, waiting for activation) | ``valid`` (older or equal, still within its validity)."""
    if issuer.get('is_default'):
        return 'active'
    if issuer.get('revoked'):
        return 'revoked'
    not_after = _parse_iso(issuer['not_after'])
    if now >= not_after:
        return 'expired'
    reference = default_epoch if default_epoch is not None else _safe_epoch(schedule, now)
    if reference is not None and issuer['epoch'] is not None and issuer['epoch'] > reference:
        return 'prepared'
    return 'valid'


def _safe_epoch(schedule, now):
    try:
        return schedule.epoch(now)
    except ValueError:
        return None


def epoch_state(schedule, epoch, now):
    """``schedule.state(epoch, now)``, or None when the epoch is not one of the schedule's."""
    try:
        return schedule.state(epoch, now)
    except ValueError:
        return None


def describe_issuers(issuers, schedule, now):
    """Issuer facts (without PEM) plus ``state`` and ``epoch_state`` for reporting."""
    default_epoch = next((i['epoch'] for i in issuers if i.get('is_default')), None)
    out = []
    for issuer in issuers:
        entry = {k: v for k, v in issuer.items() if k != 'certificate'}
        entry['state'] = issuer_state(issuer, schedule, now, default_epoch)
        entry['epoch_state'] = epoch_state(schedule, issuer['epoch'], now)
        out.append(entry)
    return out


def issuer_certificates(client, mount):
    """``{issuer_id: {issuer_name, is_default, certificate}}`` through the unauthenticated endpoints
    (LIST issuers + issuer/<id>/json), for callers whose token may only issue leaves."""
    out = {}
    for issuer_id, info in list_issuers(client, mount).items():
        data = _data(_request(client, 'GET', '%s/issuer/%s/json' % (mount, issuer_id), 'reading issuer certificate'))
        out[issuer_id] = {'issuer_name': info.get('issuer_name') or '', 'is_default': bool(info.get('is_default')),
                          'certificate': data.get('certificate'),
                          'ca_chain': [normalize_pem(c) for c in data.get('ca_chain') or [] if c and c.strip()]}
    return out

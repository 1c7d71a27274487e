# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Distrusting an epoch (``playbooks/distrust.yml``, DESIGN section 11): the decisions and the OpenBao side.

A distrusted intermediate is revoked on the intermediate mount (it stops issuing) and on the root mount (the root's
OCSP responder and CRL say REVOKED), recorded in the rotation state (``distrusted``: every later bundle, rollback and
hold leaves it out by SHA-256) and taken out of every bundle. With the root in the servers' CA file a client sending
leaf + intermediate would still reach the root, so a distrust makes the bundles intermediates-only while the
distrusted intermediate is valid (docs/distrust-facts.md).

A distrust takes two passes in a run. The first keeps the distrusted intermediate in the bundle (stage
``replacing``) while the leaves it signed are re-issued: when it is the default issuer - the one every server and the
announcer hold a leaf of - a replacement ``epoch-<n>-r<k>`` is issued, delivered next to it, proven on every server
and made the default first (trust-first). The second pass, once every cluster proved that bundle and no server
presents a leaf of the distrusted intermediate any more, takes it out (stage ``complete``). Until then the state
records the distrust as pending and rotate.yml, rollback.yml and another distrust refuse to run.
"""

from __future__ import annotations

import os

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import issued_by, load_cert
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import atomic_write
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, parse_time
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import _data, _request
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import issue_leaf
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.decisions import Refusal

KIND = 'distrust'
WITNESS_CN = 'ca-rotation-distrust-witness'
STAGE_REPLACING = 'replacing'
STAGE_COMPLETE = 'complete'


def distrusted_shas(state):
    """SHA-256 of every intermediate the state records as distrusted."""
    return {d['sha256'] for d in (state or {}).get('distrusted') or [] if d.get('sha256')}


def valid_distrusted(state, now):
    """The distrusted intermediates that have not expired at ``now`` (they must stay out, and the root with them)."""
    out = []
    for entry in (state or {}).get('distrusted') or []:
        try:
            if parse_time(entry.get('not_after'), 'distrusted.not_after') > now:
                out.append(entry)
        except ValueError:
            out.append(entry)  # unreadable: kept out, never trusted again
    return out


def bundle_includes_root(include_root, state, now):
    """The root goes into the bundle only as configured and while no distrusted intermediate is valid: with the root
    as anchor, a client that sends its distrusted intermediate with its leaf would still be accepted."""
    return bool(include_root) and not valid_distrusted(state, now)


def pending(state):
    """The distrust in stage ``replacing`` (a replacement proven, the distrusted intermediate still in the bundle),
    or None. rotate.yml refuses to run while one is pending."""
    return (state or {}).get('distrust_pending') or None


def expired(issuer, now):
    """Whether the intermediate has expired at ``now`` (no bundle holds it; nothing it signed verifies)."""
    try:
        return parse_time(issuer.get('not_after'), 'not_after') <= now
    except (TypeError, ValueError):
        return False  # unreadable: not known to be expired


def to_activate(target, state, replacement_name):
    """The issuer the distrust makes the default once every cluster proved it: the replacement, when the distrusted
    intermediate is (or was, for a re-run of a pending distrust) the default issuer; None otherwise - a prepared
    epoch's replacement is issued but becomes the default only when its epoch's rotation activates it."""
    if target.get('is_default'):
        return replacement_name
    p = pending(state) or {}
    if p.get('epoch') == target.get('epoch'):
        return p['activate'] if 'activate' in p else p.get('replacement')  # a record without it: a default's replacement
    return None


def pending_record(target, record, replacement, activate, since):
    """The state's ``distrust_pending``: the distrust whose intermediate stays in the bundle until its leaves are
    re-issued (``replacement``: the issuer that stands for its epoch now, if any; ``activate``: the one the distrust
    makes the default)."""
    return {'epoch': target['epoch'], 'issuer_name': target['issuer_name'], 'sha256': record['sha256'],
            'replacement': replacement, 'activate': activate, 'since': since}


def live_replacement(issuers, target, distrusted):
    """The newest replacement ``epoch-<n>-r<k>`` of the target's epoch that is neither revoked nor distrusted (the
    facts of ``list_epoch_issuers``), or None."""
    found = [i for i in issuers if i.get('epoch') == target['epoch'] and int(i.get('replacement') or 0) > 0
             and not i.get('revoked') and i.get('sha256') not in distrusted]
    return max(found, key=lambda i: int(i['replacement'])) if found else None


def describe_pending(p):
    """``the distrust of epoch <n> (issuer ..., since ...)`` and what stays trusted meanwhile."""
    kept = ('its replacement %s is in the bundle, the distrusted intermediate too' % p['replacement'] if p.get('replacement')
            else 'the distrusted intermediate stays in the bundle')
    return 'The distrust of epoch %s (issuer %s, since %s) is not complete: %s' % (
        p.get('epoch'), p.get('issuer_name'), p.get('since'), kept)


def refuse_while_pending(state):
    """rotate.yml and rollback.yml must not build a bundle without the distrusted intermediate while the servers
    still present leaves it signed: the distrust finishes first."""
    p = pending(state)
    if p:
        raise Refusal('%s, until every leaf it signed is re-issued. Finish it with playbooks/distrust.yml -e '
                      'ca_rotation_distrust_epoch=%s; nothing was changed' % (describe_pending(p), p.get('epoch')))


def _valid(issuer, now):
    return not issuer.get('revoked') and not expired(issuer, now)


def choose_target(epoch, issuers, state, now, include_root, force_intermediates_only):
    """The issuer to distrust for ``ca_rotation_distrust_epoch``, or the state's record of it when it already is.

    ``issuers``: ``_openbao.pki.list_epoch_issuers`` of the intermediate mount. Returns ``(issuer, entry)``: the
    issuer facts, and the state's ``distrusted`` entry when this epoch's distrust was recorded (a re-run converges).
    Raises Refusal (nothing changed) for an unknown or expired epoch, a distrust that would leave no epoch trusted,
    and the root in the bundle without ``ca_rotation_distrust_force_intermediates_only``.
    """
    epoch = int(epoch)
    busy = pending(state)
    if busy and busy.get('epoch') != epoch:
        raise Refusal('The distrust of epoch %s (issuer %s, since %s) is not complete: finish it first with '
                      'playbooks/distrust.yml -e ca_rotation_distrust_epoch=%s, then distrust epoch %d (one distrust at a '
                      'time: its bundle keeps that intermediate until the leaves it signed are re-issued). Nothing was '
                      'changed' % (busy.get('epoch'), busy.get('issuer_name'), busy.get('since'), busy.get('epoch'), epoch))
    mine = [i for i in issuers if i.get('epoch') == epoch]
    recorded = [d for d in (state or {}).get('distrusted') or [] if d.get('epoch') == epoch]
    entry = recorded[-1] if recorded else None
    if entry is not None:
        issuer = next((i for i in mine if i.get('sha256') == entry['sha256']), None)
        return issuer or dict(entry, revoked=True, missing=True), entry
    names = ', '.join(sorted({i['issuer_name'] for i in issuers}, key=lambda n: (len(n), n))) or 'none'
    if not mine:
        raise Refusal('Epoch %d has no intermediate on this mount (issuers: %s): it was never issued, or it was pruned after '
                      'it expired. Check ca_rotation_distrust_epoch; nothing was changed' % (epoch, names))
    live = max(mine, key=lambda i: int(i.get('replacement') or 0))
    if parse_time(live['not_after'], 'not_after') <= now:
        raise Refusal('Epoch %d expired at %s: no server or client trusts it any more (an expired intermediate is never in a '
                      'bundle), so there is nothing to distrust. Check ca_rotation_distrust_epoch; nothing was changed'
                      % (epoch, live['not_after']))
    if live.get('revoked'):
        raise Refusal('Issuer %s of epoch %d is revoked but the rotation state does not record it as distrusted: it was '
                      'revoked by hand. Nothing was changed; to record the distrust, issue a replacement and prove it, '
                      'delete the issuer (its leaves stop working) or restore the state'
                      % (live['issuer_name'], epoch))
    others = [i for i in issuers if i is not live and i.get('sha256') not in distrusted_shas(state) and _valid(i, now)]
    if not others and not live.get('is_default'):  # the default issuer is replaced first, so trust never lapses
        raise Refusal('Distrusting epoch %d would leave no epoch trusted: it is the only valid intermediate that is not '
                      'distrusted (valid ones: %s), so every leaf a server or a client holds would stop verifying at once. '
                      'Nothing was changed' % (epoch, ', '.join(i['issuer_name'] for i in issuers if _valid(i, now)) or 'none'))
    if include_root and not force_intermediates_only:
        raise Refusal('The bundle includes the root (ca_rotation_authority_include_root: true): a client that sends its '
                      'intermediate of epoch %d with its leaf would still be accepted through the root, and nats-server\'s '
                      'ocsp_peer does not check routes or an anchor taken from ca_file (docs/distrust-facts.md). Re-run '
                      'with -e ca_rotation_distrust_force_intermediates_only=true: the bundles are then built without the '
                      'root while a distrusted intermediate is valid (clients verifying servers need the intermediates '
                      'as trust anchors: partial-chain verification). Nothing was changed' % epoch)
    return live, None


def replacing(target, state, first_pass=None, check_mode=False, now=None):
    """Whether this pass of the distrust is in stage ``replacing`` (the bundle keeps the distrusted intermediate, next
    to its replacement when it is the default issuer) rather than ``complete``.

    An intermediate that has expired at ``now`` is complete at once: no bundle holds it and nothing it signed verifies.
    First pass: a new distrust, the default issuer, or one the state records as pending - a re-run whose second pass
    did not happen (a cluster had not proven the bundle, or a server still presented a leaf of it) - keeps it: its
    leaves are re-issued first. Only the re-run of a completed distrust is complete. Second pass (``first_pass``: the
    first pass's ``distrust`` result): complete, unless the target is still the default issuer (its replacement was
    not activated) - except in check mode, where the first pass's replacement and its activation were predicted.
    """
    if now is not None and expired(target, now):
        return False
    if first_pass:
        return bool(target.get('is_default')) and not (check_mode and first_pass.get('stage') == STAGE_REPLACING)
    if target.get('is_default') or (pending(state) or {}).get('epoch') == target['epoch']:
        return True
    return target.get('sha256') not in distrusted_shas(state)


def announcer_leaf_blocks(cert_file, target, issuers=(), renew_client_leaf=False, announce=True, check_mode=False,
                          now=None):
    """None, or why the second pass must keep the distrusted intermediate: the announcer's client certificate
    (``ca_rotation_authority_nats.cert_file``, read on the controller, where the announcer runs) is one ``target``
    signed and this run did not re-issue it - a bundle without the intermediate would lock the announcer out of every
    server (the next announcement, the audit record).

    The engine re-issues it from the default issuer only with ``ca_rotation_authority_renew_client_leaf`` and the
    announcement on (``activate_replacement``, before the leaf phase); check mode only predicts that renewal, so it
    does not block. Nothing blocks when the file is not readable here or is no certificate (nothing to judge), when
    the target's certificate is not known (a deleted issuer: nothing it signed verifies either way) or when the
    target has expired at ``now``. ``issuers``: ``list_epoch_issuers`` facts, to name the default issuer."""
    if renew_client_leaf and announce and check_mode:
        return None
    if not cert_file or not target.get('certificate') or (now is not None and expired(target, now)):
        return None
    path = os.path.expanduser(cert_file)
    try:
        with open(path, 'rb') as handle:
            leaf = load_cert(handle.read())  # the first certificate of the file: the leaf (an intermediate may follow)
    except (OSError, ValueError):
        return None
    if not issued_by(leaf, load_cert(target['certificate'])):
        return None
    default = next((i.get('issuer_name') for i in issuers if i.get('is_default')), None)
    source = 'the default issuer %s' % default if default and default != target.get('issuer_name') else 'the default issuer'
    if not renew_client_leaf:
        why, fix = ('this collection does not re-issue it (ca_rotation_authority_renew_client_leaf is off)',
                    'Re-issue it from %s (or set ca_rotation_authority_renew_client_leaf: true)' % source)
    elif not announce:
        why, fix = ('this collection re-issues it only when it announces (ca_rotation_authority_announce is off; the '
                    'audit record still connects with it)',
                    'Re-issue it from %s (or turn ca_rotation_authority_announce on)' % source)
    else:
        why, fix = ('it was not re-issued in this run (ca_rotation_authority_renew_client_leaf is on: the renewal after '
                    'the activation failed or did not run, see its message)', 'Re-issue it from %s' % source)
    return ('The announcer\'s client certificate %s (ca_rotation_authority_nats.cert_file) was signed by the distrusted '
            'intermediate %s and %s: a bundle without that intermediate would lock the announcer out. %s, then re-run '
            'playbooks/distrust.yml -e ca_rotation_distrust_epoch=%s. The distrusted intermediate stays in the bundle '
            'until then.' % (path, target.get('issuer_name'), why, fix, target.get('epoch')))


def distrust_entry(issuer, holder, now, reason):
    """The state's record of a distrusted intermediate."""
    return {'epoch': issuer['epoch'], 'issuer_id': issuer['issuer_id'], 'issuer_name': issuer['issuer_name'],
            'serial': issuer['serial'], 'sha256': issuer['sha256'], 'not_after': issuer['not_after'],
            'at': isoformat(now), 'by': holder, 'reason': reason}


def _root_revoked(client, root_mount, serial):
    data = _data(_request(client, 'GET', '%s/cert/%s' % (root_mount, serial), 'reading the intermediate on the root mount'))
    return bool(int(data.get('revocation_time') or 0))


def revoke(client, issuer, int_mount, root_mount, check_mode=False):
    """Revoke the intermediate on both mounts; ``{changed, revoked_issuer, revoked_on_root}``.

    The issuer revoke on the intermediate mount stops it issuing but shows nowhere a peer looks; the revoke of its
    serial on the root mount puts it on the root's CRL and makes the root's OCSP answer REVOKED."""
    out = {'changed': False, 'revoked_issuer': False, 'revoked_on_root': False}
    if not issuer.get('revoked'):
        out.update(changed=True, revoked_issuer=True)
        if not check_mode:
            _request(client, 'POST', '%s/issuer/%s/revoke' % (int_mount, issuer['issuer_id']), 'revoking issuer %s'
                     % issuer['issuer_name'])
    serial = issuer.get('serial')
    if serial:
        try:
            on_root = _root_revoked(client, root_mount, serial)
        except OpenBaoError as err:
            why = ('The intermediate %s (serial %s) is not known to the root mount %r, so its revocation cannot reach the '
                   'root\'s CRL and OCSP responder: %s' % (issuer['issuer_name'], serial, root_mount, err))
            raise OpenBaoError(why) from None
        if not on_root:
            out.update(changed=True, revoked_on_root=True)
            if not check_mode:
                _request(client, 'POST', '%s/revoke' % root_mount, 'revoking %s on the root mount' % issuer['issuer_name'],
                         data={'serial_number': serial})
    return out


def witness_paths(probe_dir, epoch):
    base = os.path.join(os.path.expanduser(probe_dir), 'distrusted-epoch-%d' % int(epoch))
    return {'dir': base, 'chain_file': os.path.join(base, 'leaf-and-intermediate.pem'),
            'leaf_file': os.path.join(base, 'leaf.pem'), 'key_file': os.path.join(base, 'key.pem')}


def witness_leaf(client, issuer, int_mount, role, probe_dir, check_mode=False):
    """A client leaf of the distrusted intermediate, issued before it is revoked (a revoked issuer issues nothing),
    kept in the probe directory: every server must refuse it, sent alone and with its intermediate. Returns the paths
    (``exists`` False when it could not be issued any more: the issuer was revoked before)."""
    paths = witness_paths(probe_dir, issuer['epoch'])
    paths['exists'] = all(os.path.exists(paths[k]) for k in ('chain_file', 'leaf_file', 'key_file'))
    if paths['exists'] or check_mode or issuer.get('revoked'):
        return paths
    leaf = issue_leaf(client, int_mount=int_mount, role=role, common_name=WITNESS_CN, issuer_ref=issuer['issuer_id'])
    os.makedirs(paths['dir'], mode=0o700, exist_ok=True)
    atomic_write(paths['key_file'], leaf['private_key'].strip() + '\n', 0o600)
    atomic_write(paths['leaf_file'], leaf['certificate'].strip() + '\n', 0o644)
    atomic_write(paths['chain_file'], leaf['certificate'].strip() + '\n' + leaf['issuing_ca'].strip() + '\n', 0o644)
    paths['exists'] = True
    return paths

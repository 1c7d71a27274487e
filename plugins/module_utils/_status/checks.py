# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status report's comparisons: every mismatch between the gathered facts, as findings (private; pure)."""

from __future__ import annotations

import datetime

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, isoformat, parse_time
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.secrets import ANNOTATION_PREFIX
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.distrust import (
    describe_pending,
    distrusted_shas,
    valid_distrusted,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.cluster import not_loaded
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.gather import SCHEMA
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.render import (
    MISMATCH,
    WARNING,
    _sha,
    render_table,
)


def _time(text):
    """Aware datetime from ``YYYY-MM-DDTHH:MM:SSZ`` (or any form parse_time takes); None when unparsable."""
    if not text:
        return None
    try:
        return parse_time(text, 'time')
    except ValueError:
        return None


class _Findings(object):
    def __init__(self):
        self.items = []

    def add(self, severity, code, where, msg):
        self.items.append({'severity': severity, 'code': code, 'where': where, 'msg': msg})

    def mismatch(self, code, where, msg):
        self.add(MISMATCH, code, where, msg)

    def warning(self, code, where, msg):
        self.add(WARNING, code, where, msg)


def _check_state(f, state, now):
    if not state:
        return
    if not state.get('bundle_sha256') or not state.get('generation'):
        f.mismatch('state_empty', 'state', 'no rotation is recorded in %s (generation %s): run rotate.yml'
                   % (state['location'], state.get('generation')))
    lock = state.get('lock')
    if isinstance(lock, dict) and lock.get('holder'):
        expires = _time(lock.get('expires_at'))
        if expires is None or expires <= now:
            f.mismatch('lock_expired', 'state', 'the rotation lock of %s expired at %s: that run died holding it. The next run '
                       'takes it over; check why it stopped' % (lock.get('holder'), lock.get('expires_at')))
        else:
            f.warning('lock_held', 'state', 'a run (%s) holds the rotation lock until %s: some facts may be mid-rotation'
                      % (lock.get('holder'), lock.get('expires_at')))
    hold = state.get('hold')
    if isinstance(hold, dict):
        f.warning('hold_active', 'state', 'rollback hold since %s keeps the bundle of epoch %s (%s); rotation resumes with '
                  '-e ca_rotation_release_hold=true or when it expires' % (hold.get('since'), hold.get('epoch'), hold.get('reason')))


def _check_issuers(f, auth, now, bundle, held, source='openbao'):
    """The epoch issuers of an intermediate mount (``source``: where a finding is, for another family's mount)."""
    issuers = auth.get('issuers')
    if issuers is None:
        return
    plan = auth['plan']
    by_epoch = {}
    for issuer in issuers:  # an epoch's original and its replacements: the one standing for it (default, else not revoked)
        kept = by_epoch.get(issuer['epoch'])
        if kept is None or (issuer.get('is_default'), not issuer.get('revoked')) > (kept.get('is_default'), not kept.get('revoked')):
            by_epoch[issuer['epoch']] = issuer
    current, prepared = plan['current_epoch'], plan['prepared_epoch']
    if current not in by_epoch:
        f.mismatch('issuer_missing', source, 'no issuer epoch-%d for the current epoch on %s: run rotate.yml'
                   % (current, auth['openbao']['int_mount']))
    if prepared is not None and prepared not in by_epoch and not held:
        f.warning('issuer_not_prepared', source, 'epoch %d is due for preparation but issuer epoch-%d does not exist yet '
                  '(the next rotate.yml run issues it)' % (prepared, prepared))
    default = auth.get('default_issuer')
    if not default:
        f.mismatch('default_issuer_missing', source, '%s has no default issuer: leaf certificates cannot be issued'
                   % auth['openbao']['int_mount'])
    elif default.get('epoch') is None:
        f.mismatch('default_issuer_not_epoch', source, 'the default issuer of %s is %r, not an epoch-<n> issuer'
                   % (auth['openbao']['int_mount'], default.get('issuer_name') or default.get('issuer_id')))
    else:
        n = default['epoch']
        issuer = next((i for i in issuers if i.get('is_default')), None) or by_epoch.get(n) or {}
        not_after = _time(issuer.get('not_after'))
        if issuer.get('revoked'):
            f.mismatch('default_issuer_revoked', source, 'the default issuer %s is revoked'
                       % (issuer.get('issuer_name') or 'epoch-%d' % n))
        if not_after is not None and not_after <= now:
            f.mismatch('default_issuer_expired', source, 'the default issuer epoch-%d expired at %s' % (n, issuer['not_after']))
        if n > current:
            f.mismatch('default_issuer_early', source, 'the default issuer epoch-%d is newer than the current epoch %d: it was '
                       'activated before its epoch started' % (n, current))
        elif n < current:
            f.warning('default_issuer_behind', source, 'the default issuer is epoch-%d, the current epoch is %d%s'
                      % (n, current, ' (rollback hold)' if held else ': activation waits for every cluster to prove trust'))
        if bundle is not None and issuer.get('sha256') and issuer['sha256'] not in {c['sha256'] for c in bundle['certificates']}:
            f.mismatch('default_not_in_bundle', source, 'the default issuer epoch-%d is not in the bundle %s: clients and '
                       'servers trusting only the bundle reject the leaves it issues' % (n, bundle['location']))
    if bundle is not None:
        in_bundle = {c['sha256'] for c in bundle['certificates']}
        distrusted = distrusted_shas(auth.get('state'))
        for issuer in issuers:
            n = issuer['epoch']
            if issuer.get('revoked') or n not in plan['desired_epochs'] or issuer['sha256'] in in_bundle | distrusted:
                continue
            if _time(issuer.get('not_after')) is not None and _time(issuer['not_after']) <= now:
                continue
            (f.warning if held else f.mismatch)(
                'bundle_missing_epoch', 'kv', 'issuer epoch-%d is valid%s but not in the bundle %s%s'
                % (n, ' (prepared)' if n == prepared else '', bundle['location'],
                   ' (rollback hold)' if held else ': the run that issued it did not distribute it; run rotate.yml'))


def _check_records(f, auth):
    """Stored bundle records holding certificates that are neither the root nor signed by it."""
    for entry in auth.get('kv_foreign') or []:
        if entry.get('error'):
            f.mismatch('kv_record_unreadable', 'kv', 'the stored bundle %s cannot be read: %s' % (entry['location'], entry['error']))
        else:
            f.mismatch('kv_record_foreign', 'kv', 'the stored bundle %s holds %s (sha256 %s), which is neither the root nor signed '
                       'by it: it was written without verification. A rollback to it is refused; restore the record from '
                       'a bundle the root signed, or delete it' % (entry['location'], entry['subject'], _sha(entry['sha256'])))


def _check_bundle(f, auth, expected, now):
    kv = auth.get('kv_bundle')
    state = auth.get('state')
    if not state or kv is None:
        return None
    if kv.get('error'):
        f.mismatch('kv_bundle_error', 'kv', 'reading %s: %s' % (kv['location'], kv['error']))
        return None
    if not kv.get('found'):
        f.mismatch('kv_bundle_missing', 'kv', 'no bundle is stored at %s (the epoch of generation %s)'
                   % (kv['location'], state.get('generation')))
        return None
    if kv.get('sha256_field') != kv['sha256']:
        f.mismatch('kv_sha256_field', 'kv', '%s says sha256 %s but its ca-bundle.pem hashes to %s'
                   % (kv['location'], _sha(kv.get('sha256_field')), _sha(kv['sha256'])))
    if expected and kv['sha256'] != expected:
        f.mismatch('kv_bundle_sha256', 'kv', 'the bundle at %s (%s) is not the one the state records (bundle_sha256 %s)'
                   % (kv['location'], _sha(kv['sha256']), _sha(expected)))
    for cert in kv['certificates']:
        not_after = _time(cert.get('not_after'))
        if cert.get('kind') == 'intermediate' and not_after is not None and not_after <= now:
            f.mismatch('bundle_expired_intermediate', 'kv', 'the bundle at %s still holds the intermediate of epoch %s, expired at '
                       '%s: the next rotate.yml run drops it' % (kv['location'], cert.get('epoch'), cert['not_after']))
    root = auth.get('root')
    families = auth.get('families') or {}
    known = {i['sha256'] for i in auth.get('issuers') or []}
    roots = {root['sha256']} if root else set()
    for part in families.values():  # dual mode: the other families' issuers and roots belong in the bundle too
        known |= {i['sha256'] for i in part.get('issuers') or []}
        roots |= {part['root']['sha256']} if part.get('root') else set()
    for cert in kv['certificates']:
        if cert.get('kind') == 'root' and root and cert['sha256'] not in roots:
            f.mismatch('bundle_foreign_root', 'kv', 'the bundle at %s holds a root (%s) that is not the root of %s'
                       % (kv['location'], cert.get('subject'), auth['openbao']['root_mount']))
        elif cert.get('kind') == 'intermediate' and auth.get('issuers') is not None and cert['sha256'] not in known:
            f.mismatch('bundle_unknown_intermediate', 'kv', 'the bundle at %s holds %s (epoch %s), which is no issuer of %s'
                       % (kv['location'], cert.get('subject'), cert.get('epoch'), auth['openbao']['int_mount']))
    return kv


def _check_epoch_secret(f, auth, expected):
    secret = auth.get('epoch_secret')
    if secret is None:
        return
    where = 'secret %s/%s' % (secret['namespace'], secret['name'])
    if secret.get('error'):
        f.mismatch('epoch_secret_error', 'kubernetes', 'reading %s: %s' % (where, secret['error']))
    elif not secret.get('found'):
        f.mismatch('epoch_secret_missing', 'kubernetes', 'the per-epoch %s (key %s) does not exist' % (where, secret['key']))
    elif expected and secret.get('sha256') != expected:
        f.mismatch('epoch_secret_sha256', 'kubernetes', 'the per-epoch %s holds %s, the state records %s'
                   % (where, _sha(secret.get('sha256')), _sha(expected)))


def _check_announcement(f, auth, state, now):
    ann = auth.get('announcement')
    if ann is None:
        return
    where = 'announcement'
    if ann.get('error'):
        f.mismatch('announcement_error', where, 'reading the last message on %s (stream %s): %s'
                   % (ann['subject'], ann['stream'], ann['error']))
        return
    if not ann.get('found'):
        f.mismatch('announcement_missing', where, 'no announcement on %s in stream %s' % (ann['subject'], ann['stream']))
        return
    if ann.get('signature_ok') is False:
        f.mismatch('announcement_signature', where, 'the announcement (seq %s) fails verification: %s'
                   % (ann.get('seq'), ann.get('signature_error')))
    elif ann.get('signature_ok') is None:
        f.warning('announcement_unverified', where, ann.get('signature_error') or 'the signature was not checked')
    if state:
        if isinstance(ann.get('generation'), int) and ann['generation'] > int(state.get('generation') or 0):
            f.mismatch('state_behind_announcement', where,
                       'the rotation state %s records generation %s but the last signed announcement (seq %s) has generation '
                       '%s: the state was lost or restored from an older copy. The next rotate.yml run continues the count '
                       'from the announcement; run it now' % (state.get('location'), state.get('generation'), ann.get('seq'),
                                                              ann['generation']))
        elif ann.get('generation') != state.get('generation'):
            f.mismatch('announcement_generation', where, 'the last announcement has generation %s, the state %s'
                       % (ann.get('generation'), state.get('generation')))
        if state.get('bundle_sha256') and ann.get('bundle_sha256') != state['bundle_sha256']:
            f.mismatch('announcement_sha256', where, 'the last announcement carries bundle %s, the state records %s'
                       % (_sha(ann.get('bundle_sha256')), _sha(state['bundle_sha256'])))
    valid_until = _time(ann.get('valid_until'))
    if valid_until is not None and now >= valid_until:
        f.mismatch('announcement_expired', where, 'the last announcement expired at %s: clients refuse it'
                   % ann.get('valid_until'))


def _distrusted(state, now):
    """The state's distrusted intermediates, each with ``valid`` (not expired at ``now``, as the engine decides it),
    ``pending`` (its distrust is not complete, so it is still trusted) and ``held_by`` (filled by
    :func:`_check_distrust`)."""
    valid = {d.get('sha256') for d in valid_distrusted(state, now)}
    pending = (state or {}).get('distrust_pending') or {}

    def is_pending(entry):
        if not pending:
            return False
        if pending.get('sha256'):
            return entry.get('sha256') == pending['sha256']
        # a record written without the SHA-256 names the epoch and the issuer
        return (entry.get('epoch'), entry.get('issuer_name')) == (pending.get('epoch'), pending.get('issuer_name'))
    return [dict(entry, valid=entry.get('sha256') in valid, pending=is_pending(entry), held_by=[])
            for entry in (state or {}).get('distrusted') or []]


def _held(f, entry, where, what):
    entry['held_by'].append(where)
    if entry['valid'] and not entry['pending']:
        f.mismatch('distrusted_held', where, '%s holds the distrusted intermediate of epoch %s (%s, sha256 %s, distrusted at %s): '
                   'run playbooks/distrust.yml -e ca_rotation_distrust_epoch=%s to deliver a bundle without it'
                   % (what, entry.get('epoch'), entry.get('issuer_name'), _sha(entry.get('sha256')), entry.get('at'),
                      entry.get('epoch')))


def _places(auth, clusters):
    """``(where, what, certificate SHA-256s or None)`` of every place that holds a bundle: the stored bundle, the
    per-epoch Secret, each live Secret and each server's CA file (a pod's mounted copy of the live Secret)."""
    kv, secret = auth.get('kv_bundle') or {}, auth.get('epoch_secret') or {}
    places = [('kv', 'the stored bundle %s' % kv.get('location'), [c['sha256'] for c in kv.get('certificates') or []]),
              ('kubernetes', 'the per-epoch Secret %s/%s' % (secret.get('namespace'), secret.get('name')),
               secret.get('cert_sha256s'))]
    for facts in clusters:
        live = facts.get('live_secret') or {}
        places.append(('cluster %s secret %s/%s' % (facts['cluster'], live.get('namespace'), live.get('name')),
                       'the live CA Secret', live.get('cert_sha256s')))
        for server in facts.get('servers') or []:
            shas = server.get('ca_cert_sha256s')
            if shas is None and live.get('sha256') and server.get('ca_sha256') == live.get('sha256'):
                shas = live.get('cert_sha256s')
            places.append(('%s/%s' % (facts['cluster'], server.get('name')), 'CA file %s' % server.get('ca_file'), shas))
    return places


def _check_distrust(f, auth, clusters, now):
    """Every place that still holds a distrusted intermediate: OpenBao (not revoked, or the default), the stored
    bundle, the per-epoch and live Secrets, the servers' CA files and the leaves they serve. Returns the list of
    distrusted intermediates for the report."""
    state = auth.get('state') or {}
    pending = state.get('distrust_pending')
    if isinstance(pending, dict):
        f.mismatch('distrust_pending', 'state', '%s; rotate.yml, rollback.yml and the distrust of another epoch refuse '
                   'until playbooks/distrust.yml -e ca_rotation_distrust_epoch=%s finishes it'
                   % (describe_pending(pending), pending.get('epoch')))
    listed = _distrusted(state, now)
    if not listed:
        return listed
    issuers = {i.get('sha256'): i for i in auth.get('issuers') or []}
    places = _places(auth, clusters)
    served = [('%s/%s' % (facts['cluster'], server.get('name')), (server.get('tls') or {}).get('authority_key_id'))
              for facts in clusters for server in facts.get('servers') or []]
    for entry in listed:
        issuer = issuers.get(entry.get('sha256'))
        if issuer and not issuer.get('revoked') and entry['valid'] and not entry['pending']:
            f.mismatch('distrusted_not_revoked', 'openbao', 'issuer %s is distrusted but not revoked: run playbooks/distrust.yml '
                       '-e ca_rotation_distrust_epoch=%s' % (issuer.get('issuer_name'), entry.get('epoch')))
        if issuer and issuer.get('is_default'):
            _held(f, entry, 'openbao', 'the default issuer')
        for where, what, shas in places:
            if entry.get('sha256') in (shas or ()):
                _held(f, entry, where, what)
        for where, key_id in served:
            if issuer and issuer.get('ski') and key_id == issuer['ski']:
                _held(f, entry, where, 'the certificate it serves (issued by %s)' % issuer.get('issuer_name'))
    return listed


def _served_epoch(tls, issuers):
    """Epoch of the served certificate's issuer: by key identifier, then subject, then the issuer's common name."""
    for issuer in issuers or []:
        if tls.get('authority_key_id') and issuer.get('ski') == tls['authority_key_id']:
            return issuer['epoch'], issuer
    for issuer in issuers or []:
        if issuer.get('subject') and issuer['subject'] == tls.get('issuer'):
            return issuer['epoch'], issuer
    return tls.get('issuer_epoch'), None


def _merge_cluster_facts(first, more):
    """The facts of a cluster spread over several hosts (one set per host) as one: every host's servers, every
    error."""
    merged = dict(first)
    merged['servers'] = list(first.get('servers') or []) + list(more.get('servers') or [])
    errors = [e for e in (first.get('error'), more.get('error')) if e]
    merged['error'] = '; '.join(errors) or None
    return merged


def _check_cluster(f, name, facts, record, expected, bundle, auth, now, schedule):
    where = 'cluster %s' % name
    if facts is None:
        f.mismatch('cluster_missing', where, 'no facts were gathered for this cluster (its host failed or was unreachable)')
        return
    if name in (auth.get('cluster_records') or {}) and record is not None:  # None: the read failed (reported)
        if not record:
            f.mismatch('cluster_record_missing', where, 'no proof record: this cluster never proved it trusts a bundle')
        elif expected and record.get('sha256') != expected:
            f.mismatch('cluster_record_sha256', where, 'the proof record is for bundle %s (epoch %s), the state records %s'
                       % (_sha(record.get('sha256')), record.get('epoch'), _sha(expected)))
    if facts.get('error'):
        f.mismatch('cluster_error', where, facts['error'])
    live = facts.get('live_secret')
    if live is not None:
        swhere = 'cluster %s secret %s/%s' % (name, live['namespace'], live['name'])
        if live.get('error'):
            f.mismatch('live_secret_error', swhere, live['error'])
        elif not live.get('found'):
            f.mismatch('live_secret_missing', swhere, 'the live CA Secret (key %s) does not exist' % live['key'])
        else:
            if expected and live.get('sha256') != expected:
                f.mismatch('live_secret_sha256', swhere, 'the live CA Secret holds %s, the state records %s'
                           % (_sha(live.get('sha256')), _sha(expected)))
            annotated = (live.get('annotations') or {}).get('sha256')
            if annotated and annotated != live.get('sha256'):
                f.mismatch('live_secret_annotation', swhere, 'annotation %ssha256 says %s but the data hashes to %s (edited by hand?)'
                           % (ANNOTATION_PREFIX, _sha(annotated), _sha(live.get('sha256'))))
    if not facts.get('error') and not facts.get('servers'):
        f.mismatch('cluster_no_servers', where, 'no NATS server was found')
    bundle_epochs = {c.get('epoch') for c in (bundle or {}).get('certificates') or [] if c.get('kind') == 'intermediate'}
    for server in facts.get('servers') or []:
        _check_server(f, name, server, expected, bundle, bundle_epochs, auth, now, schedule)


def _check_server(f, cluster, server, expected, bundle, bundle_epochs, auth, now, schedule):
    where = '%s/%s' % (cluster, server.get('name'))
    if server.get('error'):
        f.mismatch('server_error', where, server['error'])
        return
    if server.get('ca_error'):
        f.mismatch('ca_file_error', where, server['ca_error'])
    elif server.get('ca_sha256') and expected and server['ca_sha256'] != expected:
        epochs = server.get('ca_epochs')
        held = '' if epochs is None else ' (%s)' % ('epochs %s' % ', '.join(str(n) for n in epochs) if epochs else 'no epoch intermediate')
        f.mismatch('ca_file_sha256', where, 'CA file %s has %s%s, the state records %s; rotate.yml redelivers a bundle that differs (a mounted '
                   'Secret follows within about a minute)'
                   % (server.get('ca_file'), _sha(server['ca_sha256']), held, _sha(expected)))
    if server.get('varz_error'):
        f.mismatch('server_unreachable', where, 'cannot read its load time: %s' % server['varz_error'])
    loaded = not_loaded(server)
    if loaded:
        f.mismatch('not_loaded', where, 'not loaded: CA file written at %s, configuration loaded at %s - the server runs on '
                   'older trust. %s' % (server.get('ca_mtime'), server.get('config_load_time'),
                                        'Reload it (module nats_sighup): rotate.yml reloads only when it delivers a change'
                                        if server.get('ca_sha256') == expected else
                                        'The next rotate.yml run redelivers the bundle and reloads it'))
    elif loaded is None and server.get('ca_file') and not server.get('varz_error') and not server.get('ca_error'):
        f.warning('load_unknown', where, 'cannot tell whether the CA file was loaded: %s'
                  % (server.get('mtime_error') or 'no modification time'))
    tls = server.get('tls')
    if server.get('tls_error'):
        f.mismatch('tls_error', where, 'cannot read the served certificate: %s' % server['tls_error'])
    elif tls:
        epoch, issuer = _served_epoch(tls, auth.get('issuers'))
        if _time(tls.get('not_after')) is not None and _time(tls['not_after']) <= now:
            f.mismatch('served_leaf_expired', where, 'serves a certificate that expired at %s' % tls['not_after'])
        if epoch is None:
            f.mismatch('served_issuer_unknown', where, 'serves a certificate issued by %s, which is no epoch issuer' % tls.get('issuer'))
        else:
            expiry = _time((issuer or {}).get('not_after'))
            if expiry is None and schedule is not None:
                try:
                    expiry = schedule.expiry(epoch)
                except ValueError:
                    expiry = None
            if expiry is not None and expiry <= now:
                f.mismatch('served_issuer_expired', where, 'serves a certificate of epoch %s, whose intermediate expired at %s'
                           % (epoch, isoformat(expiry)))
            elif bundle is not None and epoch not in bundle_epochs:
                f.mismatch('served_issuer_not_in_bundle', where, 'serves a certificate of epoch %s, which is not in the bundle '
                           '(epochs %s)' % (epoch, ', '.join(str(n) for n in sorted(bundle_epochs, reverse=True)) or 'none'))
        server['served_epoch'] = epoch


def build_report(authority, clusters):
    """Compare the gathered facts. Returns ``{schema, generated_at, ok, mismatch_count, warning_count, findings, table,
    authority, clusters}`` (JSON-safe); ``ok`` is true when nothing mismatches."""
    auth = dict(authority or {})
    try:
        schedule = EpochSchedule.from_params(auth['schedule']) if auth.get('schedule') else None
    except ValueError:
        schedule = None
    now = _time(auth.get('now')) or datetime.datetime.now(datetime.timezone.utc)
    f = _Findings()
    for error in auth.get('errors') or []:
        f.mismatch('authority_error', error.get('source') or 'authority', error.get('msg'))
    state = auth.get('state')
    expected = (state or {}).get('bundle_sha256')
    held = isinstance((state or {}).get('hold'), dict)
    _check_state(f, state, now)
    bundle = _check_bundle(f, auth, expected, now)
    _check_records(f, auth)
    _check_issuers(f, auth, now, bundle, held)
    for part in (auth.get('families') or {}).values():  # each family's epoch issuers, default issuer and bundle part
        if part.get('enabled') is False:
            continue  # switched off: the next rotate.yml drops it from the bundle
        _check_issuers(f, dict(auth, issuers=part.get('issuers'), default_issuer=part.get('default_issuer'),
                               openbao=dict(auth.get('openbao') or {}, int_mount=part['int_mount'])), now, bundle, held,
                       source='openbao %s' % part['int_mount'])
    _check_epoch_secret(f, auth, expected)
    _check_announcement(f, auth, state, now)
    by_name = {}
    for facts in clusters or []:
        if isinstance(facts, dict) and facts.get('cluster'):
            if facts['cluster'] in by_name:  # a cluster spread over several hosts: one set of servers
                facts = _merge_cluster_facts(by_name[facts['cluster']], facts)
            by_name[facts['cluster']] = facts
    names = list(dict.fromkeys(auth.get('clusters') or [])) + sorted(n for n in by_name if n not in (auth.get('clusters') or []))
    records = auth.get('cluster_records') or {}
    for name in names:
        _check_cluster(f, name, by_name.get(name), records.get(name), expected, bundle, auth, now, schedule)
    distrusted = _check_distrust(f, auth, [by_name[n] for n in names if by_name.get(n)], now)
    mismatches = [x for x in f.items if x['severity'] == MISMATCH]
    report = {
        'schema': SCHEMA,
        'generated_at': isoformat(now),
        'ok': not mismatches,
        'mismatch_count': len(mismatches),
        'warning_count': len(f.items) - len(mismatches),
        'findings': f.items,
        'distrusted': distrusted,
        'authority': auth,
        'clusters': [by_name.get(n) for n in names],
    }
    report['table'] = render_table(report)
    return report

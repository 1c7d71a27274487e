# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotation state in OpenBao KV v2 (private: may change without notice).

One document (default ``secret/ca-rotation/state``), always written with check-and-set, holds:

``last_epoch``      newest epoch announced as a rotation
``generation``      monotonic counter of announcements (rotation and rollback)
``bundle_sha256``   SHA-256 of the bundle of that generation
``lock``            ``{holder, acquired_at, expires_at}`` of the run in progress, or null
``hold``            ``{epoch, sha256, generation, since, reason}`` after a rollback, or null
``history``         the last announcements ``[{generation, epoch, sha256, kind, at}]``, newest first
``distrusted``      every distrusted intermediate ``[{epoch, issuer_name, serial, sha256, not_after, at, by, reason}]``
``distrust_pending`` ``{epoch, issuer_name, replacement, since}`` while a distrusted default issuer is being replaced

Per-cluster proof records live next to it (``ca-rotation/clusters/<name>``) so clusters
reloading in parallel never contend for the same check-and-set version.
"""

from __future__ import annotations

import datetime

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, parse_time
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import _request
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError

DEFAULT_MOUNT = 'secret'
DEFAULT_PATH = 'ca-rotation/state'
HISTORY_MAX = 20
CAS_ATTEMPTS = 5


class StateError(CaRotationError):
    """The rotation state could not be read or changed; the message says why and what to do."""


class CasConflict(StateError):
    """Someone else wrote the document between our read and our write."""


def empty_state():
    return {'last_epoch': None, 'generation': 0, 'bundle_sha256': None, 'lock': None, 'hold': None,
            'history': [], 'updated_at': None}


def read_doc(client, mount, path):
    """``(data, version)`` of a KV v2 document; ``({}, current_version)`` when absent or deleted."""
    resp = _request(client, 'GET', '%s/data/%s' % (mount, path), 'reading %s/%s' % (mount, path), missing_ok=True)
    if resp is not None and (resp.get('data') or {}).get('data') is not None:
        return dict(resp['data']['data']), int(resp['data']['metadata']['version'])
    meta = _request(client, 'GET', '%s/metadata/%s' % (mount, path), 'reading %s/%s metadata' % (mount, path), missing_ok=True)
    version = int(((meta or {}).get('data') or {}).get('current_version') or 0)
    return {}, version


def write_doc(client, mount, path, data, version):
    """Write with check-and-set ``version``; raises CasConflict when it moved. Returns the new version."""
    try:
        resp = _request(client, 'POST', '%s/data/%s' % (mount, path), 'writing %s/%s' % (mount, path),
                        data={'options': {'cas': int(version)}, 'data': data})
    except OpenBaoError as exc:
        if exc.status == 400 and 'check-and-set' in ' '.join(exc.errors).lower():
            raise CasConflict('%s/%s changed underneath (check-and-set version %d is stale)' % (mount, path, version)) from None
        raise
    return int(((resp or {}).get('data') or {}).get('version') or version + 1)


def read_state(client, mount=DEFAULT_MOUNT, path=DEFAULT_PATH):
    data, version = read_doc(client, mount, path)
    state = empty_state()
    state.update(data)
    return state, version


def _lock_active(lock, now):
    if not lock or not lock.get('holder'):
        return False
    try:
        return parse_time(lock.get('expires_at'), 'lock.expires_at') > now
    except ValueError:
        return False


def _mutate(client, mount, path, change, check_mode):
    """Read-modify-write with check-and-set, retried on conflicts. ``change(state)`` returns
    ``(new_state or None, result)``; None means no write is needed."""
    for _attempt in range(CAS_ATTEMPTS):
        state, version = read_state(client, mount, path)
        new_state, result = change(dict(state))
        result.setdefault('state', state)
        if new_state is None or new_state == state:
            result['changed'] = False
            return result
        result['changed'] = True
        result['state'] = new_state
        if check_mode:
            return result
        try:
            result['version'] = write_doc(client, mount, path, new_state, version)
        except CasConflict:
            continue
        return result
    raise StateError('%s/%s kept changing underneath after %d attempts; another run is writing it. Re-run later'
                     % (mount, path, CAS_ATTEMPTS))


def acquire_lock(client, holder, ttl_seconds, now, mount=DEFAULT_MOUNT, path=DEFAULT_PATH, check_mode=False):
    """Take the rotation lock for ``holder``. Result ``acquired`` is False (and nothing is written)
    while another holder's lock has not expired; a stale lock is taken over."""
    def change(state):
        lock = state.get('lock')
        if _lock_active(lock, now) and lock['holder'] != holder:
            return None, {'acquired': False, 'lock': lock,
                          'msg': 'rotation is locked by %s until %s; this run changes nothing'
                                 % (lock['holder'], lock.get('expires_at'))}
        new_lock = {'holder': holder, 'acquired_at': isoformat(now),
                    'expires_at': isoformat(now + datetime.timedelta(seconds=int(ttl_seconds)))}
        result = {'acquired': True, 'lock': new_lock,
                  'stale_lock_taken_over': bool(lock and lock.get('holder') and lock['holder'] != holder)}
        state['lock'] = new_lock
        return state, result
    return _mutate(client, mount, path, change, check_mode)


def release_lock(client, holder, mount=DEFAULT_MOUNT, path=DEFAULT_PATH, check_mode=False):
    def change(state):
        lock = state.get('lock')
        if not lock or lock.get('holder') != holder:
            return None, {'released': False, 'lock': lock}
        state['lock'] = None
        return state, {'released': True, 'lock': None}
    return _mutate(client, mount, path, change, check_mode)


def record(client, holder, *, epoch, sha256, generation, kind='rotation', now, hold=None, clear_hold=False,
           mount=DEFAULT_MOUNT, path=DEFAULT_PATH, check_mode=False, resync=None):
    """Record an announced bundle (generation must be exactly the next one, or the current one with
    the same sha256 — a re-run after a crash). The caller must hold the lock.

    ``resync`` (the last signed announcement, ``{generation, bundle_sha256, seq}``) lets a state that is behind the
    stream continue from the announcement's generation instead of its own."""
    def change(state):
        lock = state.get('lock')
        # in check mode the lock was only predicted, never written
        if holder and not check_mode and (not lock or lock.get('holder') != holder):
            raise StateError('cannot record generation %s: this run (%s) does not hold the rotation lock (held by %s)'
                             % (generation, holder, (lock or {}).get('holder') or 'nobody'))
        current, recorded = int(state.get('generation') or 0), state.get('bundle_sha256')
        resynced = resync is not None and int(resync['generation']) > current
        if resynced:
            current, recorded = int(resync['generation']), resync.get('bundle_sha256')
        if generation == current and recorded == sha256 and not resynced:
            new = dict(state)
        elif generation == current + 1 or (resynced and generation == current and recorded == sha256):
            new = dict(state)
            new['generation'] = generation
            new['bundle_sha256'] = sha256
            if kind == 'rotation':
                new['last_epoch'] = max(int(state.get('last_epoch') or epoch), int(epoch))
            entry = {'generation': generation, 'epoch': int(epoch), 'sha256': sha256, 'kind': kind, 'at': isoformat(now)}
            if resynced:
                entry['resynced_from'] = {'generation': current, 'seq': resync.get('seq')}
                new['resynced_at'] = isoformat(now)
            new['history'] = ([entry] + list(state.get('history') or []))[:HISTORY_MAX]
            new['updated_at'] = isoformat(now)
        else:
            raise StateError('generation %s does not follow the recorded generation %s; another run announced in between. '
                             'Re-run: the next run starts from the recorded state' % (generation, current))
        if hold is not None:
            new['hold'] = hold
        elif clear_hold:
            new['hold'] = None
        return new, {'generation': new['generation']}
    return _mutate(client, mount, path, change, check_mode)


def record_distrust(client, holder, entry, pending, mount=DEFAULT_MOUNT, path=DEFAULT_PATH, check_mode=False):
    """Add ``entry`` to ``distrusted`` (once per SHA-256: a distrust is never undone) and set ``distrust_pending``
    (None clears it). The caller must hold the lock."""
    def change(state):
        lock = state.get('lock')
        if holder and not check_mode and (not lock or lock.get('holder') != holder):
            raise StateError('cannot record the distrust of epoch %s: this run (%s) does not hold the rotation lock (held by '
                             '%s)' % (entry.get('epoch'), holder, (lock or {}).get('holder') or 'nobody'))
        distrusted = list(state.get('distrusted') or [])
        if not any(d.get('sha256') == entry['sha256'] for d in distrusted):
            distrusted.append(entry)
        state['distrusted'] = distrusted
        state['distrust_pending'] = pending
        return state, {}
    return _mutate(client, mount, path, change, check_mode)


def set_hold(client, holder, hold, mount=DEFAULT_MOUNT, path=DEFAULT_PATH, check_mode=False):
    """Set (dict) or clear (None) the rollback hold."""
    def change(state):
        state['hold'] = hold
        return state, {'hold': hold}
    return _mutate(client, mount, path, change, check_mode)


def cluster_path(path, cluster):
    base = path.rsplit('/', 1)[0] if '/' in path else path
    return '%s/clusters/%s' % (base, cluster)


def read_cluster(client, cluster, mount=DEFAULT_MOUNT, path=DEFAULT_PATH):
    data, _version = read_doc(client, mount, cluster_path(path, cluster))
    return data


def record_cluster(client, cluster, record_data, mount=DEFAULT_MOUNT, path=DEFAULT_PATH, check_mode=False):
    """Record what a cluster has proven (sha256, epoch, servers, proven_at). Unchanged → no write."""
    target = cluster_path(path, cluster)
    for _attempt in range(CAS_ATTEMPTS):
        data, version = read_doc(client, mount, target)
        comparable = {k: v for k, v in data.items() if k != 'proven_at'}
        wanted = {k: v for k, v in record_data.items() if k != 'proven_at'}
        if comparable == wanted:
            return {'changed': False, 'record': data}
        if check_mode:
            return {'changed': True, 'record': record_data}
        try:
            write_doc(client, mount, target, record_data, version)
        except CasConflict:
            continue
        return {'changed': True, 'record': record_data}
    raise StateError('%s/%s kept changing underneath; re-run later' % (mount, target))

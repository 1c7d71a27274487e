#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: rotation_state
short_description: Rotation lock, generation counter and proof records in OpenBao KV
version_added: 0.1.0
description:
  - Reads and changes the rotation state document in OpenBao KV v2 (default C(secret/ca-rotation/state)), always
    with check-and-set, so that concurrent runs never overwrite each other.
  - O(action=acquire) takes the single-flight lock for O(holder) for O(lock_ttl). While another holder's lock has
    not expired, nothing is written and RV(acquired) is false; an expired (stale) lock is taken over.
  - O(action=record) records an announced bundle - generation, epoch and SHA-256 - and appends it to the history.
    The generation must be exactly the next one (or the recorded one with the same SHA-256, when a run that crashed
    after announcing is repeated). O(action=release) drops the lock if O(holder) holds it.
  - O(action=hold) and O(action=clear_hold) set and clear the rollback hold that keeps rotation from rolling forward
    again after a rollback.
  - O(action=read_cluster) and O(action=record_cluster) read and write the per-cluster proof record
    (C(ca-rotation/clusters/<cluster>)), which tells later runs that a cluster already trusts a bundle.
  - O(action=read_bundle) reads the bundle stored for O(epoch) (C(ca-bundles/epoch-<n>) in O(kv_mount)), for rollback.
author:
  - SecureTransport platform team (@securetransport)
extends_documentation_fragment:
  - securetransport.ca_rotation.openbao
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Every action reads the state and predicts the result without writing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  action:
    description: What to do with the state document.
    type: str
    choices: [read, acquire, release, record, hold, clear_hold, read_cluster, record_cluster, read_bundle]
    default: read
  kv_mount:
    description: KV v2 mount holding the state.
    type: str
    default: secret
  path:
    description: Path of the state document inside O(kv_mount).
    type: str
    default: ca-rotation/state
  holder:
    description:
      - Identity of this run (for example C(<controller>:<run id>)); required for O(action=acquire), O(action=release)
        and O(action=record).
    type: str
  lock_ttl:
    description:
      - How long the lock is held before another run may take it over (C(15m), C(PT15M), seconds).
      - Pick more than the longest expected run, including waiting for kubelet to refresh mounted Secrets.
    type: raw
    default: 15m
  epoch:
    description: Epoch of the recorded bundle (its newest intermediate); for O(action=record) and O(action=hold).
    type: int
  sha256:
    description: SHA-256 of the recorded bundle; for O(action=record), O(action=hold) and O(action=record_cluster).
    type: str
  generation:
    description: Generation of the recorded announcement; for O(action=record).
    type: int
  kind:
    description: Kind of the recorded announcement.
    type: str
    choices: [rotation, rollback, distrust]
    default: rotation
  reason:
    description: Why a hold is set (shown by the status report); for O(action=hold).
    type: str
  pem:
    description: The held bundle (PEM), kept in the hold so that later runs keep delivering it; for O(action=hold).
    type: str
  cluster:
    description: Cluster name; for O(action=read_cluster) and O(action=record_cluster).
    type: str
  record:
    description: Extra facts stored in the cluster record (for example per-server reload results).
    type: dict
  now:
    description: Evaluate lock expiry at this time instead of the current time (ISO-8601 with timezone, or Unix seconds).
    type: raw
'''

EXAMPLES = r'''
- name: Take the rotation lock
  securetransport.ca_rotation.rotation_state:
    action: acquire
    holder: "{{ inventory_hostname }}:{{ ansible_date_time.epoch | default('run') }}"
    lock_ttl: 15m
  register: lock

- name: Stop cleanly when another run holds it
  ansible.builtin.meta: end_play
  when: not lock.acquired

- name: Record the announced generation
  securetransport.ca_rotation.rotation_state:
    action: record
    holder: "{{ lock.lock.holder }}"
    epoch: 83145
    sha256: "{{ bundle.sha256 }}"
    generation: "{{ lock.state.generation + 1 }}"
'''

RETURN = r'''
state:
  description: The state document after the action (predicted in check mode).
  returned: always
  type: dict
acquired:
  description: Whether this run holds the lock (O(action=acquire)).
  returned: when action is acquire
  type: bool
lock:
  description: The lock (holder, acquired_at, expires_at), or null.
  returned: when action is acquire or release
  type: dict
stale_lock_taken_over:
  description: Whether an expired lock of another holder was taken over.
  returned: when action is acquire
  type: bool
generation:
  description: The recorded generation.
  returned: when action is record
  type: int
record:
  description: The cluster record.
  returned: when action is read_cluster or record_cluster
  type: dict
bundle:
  description: The stored bundle of O(epoch) (C(ca-bundle.pem), C(epoch), C(sha256), ...), or an empty dict when none is stored.
  returned: when action is read_bundle
  type: dict
'''


from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    isoformat, now_from_params, parse_duration,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC, connect

REQUIRED = {
    'acquire': ['holder'], 'release': ['holder'], 'record': ['holder', 'epoch', 'sha256', 'generation'],
    'hold': ['epoch', 'sha256', 'pem'], 'read_cluster': ['cluster'], 'record_cluster': ['cluster', 'sha256'],
    'read_bundle': ['epoch'],
}


def main():
    argument_spec = dict(
        action=dict(type='str', default='read', choices=['read', 'acquire', 'release', 'record', 'hold', 'clear_hold',
                                                         'read_cluster', 'record_cluster', 'read_bundle']),
        kv_mount=dict(type='str', default=_state.DEFAULT_MOUNT),
        path=dict(type='str', default=_state.DEFAULT_PATH),
        holder=dict(type='str'),
        lock_ttl=dict(type='raw', default='15m'),
        epoch=dict(type='int'),
        sha256=dict(type='str'),
        generation=dict(type='int'),
        kind=dict(type='str', default='rotation', choices=['rotation', 'rollback', 'distrust']),
        reason=dict(type='str'),
        pem=dict(type='str'),
        cluster=dict(type='str'),
        record=dict(type='dict'),
        now=dict(type='raw'),
    )
    argument_spec.update(OPENBAO_ARG_SPEC)
    module = CaRotationModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    action = params['action']
    missing = [name for name in REQUIRED.get(action, []) if params.get(name) in (None, '')]
    if missing:
        module.fail_json(msg='action=%s needs %s' % (action, ', '.join(missing)), option=missing[0])
    with module.failures():
        now = now_from_params(params)
        ttl = parse_duration(params['lock_ttl'], 'lock_ttl')
    mount, path, check = params['kv_mount'], params['path'], module.check_mode
    with module.failures():
        client = connect(params)
        if action == 'read':
            state, version = _state.read_state(client, mount, path)
            module.exit_json(changed=False, state=state, version=version)
        if action == 'acquire':
            result = _state.acquire_lock(client, params['holder'], ttl, now, mount, path, check)
        elif action == 'release':
            result = _state.release_lock(client, params['holder'], mount, path, check)
        elif action == 'record':
            result = _state.record(client, params['holder'], epoch=params['epoch'], sha256=params['sha256'],
                                   generation=params['generation'], kind=params['kind'], now=now,
                                   mount=mount, path=path, check_mode=check)
        elif action in ('hold', 'clear_hold'):
            hold = None
            if action == 'hold':
                hold = {'epoch': params['epoch'], 'sha256': params['sha256'], 'since': isoformat(now),
                        'reason': params['reason'] or 'rollback', 'pem': params['pem'],
                        'generation': params['generation']}
            result = _state.set_hold(client, params['holder'], hold, mount, path, check)
        elif action == 'read_bundle':
            data, _version = _state.read_doc(client, mount, 'ca-bundles/epoch-%d' % params['epoch'])
            result = {'changed': False, 'bundle': data}
        elif action == 'read_cluster':
            result = {'changed': False, 'record': _state.read_cluster(client, params['cluster'], mount, path)}
        else:
            data = dict(params['record'] or {})
            data.update(sha256=params['sha256'], cluster=params['cluster'], proven_at=isoformat(now))
            if params['epoch'] is not None:
                data['epoch'] = params['epoch']
            result = _state.record_cluster(client, params['cluster'], data, mount, path, check)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

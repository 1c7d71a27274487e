#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: openbao_intermediate
short_description: Issue, activate and prune the per-epoch intermediate CAs in OpenBao PKI
version_added: 0.1.0
description:
  - Makes sure the intermediate CA of an epoch exists in the intermediate PKI mount of OpenBao as the
    issuer named C(epoch-<n>), signed by the root of the root PKI mount. Its private key is generated
    inside OpenBao and never leaves it.
  - The certificate's NotAfter is exactly the end of the epoch's validity (start + O(validity)), not
    signing time + TTL. NotBefore is the epoch start minus O(skew_allowance) once the epoch has started;
    for an epoch issued ahead of its start (the prepared epoch) it is the signing time minus
    O(skew_allowance), so that the issuer is usable as soon as it is activated.
  - Idempotent per epoch - an existing valid C(epoch-<n>) issuer is returned unchanged. Retry-safe - the key
    is named C(epoch-<n>-<6 random hex>) so a retried run never collides with a key left by an interrupted
    one; such left-over keys (not used by any issuer) are deleted, and an issuer imported but not yet named
    by an interrupted run is adopted when its certificate is right (deleted otherwise).
  - New issuers get C(leaf_not_after_behavior=truncate), so leaves never outlive their intermediate.
  - O(default=true) makes the issuer the mount's default issuer, used for new leaf certificates (the activation
    switch; do it only once every NATS server trusts the epoch). A revoked, expired or not yet valid issuer is refused.
  - O(prune=true) deletes the issuers of epochs whose NotAfter plus O(prune_grace) has passed, then their keys
    (never the default issuer, never an unexpired one).
author:
  - SecureTransport platform team (!UNKNOWN)
extends_documentation_fragment:
  - securetransport.ca_rotation.openbao
  - securetransport.ca_rotation.epoch
options:
  epoch:
    description:
      - Epoch number of the intermediate.
      - Defaults to the prepared epoch when O(now) is within O(lead_time) of the next epoch start, else the current epoch.
      - An epoch that has already expired, or that starts more than one epoch after the current one, is refused.
    type: int
  state:
    description:
      - V(present) issues the intermediate if it is missing.
      - V(absent) deletes issuer C(epoch-<n>) and its keys (refused for the default issuer).
    type: str
    choices: [present, absent]
    default: present
  issue:
    description:
      - With O(state=present), issue the intermediate when it is missing.
      - V(false) only works with what exists - activate (O(default)), prune (O(prune)) and report; a missing
        C(epoch-<n>) issuer is then reported with RV(exists=false), and O(default=true) fails for it.
    type: bool
    default: true
  default:
    description:
      - Make issuer C(epoch-<n>) the default issuer of O(int_mount) (activation).
      - V(false) leaves the default issuer as it is (it never un-sets it).
    type: bool
    default: false
  prune:
    description:
      - Delete the issuers (then their keys) of epochs whose NotAfter + O(prune_grace) has passed. The default issuer is
        never deleted; it is reported in RV(prune_kept).
    type: bool
    default: false
  prune_grace:
    description:
      - How long after expiry an issuer is kept before O(prune) deletes it. Same formats as O(epoch_duration); V(0) allowed.
    type: raw
    default: 1h
  root_mount:
    description:
      - Mount path of the root PKI secrets engine that signs the intermediates.
    type: str
    default: pki
  root_issuer:
    description:
      - Issuer reference (name or ID) of the root on O(root_mount).
    type: str
    default: default
  int_mount:
    description:
      - Mount path of the intermediate PKI secrets engine holding the epoch issuers.
    type: str
    default: pki_int
  cn_prefix:
    description:
      - The intermediate's common name is C(<cn_prefix> Epoch <n>).
    type: str
    default: NATS Intermediate CA
  key_type:
    description:
      - Key type of new intermediates (existing ones are not re-keyed).
    type: str
    choices: [ec, rsa, ed25519, mldsa]
    default: ec
  key_bits:
    description:
      - Key size, always sent to OpenBao explicitly - V(ec) 256 (the default), 384 or 521; V(rsa) 2048 (the
        default), 3072, 4096 or 8192; V(ed25519) none (leave it 0); V(mldsa) the parameter set 44, 65 or 87, which must be
        given (OpenBao's own default, 44, is never relied on).
      - Any other combination fails before anything is changed, naming the option.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description:
      - Reads OpenBao and predicts every change (issue, adopt, clean-up, activation, pruning) without writing.
        Values only known after signing (issuer ID, serial, certificate) are returned as null.
  diff_mode:
    support: full
    description: The set of epoch issuers and the default issuer before and after.
notes:
  - Required OpenBao capabilities - C(update) on C(<root_mount>/issuer/<root_issuer>/sign-intermediate),
    C(<int_mount>/intermediate/generate/internal) and C(<int_mount>/intermediate/set-signed); C(read) and C(patch) on
    C(<int_mount>/issuer/*); C(read) on C(<int_mount>/config/issuers) and C(list) on C(<int_mount>/keys);
    for O(default) C(update) on C(<int_mount>/config/issuers); for O(prune) and O(state=absent) C(delete) on
    C(<int_mount>/issuer/*) and C(<int_mount>/key/*). Listing issuers and reading issuer certificates need no token.
  - The first issuer imported into an empty mount becomes its default automatically (OpenBao behaviour); later ones
    become default only through O(default=true).
  - OpenBao ignores C(not_before) when signing a CSR, so NotBefore is set through C(not_before_duration) relative to
    the OpenBao server clock and read back; the module re-signs (at most three times, before anything is imported)
    until NotBefore is exact to the second, and warns if it could not be.
  - Concurrent runs for the same epoch are not supported (the rotation playbook holds a lock); a run that loses such a
    race drops its own issuer and returns the winner.
seealso:
  - module: securetransport.ca_rotation.ca_epoch
  - module: securetransport.ca_rotation.openbao_leaf
'''

EXAMPLES = r'''
- name: Issue the intermediate of the current (or prepared) epoch
  securetransport.ca_rotation.openbao_intermediate:
    openbao:
      url: https://openbao.example.com:8200
      token_file: /etc/ca-rotation/openbao-token
      ca_cert: /etc/ca-rotation/openbao-ca.pem
  register: intermediate

- name: Activate epoch 12 once every NATS server trusts it, and prune expired epochs
  securetransport.ca_rotation.openbao_intermediate:
    openbao:
      url: https://openbao.example.com:8200
      auth_method: approle
      role_id: "{{ ca_rotation_role_id }}"
      secret_id: "{{ ca_rotation_secret_id }}"
    epoch: 12
    default: true
    prune: true
    prune_grace: 1h

- name: Short test epochs, RSA intermediates
  securetransport.ca_rotation.openbao_intermediate:
    epoch_duration: 20s
    validity: 80s
    lead_time: 5s
    skew_allowance: 0
    key_type: rsa
    key_bits: 2048
'''

RETURN = r'''
epoch:
  description: The epoch handled.
  returned: always
  type: int
  sample: 8123
issuer_id:
  description:
    - OpenBao issuer ID (null in check mode before the issuer exists).
    - With O(issue=false) and no such issuer, this and the other certificate facts below are null.
  returned: when O(state=present)
  type: str
issuer_name:
  description: Issuer name, C(epoch-<n>).
  returned: when O(state=present)
  type: str
  sample: epoch-8123
key_id:
  description: OpenBao key ID of the intermediate's private key (null in check mode before it exists).
  returned: when O(state=present)
  type: str
key_name:
  description: Key name, C(epoch-<n>-<random>).
  returned: when O(state=present)
  type: str
  sample: epoch-8123-3fa9c1
certificate:
  description: The intermediate certificate (PEM); null in check mode before it exists.
  returned: when O(state=present)
  type: str
common_name:
  description: Subject common name of the intermediate.
  returned: when O(state=present)
  type: str
  sample: NATS Intermediate CA Epoch 8123
serial:
  description: Serial number, colon-separated hex as OpenBao writes it.
  returned: when O(state=present)
  type: str
sha256:
  description: SHA-256 fingerprint (hex) of the certificate's DER encoding.
  returned: when O(state=present)
  type: str
not_before:
  description: NotBefore of the certificate (predicted in check mode).
  returned: when O(state=present)
  type: str
  sample: '2025-07-23T05:55:00Z'
not_after:
  description: NotAfter of the certificate, exactly the epoch's expiry.
  returned: when O(state=present)
  type: str
  sample: '2025-07-24T06:00:00Z'
root_certificate:
  description: PEM of the root issuer that signs the intermediates.
  returned: when O(state=present) and O(issue=true)
  type: str
exists:
  description: Whether issuer C(epoch-<n>) exists after the run (predicted in check mode).
  returned: when O(state=present)
  type: bool
created:
  description: Whether a new intermediate was (or in check mode would be) issued.
  returned: when O(state=present)
  type: bool
adopted:
  description: Whether an unnamed issuer left by an interrupted run was named C(epoch-<n>) instead of issuing anew.
  returned: when O(state=present)
  type: bool
activated:
  description: Whether the default issuer was (or would be) changed to this epoch.
  returned: always
  type: bool
default_issuer:
  description:
    - The default issuer of O(int_mount) after the run (predicted in check mode).
    - Both values are null when the mount has no default or its default is not an C(epoch-<n>) issuer.
  returned: always
  type: dict
  contains:
    issuer_id:
      description: Issuer ID (null if predicted and not yet issued, or if the mount has no default).
      type: str
    issuer_name:
      description: Issuer name.
      type: str
previous_default:
  description: The default issuer before the run (same form as RV(default_issuer)).
  returned: always
  type: dict
is_default:
  description: Whether C(epoch-<n>) is the default issuer after the run (predicted in check mode).
  returned: when O(state=present)
  type: bool
orphan_keys_deleted:
  description: Keys C(epoch-<n>-*) that no issuer used (left by interrupted runs) and were deleted.
  returned: always
  type: list
  elements: dict
pruned:
  description: Issuers deleted by O(prune) or O(state=absent) (epoch, issuer_id, issuer_name, key_id, key_name, not_after).
  returned: always
  type: list
  elements: dict
prune_kept:
  description: Expired issuers that O(prune) kept, with the reason (the default issuer).
  returned: always
  type: list
  elements: dict
issuers:
  description:
    - Every C(epoch-<n>) issuer of O(int_mount) after the run (predicted in check mode), oldest first, without PEM.
    - C(state) is V(active) (the default issuer), V(prepared) (newer than the active epoch, waiting for activation),
      V(valid) (older, still valid), V(expired) or V(revoked); C(epoch_state) is the epoch's place in the schedule
      (V(current), V(valid), V(prepared), V(future), V(expired)).
  returned: always
  type: list
  elements: dict
  sample:
    - epoch: 8123
      issuer_name: epoch-8123
      issuer_id: 0c4f8e6e-8f0d-8b7b-1e6b-2d7f2c1b9e11
      not_before: '2025-07-23T05:55:00Z'
      not_after: '2025-07-24T06:00:00Z'
      is_default: true
      state: active
      epoch_state: current
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import CRYPTOGRAPHY_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EPOCH_ARG_SPEC,
    EpochError,
    parse_duration,
    schedule_from_module_params,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC, connect
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import HVAC_IMPORT_ERROR, OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.intermediate import (
    ensure_epoch_intermediate,
    prune_epoch_issuers,
    remove_epoch_intermediate,
    set_default_issuer,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import (
    KEY_TYPES,
    describe_issuers,
    key_spec,
    list_epoch_issuers,
)


def _summary(issuers):
    default = next((i['issuer_name'] for i in issuers if i.get('is_default')), None)
    return {'default_issuer': default, 'issuers': sorted((i['issuer_name'] for i in issuers), key=_name_key)}


def _name_key(name):
    try:
        return int(name.split('-', 1)[1])
    except (IndexError, ValueError):
        return -1


def _predict(before, result, epoch, activated, removed):
    """Issuer list after a check-mode run, from the list before and the predicted changes."""
    name = 'epoch-%d' % epoch
    after = [dict(i) for i in before if i['issuer_name'] not in removed]
    if (result.get('created') or result.get('adopted')) and not any(i['issuer_name'] == name for i in after):
        after.append({k: result.get(k) for k in ('issuer_id', 'issuer_name', 'key_id', 'key_name', 'epoch', 'certificate',
                                                 'common_name', 'serial', 'sha256', 'not_before', 'not_after',
                                                 'revoked', 'leaf_not_after_behavior')})
        after[-1]['is_default'] = bool(result.get('is_default'))
    if activated:
        for issuer in after:
            issuer['is_default'] = issuer['issuer_name'] == name
    after.sort(key=lambda i: i['epoch'])
    return after


def main():
    argument_spec = dict(
        epoch=dict(type='int'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        issue=dict(type='bool', default=True),
        default=dict(type='bool', default=False),
        prune=dict(type='bool', default=False),
        prune_grace=dict(type='raw', default='1h'),
        root_mount=dict(type='str', default='pki'),
        root_issuer=dict(type='str', default='default'),
        int_mount=dict(type='str', default='pki_int'),
        cn_prefix=dict(type='str', default='NATS Intermediate CA'),
        key_type=dict(type='str', default='ec', choices=list(KEY_TYPES)),
        key_bits=dict(type='int', default=0),
    )
    argument_spec.update(OPENBAO_ARG_SPEC)
    argument_spec.update(EPOCH_ARG_SPEC)
    module = CaRotationModule(argument_spec=argument_spec, supports_check_mode=True)
    module.doing = 'managing the epoch intermediate'
    params = module.params
    if HVAC_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('hvac'), exception=HVAC_IMPORT_ERROR)
    if CRYPTOGRAPHY_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=CRYPTOGRAPHY_IMPORT_ERROR)

    try:
        key_spec(params['key_type'], params['key_bits'])
    except ValueError as exc:
        module.fail_json(msg='%s; nothing was changed' % exc, option='key_bits')
    with module.failures():
        schedule, now = schedule_from_module_params(params)
        grace = parse_duration(params['prune_grace'], 'prune_grace', allow_zero=True)
        epoch = params['epoch']
        if epoch is None:
            prepared = schedule.prepared_epoch(now)
            epoch = prepared if prepared is not None else schedule.epoch(now)
        elif epoch < 0:
            raise EpochError('epoch must not be negative, got %d' % epoch, option='epoch')
    if params['state'] == 'absent' and params['default']:
        module.fail_json(msg='state=absent and default=true contradict each other: an absent issuer cannot be the default',
                         option='default')

    check = module.check_mode
    int_mount = params['int_mount']
    name = 'epoch-%d' % epoch
    out = {'epoch': epoch, 'activated': False, 'orphan_keys_deleted': [], 'pruned': [], 'prune_kept': []}
    changed = False
    with module.failures():
        client = connect(params)
        before = list_epoch_issuers(client, int_mount)
        prev = next(({'issuer_id': i['issuer_id'], 'issuer_name': i['issuer_name']} for i in before if i['is_default']),
                    None)
        removed = set()
        if params['state'] == 'present' and not params['issue']:
            existing = next((dict(i) for i in before if i['issuer_name'] == name), None)
            out.update(existing or {'issuer_id': None, 'issuer_name': name, 'key_id': None, 'key_name': None,
                                    'certificate': None, 'serial': None, 'sha256': None, 'not_before': None,
                                    'not_after': None})
            out.update(created=False, adopted=False)
            if params['default']:
                if existing is None:
                    raise OpenBaoError('Cannot activate %r: it does not exist on %r and issue is false' % (name, int_mount))
                act = set_default_issuer(client, int_mount, name, check_mode=check, now=now)
                out['activated'] = act['changed']
                changed = act['changed']
        elif params['state'] == 'present':
            res = ensure_epoch_intermediate(
                client, schedule, epoch, root_mount=params['root_mount'], int_mount=int_mount,
                cn_prefix=params['cn_prefix'], key_type=params['key_type'], key_bits=params['key_bits'],
                root_issuer=params['root_issuer'], check_mode=check, now=now)
            changed = res.pop('changed')
            for warning in res.pop('warnings', []):
                module.warn(warning)
            out.update(res)
            if params['default']:
                if check and res['created']:
                    # a new issuer in a mount without issuers becomes the default by itself
                    act = {'changed': not res.get('is_default')}
                else:
                    act = set_default_issuer(client, int_mount, name, check_mode=check, now=now)
                out['activated'] = act['changed']
                changed = changed or act['changed']
        else:
            res = remove_epoch_intermediate(client, int_mount, epoch, check_mode=check)
            changed = res['changed']
            out['pruned'].extend(res['deleted'])
            out['orphan_keys_deleted'].extend(res['orphan_keys_deleted'])
            removed.update(d['issuer_name'] for d in res['deleted'])
        if params['prune']:
            assume = name if (check and out['activated']) else None
            pr = prune_epoch_issuers(client, schedule, int_mount, grace, now=now, check_mode=check, assume_default=assume)
            changed = changed or pr['changed']
            out['pruned'].extend(pr['deleted'])
            out['prune_kept'] = pr['kept']
            out['orphan_keys_deleted'].extend(pr['orphan_keys_deleted'])
            removed.update(d['issuer_name'] for d in pr['deleted'])
        if check:
            after = _predict(before, out, epoch, out['activated'], removed)
        elif changed:
            after = list_epoch_issuers(client, int_mount)
        else:
            after = before

    none = {'issuer_id': None, 'issuer_name': None}
    out['default_issuer'] = next(({'issuer_id': i['issuer_id'], 'issuer_name': i['issuer_name']} for i in after
                                  if i['is_default']), none)
    out['previous_default'] = prev or none
    out['issuers'] = describe_issuers(after, schedule, now)
    if params['state'] == 'present':
        out['is_default'] = out['default_issuer']['issuer_name'] == name
        out['exists'] = any(i['issuer_name'] == name for i in after)
    result = dict(changed=changed, **out)
    if module._diff:  # pylint: disable=protected-access
        result['diff'] = {'before': _summary(before), 'after': _summary(after)}
    module.exit_json(**result)


if __name__ == '__main__':
    main()

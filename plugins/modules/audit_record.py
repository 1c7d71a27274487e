#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: audit_record
short_description: Append a rotation or rollback to the hash-chained, signed CA audit log in JetStream
version_added: 0.1.0
description:
  - Appends one C(securetransport.ca_audit/v1) record - epoch, generation, kind, bundle SHA-256 and per-server reload
    results - to the JetStream stream O(stream). Each record carries the hash of the previous one (C(prev_hash)), its
    chain position C(seq), its own C(hash) (SHA-256 of its canonical JSON without C(hash) and C(signature)) and a
    C(signature) made with the OpenBao transit key O(transit_key) (ed25519) over the same bytes.
  - Idempotent per generation and kind - the message id is C(audit-<generation>-<kind>); when the chain already holds that
    record nothing is written (C(changed=false)).
  - Two writers cannot fork the chain - the record is published with C(Nats-Expected-Last-Sequence), so NATS refuses it
    when another record was appended since the tail was read; the module then re-reads the tail and retries.
  - Refuses to append to a chain whose last message is missing or is not a valid record, and to append a generation
    older than the newest recorded one. Check the whole chain with C(scripts/ca-audit verify).
  - When the stream does not exist it is created (O(ensure_stream)) with file storage, no limits, C(discard=new), a
    one-day duplicate window and - with O(protect_stream) - deletes and purges denied. An existing stream is never changed.
author:
  - SecureTransport platform team (!UNKNOWN)
extends_documentation_fragment:
  - securetransport.ca_rotation.nats
  - securetransport.ca_rotation.openbao
options:
  stream:
    description: Name of the audit stream.
    type: str
    default: CA_AUDIT
  subject:
    description: Subject of the audit records; the stream must capture it.
    type: str
    default: audit.ca.rotation
  ensure_stream:
    description: Create the stream when it does not exist. With V(false) a missing stream fails the task.
    type: bool
    default: true
  replicas:
    description: Replicas of the stream when it is created (1 to 5). Use V(3) on a 3-node cluster.
    type: int
    default: 1
  protect_stream:
    description:
      - Create the stream with C(deny_delete) and C(deny_purge), so that records cannot be deleted or purged through the
        JetStream API by accident. An administrator can still lift this; the hash chain shows any removal.
    type: bool
    default: true
  transit_mount:
    description: Mount path of the transit secrets engine that holds the signing key.
    type: str
    default: transit
  transit_key:
    description: Name of the ed25519 transit key that signs the records.
    type: str
    default: ca-bundle-signer
  report:
    description:
      - A rotation report (as written by C(playbooks/rotate.yml) to C(ca_rotation_report_file)). O(epoch),
        O(generation), O(bundle_sha256) and O(reloads) default to its C(epoch), C(generation), C(bundle_sha256) and the
        servers of its C(clusters).
    type: dict
  epoch:
    description: Newest epoch of the distributed bundle.
    type: int
  generation:
    description: Announcement generation of the rotation or rollback (1 or more).
    type: int
  kind:
    description: What happened.
    type: str
    choices: [rotation, rollback, distrust]
    default: rotation
  bundle_sha256:
    description: SHA-256 (hex) of the distributed CA bundle.
    type: str
  reloads:
    description:
      - Per-server reload results, each C({cluster, name, ok, reload_ms, error}) (C(name) required; other keys are
        dropped).
    type: list
    elements: dict
  at:
    description: Time of the event (ISO-8601 with timezone or Unix seconds); defaults to now.
    type: raw
  timeout:
    description: Seconds allowed for the JetStream work after connecting (reads, publishing, retries).
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    description:
      - Reads the chain's tail and builds and signs the record (transit signing writes nothing); creates no stream and
        publishes nothing.
  diff_mode:
    support: none
    description: Records are not diffed; RV(record) shows what was (or would be) appended.
notes:
  - Required NATS permissions - publish on C($JS.API.STREAM.INFO.<stream>), C($JS.API.STREAM.CREATE.<stream>),
    C($JS.API.STREAM.MSG.GET.<stream>) and O(subject), and subscribe on C(_INBOX.>).
  - Required OpenBao capabilities - C(read) on C(<transit_mount>/keys/<transit_key>) and C(update) on
    C(<transit_mount>/sign/<transit_key>).
seealso:
  - module: securetransport.ca_rotation.jetstream_publish
'''

EXAMPLES = r'''
- name: Record the rotation in the audit log
  securetransport.ca_rotation.audit_record:
    nats: "{{ ca_rotation_authority_nats }}"
    openbao: "{{ ca_rotation_openbao }}"
    replicas: 3
    report: "{{ lookup('ansible.builtin.file', ca_rotation_report_file) | from_json }}"

- name: Record a rollback with explicit fields
  securetransport.ca_rotation.audit_record:
    nats:
      servers: [tls://nats-0.example.com:4222]
      ca_file: /etc/ca-rotation/ca-bundle.pem
      cert_file: /etc/ca-rotation/client.pem
      key_file: /etc/ca-rotation/client-key.pem
      user: app
      password_file: /etc/ca-rotation/nats-app-password
    kind: rollback
    epoch: 83144
    generation: 19
    bundle_sha256: "{{ rollback.sha256 }}"
    reloads:
      - {cluster: east, name: nats-0, ok: true, reload_ms: 14}
'''

RETURN = r'''
record:
  description: The record that was appended (or would be, in check mode), or the one already in the chain.
  returned: always
  type: dict
  sample:
    schema: securetransport.ca_audit/v1
    seq: 12
    prev_hash: 5b1f0c...
    epoch: 83145
    generation: 19
    kind: rotation
    bundle_sha256: 3f1c0d...
    reloads: [{cluster: local, name: nats-0, ok: true, reload_ms: 12, error: null}]
    at: '2026-11-29T10:30:02Z'
    hash: 9ad3e1...
    signature: vault:v1:...
stream:
  description: The audit stream.
  returned: always
  type: str
stream_action:
  description: V(created) or V(unchanged) (in check mode, what would be done).
  returned: always
  type: str
stream_seq:
  description: Stream sequence of the record; null in check mode when it would be appended.
  returned: always
  type: int
msg_id:
  description: The message id, C(audit-<generation>-<kind>).
  returned: always
  type: str
duplicate:
  description: The chain already held the record for this generation and kind.
  returned: always
  type: bool
attempts:
  description: Append attempts (more than 1 when another writer appended first).
  returned: always
  type: int
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._audit import (
    DEFAULT_STREAM,
    DEFAULT_SUBJECT,
    KINDS,
    AuditError,
    append,
    build_record,
    ensure_stream,
    msg_id,
    normalize_reloads,
    reloads_from_report,
    sign_record,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import CRYPTOGRAPHY_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import parse_time
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.client import close, connect, run
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.jetstream import Deadline
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NATS_ARG_SPEC, NATS_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import (
    OPENBAO_ARG_SPEC,
    connect as openbao_connect,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import HVAC_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_signer


def _fields(p):
    """The record fields from the options (explicit options win over ``report``)."""
    report = p['report'] or {}
    fields = {
        'epoch': p['epoch'] if p['epoch'] is not None else report.get('epoch'),
        'generation': p['generation'] if p['generation'] is not None else report.get('generation'),
        'kind': p['kind'],
        'bundle_sha256': p['bundle_sha256'] if p['bundle_sha256'] is not None else report.get('bundle_sha256'),
        'reloads': normalize_reloads(p['reloads']) if p['reloads'] is not None else reloads_from_report(report),
        'at': parse_time(p['at'], 'at') if p['at'] is not None else None,
    }
    for name in ('epoch', 'generation', 'bundle_sha256'):
        if fields[name] is None:
            raise AuditError('%s is required: give it, or a report that has it' % name, 'config')
    for name in ('epoch', 'generation'):
        value = fields[name]
        if isinstance(value, str) and value.strip().isdigit():
            fields[name] = int(value)
    return fields


async def _run(module, fields, signer):
    p = module.params
    deadline = Deadline(p['timeout'])
    client = await connect(p)
    try:
        state = await ensure_stream(client, p['stream'], p['subject'], deadline, replicas=p['replicas'],
                                    protect=p['protect_stream'], check_mode=module.check_mode, create=p['ensure_stream'])
        if state['action'] == 'created' and module.check_mode:
            # nothing to read: the first record of a new chain
            record = sign_record(build_record(None, fields['epoch'], fields['generation'], fields['kind'], fields['bundle_sha256'],
                                              fields['reloads'], fields['at']), signer)
            result = {'changed': True, 'record': record, 'stream_seq': None, 'msg_id': msg_id(fields['generation'], fields['kind']),
                      'duplicate': False, 'attempts': 1}
        else:
            result = await append(client, p['stream'], p['subject'], fields, signer, deadline, check_mode=module.check_mode)
        result['stream_action'] = state['action']
        return result
    finally:
        await close(client)


def main():
    argument_spec = dict(
        stream=dict(type='str', default=DEFAULT_STREAM),
        subject=dict(type='str', default=DEFAULT_SUBJECT),
        ensure_stream=dict(type='bool', default=True),
        replicas=dict(type='int', default=1),
        protect_stream=dict(type='bool', default=True),
        transit_mount=dict(type='str', default='transit'),
        transit_key=dict(type='str', default='ca-bundle-signer', no_log=False),
        report=dict(type='dict'),
        epoch=dict(type='int'),
        generation=dict(type='int'),
        kind=dict(type='str', default='rotation', choices=list(KINDS)),
        bundle_sha256=dict(type='str'),
        reloads=dict(type='list', elements='dict'),
        at=dict(type='raw'),
        timeout=dict(type='int', default=30),
    )
    argument_spec.update(NATS_ARG_SPEC)
    argument_spec.update(OPENBAO_ARG_SPEC)
    module = CaRotationModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    for lib, error in (('nats-py', NATS_IMPORT_ERROR), ('hvac', HVAC_IMPORT_ERROR), ('cryptography', CRYPTOGRAPHY_IMPORT_ERROR)):
        if error:
            module.fail_json(msg=missing_required_lib(lib), exception=error)
    if p['timeout'] <= 0:
        module.fail_json(msg='timeout must be a positive number of seconds, got %d' % p['timeout'], option='timeout')
    if not 1 <= p['replicas'] <= 5:
        module.fail_json(msg='replicas must be between 1 and 5, got %d' % p['replicas'], option='replicas')
    if any(c in p['stream'] for c in ' \t.*>/\\'):
        module.fail_json(msg='stream %r is not a valid stream name (no spaces, dots, *, >, / or \\)' % p['stream'], option='stream')

    with module.failures():
        fields = _fields(p)
        bao = openbao_connect(p)
        signer = transit_signer(bao, p['transit_mount'], p['transit_key'])
        result = run(_run(module, fields, signer))
    changed = result.pop('changed') or result['stream_action'] == 'created'
    module.exit_json(changed=changed, stream=p['stream'], **result)


if __name__ == '__main__':
    main()

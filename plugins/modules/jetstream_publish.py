#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: jetstream_publish
short_description: Ensure a NATS JetStream stream and publish a message (such as the signed CA-bundle announcement) to it
version_added: 0.1.0
description:
  - Ensures the JetStream stream O(stream) exists with the given settings - creates it, updates the settings that
    differ (only those given; other settings of an existing stream are left alone), and refuses changes NATS cannot
    make in place (storage type, retention to or from V(workqueue)) with a clear message; other refusals by the
    server (for example more replicas than servers) are reported with the server's reason.
  - Publishes O(payload), or the announcement built from O(announcement), to O(subject) with a C(Nats-Msg-Id) header
    for deduplication and waits for the JetStream acknowledgement. Republishing the same message id within the
    stream's duplicate window stores nothing (RV(duplicate=true)); with O(skip_if_unchanged) the same holds after
    the window, as long as the newest message on O(subject) carries that id.
  - Messages larger than the connected server's C(max_payload) (headers included) or the stream's C(max_msg_size)
    are refused before anything is sent.
  - With O(announcement) (or O(sign=true)) the message is a C(securetransport.ca_bundle/v1) announcement signed with the
    OpenBao transit key O(transit_key) (ed25519) over its canonical JSON; the signature is verified against the key's
    public keys before anything is published, exactly as clients will verify it.
  - Publishing is retried on timeouts and while the cluster elects a leader (until O(timeout)) when a message id is
    set - the server's deduplication makes a retry harmless. Without a message id a lost acknowledgement fails the task.
author:
  - SecureTransport platform team (!UNKNOWN)
extends_documentation_fragment:
  - securetransport.ca_rotation.nats
  - securetransport.ca_rotation.openbao
options:
  stream:
    description:
      - The stream the message must land in. Options left unset are not compared on an existing stream; when the
        stream is created they take the defaults below.
    type: dict
    suboptions:
      name:
        description:
          - Stream name. The message is published with a C(Nats-Expected-Stream) header, so it is never stored in
            another stream.
        type: str
        default: METADATA_CA_CLIENT
      description:
        description:
          - Stream description.
        type: str
      subjects:
        description:
          - Subjects the stream captures (wildcards allowed). Defaults to O(subject) when the stream is created or
            compared. Order does not matter.
        type: list
        elements: str
      storage:
        description:
          - Storage type (V(file) when created). Cannot be changed on an existing stream.
        type: str
        choices: [file, memory]
      replicas:
        description:
          - Number of replicas, 1 to 5 (V(1) when created). Use V(3) on a 3-node cluster, so the stream survives the loss of
            one server.
        type: int
      retention:
        description:
          - Retention policy (V(limits) when created). An existing stream cannot be changed to or from V(workqueue).
        type: str
        choices: [limits, interest, workqueue]
      discard:
        description:
          - What to discard when a limit is reached (V(old) when created).
        type: str
        choices: [old, new]
      max_msgs:
        description:
          - Maximum number of messages, V(-1) for unlimited (V(-1) when created).
        type: int
      max_msgs_per_subject:
        description:
          - Maximum number of messages kept per subject, V(-1) for unlimited (V(10) when created, so the
            announcement subject keeps a bounded history).
        type: int
      max_bytes:
        description:
          - Maximum size of the stream in bytes, V(-1) for unlimited (V(-1) when created).
        type: int
      max_age:
        description:
          - Maximum age of messages - a duration such as V(7d), V(PT12H) or integer seconds; V(0) for unlimited
            (V(0) when created).
        type: raw
      max_msg_size:
        description:
          - Maximum size of one message in bytes, V(-1) for unlimited (V(-1) when created).
        type: int
      duplicate_window:
        description:
          - Window during which a repeated C(Nats-Msg-Id) is ignored - a duration such as V(2m) (V(2m) when created).
            Keep it at 2 minutes or more for the announcement. Must not exceed O(stream.max_age).
        type: raw
  ensure_stream:
    description:
      - Create or update the stream as described by O(stream). With V(false) the stream must already exist; it is
        read but never changed.
    type: bool
    default: true
  subject:
    description:
      - Subject to publish to. It must be captured by the stream.
    type: str
    default: metadata.client.ca-cert
  payload:
    description:
      - The message. A dictionary or list is sent as canonical JSON (sorted keys, no spaces, UTF-8); a string is sent as
        it is (UTF-8).
      - Mutually exclusive with O(announcement).
    type: raw
  announcement:
    description:
      - Build a C(securetransport.ca_bundle/v1) announcement (DESIGN section 6) and publish it, signed (see O(sign)).
        C(bundle_sha256) is computed from O(announcement.bundle_pem).
      - Mutually exclusive with O(payload).
    type: dict
    suboptions:
      epoch:
        description:
          - Newest epoch in the bundle.
        type: int
        required: true
      generation:
        description:
          - Announcement generation from the rotation state (monotonic, 1 or more). Clients apply only newer generations.
        type: int
        required: true
      kind:
        description:
          - Why the bundle is announced; V(distrust) is a bundle without a distrusted intermediate (clients apply it
            although its epoch is not newer).
        type: str
        choices: [rotation, rollback, distrust]
        default: rotation
      bundle_pem:
        description:
          - The CA bundle (PEM certificates).
        type: str
        required: true
      certificates:
        description:
          - Per-certificate facts C({epoch, sha256, not_before, not_after}) in bundle order, for example the
            C(certificates) returned by the C(ca_bundle) module (other keys are dropped). They are checked against
            O(announcement.bundle_pem).
          - When omitted they are read from O(announcement.bundle_pem), with every C(epoch) null.
        type: list
        elements: dict
      secret_locations:
        description:
          - Where the bundle is stored as Kubernetes Secrets, as C(<namespace>/<name>) strings.
        type: list
        elements: str
        default: []
      kv_location:
        description:
          - OpenBao KV path of the bundle, for example V(secret/ca-bundles/epoch-42).
        type: str
      valid_from:
        description:
          - Start of the bundle's validity (ISO-8601 with timezone, or Unix seconds).
        type: raw
        required: true
      valid_until:
        description:
          - End of the bundle's validity (ISO-8601 with timezone, or Unix seconds).
        type: raw
        required: true
      created_at:
        description:
          - Creation time of the announcement; defaults to now. It does not enter the message id, so republishing an
            announcement with a new C(created_at) is still deduplicated.
        type: raw
  sign:
    description:
      - Sign the announcement with OpenBao transit before publishing; O(payload) must then be a C(securetransport.ca_bundle/v1)
        announcement (any C(signature) in it is replaced).
      - Defaults to V(true) with O(announcement) and V(false) otherwise. O(openbao) is used only when signing.
    type: bool
  transit_mount:
    description:
      - Mount path of the transit secrets engine that holds the signing key.
    type: str
    default: transit
  transit_key:
    description:
      - Name of the ed25519 transit key that signs announcements.
    type: str
    default: ca-bundle-signer
  headers:
    description:
      - Extra message headers (name to value).
    type: dict
    default: {}
  msg_id:
    description:
      - Message id for deduplication (C(Nats-Msg-Id) header).
      - Defaults to C(ca-bundle-<generation>-<bundle_sha256[:16]>) for an announcement; other payloads have no id
        unless one is given.
    type: str
  skip_if_unchanged:
    description:
      - When a message id is set and the newest message stored on O(subject) already carries it, publish nothing
        (RV(published=false), RV(duplicate=true)). This keeps periodic runs from re-storing the same announcement
        after the duplicate window has passed.
    type: bool
    default: true
  timeout:
    description:
      - Seconds allowed for the JetStream work after connecting (stream checks, publishing, waiting for the
        acknowledgement, retries while the cluster elects a leader).
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    description:
      - Connects, reads the stream and its newest message, signs (transit signing writes nothing) and reports the
        stream changes and whether the message would be published; creates, updates and publishes nothing.
  diff_mode:
    support: partial
    description: The stream settings before and after are shown; the message itself is not diffed.
notes:
  - Required NATS permissions - publish on C($JS.API.STREAM.INFO.<stream>), C($JS.API.STREAM.CREATE.<stream>),
    C($JS.API.STREAM.UPDATE.<stream>), C($JS.API.STREAM.MSG.GET.<stream>) and O(subject), and subscribe on C(_INBOX.>).
  - Required OpenBao capabilities when signing - C(read) on C(<transit_mount>/keys/<transit_key>) and C(update) on
    C(<transit_mount>/sign/<transit_key>).
'''

EXAMPLES = r'''
- name: Announce the new CA bundle (signed), on an R3 stream
  securetransport.ca_rotation.jetstream_publish:
    nats:
      servers: "{{ ca_rotation_nats_clusters.local.servers }}"
      ca_file: /etc/ca-rotation/ca-bundle.pem
      cert_file: /etc/ca-rotation/client.pem
      key_file: /etc/ca-rotation/client-key.pem
      user: app
      password_file: /etc/ca-rotation/nats-app-password
    openbao:
      url: https://openbao.example.com:8200
      token_file: /etc/ca-rotation/openbao-token
    stream:
      replicas: 3
      duplicate_window: 5m
      max_msgs_per_subject: 10
    announcement:
      epoch: "{{ bundle.epoch }}"
      generation: "{{ state.generation }}"
      bundle_pem: "{{ bundle.pem }}"
      certificates: "{{ bundle.certificates }}"
      secret_locations:
        - "openbao/nats-ca-bundle-epoch-{{ bundle.epoch }}"
        - nats/nats-ca-tls
      kv_location: secret/ca-bundles/epoch-{{ bundle.epoch }}
      valid_from: "{{ plan.start }}"
      valid_until: "{{ plan.expiry }}"
  register: announced

- name: Publish a plain JSON event with its own id (no stream changes)
  securetransport.ca_rotation.jetstream_publish:
    nats:
      servers: [tls://nats.example.com:4222]
      ca_file: /etc/ssl/nats-ca.pem
      creds_file: /etc/nats/publisher.creds
    ensure_stream: false
    stream:
      name: EVENTS
    subject: events.ca-rotation
    payload:
      event: rotated
      epoch: 42
    msg_id: rotated-42
'''

RETURN = r'''
stream:
  description: Name of the stream the message was (or would be) stored in.
  returned: always
  type: str
  sample: METADATA_CA_CLIENT
seq:
  description: Stream sequence of the stored message (of the earlier copy for a duplicate); null when nothing was published.
  returned: always
  type: int
duplicate:
  description: The server (or the newest message on the subject, see O(skip_if_unchanged)) already had this message id,
    so nothing new was stored. In check mode, the prediction from the newest message on the subject.
  returned: always
  type: bool
published:
  description: Whether a new message was stored by this run (always false in check mode).
  returned: always
  type: bool
would_publish:
  description: Whether the run publishes (or in check mode would publish) the message.
  returned: always
  type: bool
subject:
  description: Subject of the message.
  returned: always
  type: str
msg_id:
  description: The C(Nats-Msg-Id) used, or null.
  returned: always
  type: str
  sample: ca-bundle-7-3f1c0d2e9a4b5c6d
size:
  description: Size of the message on the wire (payload and headers), in bytes.
  returned: always
  type: int
max_payload:
  description: The connected server's C(max_payload), in bytes.
  returned: always
  type: int
payload_sha256:
  description: SHA-256 of the payload bytes.
  returned: always
  type: str
stream_action:
  description: V(created), V(updated) or V(unchanged) (in check mode, what would be done).
  returned: always
  type: str
stream_changes:
  description: Stream settings that were (or would be) set, as C({option - {before, after}}); durations in seconds.
  returned: always
  type: dict
  sample: {max_msgs_per_subject: {before: 100, after: 10}}
stream_config:
  description: The stream settings after this run (predicted in check mode), in option terms; durations in seconds.
  returned: always
  type: dict
announcement:
  description: The announcement that was published (without C(bundle_pem) and C(certificates)), including its signature.
  returned: when the message is an announcement
  type: dict
signature_key_version:
  description: Version of the transit key that signed the announcement.
  returned: when signed
  type: int
attempts:
  description: Publish attempts needed (more than 1 after timeouts or a leader election).
  returned: when published
  type: int
'''

import hashlib

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import CRYPTOGRAPHY_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import (
    SCHEMA,
    MessageError,
    build_announcement,
    canonical_json,
    msg_id as announcement_msg_id,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.client import run
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.headers import check_headers
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.jetstream import (
    DEFAULT_SUBJECT,
    HEADER_MSG_ID,
    STREAM_OPTION_SPEC,
    stream_options,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NATS_ARG_SPEC, NATS_IMPORT_ERROR, NatsError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import (
    OPENBAO_ARG_SPEC,
    connect as openbao_connect,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import HVAC_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.announce import publish_async, sign_and_verify

ANNOUNCEMENT_SPEC = dict(
    epoch=dict(type='int', required=True),
    generation=dict(type='int', required=True),
    kind=dict(type='str', default='rotation', choices=['rotation', 'rollback', 'distrust']),
    bundle_pem=dict(type='str', required=True),
    certificates=dict(type='list', elements='dict'),
    secret_locations=dict(type='list', elements='str', default=[], no_log=False),
    kv_location=dict(type='str'),
    valid_from=dict(type='raw', required=True),
    valid_until=dict(type='raw', required=True),
    created_at=dict(type='raw'),
)


def _message(module):
    """``(payload bytes, announcement dict or None, key version or None)`` from the options."""
    p = module.params
    message = None
    if p['announcement'] is not None:
        a = p['announcement']
        message = build_announcement(
            epoch=a['epoch'], generation=a['generation'], kind=a['kind'], bundle_pem=a['bundle_pem'],
            certificates=a['certificates'], secret_locations=a['secret_locations'], kv_location=a['kv_location'],
            valid_from=a['valid_from'], valid_until=a['valid_until'],
            created_at=a['created_at'] if a['created_at'] is not None else isoformat(utcnow()))
    elif isinstance(p['payload'], dict) and p['payload'].get('schema') == SCHEMA:
        message = dict(p['payload'])
    sign = p['sign'] if p['sign'] is not None else p['announcement'] is not None
    version = None
    if sign:
        if message is None:
            raise MessageError('sign: true needs an announcement - set announcement, or give a payload with schema %s' % SCHEMA, 'sign')
        message, version = sign_and_verify(openbao_connect(p), message, p['transit_mount'], p['transit_key'])
    if message is not None:
        return canonical_json(message), message, version
    payload = p['payload']
    if isinstance(payload, str):
        return payload.encode('utf-8'), None, None
    return canonical_json(payload), None, None


def _run(module):
    p = module.params
    headers = check_headers(p['headers'])
    name, wanted = stream_options(p['stream'], p['subject'])
    payload, message, version = _message(module)
    msg_id = p['msg_id'] or headers.pop(HEADER_MSG_ID, None) or (announcement_msg_id(message) if message else None)
    if p['msg_id'] and headers.get(HEADER_MSG_ID, p['msg_id']) != p['msg_id']:
        raise NatsError('msg_id %r and headers.%s %r differ; give the id once' % (p['msg_id'], HEADER_MSG_ID, headers[HEADER_MSG_ID]),
                        'config', option='msg_id')
    headers.pop(HEADER_MSG_ID, None)
    result = run(publish_async(p, payload, name, wanted, p['subject'], headers, msg_id, module.check_mode, p['timeout'],
                               p['ensure_stream'], p['skip_if_unchanged']))
    result.update(subject=p['subject'], msg_id=msg_id, payload_sha256=hashlib.sha256(payload).hexdigest())
    if message is not None:
        result['announcement'] = {k: v for k, v in message.items() if k not in ('bundle_pem', 'certificates')}
        config = result['stream_config']
        if (config.get('duplicate_window') or 0) < 120:
            module.warn('Stream %s has a duplicate window of %ss; keep it at 2 minutes or more for CA-bundle announcements '
                        '(stream.duplicate_window)' % (result['stream'], config.get('duplicate_window')))
        if (config.get('max_msgs_per_subject') or -1) < 0:
            module.warn('Stream %s keeps every announcement for ever (max_msgs_per_subject -1); bound it with '
                        'stream.max_msgs_per_subject' % result['stream'])
    if version is not None:
        result['signature_key_version'] = version
    result['changed'] = result['stream_action'] != 'unchanged' or (
        result['would_publish'] if module.check_mode else result['published'])
    if module._diff and result['stream_action'] != 'unchanged':  # pylint: disable=protected-access
        result['diff'] = {'before': state_text(result, 'before'), 'after': state_text(result, 'after'),
                          'before_header': 'stream %s' % result['stream'], 'after_header': 'stream %s' % result['stream']}
    return result


def main():
    argument_spec = dict(
        stream=dict(type='dict', apply_defaults=True, options=STREAM_OPTION_SPEC),
        ensure_stream=dict(type='bool', default=True),
        subject=dict(type='str', default=DEFAULT_SUBJECT),
        payload=dict(type='raw'),
        announcement=dict(type='dict', options=ANNOUNCEMENT_SPEC),
        sign=dict(type='bool'),
        transit_mount=dict(type='str', default='transit'),
        transit_key=dict(type='str', default='ca-bundle-signer', no_log=False),
        headers=dict(type='dict', default={}),
        msg_id=dict(type='str'),
        skip_if_unchanged=dict(type='bool', default=True),
        timeout=dict(type='int', default=30),
    )
    argument_spec.update(NATS_ARG_SPEC)
    argument_spec.update(OPENBAO_ARG_SPEC)
    module = CaRotationModule(
        argument_spec=argument_spec,
        mutually_exclusive=[('payload', 'announcement')],
        required_one_of=[('payload', 'announcement')],
        supports_check_mode=True,
    )
    module.doing = 'publishing on JetStream'
    p = module.params
    if NATS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('nats-py'), exception=NATS_IMPORT_ERROR)
    signing = p['sign'] if p['sign'] is not None else p['announcement'] is not None
    if (signing or p['announcement'] is not None) and CRYPTOGRAPHY_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    if signing and HVAC_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('hvac'), exception=HVAC_IMPORT_ERROR)
    if p['timeout'] <= 0:
        module.fail_json(msg='timeout must be a positive number of seconds, got %d' % p['timeout'], option='timeout')
    module.run(_run, module)


def state_text(result, side):
    """Stream settings before/after as a dict for diff mode (None when the stream did not exist)."""
    if side == 'after':
        return result['stream_config']
    if result['stream_action'] == 'created':
        return {}
    before = dict(result['stream_config'])
    for option, change in result['stream_changes'].items():
        before[option] = change['before']
    return before


if __name__ == '__main__':
    main()

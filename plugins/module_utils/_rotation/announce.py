# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The signed CA-bundle announcement on JetStream: build, sign with OpenBao transit, verify as a client
would, ensure the stream, publish once (``Nats-Msg-Id``). Used by the engine and ``jetstream_publish``."""

from __future__ import annotations

import json

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import (
    build_announcement,
    canonical_json,
    msg_id as announcement_msg_id,
    parse_signature,
    sign_announcement,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.client import close, connect, run
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.headers import check_size
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.jetstream import (
    HEADER_EXPECTED_STREAM,
    HEADER_MSG_ID,
    Deadline,
    config_to_options,
    ensure_stream,
    last_message,
    publish,
    stream_info,
    stream_options,
    subject_matches,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_signer, verify_with_transit


def sign_and_verify(bao_client, message, transit_mount, transit_key):
    """``(signed message, key_version)``: signed with OpenBao transit, then verified exactly as clients will, against
    the published public keys, before anything is sent."""
    message = sign_announcement(message, transit_signer(bao_client, transit_mount, transit_key))
    verify_with_transit(bao_client, transit_mount, transit_key, message)
    return message, parse_signature(message['signature'])[0]


def signed_announcement(bao_client, fields, transit_mount, transit_key):
    """``(message, key_version)``: the v1 announcement of ``fields``, signed and verified against transit."""
    fields = dict(fields)
    if fields.get('created_at') is None:
        fields['created_at'] = isoformat(utcnow())
    return sign_and_verify(bao_client, build_announcement(**fields), transit_mount, transit_key)


async def publish_async(nats_params, payload, name, wanted, subject, headers, msg_id, check_mode, timeout, ensure, skip_if_unchanged):
    deadline = Deadline(timeout)
    client = await connect(nats_params)
    try:
        result = {'max_payload': client.max_payload}
        if ensure:
            state = await ensure_stream(client, name, wanted, deadline, check_mode=check_mode)
        else:
            info = await stream_info(client, name, deadline)
            if info is None:
                raise NatsError('Stream %s does not exist (ensure_stream is false); create it or set ensure_stream: true' % name, 'stream')
            config = config_to_options(info['config'])
            state = {'action': 'unchanged', 'changes': {}, 'before': config, 'config': config}
        config = state['config']
        result.update(stream=name, stream_action=state['action'], stream_changes=state['changes'], stream_config=config)
        if not any(subject_matches(pattern, subject) for pattern in config['subjects'] or []):
            raise NatsError('Subject %s is not captured by stream %s (subjects: %s); add it to stream.subjects'
                            % (subject, name, ', '.join(config['subjects'] or [])), 'stream', option='subject')
        send_headers = dict(headers)
        if msg_id:
            send_headers[HEADER_MSG_ID] = msg_id
        send_headers[HEADER_EXPECTED_STREAM] = name
        server = client.connected_url.geturl() if client.connected_url else None
        result['size'] = check_size(payload, send_headers, client.max_payload, config.get('max_msg_size'), server)
        last = None
        if msg_id and skip_if_unchanged and state['action'] != 'created':
            last = await last_message(client, name, subject, deadline)
        if last is not None and last['headers'].get(HEADER_MSG_ID) == msg_id:
            result.update(seq=last['seq'], duplicate=True, published=False, would_publish=False)
            return result
        if check_mode:
            result.update(seq=None, duplicate=False, published=False, would_publish=True)
            return result
        ack = await publish(client, subject, payload, deadline, headers=headers, msg_id=msg_id, stream=name)
        result.update(stream=ack['stream'] or name, seq=ack['seq'], duplicate=ack['duplicate'], published=not ack['duplicate'],
                      would_publish=True, attempts=ack['attempts'])
        return result
    finally:
        await close(client)


def publish_payload(nats_params, payload, stream, subject, headers=None, msg_id=None, check_mode=False, timeout=30,
                    ensure=True, skip_if_unchanged=True):
    """Ensure ``stream`` (option dict) and publish ``payload`` (bytes) on ``subject`` once per ``msg_id``."""
    name, wanted = stream_options(stream, subject)
    result = run(publish_async(nats_params, payload, name, wanted, subject, dict(headers or {}), msg_id, check_mode,
                               timeout, ensure, skip_if_unchanged))
    changed = result['stream_action'] != 'unchanged' or (result['would_publish'] if check_mode else result['published'])
    result['changed'] = bool(changed)
    return result


async def _last_async(nats_params, name, subject, timeout):
    client = await connect(nats_params)
    try:
        return await last_message(client, name, subject, Deadline(timeout))
    finally:
        await close(client)


def last_announcement(bao_client, nats_params, stream, subject, transit_mount, transit_key, timeout=30):
    """The newest announcement on ``subject`` whose signature verifies against transit, as
    ``{seq, generation, bundle_sha256, epoch, kind}``; None when there is none (or the stream does not exist yet).
    A message that does not parse or verify is not taken for the count: ``{'seq', 'invalid': reason}``."""
    name, _wanted = stream_options(stream, subject)
    last = run(_last_async(nats_params, name, subject, timeout))
    if last is None:
        return None
    try:
        message = json.loads(last['data'].decode('utf-8'))
        verify_with_transit(bao_client, transit_mount, transit_key, message)
    except Exception as err:  # pylint: disable=broad-except
        return {'seq': last['seq'], 'invalid': str(err) or type(err).__name__}
    return {'seq': last['seq'], 'generation': int(message['generation']), 'bundle_sha256': message.get('bundle_sha256'),
            'epoch': message.get('epoch'), 'kind': message.get('kind')}


def announce(bao_client, nats_params, stream, subject, fields, transit_mount, transit_key, check_mode=False, timeout=30):
    """Sign and publish the announcement of ``fields`` (``build_announcement`` keywords)."""
    message, version = signed_announcement(bao_client, fields, transit_mount, transit_key)
    msg_id = announcement_msg_id(message)
    result = publish_payload(nats_params, canonical_json(message), stream, subject, msg_id=msg_id, check_mode=check_mode,
                             timeout=timeout)
    result.update(msg_id=msg_id, signature_key_version=version,
                  announcement={k: v for k, v in message.items() if k not in ('bundle_pem', 'certificates')})
    return result

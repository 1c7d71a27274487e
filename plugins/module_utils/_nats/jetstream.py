# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""JetStream: API requests, streams (options, changes, create/update), reading and publishing (private).

JetStream API requests are plain requests on ``$JS.API.>``; during a leader election they time out
or answer 503 (``JetStream system temporarily unavailable``), so they are retried until a deadline.
Publishing is retried only with a ``Nats-Msg-Id`` (the server deduplicates).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    parse_duration,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError, nats

#: Per-request timeout of one JetStream API call inside the overall deadline.
JS_REQUEST_TIMEOUT = 5.0
JS_API_PREFIX = '$JS.API'
HEADER_MSG_ID = 'Nats-Msg-Id'
HEADER_EXPECTED_STREAM = 'Nats-Expected-Stream'
#: JetStream error codes (err_code) treated as transient.
JS_TRANSIENT_ERR_CODES = (10008,)  # JetStream system temporarily unavailable
JS_STREAM_NOT_FOUND = 10059
JS_NO_MESSAGE_FOUND = 10037
JS_STREAM_NAME_IN_USE = 10058

#: Announcement stream defaults (DESIGN section 6).
DEFAULT_STREAM = 'METADATA_CA_CLIENT'
DEFAULT_SUBJECT = 'metadata.client.ca-cert'
#: Used only when a stream is created and the option is not given.
STREAM_CREATE_DEFAULTS = {
    'storage': 'file',
    'replicas': 1,
    'retention': 'limits',
    'discard': 'old',
    'max_msgs': -1,
    'max_msgs_per_subject': 10,
    'max_bytes': -1,
    'max_age': 0,
    'max_msg_size': -1,
    'duplicate_window': 120,
}

#: The ``stream`` option of jetstream_publish (option names, not server field names).
STREAM_OPTION_SPEC = dict(
    name=dict(type='str', default=DEFAULT_STREAM),
    description=dict(type='str'),
    subjects=dict(type='list', elements='str'),
    storage=dict(type='str', choices=['file', 'memory']),
    replicas=dict(type='int'),
    retention=dict(type='str', choices=['limits', 'interest', 'workqueue']),
    discard=dict(type='str', choices=['old', 'new']),
    max_msgs=dict(type='int'),
    max_msgs_per_subject=dict(type='int'),
    max_bytes=dict(type='int'),
    max_age=dict(type='raw'),
    max_msg_size=dict(type='int'),
    duplicate_window=dict(type='raw'),
)

#: option name -> server field; durations are seconds in options, nanoseconds on the wire.
_STREAM_FIELDS = {
    'description': 'description',
    'subjects': 'subjects',
    'storage': 'storage',
    'replicas': 'num_replicas',
    'retention': 'retention',
    'discard': 'discard',
    'max_msgs': 'max_msgs',
    'max_msgs_per_subject': 'max_msgs_per_subject',
    'max_bytes': 'max_bytes',
    'max_age': 'max_age',
    'max_msg_size': 'max_msg_size',
    'duplicate_window': 'duplicate_window',
}
_DURATION_OPTIONS = ('max_age', 'duplicate_window')
#: Changing these is refused by the server (retention only to or from workqueue); we refuse first,
#: with a clearer message.
_IMMUTABLE_OPTIONS = ('storage', 'retention')
_NS = 1000000000


# --------------------------------------------------------------------------- JetStream API
class Deadline:
    """A monotonic deadline; ``timeout()`` gives the per-request timeout that still fits."""

    def __init__(self, seconds):
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds

    def remaining(self):
        return self.end - time.monotonic()

    def expired(self):
        return self.remaining() <= 0

    def timeout(self, cap=JS_REQUEST_TIMEOUT):
        return max(min(cap, self.remaining()), 0.1)


class JetStreamAPIError(NatsError):
    """An error answer of the JetStream API (``code``: HTTP-like status, ``err_code``: JetStream code)."""

    def __init__(self, message, code=None, err_code=None, description=None):
        super().__init__(message, 'jetstream')
        self.code = code
        self.err_code = err_code
        self.description = description


def _transient(exc):
    if isinstance(exc, JetStreamAPIError):
        return exc.code == 503 or exc.err_code in JS_TRANSIENT_ERR_CODES
    if isinstance(exc, asyncio.TimeoutError):
        return True
    if nats is not None and isinstance(exc, (nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError)):
        return True
    return False


async def _retrying(what, deadline, call):
    """Run ``call()`` until it succeeds, a permanent error, or the deadline; back off between tries."""
    delay = 0.2
    attempts = 0
    last = None
    while True:
        attempts += 1
        try:
            return await call()
        except Exception as exc:  # pylint: disable=broad-except
            # transient errors are retried, anything else is raised
            if not _transient(exc):
                raise
            last = exc
        if deadline.remaining() <= delay:
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
    detail = str(last) or type(last).__name__
    raise NatsError('%s did not succeed within %.0fs (%d attempts; last: %s: %s). Is JetStream enabled for this account, and does '
                    'the cluster have a quorum of servers up?' % (what, deadline.seconds, attempts, type(last).__name__, detail),
                    'timeout')


async def js_api(client, subject, payload, deadline, what):
    """One JetStream API request (JSON in, JSON out), retried while the cluster is unavailable."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode('utf-8')

    async def call():
        msg = await client.request('%s.%s' % (JS_API_PREFIX, subject), data, timeout=deadline.timeout())
        resp = json.loads(msg.data)
        err = resp.get('error')
        if err:
            raise JetStreamAPIError('%s: %s (code %s, err_code %s)' % (what, err.get('description'), err.get('code'), err.get('err_code')),
                                    err.get('code'), err.get('err_code'), err.get('description'))
        return resp

    return await _retrying(what, deadline, call)


# --------------------------------------------------------------------------- streams
def stream_options(opts, subject=None):
    """Validate the ``stream`` option dict; return ``(name, wanted)`` with ``wanted`` in option terms
    (durations in seconds), only for the options that were given. ``subjects`` defaults to
    ``[subject]``."""
    opts = dict(opts or {})
    name = opts.get('name') or DEFAULT_STREAM
    if any(c in name for c in ' \t.*>/\\'):
        raise NatsError('stream.name %r is not a valid stream name (no spaces, dots, *, >, / or \\)' % name, 'config', option='stream.name')
    wanted = {}
    for option in _STREAM_FIELDS:
        value = opts.get(option)
        if value is None:
            continue
        if option in _DURATION_OPTIONS:
            try:
                value = parse_duration(value, 'stream.%s' % option, allow_zero=(option == 'max_age'))
            except EpochError as exc:
                raise NatsError(str(exc), 'config', option='stream.%s' % option) from None
        wanted[option] = value
    if 'subjects' not in wanted and subject:
        wanted['subjects'] = [subject]
    if 'subjects' in wanted and not wanted['subjects']:
        raise NatsError('stream.subjects must not be empty', 'config', option='stream.subjects')
    for option in ('replicas',):
        if option in wanted and not 1 <= wanted[option] <= 5:
            raise NatsError('stream.replicas must be between 1 and 5, got %d' % wanted[option], 'config', option='stream.replicas')
    for option in ('max_msgs', 'max_msgs_per_subject', 'max_bytes', 'max_msg_size'):
        if option in wanted and (wanted[option] == 0 or wanted[option] < -1):
            raise NatsError('stream.%s must be -1 (unlimited) or positive, got %d' % (option, wanted[option]), 'config',
                            option='stream.%s' % option)
    window = wanted.get('duplicate_window', STREAM_CREATE_DEFAULTS['duplicate_window'])
    if wanted.get('max_age') and window > wanted['max_age']:
        raise NatsError('stream.duplicate_window (%ds) must not be longer than stream.max_age (%ds)' % (window, wanted['max_age']),
                        'config', option='stream.duplicate_window')
    return name, wanted


def config_to_options(config):
    """Server stream config -> option terms (durations in whole seconds)."""
    out = {'name': config.get('name')}
    for option, field in _STREAM_FIELDS.items():
        value = config.get(field)
        if option in _DURATION_OPTIONS:
            value = int((value or 0) // _NS)
        elif option == 'description':
            value = value or None
        out[option] = value
    return out


def subject_matches(pattern, subject):
    """Whether NATS subject ``subject`` is captured by ``pattern`` (``*`` one token, ``>`` one or more)."""
    want = pattern.split('.')
    have = subject.split('.')
    for index, token in enumerate(want):
        if token == '>':
            return len(have) > index
        if index >= len(have) or (token != '*' and token != have[index]):
            return False
    return len(want) == len(have)


def _same(option, current, wanted):
    if option == 'subjects':
        return sorted(current or []) == sorted(wanted)
    return current == wanted


def stream_changes(current_config, wanted):
    """``{option: {before, after}}`` for every wanted option that differs from the server config."""
    current = config_to_options(current_config)
    return {option: {'before': current.get(option), 'after': value}
            for option, value in sorted(wanted.items()) if not _same(option, current.get(option), value)}


def _apply(config, wanted):
    out = dict(config)
    for option, value in wanted.items():
        out[_STREAM_FIELDS[option]] = value * _NS if option in _DURATION_OPTIONS else value
    return out


def _create_config(name, wanted):
    options = dict(STREAM_CREATE_DEFAULTS)
    options.update(wanted)
    config = {'name': name}
    return _apply(config, options)


async def stream_info(client, name, deadline):
    """The stream's info (``config``, ``state``, ``cluster``) or None when it does not exist."""
    try:
        return await js_api(client, 'STREAM.INFO.%s' % name, b'', deadline, 'Reading stream %s' % name)
    except JetStreamAPIError as exc:
        if exc.err_code == JS_STREAM_NOT_FOUND or exc.code == 404:
            return None
        raise


async def ensure_stream(client, name, wanted, deadline, check_mode=False, create=True):
    """Create the stream, or update the options in ``wanted`` that differ; never touch other options.

    Returns ``{action: created|updated|unchanged, changes, before, config}`` (``config`` in option
    terms; in check mode the predicted one). Refuses (NatsError kind ``stream``) to change the storage
    type or the retention to or from workqueue, and reports the server's reason when it refuses any
    other update.
    """
    info = await stream_info(client, name, deadline)
    if info is None:
        if not create:
            raise NatsError('Stream %s does not exist; set ensure_stream: true to create it, or create it first' % name, 'stream')
        config = _create_config(name, wanted)
        result = {'action': 'created', 'before': None,
                  'changes': {k: {'before': None, 'after': v} for k, v in sorted(config_to_options(config).items())
                              if k != 'name' and v is not None}}
        if check_mode:
            result['config'] = config_to_options(config)
            return result
        try:
            info = await js_api(client, 'STREAM.CREATE.%s' % name, config, deadline, 'Creating stream %s' % name)
        except JetStreamAPIError as exc:
            if exc.err_code != JS_STREAM_NAME_IN_USE:
                raise NatsError('NATS refused to create stream %s: %s (err_code %s)' % (name, exc.description, exc.err_code),
                                'stream') from None
            # A retried create whose first attempt succeeded, or a concurrent run: compare instead.
            return await ensure_stream(client, name, wanted, deadline, check_mode, create=False)
        result['config'] = config_to_options(info['config'])
        return result
    current = info['config']
    changes = stream_changes(current, wanted)
    result = {'action': 'updated' if changes else 'unchanged', 'changes': changes, 'before': config_to_options(current)}
    if not changes:
        result['config'] = result['before']
        return result
    immutable = [o for o in _IMMUTABLE_OPTIONS if o in changes]
    if 'retention' in immutable and 'workqueue' not in (changes['retention']['before'], changes['retention']['after']):
        immutable.remove('retention')  # limits <-> interest is allowed (nats-server 2.10+)
    if immutable:
        raise NatsError('Stream %s cannot be changed in place: %s. NATS does not allow that on an existing stream; create a '
                        'stream with another name (or delete this one, losing its messages) and publish there'
                        % (name, ', '.join('%s %s -> %s' % (o, changes[o]['before'], changes[o]['after']) for o in immutable)),
                        'stream', option='stream.%s' % immutable[0])
    config = _apply(current, wanted)
    if check_mode:
        result['config'] = config_to_options(config)
        return result
    try:
        info = await js_api(client, 'STREAM.UPDATE.%s' % name, config, deadline, 'Updating stream %s' % name)
    except JetStreamAPIError as exc:
        raise NatsError('NATS refused to update stream %s (%s): %s (err_code %s)'
                        % (name, ', '.join('%s %s -> %s' % (o, c['before'], c['after']) for o, c in changes.items()),
                           exc.description, exc.err_code), 'stream') from None
    result['config'] = config_to_options(info['config'])
    return result


def parse_headers(raw):
    """Decode the base64 ``hdrs`` of a stored message into a dict (last value wins)."""
    out = {}
    if not raw:
        return out
    text = base64.b64decode(raw).decode('utf-8', 'replace')
    for line in text.split('\r\n')[1:]:
        if ':' in line:
            key, value = line.split(':', 1)
            out[key.strip()] = value.strip()
    return out


async def last_message(client, stream, subject, deadline):
    """The newest stored message on ``subject`` as ``{seq, headers, data (bytes), time}``, or None."""
    try:
        resp = await js_api(client, 'STREAM.MSG.GET.%s' % stream, {'last_by_subj': subject}, deadline,
                            'Reading the last message on %s from stream %s' % (subject, stream))
    except JetStreamAPIError as exc:
        if exc.err_code in (JS_NO_MESSAGE_FOUND, JS_STREAM_NOT_FOUND) or exc.code == 404:
            return None
        raise
    msg = resp.get('message') or {}
    return {'seq': msg.get('seq'), 'headers': parse_headers(msg.get('hdrs')),
            'data': base64.b64decode(msg.get('data') or b''), 'time': msg.get('time')}


async def publish(client, subject, payload, deadline, headers=None, msg_id=None, stream=None):
    """Publish to JetStream and wait for the PubAck; return ``{stream, seq, duplicate, attempts}``.

    Retried on timeouts and 503 only when ``msg_id`` is set (the server's duplicate window makes a
    retry harmless); without it a lost ack fails instead of risking a second copy.
    """
    hdrs = dict(headers or {})
    if msg_id:
        hdrs[HEADER_MSG_ID] = msg_id
    if stream:
        hdrs[HEADER_EXPECTED_STREAM] = stream
    attempts = {'n': 0}

    async def call():
        attempts['n'] += 1
        try:
            msg = await client.request(subject, payload, timeout=deadline.timeout(), headers=hdrs or None)
        except nats.errors.NoRespondersError:
            raise JetStreamAPIError('No JetStream stream answered on %s (no responders)' % subject, 503, None,
                                    'no responders') from None
        resp = json.loads(msg.data)
        err = resp.get('error')
        if err:
            text = 'Publishing to %s: %s (code %s, err_code %s)' % (subject, err.get('description'), err.get('code'), err.get('err_code'))
            raise JetStreamAPIError(text, err.get('code'), err.get('err_code'), err.get('description'))
        return resp

    what = 'Publishing to %s%s' % (subject, ' (stream %s)' % stream if stream else '')
    try:
        if msg_id:
            resp = await _retrying(what, deadline, call)
        else:
            resp = await call()
    except JetStreamAPIError as exc:
        raise NatsError('%s failed: %s' % (what, exc.description or exc), 'jetstream') from None
    except asyncio.TimeoutError:
        raise NatsError('%s: no PubAck within %.0fs and no msg_id to retry safely; the message may or may not be stored'
                        % (what, deadline.timeout()), 'timeout') from None
    return {'stream': resp.get('stream'), 'seq': resp.get('seq'), 'duplicate': bool(resp.get('duplicate', False)),
            'attempts': attempts['n']}

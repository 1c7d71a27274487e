# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hash-chained, signed audit log of rotations and rollbacks in JetStream (private).

Used by the module ``audit_record`` (append) and ``scripts/ca-audit`` (verify, show).

Record (UTF-8 canonical JSON, one JetStream message per record, stream ``CA_AUDIT``, subject
``audit.ca.rotation``)::

    schema         "securetransport.ca_audit/v1"
    seq            1, 2, 3, ... (chain position; the first record has 1)
    prev_hash      hash of the previous record; 64 zeros for the first one
    epoch          newest epoch of the bundle
    generation     announcement generation (rotation state)
    kind           "rotation" | "rollback" | "distrust"
    bundle_sha256  SHA-256 of the distributed bundle
    reloads        [{cluster, name, ok, reload_ms, error}] per NATS server
    at             "YYYY-MM-DDTHH:MM:SSZ"
    hash           sha256 hex of the canonical JSON of every field above
    signature      "vault:v<n>:<base64>": OpenBao transit ed25519 over the same canonical bytes

Appending uses optimistic concurrency: the message carries ``Nats-Expected-Last-Sequence`` (the
stream's last sequence when the previous record was read), so a second writer that read the same
tail is refused by the server instead of forking the chain; it re-reads and retries. The message id
``audit-<generation>-<kind>`` makes the append idempotent (the tail, or the records behind it, are
checked for it before anything is written; JetStream also deduplicates within its window).

The stream is created with ``deny_delete`` and ``deny_purge`` (protection against accidents; an
administrator can lift them). Verification does not rely on that: it reads every sequence from 1 to
the stream's last sequence, so a deleted message (even the last one: JetStream keeps ``last_seq``),
a purged head, a changed record, a re-ordered or foreign record, and a bad signature are all reported,
first broken record first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import (
    MessageError,
    MessageVerificationError,
    canonical_json,
    load_public_key,
    parse_signature,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.jetstream import (
    HEADER_MSG_ID,
    JetStreamAPIError,
    js_api,
    parse_headers,
    publish,
    stream_info,
    subject_matches,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError

try:
    from cryptography.exceptions import InvalidSignature
except ImportError:  # pragma: no cover - reported through _message.check_imports
    class InvalidSignature(Exception):  # type: ignore[no-redef]
        """Stand-in so that this module imports without cryptography."""

SCHEMA = 'securetransport.ca_audit/v1'
DEFAULT_STREAM = 'CA_AUDIT'
DEFAULT_SUBJECT = 'audit.ca.rotation'
GENESIS_HASH = '0' * 64
KINDS = ('rotation', 'rollback', 'distrust')
FIELDS = ('schema', 'seq', 'prev_hash', 'epoch', 'generation', 'kind', 'bundle_sha256', 'reloads', 'at', 'hash', 'signature')
HASHED_FIELDS = tuple(f for f in FIELDS if f not in ('hash', 'signature'))
RELOAD_FIELDS = ('cluster', 'name', 'ok', 'reload_ms', 'error')
HEADER_EXPECTED_LAST_SEQ = 'Nats-Expected-Last-Sequence'
JS_NO_MESSAGE_FOUND = 10037
JS_WRONG_LAST_SEQUENCE = 10071
#: Duplicate window of the audit stream: a retried append within a day is deduplicated by the server too.
DUPLICATE_WINDOW_SECONDS = 86400
#: Bound on the problems listed by a verification (the first broken record is always reported).
MAX_PROBLEMS = 100

_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_TIME_RE = re.compile(r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$')
_NS = 1000000000


class AuditError(CaRotationError):
    """A failed audit operation. ``kind``: ``config``, ``chain`` (the stored chain is broken or out of
    order), ``conflict`` (other writers kept winning), ``stream`` or ``error``."""

    DETAILS = ('kind', 'option')

    def __init__(self, message, kind='error'):
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- records
def msg_id(generation, kind):
    """``audit-<generation>-<kind>``: one record per generation and kind."""
    return 'audit-%d-%s' % (generation, kind)


def record_hash(record):
    """SHA-256 hex of the canonical JSON of the hashed fields (every field except hash and signature)."""
    return hashlib.sha256(signed_bytes(record)).hexdigest()


def signed_bytes(record):
    """The bytes both the hash and the signature cover."""
    return canonical_json({k: v for k, v in record.items() if k not in ('hash', 'signature')})


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_reloads(reloads):
    """Validate per-server reload results into ``[{cluster, name, ok, reload_ms, error}]`` (order kept)."""
    out = []
    for index, item in enumerate(reloads or []):
        if not isinstance(item, dict):
            raise AuditError('reloads[%d] must be a dictionary, got %s' % (index, type(item).__name__), 'config')
        name = item.get('name')
        if not isinstance(name, str) or not name:
            raise AuditError('reloads[%d].name must be a non-empty string' % index, 'config')
        reload_ms = item.get('reload_ms')
        if reload_ms is not None:
            if isinstance(reload_ms, bool) or not isinstance(reload_ms, (int, float)):
                raise AuditError('reloads[%d].reload_ms must be a number or null' % index, 'config')
            reload_ms = int(round(reload_ms))
        error = item.get('error')
        out.append({
            'cluster': None if item.get('cluster') is None else str(item.get('cluster')),
            'name': name,
            'ok': bool(item.get('ok')),
            'reload_ms': reload_ms,
            'error': None if error in (None, '') else str(error),
        })
    return out


def reloads_from_report(report):
    """Per-server results from a rotation report (``clusters: {name: {servers: [...]}}``), sorted by cluster."""
    clusters = (report or {}).get('clusters') or {}
    reloads = []
    if isinstance(clusters, dict):
        for cluster in sorted(clusters):
            info = clusters[cluster] if isinstance(clusters[cluster], dict) else {}
            for server in info.get('servers') or []:
                if isinstance(server, dict):
                    # the run reports of the playbooks name a server by its reload target
                    name = server.get('name') or server.get('target') or server.get('server_name')
                    reloads.append(dict(server, cluster=cluster, name=name))
    return normalize_reloads(reloads)


def build_record(prev, epoch, generation, kind, bundle_sha256, reloads, at=None):
    """The next (unsigned) record after ``prev`` (a record dict, or None for the first), with its hash."""
    if not _is_int(epoch) or epoch < 0:
        raise AuditError('epoch must be an integer >= 0, got %r' % (epoch,), 'config')
    if not _is_int(generation) or generation < 1:
        raise AuditError('generation must be an integer >= 1, got %r' % (generation,), 'config')
    if kind not in KINDS:
        raise AuditError('kind must be one of %s, got %r' % (', '.join(KINDS), kind), 'config')
    if not isinstance(bundle_sha256, str) or not _SHA256_RE.match(bundle_sha256.lower()):
        raise AuditError('bundle_sha256 must be 64 hexadecimal characters, got %r' % (bundle_sha256,), 'config')
    record = {
        'schema': SCHEMA,
        'seq': 1 if prev is None else prev['seq'] + 1,
        'prev_hash': GENESIS_HASH if prev is None else prev['hash'],
        'epoch': epoch,
        'generation': generation,
        'kind': kind,
        'bundle_sha256': bundle_sha256.lower(),
        'reloads': normalize_reloads(reloads),
        'at': isoformat(at or utcnow()),
    }
    record['hash'] = record_hash(record)
    return record


def sign_record(record, signer):
    """``record`` with ``signature`` = ``signer(signed_bytes(record))`` (a ``vault:v<n>:...`` string)."""
    signature = signer(signed_bytes(record))
    try:
        parse_signature(signature)
    except MessageVerificationError:
        raise AuditError('The signer returned %r, not a signature of the form vault:v<n>:<base64>' % (signature,)) from None
    signed = dict(record)
    signed['signature'] = signature
    return signed


def encode(record):
    """Message payload of a record (canonical JSON)."""
    return canonical_json(record)


def structure_problem(record):
    """None, or ``(code, text)`` for the first structural problem of a decoded record."""
    if not isinstance(record, dict):
        return 'json', 'not a JSON object'
    if record.get('schema') != SCHEMA:
        return 'schema', 'schema is %r, expected %r' % (record.get('schema'), SCHEMA)
    missing = [f for f in FIELDS if f not in record]
    extra = sorted(set(record) - set(FIELDS))
    if missing or extra:
        return 'fields', 'fields missing %s / unexpected %s' % (missing or '-', extra or '-')
    if not _is_int(record['seq']) or record['seq'] < 1:
        return 'fields', 'seq must be an integer >= 1'
    for name in ('prev_hash', 'hash', 'bundle_sha256'):
        if not isinstance(record[name], str) or not _SHA256_RE.match(record[name]):
            return 'fields', '%s is not 64 lower-case hexadecimal characters' % name
    if not _is_int(record['epoch']) or not _is_int(record['generation']):
        return 'fields', 'epoch and generation must be integers'
    if record['kind'] not in KINDS:
        return 'fields', 'kind %r is not one of %s' % (record['kind'], ', '.join(KINDS))
    if not isinstance(record['at'], str) or not _TIME_RE.match(record['at']):
        return 'fields', 'at is not YYYY-MM-DDTHH:MM:SSZ'
    if not isinstance(record['reloads'], list):
        return 'fields', 'reloads is not a list'
    return None


def load_public_keys(keys):
    """``{version or None: Ed25519PublicKey}`` from ``{version: key}`` (PEM, base64 or key objects).

    The version ``None`` means "any version" (a single pinned key).
    """
    out = {}
    for version, key in (keys or {}).items():
        out[None if version in (None, '', '*') else int(version)] = load_public_key(key)
    return out


def signature_problem(record, public_keys):
    """None, or ``(code, text)`` when the record's signature does not verify with ``public_keys``
    (from :func:`load_public_keys`)."""
    try:
        version, raw = parse_signature(record.get('signature'))
    except MessageVerificationError as exc:
        return 'signature', 'signature unusable (%s)' % exc.reason
    key = public_keys.get(version, public_keys.get(None))
    if key is None:
        return 'unknown-key-version', 'signed with key version %d, not among the trusted versions %s' % (
            version, ', '.join(str(v) for v in sorted(v for v in public_keys if v is not None)) or '-')
    try:
        key.verify(raw, signed_bytes(record))
    except InvalidSignature:
        return 'signature', 'the signature does not verify with key version %d' % version
    except (TypeError, ValueError) as exc:
        return 'signature', 'cannot check the signature: %s' % exc
    return None


# --------------------------------------------------------------------------- verification (pure)
def verify_entries(entries, public_keys, subject=DEFAULT_SUBJECT, expect_last_hash=None):
    """Check a whole chain, given as read from the stream.

    ``entries``: ``[{stream_seq, subject, headers, data (bytes) or None when the message is missing}]``
    for every stream sequence from 1 to the stream's last sequence (missing ones included).
    ``public_keys``: from :func:`load_public_keys`; ``None`` skips signature checks (structure and
    links only). Returns a JSON-safe report: ``ok``, ``records``, ``last`` (seq, hash, generation,
    epoch, kind, at of the last good link), ``first_broken`` and ``problems``.
    """
    problems = []
    state = {'prev': None, 'records': 0}

    def problem(entry, code, text, seq=None):
        item = {'stream_seq': entry.get('stream_seq') if entry else None, 'seq': seq, 'problem': code, 'message': text}
        if len(problems) < MAX_PROBLEMS:
            problems.append(item)
        return item

    first_broken = None
    for entry in entries:
        found = None
        data = entry.get('data')
        if data is None:
            found = problem(entry, 'missing', 'stream sequence %d has no message: the record was removed' % entry['stream_seq'])
        elif entry.get('subject') is not None and not subject_matches(subject, entry['subject']):
            found = problem(entry, 'subject', 'message on subject %r, not %r' % (entry['subject'], subject))
        else:
            try:
                record = json.loads(bytes(data).decode('utf-8'))
            except (UnicodeDecodeError, ValueError) as exc:
                record = None
                found = problem(entry, 'json', 'not UTF-8 JSON: %s' % exc)
            if record is not None:
                found = _check_link(entry, record, state['prev'], public_keys, problem)
                state['records'] += 1
                # keep following the chain from what this record claims, so one broken record is reported once
                if isinstance(record, dict) and _is_int(record.get('seq')) and isinstance(record.get('hash'), str):
                    state['prev'] = record
        if found is not None and first_broken is None:
            first_broken = found
    last = state['prev']
    if expect_last_hash:
        if last is None or last.get('hash') != expect_last_hash.lower():
            found = problem(entries[-1] if entries else None, 'last-hash',
                            'the last record has hash %s, expected %s: records after it were removed or replaced'
                            % (last.get('hash') if last else None, expect_last_hash.lower()))
            if first_broken is None:
                first_broken = found
    summary = None
    if last is not None:
        summary = {k: last.get(k) for k in ('seq', 'hash', 'generation', 'epoch', 'kind', 'at')}
    return {
        'ok': first_broken is None,
        'records': state['records'],
        'stream_last_seq': entries[-1]['stream_seq'] if entries else 0,
        'last': summary,
        'first_broken': first_broken,
        'problems': problems,
    }


def _check_link(entry, record, prev, public_keys, problem):
    """The first problem of one record against its predecessor (all of them are recorded in ``problem``)."""
    first = None

    def note(code, text, seq):
        nonlocal first
        item = problem(entry, code, text, seq)
        if first is None:
            first = item

    bad = structure_problem(record)
    seq = record.get('seq') if isinstance(record, dict) else None
    if bad:
        note(bad[0], bad[1], seq if _is_int(seq) else None)
        return first
    expected_seq = 1 if prev is None else prev['seq'] + 1
    expected_prev = GENESIS_HASH if prev is None else prev['hash']
    if record['seq'] != expected_seq:
        if prev is None:
            note('truncated', 'the first record has seq %d: records 1..%d were removed (purged head)' % (seq, seq - 1), seq)
        else:
            note('seq', 'seq %d follows seq %d' % (seq, prev['seq']), seq)
    if record['prev_hash'] != expected_prev:
        note('prev-hash', 'prev_hash %s... does not match the previous record\'s hash %s...'
             % (record['prev_hash'][:16], expected_prev[:16]), seq)
    if record['hash'] != record_hash(record):
        note('hash', 'the record was modified: its content hashes to %s..., it claims %s...'
             % (record_hash(record)[:16], record['hash'][:16]), seq)
    if public_keys is not None:
        bad = signature_problem(record, public_keys)
        if bad:
            note(bad[0], bad[1], seq)
    header_id = (entry.get('headers') or {}).get(HEADER_MSG_ID)
    if header_id is not None and header_id != msg_id(record['generation'], record['kind']):
        note('msg-id', 'message id %r does not match generation %d / kind %s' % (header_id, record['generation'], record['kind']), seq)
    return first


# --------------------------------------------------------------------------- JetStream
def stream_config(name, subject, replicas=1, protect=True):
    """Server config of a new audit stream: file storage, nothing ever discarded, deletes/purges denied."""
    return {
        'name': name,
        'description': 'Hash-chained audit log of CA rotations (securetransport.ca_rotation)',
        'subjects': [subject],
        'storage': 'file',
        'retention': 'limits',
        'discard': 'new',
        'max_msgs': -1,
        'max_bytes': -1,
        'max_age': 0,
        'max_msgs_per_subject': -1,
        'max_msg_size': -1,
        'num_replicas': int(replicas),
        'duplicate_window': DUPLICATE_WINDOW_SECONDS * _NS,
        'deny_delete': bool(protect),
        'deny_purge': bool(protect),
        'allow_rollup_hdrs': False,
    }


async def ensure_stream(client, name, subject, deadline, replicas=1, protect=True, check_mode=False, create=True):
    """Create the audit stream if missing; check an existing one. Returns ``{action, config}``.

    An existing stream is never changed; it must capture ``subject`` and use file storage.
    """
    info = await stream_info(client, name, deadline)
    if info is None:
        if not create:
            raise AuditError('Audit stream %s does not exist' % name, 'stream')
        config = stream_config(name, subject, replicas, protect)
        if check_mode:
            return {'action': 'created', 'config': config}
        try:
            info = await js_api(client, 'STREAM.CREATE.%s' % name, config, deadline, 'Creating audit stream %s' % name)
        except JetStreamAPIError as exc:
            raise AuditError('NATS refused to create the audit stream %s: %s (err_code %s)' % (name, exc.description, exc.err_code),
                             'stream') from None
        return {'action': 'created', 'config': info.get('config')}
    config = info.get('config') or {}
    if not any(subject_matches(pattern, subject) for pattern in config.get('subjects') or []):
        raise AuditError('Stream %s does not capture subject %s (its subjects: %s); choose another stream or subject'
                         % (name, subject, ', '.join(config.get('subjects') or []) or '-'), 'stream')
    if config.get('storage') != 'file':
        raise AuditError('Stream %s uses %s storage; the audit log needs file storage' % (name, config.get('storage')), 'stream')
    return {'action': 'unchanged', 'config': config}


async def get_message(client, stream, seq, deadline):
    """``{stream_seq, subject, headers, data}`` of one stored message; ``data`` is None when it does not exist."""
    try:
        resp = await js_api(client, 'STREAM.MSG.GET.%s' % stream, {'seq': seq}, deadline,
                            'Reading message %d of stream %s' % (seq, stream))
    except JetStreamAPIError as exc:
        if exc.err_code == JS_NO_MESSAGE_FOUND:
            return {'stream_seq': seq, 'subject': None, 'headers': {}, 'data': None}
        raise
    msg = resp.get('message') or {}
    return {'stream_seq': seq, 'subject': msg.get('subject'), 'headers': parse_headers(msg.get('hdrs')),
            'data': base64.b64decode(msg.get('data') or b'')}


async def read_entries(client, stream, deadline):
    """Every stream sequence from 1 to the last one (missing messages included), and the stream info."""
    info = await stream_info(client, stream, deadline)
    if info is None:
        raise AuditError('Audit stream %s does not exist' % stream, 'stream')
    last_seq = int((info.get('state') or {}).get('last_seq') or 0)
    entries = []
    for seq in range(1, last_seq + 1):
        entries.append(await get_message(client, stream, seq, deadline))
    return entries, info


async def verify_stream(client, stream, deadline, public_keys=None, subject=DEFAULT_SUBJECT, expect_last_hash=None):
    """Read the whole stream and :func:`verify_entries` it; adds ``stream`` to the report."""
    entries, info = await read_entries(client, stream, deadline)
    report = verify_entries(entries, public_keys, subject=subject, expect_last_hash=expect_last_hash)
    report['stream'] = stream
    report['stream_messages'] = int((info.get('state') or {}).get('messages') or 0)
    report['signatures_checked'] = public_keys is not None
    return report


def _decode(entry):
    if entry is None or entry.get('data') is None:
        return None
    try:
        record = json.loads(bytes(entry['data']).decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if structure_problem(record) is None else None


async def tail(client, stream, deadline):
    """``(last_seq, last record or None, its entry)``. Refuses a chain whose tail is not a valid record."""
    info = await stream_info(client, stream, deadline)
    if info is None:
        raise AuditError('Audit stream %s does not exist' % stream, 'stream')
    last_seq = int((info.get('state') or {}).get('last_seq') or 0)
    if last_seq == 0:
        return 0, None, None
    entry = await get_message(client, stream, last_seq, deadline)
    record = _decode(entry)
    if record is None or record['hash'] != record_hash(record):
        raise AuditError('The last message of audit stream %s (sequence %d) is %s: the chain is broken, nothing was appended. '
                         'Run "ca-audit verify" to find the first broken record.'
                         % (stream, last_seq, 'missing (deleted)' if entry['data'] is None else 'not a valid audit record'), 'chain')
    return last_seq, record, entry


async def find_record(client, stream, last_seq, generation, kind, deadline):
    """Walk back from ``last_seq`` while records have a generation >= ``generation``; return the entry+record with
    msg id ``audit-<generation>-<kind>`` or None."""
    wanted = msg_id(generation, kind)
    seq = last_seq
    while seq >= 1:
        entry = await get_message(client, stream, seq, deadline)
        record = _decode(entry)
        if record is None:
            return None
        if msg_id(record['generation'], record['kind']) == wanted:
            return entry, record
        if record['generation'] < generation:
            return None
        seq -= 1
    return None


async def append(client, stream, subject, fields, signer, deadline, check_mode=False, max_attempts=8):
    """Append the record for ``fields`` (epoch, generation, kind, bundle_sha256, reloads, at) at the chain's tail.

    Returns ``{changed, record, stream_seq, msg_id, duplicate, attempts}``. Idempotent per
    (generation, kind). Concurrent writers are serialised by the server (expected last sequence); the
    loser re-reads the tail and retries, up to ``max_attempts`` times.
    """
    wanted = msg_id(fields['generation'], fields['kind'])
    attempts = 0
    while True:
        attempts += 1
        last_seq, prev, _entry = await tail(client, stream, deadline)
        if prev is not None:
            if msg_id(prev['generation'], prev['kind']) == wanted:
                return {'changed': False, 'record': prev, 'stream_seq': last_seq, 'msg_id': wanted, 'duplicate': True,
                        'attempts': attempts}
            if prev['generation'] >= fields['generation']:
                found = await find_record(client, stream, last_seq, fields['generation'], fields['kind'], deadline)
                if found is not None:
                    return {'changed': False, 'record': found[1], 'stream_seq': found[0]['stream_seq'], 'msg_id': wanted,
                            'duplicate': True, 'attempts': attempts}
            if prev['generation'] > fields['generation']:
                raise AuditError('The audit log already has generation %d (record %d); a record for generation %d (%s) cannot be '
                                 'appended after it' % (prev['generation'], prev['seq'], fields['generation'], fields['kind']),
                                 'chain')
        record = build_record(prev, fields['epoch'], fields['generation'], fields['kind'], fields['bundle_sha256'],
                              fields.get('reloads'), fields.get('at'))
        try:
            record = sign_record(record, signer)
        except MessageError as exc:
            raise AuditError(str(exc)) from None
        if check_mode:
            return {'changed': True, 'record': record, 'stream_seq': None, 'msg_id': wanted, 'duplicate': False,
                    'attempts': attempts}
        try:
            ack = await publish(client, subject, encode(record), deadline, headers={HEADER_EXPECTED_LAST_SEQ: str(last_seq)},
                                msg_id=wanted, stream=stream)
        except NatsError as exc:
            if exc.kind != 'jetstream':
                raise
            # Refused: most likely another writer appended first (wrong last sequence), or our own earlier
            # attempt was stored but its acknowledgement was lost. Both show in the tail.
            new_last, new_prev, _entry = await tail(client, stream, deadline)
            if new_prev is not None and msg_id(new_prev['generation'], new_prev['kind']) == wanted:
                # stored: by an earlier attempt of ours (same hash) or by a concurrent writer of the same record
                return {'changed': new_prev['hash'] == record['hash'], 'record': new_prev, 'stream_seq': new_last,
                        'msg_id': wanted, 'duplicate': new_prev['hash'] != record['hash'], 'attempts': attempts}
            if new_last == last_seq:
                raise AuditError('NATS refused the audit record for stream %s: %s' % (stream, exc)) from None
            if attempts >= max_attempts:
                raise AuditError('Could not append to audit stream %s after %d attempts: other writers kept appending first'
                                 % (stream, attempts), 'conflict') from None
            continue
        return {'changed': not ack['duplicate'], 'record': record, 'stream_seq': ack['seq'], 'msg_id': wanted,
                'duplicate': ack['duplicate'], 'attempts': attempts}

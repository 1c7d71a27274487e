# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The signed CA-bundle announcement ``securetransport.ca_bundle/v1`` (private).

One implementation, used by the publisher (module ``jetstream_publish``), the client bundle sync
script and the status report. DESIGN section 6.

Message (UTF-8 JSON object, exactly these fields)::

    schema            "securetransport.ca_bundle/v1"
    epoch             int >= 0, newest epoch in the bundle
    generation        int >= 1, monotonic (rotation state); clients apply only newer generations
    kind              "rotation" | "rollback"
    bundle_pem        the CA bundle, PEM certificates
    bundle_sha256     SHA-256 (lower-case hex) of bundle_pem's UTF-8 bytes
    certificates      [{epoch (int|null), sha256 (DER fingerprint), not_before, not_after}], bundle order
    secret_locations  [str] where the bundle is stored as a Kubernetes Secret ("<namespace>/<name>")
    kv_location       str|null, the OpenBao KV path of the bundle ("<mount>/<path>")
    valid_from        "YYYY-MM-DDTHH:MM:SSZ"
    valid_until       "YYYY-MM-DDTHH:MM:SSZ"
    created_at        "YYYY-MM-DDTHH:MM:SSZ"
    signature         "vault:v<key version>:<base64 ed25519 signature>" (OpenBao transit)

The signature covers :func:`canonical_json` of every field except ``signature`` (sorted keys, no
spaces, UTF-8, non-ASCII kept as is). Verification fails closed: any problem -- missing or garbled
signature, unknown key version, a changed field, a wrong schema, a bundle that does not match its
hash or its certificate list, an unknown or mistyped field, JSON with duplicate keys, or an
unexpected error while checking -- raises :class:`MessageVerificationError`; nothing is ever
returned half-verified.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
except ImportError:  # pragma: no cover - reported through _common.certs.CRYPTOGRAPHY_IMPORT_ERROR
    ed25519 = None

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    cert_not_after,
    cert_not_before,
    cert_sha256,
    load_cert,
    x509,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    isoformat,
    parse_time,
)

SCHEMA = 'securetransport.ca_bundle/v1'
KINDS = ('rotation', 'rollback', 'distrust')
#: Every field of a v1 message, signature included.
FIELDS = ('schema', 'epoch', 'generation', 'kind', 'bundle_pem', 'bundle_sha256', 'certificates',
          'secret_locations', 'kv_location', 'valid_from', 'valid_until', 'created_at', 'signature')
SIGNED_FIELDS = tuple(f for f in FIELDS if f != 'signature')
CERTIFICATE_FIELDS = ('epoch', 'sha256', 'not_before', 'not_after')
MSG_ID_PREFIX = 'ca-bundle-'
DEFAULT_TRANSIT_MOUNT = 'transit'
DEFAULT_TRANSIT_KEY = 'ca-bundle-signer'

_SIGNATURE_RE = re.compile(r'^vault:v([1-9][0-9]{0,8}):([A-Za-z0-9+/]+={0,2})$')
_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_TIME_RE = re.compile(r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$')


class MessageError(CaRotationError, ValueError):
    """An announcement cannot be built or signed (bad input); ``field`` names the culprit.

    Also a ValueError (as it always was), so ``except ValueError`` keeps catching it.
    """

    DETAILS = ('field', 'option')

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


class MessageVerificationError(MessageError):
    """An announcement failed verification. ``reason`` is a short machine-friendly code
    (``signature-missing``, ``signature-malformed``, ``unknown-key-version``, ``bad-signature``,
    ``schema``, ``fields``, ``type``, ``bundle-sha256``, ``certificates``, ``json``, ``not-yet-valid``,
    ``expired``, ``stale-generation``, ``keys``, ``error``); the message says what is wrong."""

    def __init__(self, message, reason='error', field=None):
        super().__init__(message, field=field)
        self.reason = reason


def check_imports():
    """Raise MessageError when cryptography is missing (for scripts)."""
    if x509 is None:
        raise MessageError('The Python library cryptography is required: %s' % CRYPTOGRAPHY_IMPORT_ERROR)


# --------------------------------------------------------------------------- encoding
def canonical_json(obj):
    """Canonical JSON bytes: sorted keys, no spaces, UTF-8 with non-ASCII kept, no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(',', ':'), ensure_ascii=False, allow_nan=False).encode('utf-8')


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError('duplicate key %r' % key)
        out[key] = value
    return out


def _reject_constant(name):
    raise ValueError('%s is not valid JSON' % name)


def parse_message(data):
    """Decode a message received from NATS (bytes or str) into a dict.

    Raises MessageVerificationError (reason ``json``) on invalid UTF-8, invalid JSON, duplicate keys
    (two parsers could disagree on which one counts) or a top level that is not an object.
    """
    if isinstance(data, dict):
        return data
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode('utf-8')
        if not isinstance(data, str):
            raise ValueError('expected bytes or str, got %s' % type(data).__name__)
        obj = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageVerificationError('The announcement is not valid UTF-8 JSON: %s' % exc, 'json') from None
    if not isinstance(obj, dict):
        raise MessageVerificationError('The announcement is not a JSON object (got %s)' % type(obj).__name__, 'json')
    return obj


def signed_bytes(message):
    """The bytes the signature covers: canonical JSON of every field except ``signature``."""
    return canonical_json({k: v for k, v in message.items() if k != 'signature'})


def msg_id(message):
    """The JetStream ``Nats-Msg-Id`` of an announcement: ``ca-bundle-<generation>-<bundle_sha256[:16]>``."""
    generation = message.get('generation') if isinstance(message, dict) else None
    sha = message.get('bundle_sha256') if isinstance(message, dict) else None
    if isinstance(generation, bool) or not isinstance(generation, int) or not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise MessageError('msg_id needs an announcement with an integer generation and a bundle_sha256')
    return '%s%d-%s' % (MSG_ID_PREFIX, generation, sha[:16])


# --------------------------------------------------------------------------- structure
def _time_text(value, field):
    """Normalise a time (datetime, ISO string, Unix seconds) to ``YYYY-MM-DDTHH:MM:SSZ``."""
    try:
        return isoformat(parse_time(value, field))
    except EpochError as exc:
        raise MessageError(str(exc), field) from None


def _pem_certificates(bundle_pem):
    check_imports()
    blocks = pem_certificates(bundle_pem)
    if not blocks:
        raise ValueError('bundle_pem holds no PEM certificate')
    return [load_cert(block) for block in blocks]


def _cert_entry(cert, epoch):
    return {
        'epoch': epoch,
        'sha256': cert_sha256(cert),
        'not_before': isoformat(cert_not_before(cert)),
        'not_after': isoformat(cert_not_after(cert)),
    }


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def structure_problems(message, require_signature=True):
    """Every structural problem of an announcement as ``[(reason, field, text)]`` (empty when fine).

    Checks the field set, the types, the schema, ``bundle_sha256`` against ``bundle_pem`` and the
    certificate list against the certificates in ``bundle_pem`` (same order, DER SHA-256, NotBefore,
    NotAfter). Does not check the signature value.
    """
    problems = []

    def bad(reason, field, text):
        problems.append((reason, field, text))

    if not isinstance(message, dict):
        return [('type', None, 'the announcement is a %s, not an object' % type(message).__name__)]
    if message.get('schema') != SCHEMA:
        bad('schema', 'schema', 'schema is %r, expected %r' % (message.get('schema'), SCHEMA))
    expected = set(FIELDS if require_signature else SIGNED_FIELDS)
    missing = sorted(expected - set(message) - {'signature'})
    unknown = sorted(set(message) - set(FIELDS), key=str)
    if missing:
        bad('fields', ','.join(missing), 'missing field(s): %s' % ', '.join(missing))
    if unknown:
        bad('fields', ','.join(str(u) for u in unknown), 'unknown field(s) for %s: %s' % (SCHEMA, ', '.join(repr(u) for u in unknown)))

    def get(name):
        return message.get(name)

    if 'epoch' in message and not (_is_int(get('epoch')) and get('epoch') >= 0):
        bad('type', 'epoch', 'epoch must be an integer >= 0, got %r' % (get('epoch'),))
    if 'generation' in message and not (_is_int(get('generation')) and get('generation') >= 1):
        bad('type', 'generation', 'generation must be an integer >= 1, got %r' % (get('generation'),))
    if 'kind' in message and get('kind') not in KINDS:
        bad('type', 'kind', 'kind must be one of %s, got %r' % (', '.join(KINDS), get('kind')))
    for name in ('valid_from', 'valid_until', 'created_at'):
        if name in message and not (isinstance(get(name), str) and _TIME_RE.match(get(name)) and _parses(get(name))):
            bad('type', name, '%s must be a UTC time YYYY-MM-DDTHH:MM:SSZ, got %r' % (name, get(name)))
    if not any(p[1] in ('valid_from', 'valid_until') for p in problems) and 'valid_from' in message and 'valid_until' in message:
        if get('valid_from') > get('valid_until'):
            bad('type', 'valid_until', 'valid_until %s is before valid_from %s' % (get('valid_until'), get('valid_from')))
    locations = get('secret_locations')
    if 'secret_locations' in message and not (isinstance(locations, list) and all(isinstance(x, str) and x for x in locations)):
        bad('type', 'secret_locations', 'secret_locations must be a list of non-empty strings, got %r' % (locations,))
    if 'kv_location' in message and not (get('kv_location') is None or (isinstance(get('kv_location'), str) and get('kv_location'))):
        bad('type', 'kv_location', 'kv_location must be a non-empty string or null, got %r' % (get('kv_location'),))
    if 'signature' in message and not isinstance(get('signature'), str):
        bad('signature-malformed', 'signature', 'signature must be a string, got %s' % type(get('signature')).__name__)

    pem = get('bundle_pem')
    certs = None
    if 'bundle_pem' in message:
        if not isinstance(pem, str) or '-----BEGIN CERTIFICATE-----' not in pem:
            bad('type', 'bundle_pem', 'bundle_pem must be PEM text with at least one certificate')
        else:
            try:
                certs = _pem_certificates(pem)
            except (ValueError, UnicodeEncodeError) as exc:
                bad('certificates', 'bundle_pem', 'bundle_pem does not parse as PEM certificates: %s' % exc)
    sha = get('bundle_sha256')
    if 'bundle_sha256' in message:
        if not (isinstance(sha, str) and _SHA256_RE.match(sha)):
            bad('type', 'bundle_sha256', 'bundle_sha256 must be 64 lower-case hex digits, got %r' % (sha,))
        elif isinstance(pem, str) and sha256_hex(pem) != sha:
            bad('bundle-sha256', 'bundle_sha256', 'bundle_sha256 %s does not match the SHA-256 of bundle_pem (%s)' % (sha, sha256_hex(pem)))

    entries = get('certificates')
    if 'certificates' in message:
        if not isinstance(entries, list) or not entries:
            bad('type', 'certificates', 'certificates must be a non-empty list, got %r' % (entries,))
        else:
            for index, entry in enumerate(entries):
                where = 'certificates[%d]' % index
                if not isinstance(entry, dict) or set(entry) != set(CERTIFICATE_FIELDS):
                    bad('type', where, '%s must be an object with exactly %s, got %r' % (where, ', '.join(CERTIFICATE_FIELDS), entry))
                    continue
                if not (entry['epoch'] is None or (_is_int(entry['epoch']) and entry['epoch'] >= 0)):
                    bad('type', where + '.epoch', '%s.epoch must be an integer >= 0 or null, got %r' % (where, entry['epoch']))
                if not (isinstance(entry['sha256'], str) and _SHA256_RE.match(entry['sha256'])):
                    bad('type', where + '.sha256', '%s.sha256 must be 64 lower-case hex digits' % where)
                for name in ('not_before', 'not_after'):
                    if not (isinstance(entry[name], str) and _TIME_RE.match(entry[name])):
                        bad('type', '%s.%s' % (where, name), '%s.%s must be a UTC time YYYY-MM-DDTHH:MM:SSZ' % (where, name))
            if certs is not None and not problems:
                actual = [_cert_entry(cert, None) for cert in certs]
                listed = [dict(e, epoch=None) for e in entries]
                if actual != listed:
                    bad('certificates', 'certificates', 'certificates does not describe the certificates of bundle_pem '
                        '(%d listed, %d in the bundle; sha256 / not_before / not_after must match in bundle order)'
                        % (len(entries), len(certs)))
    return problems


def _parses(text):
    try:
        datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ')
        return True
    except ValueError:
        return False


def check_announcement(message, require_signature=True):
    """Raise MessageVerificationError for the first structural problem (see structure_problems)."""
    problems = structure_problems(message, require_signature)
    if problems:
        reason, field, _text = problems[0]
        raise MessageVerificationError('Invalid %s announcement: %s' % (SCHEMA, '; '.join(p[2] for p in problems)), reason, field)


# --------------------------------------------------------------------------- building & signing
def build_announcement(*, epoch, generation, kind, bundle_pem, certificates, secret_locations=(), kv_location=None,
                       valid_from, valid_until, created_at):
    """A complete, unsigned v1 announcement (``bundle_sha256`` computed).

    ``certificates`` may be the ``certificates`` list of ``_bundle.build_bundle`` (extra keys are
    dropped) or ``None`` to derive it from ``bundle_pem`` (every epoch null). Times may be
    datetimes, ISO-8601 strings or Unix seconds. Raises MessageError naming the bad field.
    """
    if not isinstance(bundle_pem, str) or not bundle_pem.strip():
        raise MessageError('bundle_pem must be the PEM text of the CA bundle', 'bundle_pem')
    if certificates is None:
        try:
            certificates = [_cert_entry(cert, None) for cert in _pem_certificates(bundle_pem)]
        except ValueError as exc:
            raise MessageError('bundle_pem does not parse as PEM certificates: %s' % exc, 'bundle_pem') from None
    if not isinstance(certificates, (list, tuple)):
        raise MessageError('certificates must be a list of objects with epoch, sha256, not_before and not_after', 'certificates')
    certs = []
    for index, entry in enumerate(certificates):
        if not isinstance(entry, dict) or not all(k in entry for k in CERTIFICATE_FIELDS):
            raise MessageError('certificates[%d] needs %s' % (index, ', '.join(CERTIFICATE_FIELDS)), 'certificates')
        epoch_value = entry['epoch']
        if isinstance(epoch_value, str) and epoch_value.isdigit():
            epoch_value = int(epoch_value)
        certs.append({
            'epoch': epoch_value,
            'sha256': str(entry['sha256']).lower().replace(':', ''),
            'not_before': _time_text(entry['not_before'], 'certificates[%d].not_before' % index),
            'not_after': _time_text(entry['not_after'], 'certificates[%d].not_after' % index),
        })
    message = {
        'schema': SCHEMA,
        'epoch': epoch,
        'generation': generation,
        'kind': kind,
        'bundle_pem': bundle_pem,
        'bundle_sha256': sha256_hex(bundle_pem),
        'certificates': certs,
        'secret_locations': list(secret_locations or []),
        'kv_location': kv_location,
        'valid_from': _time_text(valid_from, 'valid_from'),
        'valid_until': _time_text(valid_until, 'valid_until'),
        'created_at': _time_text(created_at, 'created_at'),
    }
    problems = structure_problems(message, require_signature=False)
    if problems:
        raise MessageError('Cannot build the %s announcement: %s' % (SCHEMA, '; '.join(p[2] for p in problems)), problems[0][1])
    return message


def sign_announcement(message, signer):
    """A copy of ``message`` with ``signature`` set to ``signer(signed_bytes(message))``.

    The message is checked first (a malformed announcement is never signed); an existing
    signature is replaced. ``signer`` is a callable ``bytes -> str`` returning a transit-style
    signature ``vault:v<n>:<base64>`` (see ``_openbao.transit.transit_signer``).
    """
    unsigned = {k: v for k, v in message.items() if k != 'signature'}
    problems = structure_problems(unsigned, require_signature=False)
    if problems:
        raise MessageError('Refusing to sign an invalid %s announcement: %s' % (SCHEMA, '; '.join(p[2] for p in problems)), problems[0][1])
    signature = signer(signed_bytes(unsigned))
    if not isinstance(signature, str) or not _SIGNATURE_RE.match(signature):
        raise MessageError('The signer returned %r, not a signature of the form vault:v<n>:<base64>' % (signature,), 'signature')
    signed = dict(unsigned)
    signed['signature'] = signature
    return signed


def parse_signature(signature):
    """``vault:v<n>:<base64>`` -> ``(n, raw signature bytes)``; MessageVerificationError otherwise."""
    if signature is None:
        raise MessageVerificationError('The announcement has no signature', 'signature-missing', 'signature')
    match = _SIGNATURE_RE.match(signature) if isinstance(signature, str) else None
    if not match:
        raise MessageVerificationError('The announcement signature is not of the form vault:v<n>:<base64>', 'signature-malformed', 'signature')
    try:
        raw = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise MessageVerificationError('The announcement signature is not valid base64', 'signature-malformed', 'signature') from None
    if len(raw) != 64:
        raise MessageVerificationError('The announcement signature has %d bytes; an ed25519 signature has 64' % len(raw),
                                       'signature-malformed', 'signature')
    return int(match.group(1)), raw


def load_public_key(value):
    """An Ed25519PublicKey from an Ed25519PublicKey, PEM (str/bytes) or OpenBao's base64 raw 32-byte form."""
    check_imports()
    if isinstance(value, ed25519.Ed25519PublicKey):
        return value
    if isinstance(value, str):
        value = value.strip().encode('ascii')
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value).strip()
        if data.startswith(b'-----BEGIN'):
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise ValueError('the PEM public key is a %s, not ed25519' % type(key).__name__)
            return key
        raw = base64.b64decode(data, validate=True)
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    raise ValueError('unsupported public key type %s' % type(value).__name__)


def public_key_pem(value):
    """PEM (SubjectPublicKeyInfo) text of an ed25519 public key given in any form load_public_key takes."""
    key = load_public_key(value)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode('ascii')


def verify_announcement(message, public_keys, now=None, newer_than=None):
    """Verify an announcement and return it (as a dict); raise MessageVerificationError otherwise.

    ``message``: a dict, or the raw bytes/str received from NATS. ``public_keys``: ``{key version:
    key}`` (keys as Ed25519PublicKey, PEM or OpenBao base64; versions as int or digit strings),
    typically pinned by the client. Optional ``now`` (aware datetime) also requires
    ``valid_from <= now < valid_until``; optional ``newer_than`` requires ``generation > newer_than``.
    """
    try:
        return _verify(message, public_keys, now, newer_than)
    except MessageVerificationError:
        raise
    except Exception as exc:  # fail closed: anything unexpected is a failed verification
        raise MessageVerificationError('The announcement could not be verified: %s: %s' % (type(exc).__name__, exc), 'error') from None


def _verify(message, public_keys, now, newer_than):
    message = parse_message(message)
    if not isinstance(public_keys, dict) or not public_keys:
        raise MessageVerificationError('No public key to verify the announcement with (pin the transit key)', 'keys')
    version, raw = parse_signature(message.get('signature'))
    keys = {}
    for key_version, key in public_keys.items():
        keys[int(key_version)] = key
    if version not in keys:
        raise MessageVerificationError('The announcement is signed with key version %d, which is not among the trusted versions %s'
                                       % (version, ', '.join(str(v) for v in sorted(keys))), 'unknown-key-version', 'signature')
    try:
        data = signed_bytes(message)
    except (TypeError, ValueError) as exc:
        raise MessageVerificationError('The announcement is not canonical JSON: %s' % exc, 'type') from None
    try:
        load_public_key(keys[version]).verify(raw, data)
    except InvalidSignature:
        raise MessageVerificationError('The announcement signature does not verify with key version %d: the message was changed '
                                       'or signed by another key' % version, 'bad-signature', 'signature') from None
    check_announcement(message, require_signature=True)
    if now is not None:
        stamp = isoformat(now)
        if stamp < message['valid_from']:
            raise MessageVerificationError('The announcement is valid only from %s (now %s)' % (message['valid_from'], stamp), 'not-yet-valid', 'valid_from')
        if stamp >= message['valid_until']:
            raise MessageVerificationError('The announcement expired at %s (now %s)' % (message['valid_until'], stamp), 'expired', 'valid_until')
    if newer_than is not None and message['generation'] <= int(newer_than):
        raise MessageVerificationError('The announcement has generation %d, not newer than the applied generation %d'
                                       % (message['generation'], int(newer_than)), 'stale-generation', 'generation')
    return message


def summary(message):
    """A short JSON-safe description of an announcement (no PEM), for logs and module results."""
    return {k: message.get(k) for k in ('schema', 'epoch', 'generation', 'kind', 'bundle_sha256', 'valid_from',
                                        'valid_until', 'created_at', 'kv_location', 'secret_locations')}

# -*- coding: utf-8 -*-
"""The signed CA-bundle announcement (module_utils/_message.py): canonical JSON, building, signing and a
verification that fails closed on every kind of tampering.

A local ed25519 key stands in for OpenBao transit here (same ``vault:v<n>:<base64>`` signature format);
tests/integration/test_jetstream_publish.py signs and verifies with the real transit engine.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import MessageError, MessageVerificationError

UTC = dt.timezone.utc


# ----------------------------------------------------------------------------- fixtures
def _cert(cn, issuer=None, issuer_key=None, days=30):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key or key, hashes.SHA256()))
    return cert, key


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode('ascii')


@pytest.fixture(scope='module')
def pki():
    root, root_key = _cert('Test Root', days=365)
    inter7 = _cert('Test Epoch 7', root, root_key, days=2)[0]
    inter8 = _cert('Test Epoch 8', root, root_key, days=3)[0]
    bundle = _pem(inter8) + _pem(inter7) + _pem(root)
    certificates = []
    for epoch, cert, kind in ((8, inter8, 'intermediate'), (7, inter7, 'intermediate'), (None, root, 'root')):
        # the shape _bundle.build_bundle returns (extra keys are dropped by build_announcement)
        certificates.append({'epoch': epoch, 'kind': kind, 'subject': cert.subject.rfc4514_string(),
                             'sha256': cert.fingerprint(hashes.SHA256()).hex(), 'serial': '01',
                             'not_before': cert.not_valid_before_utc, 'not_after': cert.not_valid_after_utc})
    return {'bundle': bundle, 'certificates': certificates, 'root': root, 'inter7': inter7, 'inter8': inter8}


class LocalTransit:
    """An ed25519 signer with transit's output format and key versions."""

    def __init__(self):
        self.keys = {1: ed25519.Ed25519PrivateKey.generate()}
        self.version = 1

    def rotate(self):
        self.version += 1
        self.keys[self.version] = ed25519.Ed25519PrivateKey.generate()

    def __call__(self, data):
        sig = self.keys[self.version].sign(data)
        return 'vault:v%d:%s' % (self.version, base64.b64encode(sig).decode('ascii'))

    def public_keys(self, form='object'):
        out = {}
        for version, key in self.keys.items():
            pub = key.public_key()
            if form == 'pem':
                pub = _message.public_key_pem(pub)
            elif form == 'raw':  # OpenBao's read_key form: base64 of the raw 32 bytes
                pub = base64.b64encode(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
            out[version] = pub
        return out


@pytest.fixture
def transit():
    return LocalTransit()


def build(pki, **over):
    args = dict(epoch=8, generation=3, kind='rotation', bundle_pem=pki['bundle'], certificates=pki['certificates'],
                secret_locations=['openbao/nats-ca-bundle-epoch-8', 'nats/nats-ca-tls'], kv_location='secret/ca-bundles/epoch-8',
                valid_from='2026-01-01T00:00:00Z', valid_until=dt.datetime(2026, 1, 4, tzinfo=UTC), created_at=1767225600)
    args.update(over)
    return _message.build_announcement(**args)


@pytest.fixture
def signed(pki, transit):
    return _message.sign_announcement(build(pki), transit)


def raw_sign(message, transit):
    """Sign whatever is given (bypassing sign_announcement's checks) - what a compromised publisher could send."""
    out = {k: v for k, v in message.items() if k != 'signature'}
    out['signature'] = transit(_message.signed_bytes(out))
    return out


# ----------------------------------------------------------------------------- canonical JSON
def test_canonical_json_sorted_compact_utf8():
    assert _message.canonical_json({'b': 1, 'a': [1, {'d': None, 'c': 'é'}]}) == '{"a":[1,{"c":"é","d":null}],"b":1}'.encode('utf-8')


def test_canonical_json_rejects_nan():
    with pytest.raises(ValueError):
        _message.canonical_json({'x': float('nan')})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 53, max_value=2 ** 53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_canonical_json_round_trips_and_ignores_key_order(obj):
    data = _message.canonical_json(obj)
    assert json.loads(data.decode('utf-8')) == obj
    reordered = dict(reversed(list(obj.items())))
    assert _message.canonical_json(reordered) == data


# ----------------------------------------------------------------------------- building
def test_build_announcement_fields(pki):
    msg = build(pki)
    assert set(msg) == set(_message.SIGNED_FIELDS)
    assert msg['schema'] == _message.SCHEMA
    assert msg['bundle_sha256'] == hashlib.sha256(pki['bundle'].encode()).hexdigest()
    assert msg['valid_until'] == '2026-01-04T00:00:00Z' and msg['created_at'] == '2026-01-01T00:00:00Z'
    assert [c['epoch'] for c in msg['certificates']] == [8, 7, None]
    assert all(set(c) == set(_message.CERTIFICATE_FIELDS) for c in msg['certificates'])
    assert _message.msg_id(msg) == 'ca-bundle-3-' + msg['bundle_sha256'][:16]


def test_build_derives_certificates_from_pem(pki):
    msg = build(pki, certificates=None)
    assert [c['sha256'] for c in msg['certificates']] == [c['sha256'] for c in pki['certificates']]
    assert all(c['epoch'] is None for c in msg['certificates'])


@pytest.mark.parametrize('over, field', [
    ({'kind': 'upgrade'}, 'kind'),
    ({'generation': 0}, 'generation'),
    ({'generation': True}, 'generation'),
    ({'epoch': -1}, 'epoch'),
    ({'epoch': '8'}, 'epoch'),
    ({'valid_from': '2026-02-01T00:00:00Z'}, 'valid_until'),
    ({'valid_from': 'yesterday'}, 'valid_from'),
    ({'valid_until': '2026-01-04T00:00:00'}, 'valid_until'),
    ({'secret_locations': ['ok', '']}, 'secret_locations'),
    ({'kv_location': ''}, 'kv_location'),
    ({'bundle_pem': ''}, 'bundle_pem'),
    ({'bundle_pem': 'not pem'}, 'bundle_pem'),
])
def test_build_rejects_bad_input(pki, over, field):
    with pytest.raises(MessageError) as err:
        build(pki, **over)
    assert err.value.field == field or field in str(err.value)


def test_build_rejects_certificates_not_matching_bundle(pki):
    certs = copy.deepcopy(pki['certificates'])
    certs.reverse()
    with pytest.raises(MessageError, match='does not describe the certificates of bundle_pem'):
        build(pki, certificates=certs)
    with pytest.raises(MessageError, match='does not describe'):
        build(pki, certificates=pki['certificates'][:2])


def test_msg_id_needs_generation_and_sha():
    with pytest.raises(MessageError):
        _message.msg_id({'generation': 1})


# ----------------------------------------------------------------------------- signing and verifying
def test_sign_and_verify_round_trip(signed, transit):
    assert signed['signature'].startswith('vault:v1:')
    assert _message.verify_announcement(signed, transit.public_keys()) == signed
    # what clients receive from NATS: the canonical bytes
    assert _message.verify_announcement(_message.canonical_json(signed), transit.public_keys('pem')) == signed
    assert _message.verify_announcement(_message.canonical_json(signed).decode(), transit.public_keys('raw')) == signed
    # versions as strings (JSON-pinned keys)
    assert _message.verify_announcement(signed, {str(k): v for k, v in transit.public_keys('pem').items()}) == signed


def test_signature_covers_everything_but_the_signature(signed, transit):
    version, raw = _message.parse_signature(signed['signature'])
    unsigned = {k: v for k, v in signed.items() if k != 'signature'}
    transit.public_keys()[version].verify(raw, _message.canonical_json(unsigned))


def test_sign_replaces_existing_signature(pki, transit, signed):
    transit.rotate()
    resigned = _message.sign_announcement(signed, transit)
    assert resigned['signature'].startswith('vault:v2:')
    assert _message.verify_announcement(resigned, transit.public_keys()) == resigned


def test_sign_refuses_invalid_messages(pki, transit):
    msg = build(pki)
    msg['schema'] = 'other/v1'
    with pytest.raises(MessageError, match='Refusing to sign'):
        _message.sign_announcement(msg, transit)
    with pytest.raises(MessageError, match='not a signature'):
        _message.sign_announcement(build(pki), lambda data: 'garbage')


def _replacements(value):
    """Values that differ from ``value`` (same type first, then other types)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1 if value > 0 else value + 2, str(value), float(value) + 0.5, None]
    if isinstance(value, str):
        return [value + 'x', value[:-1], value.upper() if value.upper() != value else value.lower() + 'y', '', None, 1]
    if isinstance(value, list):
        return [value[:-1], value + value[:1], list(reversed(value)) if len(value) > 1 else value + ['x'], [], None]
    return [None, 'x']


@pytest.mark.parametrize('field', _message.SIGNED_FIELDS)
def test_changing_any_field_breaks_verification(signed, transit, field):
    keys = transit.public_keys()
    tried = 0
    for replacement in _replacements(signed[field]):
        if replacement == signed[field]:
            continue
        tampered = dict(signed)
        tampered[field] = replacement
        with pytest.raises(MessageVerificationError) as err:
            _message.verify_announcement(tampered, keys)
        assert err.value.reason == 'bad-signature', (field, replacement, err.value)
        tried += 1
    removed = {k: v for k, v in signed.items() if k != field}
    with pytest.raises(MessageVerificationError):
        _message.verify_announcement(removed, keys)
    assert tried >= 2


@pytest.mark.parametrize('index', [0, 1, 2])
@pytest.mark.parametrize('key', _message.CERTIFICATE_FIELDS)
def test_changing_a_certificate_entry_breaks_verification(signed, transit, index, key):
    tampered = copy.deepcopy(signed)
    entry = tampered['certificates'][index]
    entry[key] = 99 if key == 'epoch' and entry[key] != 99 else ('0' * 64 if key == 'sha256' else '2030-01-01T00:00:00Z')
    with pytest.raises(MessageVerificationError, match='does not verify'):
        _message.verify_announcement(tampered, transit.public_keys())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_tampering_never_verifies(signed, transit, data):
    keys = transit.public_keys()
    field = data.draw(st.sampled_from(sorted(signed)))
    value = data.draw(json_values)
    if value == signed[field]:
        return
    tampered = dict(signed)
    tampered[field] = value
    with pytest.raises(MessageVerificationError):
        _message.verify_announcement(tampered, keys)


def test_extra_field_breaks_verification(signed, transit):
    tampered = dict(signed, note='hello')
    with pytest.raises(MessageVerificationError, match='does not verify'):
        _message.verify_announcement(tampered, transit.public_keys())


@pytest.mark.parametrize('signature, reason', [
    (None, 'signature-missing'),
    ('', 'signature-malformed'),
    ('vault:v1:', 'signature-malformed'),
    ('vault:v1:!!!notbase64!!!', 'signature-malformed'),
    ('vault:v1:' + base64.b64encode(b'x' * 63).decode(), 'signature-malformed'),
    ('vault:vX:' + base64.b64encode(b'x' * 64).decode(), 'signature-malformed'),
    ('vault:v0:' + base64.b64encode(b'x' * 64).decode(), 'signature-malformed'),
    ('v1:' + base64.b64encode(b'x' * 64).decode(), 'signature-malformed'),
    (base64.b64encode(b'x' * 64).decode(), 'signature-malformed'),
    (12, 'signature-malformed'),
    ('vault:v1:' + base64.b64encode(b'x' * 64).decode(), 'bad-signature'),
    ('vault:v7:' + base64.b64encode(b'x' * 64).decode(), 'unknown-key-version'),
])
def test_garbled_or_missing_signature(signed, transit, signature, reason):
    tampered = dict(signed)
    if signature is None:
        del tampered['signature']
    else:
        tampered['signature'] = signature
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(tampered, transit.public_keys())
    assert err.value.reason == reason


def test_unknown_key_version(pki, transit):
    transit.rotate()
    msg = _message.sign_announcement(build(pki), transit)  # signed with v2
    only_v1 = {1: transit.public_keys()[1]}
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(msg, only_v1)
    assert err.value.reason == 'unknown-key-version'
    assert _message.verify_announcement(msg, transit.public_keys()) == msg


def test_signed_by_another_key(pki, transit):
    other = LocalTransit()
    msg = _message.sign_announcement(build(pki), other)
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(msg, transit.public_keys())
    assert err.value.reason == 'bad-signature'


@pytest.mark.parametrize('mutate, reason', [
    (lambda m: m.update(schema='securetransport.ca_bundle/v2'), 'schema'),
    (lambda m: m.update(bundle_sha256='0' * 64), 'bundle-sha256'),
    (lambda m: m.update(generation='3'), 'type'),
    (lambda m: m.update(epoch=8.0), 'type'),
    (lambda m: m.update(kind='hotfix'), 'type'),
    (lambda m: m.update(valid_until='2026-01-04 00:00:00'), 'type'),
    (lambda m: m.update(certificates=[]), 'type'),
    (lambda m: m.update(secret_locations='nats/nats-ca-tls'), 'type'),
    (lambda m: m.update(extra=1), 'fields'),
    (lambda m: m.pop('kv_location'), 'fields'),
    (lambda m: m['certificates'].reverse(), 'certificates'),
])
def test_validly_signed_but_malformed_messages_are_refused(pki, transit, mutate, reason):
    """Even a correct signature (a compromised or buggy publisher) does not make a malformed message acceptable."""
    msg = copy.deepcopy(build(pki))
    mutate(msg)
    msg = raw_sign(msg, transit)
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(msg, transit.public_keys())
    assert err.value.reason == reason, err.value


@pytest.mark.parametrize('data', [
    b'\xff\xfe',
    b'[]',
    b'"text"',
    b'{"schema": "securetransport.ca_bundle/v1", "schema": "x"}',
    b'{"a": NaN}',
    b'not json',
    12,
])
def test_unparsable_payloads(transit, data):
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(data, transit.public_keys())
    assert err.value.reason in ('json', 'error')


def test_duplicate_keys_in_raw_json_are_refused(signed, transit):
    text = _message.canonical_json(signed).decode()
    forged = text[:-1] + ',"generation":99}'
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(forged, transit.public_keys())
    assert err.value.reason == 'json'


_TRUNCATED_PEM = _message.public_key_pem(ed25519.Ed25519PrivateKey.generate().public_key())[:-40]


@pytest.mark.parametrize('keys', [{}, None, {1: 'not a key'}, {1: _TRUNCATED_PEM}, {'one': _TRUNCATED_PEM}])
def test_bad_key_material_fails_closed(signed, keys):
    with pytest.raises(MessageVerificationError):
        _message.verify_announcement(signed, keys)


def test_non_ed25519_pinned_key_fails_closed(signed):
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(signed, {1: ec_pem})
    assert err.value.reason == 'error'


def test_freshness_and_generation(signed, transit):
    keys = transit.public_keys()
    assert _message.verify_announcement(signed, keys, now=dt.datetime(2026, 1, 2, tzinfo=UTC), newer_than=2)
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(signed, keys, now=dt.datetime(2025, 12, 31, 23, 59, tzinfo=UTC))
    assert err.value.reason == 'not-yet-valid'
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(signed, keys, now=dt.datetime(2026, 1, 4, tzinfo=UTC))
    assert err.value.reason == 'expired'
    with pytest.raises(MessageVerificationError) as err:
        _message.verify_announcement(signed, keys, newer_than=3)
    assert err.value.reason == 'stale-generation'


def test_verify_does_not_modify_its_input(signed, transit):
    before = copy.deepcopy(signed)
    _message.verify_announcement(signed, transit.public_keys())
    assert signed == before


def test_summary_has_no_pem(signed):
    summary = _message.summary(signed)
    assert 'bundle_pem' not in summary and summary['generation'] == 3

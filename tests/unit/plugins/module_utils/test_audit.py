# -*- coding: utf-8 -*-
"""Pure logic of the hash-chained audit log (module_utils/_audit.py): records, hashes, signatures, chain checks.

Signatures are made with a local ed25519 key in the same ``vault:v<n>:<base64>`` form as OpenBao transit
(the integration tests use the real transit key).
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _audit as A
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import canonical_json

UTC = datetime.timezone.utc
SHA = 'ab' * 32


def make_signer(version=1):
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(data):
        return 'vault:v%d:%s' % (version, base64.b64encode(key.sign(data)).decode())

    return sign, pem


SIGNER, PEM = make_signer()
KEYS = A.load_public_keys({1: PEM})


def chain(n, signer=SIGNER, start_generation=1):
    records = []
    prev = None
    for i in range(n):
        record = A.build_record(prev, 100 + i, start_generation + i, 'rotation' if i % 3 else 'rollback', SHA,
                                [{'cluster': 'c', 'name': 'nats-%d' % j, 'ok': True, 'reload_ms': 10 + j} for j in range(3)],
                                at=datetime.datetime(2025, 1, 1, i, tzinfo=UTC))
        prev = A.sign_record(record, signer)
        records.append(prev)
    return records


def entries(records, subject=A.DEFAULT_SUBJECT):
    return [{'stream_seq': i + 1, 'subject': subject, 'headers': {'Nats-Msg-Id': A.msg_id(r['generation'], r['kind'])},
             'data': A.encode(r)} for i, r in enumerate(records)]


def test_record_shape_hash_and_signature():
    first, second = chain(2)
    assert list(first) == list(A.FIELDS)
    assert first['schema'] == 'securetransport.ca_audit/v1'
    assert first['seq'] == 1 and first['prev_hash'] == '0' * 64
    assert second['seq'] == 2 and second['prev_hash'] == first['hash']
    unsigned = {k: v for k, v in first.items() if k not in ('hash', 'signature')}
    import hashlib
    assert first['hash'] == hashlib.sha256(canonical_json(unsigned)).hexdigest()
    assert A.signed_bytes(first) == canonical_json(unsigned)
    assert A.signature_problem(first, KEYS) is None
    assert first['reloads'][0] == {'cluster': 'c', 'name': 'nats-0', 'ok': True, 'reload_ms': 10, 'error': None}
    assert first['at'] == '2025-01-01T00:00:00Z'
    assert A.msg_id(7, 'rollback') == 'audit-7-rollback'


def test_intact_chain_verifies():
    records = chain(5)
    report = A.verify_entries(entries(records), KEYS)
    assert report['ok'] and report['first_broken'] is None and report['problems'] == []
    assert report['records'] == 5
    assert report['last']['seq'] == 5 and report['last']['hash'] == records[-1]['hash']
    assert A.verify_entries([], KEYS)['ok']


def test_modified_record_is_the_first_broken():
    records = chain(4)
    tampered = copy.deepcopy(records)
    tampered[1]['epoch'] += 1
    report = A.verify_entries(entries(tampered), KEYS)
    assert not report['ok']
    assert report['first_broken']['stream_seq'] == 2 and report['first_broken']['problem'] == 'hash'
    # the signature fails too, the following records still link to the claimed hash
    assert {p['problem'] for p in report['problems']} == {'hash', 'signature'}


def test_modified_record_with_recomputed_hash_fails_on_signature_and_link():
    records = chain(4)
    tampered = copy.deepcopy(records)
    tampered[1]['reloads'][0]['ok'] = False
    tampered[1]['hash'] = A.record_hash(tampered[1])
    report = A.verify_entries(entries(tampered), KEYS)
    assert report['first_broken']['stream_seq'] == 2 and report['first_broken']['problem'] == 'signature'
    assert any(p['problem'] == 'prev-hash' and p['stream_seq'] == 3 for p in report['problems'])
    # without signatures only the broken link shows
    unsigned = A.verify_entries(entries(tampered), None)
    assert unsigned['first_broken']['stream_seq'] == 3 and unsigned['first_broken']['problem'] == 'prev-hash'


def test_resigned_with_another_key_is_caught():
    other, _pem = make_signer()
    records = chain(3)
    forged = copy.deepcopy(records)
    forged[2]['epoch'] = 1
    forged[2]['hash'] = A.record_hash(forged[2])
    forged[2] = A.sign_record({k: v for k, v in forged[2].items() if k != 'signature'}, other)
    report = A.verify_entries(entries(forged), KEYS)
    assert report['first_broken']['stream_seq'] == 3 and report['first_broken']['problem'] == 'signature'


def test_removed_record_is_reported_where_it_was():
    records = chain(4)
    es = entries(records)
    es[1] = {'stream_seq': 2, 'subject': None, 'headers': {}, 'data': None}
    report = A.verify_entries(es, KEYS)
    assert report['first_broken'] == {'stream_seq': 2, 'seq': None, 'problem': 'missing',
                                      'message': 'stream sequence 2 has no message: the record was removed'}
    assert any(p['problem'] == 'seq' for p in report['problems'])


def test_removed_last_record_and_purged_head():
    records = chain(3)
    es = entries(records)
    es[2]['data'] = None
    report = A.verify_entries(es, KEYS)
    assert report['first_broken']['problem'] == 'missing' and report['first_broken']['stream_seq'] == 3
    head = entries(records)
    head[0]['data'] = None
    report = A.verify_entries(head, KEYS)
    assert [p['problem'] for p in report['problems']][:2] == ['missing', 'truncated']


def test_reordered_and_foreign_messages():
    records = chain(3)
    swapped = entries([records[0], records[2], records[1]])
    report = A.verify_entries(swapped, KEYS)
    assert report['first_broken']['stream_seq'] == 2 and report['first_broken']['problem'] == 'seq'
    es = entries(records)
    es.insert(1, {'stream_seq': 2, 'subject': 'audit.other', 'headers': {}, 'data': b'{}'})
    for i, e in enumerate(es):
        e['stream_seq'] = i + 1
    report = A.verify_entries(es, KEYS)
    assert report['first_broken']['problem'] == 'subject'
    garbage = entries(records)
    garbage[1]['data'] = b'\xff not json'
    assert A.verify_entries(garbage, KEYS)['first_broken']['problem'] == 'json'
    wrong_id = entries(records)
    wrong_id[0]['headers']['Nats-Msg-Id'] = 'audit-99-rotation'
    assert A.verify_entries(wrong_id, KEYS)['first_broken']['problem'] == 'msg-id'


def test_expect_last_hash_catches_truncated_tail():
    records = chain(3)
    report = A.verify_entries(entries(records[:2]), KEYS, expect_last_hash=records[2]['hash'])
    assert report['first_broken']['problem'] == 'last-hash'
    assert A.verify_entries(entries(records), KEYS, expect_last_hash=records[2]['hash'].upper())['ok']


def test_unknown_key_version_and_any_version_pin():
    signer2, pem2 = make_signer(version=2)
    record = A.sign_record(A.build_record(None, 1, 1, 'rotation', SHA, []), signer2)
    assert A.signature_problem(record, KEYS)[0] == 'unknown-key-version'
    assert A.signature_problem(record, A.load_public_keys({None: pem2})) is None
    assert A.signature_problem(record, A.load_public_keys({'2': pem2})) is None
    bad = dict(record, signature='vault:v2:not-base64!')
    assert A.signature_problem(bad, A.load_public_keys({2: pem2}))[0] == 'signature'


@pytest.mark.parametrize('mutate, code', [
    (lambda r: r.update(schema='other/v1'), 'schema'),
    (lambda r: r.pop('reloads'), 'fields'),
    (lambda r: r.update(extra=1), 'fields'),
    (lambda r: r.update(seq=0), 'fields'),
    (lambda r: r.update(seq=True), 'fields'),
    (lambda r: r.update(hash='XYZ'), 'fields'),
    (lambda r: r.update(kind='upgrade'), 'fields'),
    (lambda r: r.update(at='2025-01-01 00:00:00'), 'fields'),
    (lambda r: r.update(reloads={}), 'fields'),
])
def test_structure_problems(mutate, code):
    record = chain(1)[0]
    mutate(record)
    assert A.structure_problem(record)[0] == code


@pytest.mark.parametrize('kwargs, text', [
    (dict(epoch=-1), 'epoch'),
    (dict(generation=0), 'generation'),
    (dict(kind='other'), 'kind'),
    (dict(bundle_sha256='xyz'), 'bundle_sha256'),
    (dict(reloads=['x']), 'reloads[0]'),
    (dict(reloads=[{'ok': True}]), 'reloads[0].name'),
    (dict(reloads=[{'name': 'n', 'reload_ms': 'fast'}]), 'reload_ms'),
])
def test_build_record_rejects(kwargs, text):
    args = dict(epoch=1, generation=1, kind='rotation', bundle_sha256=SHA, reloads=[])
    args.update(kwargs)
    with pytest.raises(A.AuditError, match=re.escape(text)):
        A.build_record(None, **args)


def test_sign_record_rejects_a_bad_signer():
    with pytest.raises(A.AuditError, match='vault:v'):
        A.sign_record(A.build_record(None, 1, 1, 'rotation', SHA, []), lambda data: 'nope')


def test_reloads_from_report():
    report = {'clusters': {'b': {'servers': [{'name': 'n1', 'ok': False, 'reload_ms': None, 'error': 'boom'}]},
                           'a': {'servers': [{'name': 'n0', 'ok': True, 'reload_ms': 12.6, 'error': ''}, 'junk']}}}
    assert A.reloads_from_report(report) == [
        {'cluster': 'a', 'name': 'n0', 'ok': True, 'reload_ms': 13, 'error': None},
        {'cluster': 'b', 'name': 'n1', 'ok': False, 'reload_ms': None, 'error': 'boom'},
    ]
    assert A.reloads_from_report(None) == []
    # a report written by rotate.yml / distrust.yml names each server by its reload target
    played = {'clusters': {'local': {'servers': [{'target': 'nats-0', 'server_name': 'nats-0', 'ok': True, 'reload_ms': None,
                                                  'error': None, 'signalled': False}]}}}
    assert A.reloads_from_report(played) == [{'cluster': 'local', 'name': 'nats-0', 'ok': True, 'reload_ms': None, 'error': None}]


def test_stream_config_protects():
    config = A.stream_config('CA_AUDIT', 'audit.ca.rotation', replicas=3)
    assert config['deny_delete'] and config['deny_purge'] and config['discard'] == 'new'
    assert config['num_replicas'] == 3 and config['storage'] == 'file' and config['max_age'] == 0
    assert not A.stream_config('X', 'y', protect=False)['deny_delete']


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=8), index=st.data(), field=st.sampled_from(['epoch', 'generation', 'bundle_sha256',
                                                                                       'at', 'kind', 'prev_hash', 'seq']))
def test_property_any_single_field_change_is_caught_at_that_record(n, index, field):
    records = chain(n)
    i = index.draw(st.integers(min_value=0, max_value=n - 1))
    tampered = copy.deepcopy(records)
    value = tampered[i][field]
    if field in ('epoch', 'generation', 'seq'):
        tampered[i][field] = value + 1
    elif field == 'kind':
        tampered[i][field] = 'rollback' if value == 'rotation' else 'rotation'
    elif field == 'at':
        tampered[i][field] = '2030-01-01T00:00:00Z'
    else:
        tampered[i][field] = ('cd' * 32) if value != 'cd' * 32 else ('ef' * 32)
    report = A.verify_entries(entries(tampered), KEYS)
    assert not report['ok']
    assert report['first_broken']['stream_seq'] == i + 1


def test_records_roundtrip_through_json():
    record = chain(1)[0]
    assert json.loads(A.encode(record).decode()) == record

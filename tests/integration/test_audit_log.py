# -*- coding: utf-8 -*-
"""The hash-chained audit log against the session stack: module ``audit_record`` and ``scripts/ca-audit``.

Real 3-node mTLS NATS cluster (JetStream) and the real OpenBao transit key (ed25519). Every test uses its own
stream and subject and deletes its streams afterwards. State is read back with nats-py's own JetStream API and
hvac, not with the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives import serialization
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _audit as A
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_signer

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]
CA_AUDIT = REPO / 'scripts' / 'ca-audit'


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def nats_params(stack):
    auth = stack['nats_auth']
    return {
        'servers': [s['url'] for s in stack['clusters'][0]['servers']],
        'ca_file': auth['ca_file'], 'cert_file': auth['client_cert_file'], 'key_file': auth['client_key_file'],
        'user': auth['app_user'], 'password_file': auth['app_password_file'],
    }


async def independent_connect(stack):
    import ssl
    auth = stack['nats_auth']
    ctx = ssl.create_default_context(cafile=auth['ca_file'])
    ctx.load_cert_chain(auth['client_cert_file'], auth['client_key_file'])

    async def ignore(_err):
        return None

    return await nats.connect(servers=[s['url'] for s in stack['clusters'][0]['servers']], tls=ctx, user=auth['app_user'],
                              password=Path(auth['app_password_file']).read_text(encoding='utf-8').strip(),
                              connect_timeout=5, max_reconnect_attempts=2, error_cb=ignore)


def independently(stack, work):
    """Run ``await work(nc, js)`` on a connection that is not made by the code under test."""
    async def main():
        nc = await independent_connect(stack)
        try:
            return await work(nc, nc.jetstream(timeout=10))
        finally:
            await nc.close()
    return asyncio.run(main())


@pytest.fixture
def streams(stack):
    """Fresh stream/subject names; every stream named here is deleted afterwards."""
    created = []

    def new():
        tag = uuid.uuid4().hex[:10]
        names = {'stream': 'AUDIT_T_%s' % tag.upper(), 'subject': 'audit.test.%s' % tag}
        created.append(names['stream'])
        return names

    yield new

    async def cleanup(_nc, js):
        # a JetStream API request may go unanswered while the meta group elects a leader (seen on a busy machine):
        # asked again until it is answered, for at most a minute
        deadline = time.monotonic() + 60
        for name in created:
            while True:
                try:
                    await js.delete_stream(name)
                except NotFoundError:
                    pass
                except NatsTimeoutError:
                    if time.monotonic() < deadline:
                        continue
                    raise
                break
    independently(stack, cleanup)


def stored(stack, stream):
    """Every stored message of ``stream`` as (seq, headers, record dict or None)."""
    async def read(_nc, js):
        info = await js.stream_info(stream)
        out = []
        for seq in range(1, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                out.append((seq, {}, None))
                continue
            out.append((seq, dict(msg.headers or {}), json.loads(msg.data)))
        return info, out
    return independently(stack, read)


def params(stack, openbao_params, nats_params, names, **extra):
    p = {'nats': nats_params, 'openbao': openbao_params, 'stream': names['stream'], 'subject': names['subject'],
         'transit_mount': stack['pki']['transit_mount'], 'transit_key': stack['pki']['transit_key'],
         'epoch': 100, 'generation': 1, 'bundle_sha256': 'ab' * 32,
         'reloads': [{'cluster': 'local', 'name': 'nats-%d' % i, 'ok': True, 'reload_ms': 10 + i} for i in range(3)]}
    p.update(extra)
    return p


def transit_public_pems(bao_client, stack):
    data = bao_client.secrets.transit.read_key(name=stack['pki']['transit_key'], mount_point=stack['pki']['transit_mount'])['data']
    return {int(v): info['public_key'] for v, info in data['keys'].items()}


def verify_independently(record, pems):
    """Check hash and signature of a record with cryptography and hashlib only."""
    import hashlib
    body = {k: v for k, v in record.items() if k not in ('hash', 'signature')}
    data = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
    assert hashlib.sha256(data).hexdigest() == record['hash']
    _vault, version, sig = record['signature'].split(':')
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(pems[int(version[1:])]))
    key.verify(base64.b64decode(sig), data)


def stack_file(stack, tmp_path):
    path = tmp_path / 'stack.json'
    path.write_text(json.dumps(stack))
    return path


def ca_audit(*args):
    return subprocess.run([sys.executable, str(CA_AUDIT), *args], capture_output=True, text=True, timeout=240, check=False)


def build_chain(run_module, stack, openbao_params, nats_params, names, count, **extra):
    records = []
    for i in range(count):
        result = run_module('audit_record', params(stack, openbao_params, nats_params, names, epoch=100 + i, generation=1 + i,
                                                   kind='rotation' if i % 2 == 0 else 'rollback', **extra))
        assert result.get('changed') and not result.get('failed'), result
        records.append(result['record'])
    return records


# ----------------------------------------------------------------------------- module
def test_check_mode_then_append_then_idempotent(run_module, stack, openbao_params, nats_params, bao_client, streams):
    names = streams()
    p = params(stack, openbao_params, nats_params, names, replicas=3)

    check = run_module('audit_record', p, check_mode=True)
    assert check['changed'] and not check.get('failed'), check
    assert check['stream_action'] == 'created' and check['stream_seq'] is None
    assert check['record']['seq'] == 1 and check['record']['prev_hash'] == '0' * 64

    async def exists(_nc, js):
        try:
            await js.stream_info(names['stream'])
            return True
        except NotFoundError:
            return False
    assert not independently(stack, exists)  # check mode created nothing

    first = run_module('audit_record', p)
    assert first['changed'] and first['stream_action'] == 'created' and first['stream_seq'] == 1, first
    assert first['msg_id'] == 'audit-1-rotation'
    info, messages = stored(stack, names['stream'])
    assert info.config.deny_delete and info.config.deny_purge and info.config.num_replicas == 3
    assert len(messages) == 1
    seq, headers, record = messages[0]
    assert headers['Nats-Msg-Id'] == 'audit-1-rotation'
    assert record == first['record']
    assert record['reloads'][2] == {'cluster': 'local', 'name': 'nats-2', 'ok': True, 'reload_ms': 12, 'error': None}
    verify_independently(record, transit_public_pems(bao_client, stack))

    again = run_module('audit_record', p)
    assert not again['changed'] and again['duplicate'] and again['stream_seq'] == 1, again
    assert again['record'] == record
    again_check = run_module('audit_record', p, check_mode=True)
    assert not again_check['changed']

    second = run_module('audit_record', params(stack, openbao_params, nats_params, names, generation=2, epoch=101,
                                               kind='rollback'))
    assert second['changed'] and second['stream_seq'] == 2
    assert second['record']['seq'] == 2 and second['record']['prev_hash'] == record['hash']
    assert len(stored(stack, names['stream'])[1]) == 2

    # an older generation after a newer one is refused, a recorded one is found behind the tail
    older = run_module('audit_record', params(stack, openbao_params, nats_params, names, generation=1, kind='rollback'))
    assert older['failed'] and older['kind'] == 'chain' and 'generation' in older['msg']
    found = run_module('audit_record', p)
    assert not found['changed'] and found['stream_seq'] == 1


def test_fields_from_a_rotation_report(run_module, stack, openbao_params, nats_params, streams):
    names = streams()
    report = {'epoch': 7, 'generation': 3, 'bundle_sha256': 'CD' * 32, 'ok': True,
              'clusters': {'east': {'ok': False, 'reloaded': True,
                                    'servers': [{'name': 'n0', 'ok': True, 'reload_ms': 5, 'error': None},
                                                {'name': 'n1', 'ok': False, 'reload_ms': None, 'error': 'no reload'}]}}}
    p = {'nats': nats_params, 'openbao': openbao_params, 'stream': names['stream'], 'subject': names['subject'],
         'transit_key': stack['pki']['transit_key'], 'report': report, 'at': '2025-01-01T00:00:00Z'}
    result = run_module('audit_record', p)
    assert result['changed'], result
    record = stored(stack, names['stream'])[1][0][2]
    assert (record['epoch'], record['generation'], record['bundle_sha256'], record['at']) == (7, 3, 'cd' * 32, '2025-01-01T00:00:00Z')
    assert record['reloads'] == [{'cluster': 'east', 'name': 'n0', 'ok': True, 'reload_ms': 5, 'error': None},
                                 {'cluster': 'east', 'name': 'n1', 'ok': False, 'reload_ms': None, 'error': 'no reload'}]
    missing = run_module('audit_record', dict(p, report={'epoch': 1}))
    assert missing['failed'] and 'generation is required' in missing['msg']


def test_missing_stream_without_ensure_and_bad_options(run_module, stack, openbao_params, nats_params, streams):
    names = streams()
    result = run_module('audit_record', params(stack, openbao_params, nats_params, names, ensure_stream=False))
    assert result['failed'] and 'does not exist' in result['msg']
    bad = run_module('audit_record', params(stack, openbao_params, nats_params, names, bundle_sha256='nothex'))
    assert bad['failed'] and 'bundle_sha256' in bad['msg']
    bad = run_module('audit_record', params(stack, openbao_params, nats_params, names, transit_key='no-such-key'))
    assert bad['failed'] and 'no-such-key' in bad['msg']


def test_concurrent_writers_never_fork_the_chain(stack, bao_client, nats_params, streams):
    names = streams()
    signer = transit_signer(bao_client, stack['pki']['transit_mount'], stack['pki']['transit_key'])

    async def writer(fields):
        client = await nats_client.connect(nats_params)
        try:
            return await A.append(client, names['stream'], names['subject'], fields, signer, nats_jetstream.Deadline(120))
        finally:
            await nats_client.close(client)

    async def main():
        client = await nats_client.connect(nats_params)
        try:
            await A.ensure_stream(client, names['stream'], names['subject'], nats_jetstream.Deadline(60))
        finally:
            await nats_client.close(client)
        jobs = []
        for generation in (1, 2):
            for kind in ('rotation', 'rollback'):
                fields = {'epoch': 5, 'generation': generation, 'kind': kind, 'bundle_sha256': 'ef' * 32, 'reloads': []}
                jobs += [writer(dict(fields)) for _copy in range(3)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    # writers of generation 1 that lost the race to generation 2 are refused (generations only move forward);
    # every other writer either appended its record or found it already there
    appended = [r for r in results if isinstance(r, dict) and r['changed']]
    for r in results:
        if isinstance(r, Exception):
            assert isinstance(r, A.AuditError) and r.kind == 'chain', r
    _info, messages = stored(stack, names['stream'])
    records = [m[2] for m in messages]
    assert all(r is not None for r in records)
    assert [r['seq'] for r in records] == list(range(1, len(records) + 1))
    ids = [A.msg_id(r['generation'], r['kind']) for r in records]
    assert len(ids) == len(set(ids))  # each record once
    assert {r['msg_id'] for r in appended} == set(ids)
    for prev, cur in zip(records, records[1:]):
        assert cur['prev_hash'] == prev['hash']
    assert {'audit-2-rotation', 'audit-2-rollback'} <= set(ids)


# ----------------------------------------------------------------------------- ca-audit verify
def test_verify_intact_chain_with_transit_and_pinned_key(run_module, stack, openbao_params, nats_params, streams, tmp_path):
    names = streams()
    records = build_chain(run_module, stack, openbao_params, nats_params, names, 3)
    sf = stack_file(stack, tmp_path)
    common = ['--stack', str(sf), '--stream', names['stream'], '--subject', names['subject']]

    result = ca_audit('verify', *common, '--transit')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'OK' in result.stdout and records[-1]['hash'] in result.stdout

    pinned = tmp_path / 'audit-keys.json'
    result = ca_audit('public-key', '--stack', str(sf), '--out', str(pinned))
    assert result.returncode == 0, result.stderr
    keys = json.loads(pinned.read_text())
    assert keys and all(v.startswith('-----BEGIN PUBLIC KEY-----') for v in keys.values())
    result = ca_audit('verify', *common, '--public-key-file', str(pinned), '--json', '--expect-last-hash', records[-1]['hash'])
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report['ok'] and report['records'] == 3 and report['last']['seq'] == 3 and report['signatures_checked']

    # a single PEM file pins the key for every version
    pem_file = tmp_path / 'audit-key.pem'
    pem_file.write_text(next(iter(keys.values())))
    assert ca_audit('verify', *common, '--public-key-file', str(pem_file)).returncode == 0

    # a different key does not verify
    from cryptography.hazmat.primitives.asymmetric import ed25519
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    pem_file.write_text(other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    result = ca_audit('verify', *common, '--public-key-file', str(pem_file), '--json')
    assert result.returncode == 1
    assert json.loads(result.stdout)['first_broken'] == {'stream_seq': 1, 'seq': 1, 'problem': 'signature',
                                                         'message': 'the signature does not verify with key version 1'}

    shown = ca_audit('show', '--stack', str(sf), '--stream', names['stream'], '--json')
    assert shown.returncode == 0, shown.stderr
    assert [item['record']['hash'] for item in json.loads(shown.stdout)] == [r['hash'] for r in records]
    table = ca_audit('show', '--stack', str(sf), '--stream', names['stream'])
    assert table.returncode == 0 and 'rollback' in table.stdout


def _copy_stream(stack, source, target, change):
    """Publish the messages of ``source`` again, in order, into a new unprotected stream ``target``,
    after ``change(index, record)`` (a tampering attacker with JetStream access)."""
    _info, messages = stored(stack, source['stream'])

    async def copy(nc, js):
        await js.add_stream(name=target['stream'], subjects=[target['subject']], storage='file')
        for index, (_seq, headers, record) in enumerate(messages):
            record = change(index, dict(record))
            if record is None:
                continue
            data = json.dumps(record, sort_keys=True, separators=(',', ':')).encode()
            await js.publish(target['subject'], data, headers={'Nats-Msg-Id': headers['Nats-Msg-Id']})
    independently(stack, copy)


def test_verify_catches_a_modified_record(run_module, stack, openbao_params, nats_params, streams, tmp_path):
    names = streams()
    build_chain(run_module, stack, openbao_params, nats_params, names, 4)
    sf = stack_file(stack, tmp_path)

    tampered = streams()

    def change(index, record):
        if index == 1:
            record['reloads'][0]['ok'] = False  # hide a failed reload... but the hash no longer matches
        return record
    _copy_stream(stack, names, tampered, change)
    result = ca_audit('verify', '--stack', str(sf), '--stream', tampered['stream'], '--subject', tampered['subject'],
                      '--transit', '--json')
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report['first_broken']['stream_seq'] == 2 and report['first_broken']['seq'] == 2
    assert report['first_broken']['problem'] == 'hash'

    # the attacker recomputes the hash: the signature (and the next record's link) give it away
    rehashed = streams()

    def rehash(index, record):
        if index == 1:
            record['epoch'] += 1
            record['hash'] = A.record_hash(record)
        return record
    _copy_stream(stack, names, rehashed, rehash)
    result = ca_audit('verify', '--stack', str(sf), '--stream', rehashed['stream'], '--subject', rehashed['subject'], '--transit')
    assert result.returncode == 1
    assert 'first broken record at stream sequence 2 (record 2): signature' in result.stdout
    assert 'stream sequence 3 (record 3): prev-hash' in result.stdout

    # an unchanged copy verifies: the test harness itself does not break the chain
    clean = streams()
    _copy_stream(stack, names, clean, lambda index, record: record)
    assert ca_audit('verify', '--stack', str(sf), '--stream', clean['stream'], '--subject', clean['subject'],
                    '--transit').returncode == 0


def test_verify_catches_a_removed_record(run_module, stack, openbao_params, nats_params, streams, tmp_path):
    names = streams()
    records = build_chain(run_module, stack, openbao_params, nats_params, names, 4, protect_stream=False)
    sf = stack_file(stack, tmp_path)
    common = ['--stack', str(sf), '--stream', names['stream'], '--subject', names['subject'], '--transit']
    assert ca_audit('verify', *common).returncode == 0

    async def delete(_nc, js, seq):
        return await js.delete_msg(names['stream'], seq)
    independently(stack, lambda nc, js: delete(nc, js, 2))
    result = ca_audit('verify', *common, '--json')
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report['first_broken'] == {'stream_seq': 2, 'seq': None, 'problem': 'missing',
                                      'message': 'stream sequence 2 has no message: the record was removed'}

    # the module refuses to extend a chain whose last record was removed
    independently(stack, lambda nc, js: delete(nc, js, 4))
    result = ca_audit('verify', *common, '--json')
    assert result.returncode == 1
    assert any(p['stream_seq'] == 4 and p['problem'] == 'missing' for p in json.loads(result.stdout)['problems'])
    refused = run_module('audit_record', params(stack, openbao_params, nats_params, names, generation=9, epoch=120))
    assert refused['failed'] and refused['kind'] == 'chain' and 'missing' in refused['msg']
    assert records  # for the record


def test_protected_stream_refuses_deletes(run_module, stack, openbao_params, nats_params, streams):
    names = streams()
    build_chain(run_module, stack, openbao_params, nats_params, names, 1)

    async def delete(_nc, js):
        try:
            await js.delete_msg(names['stream'], 1)
        except Exception as exc:  # nats-py raises APIError
            return str(exc)
        return None
    error = independently(stack, delete)
    assert error is not None and 'not permitted' in error
    assert stored(stack, names['stream'])[1][0][2] is not None


def test_verify_usage_errors(stack, tmp_path, streams):
    names = streams()
    sf = stack_file(stack, tmp_path)
    result = ca_audit('verify', '--stack', str(sf), '--stream', names['stream'], '--transit')
    assert result.returncode == 2 and 'does not exist' in result.stderr
    result = ca_audit('verify', '--stack', str(sf), '--stream', names['stream'], '--public-key-file', str(tmp_path / 'nope'))
    assert result.returncode == 2
    (tmp_path / 'junk.pem').write_text('hello')
    result = ca_audit('verify', '--stack', str(sf), '--stream', names['stream'], '--public-key-file', str(tmp_path / 'junk.pem'))
    assert result.returncode == 2 and 'neither' in result.stderr
    result = ca_audit('verify', '--stack', str(sf), '--stream', names['stream'])
    assert result.returncode == 2  # --transit or --public-key-file is required

# -*- coding: utf-8 -*-
"""jetstream_publish and the signed announcement against the session stack: a real 3-node mTLS NATS cluster
with JetStream (R3 streams) and a real OpenBao transit key (ed25519).

Every test uses its own stream and subject. State is read back independently with nats-py's own JetStream
API (not with the code under test). The one destructive test (a stopped server) pauses the stream
leader of the SHARED session cluster with SIGSTOP and always resumes it with SIGCONT in ``finally``,
then waits until every server's ``/healthz`` is OK again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.js.errors import NotFoundError

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import MessageVerificationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import transit as bao_transit

pytestmark = pytest.mark.timeout(300)
UTC = dt.timezone.utc


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def nats_params(stack):
    auth = stack['nats_auth']
    return {
        'servers': [s['url'] for s in stack['clusters'][0]['servers']],
        'ca_file': auth['ca_file'], 'cert_file': auth['client_cert_file'], 'key_file': auth['client_key_file'],
        'user': auth['app_user'], 'password_file': auth['app_password_file'],
    }


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:10]
    return {'stream': 'T_%s' % tag.upper(), 'subject': 'test.%s.ca-cert' % tag}


def _independent_tls(stack):
    auth = stack['nats_auth']
    ctx = ssl.create_default_context(cafile=auth['ca_file'])
    ctx.load_cert_chain(auth['client_cert_file'], auth['client_key_file'])
    return ctx


async def _independent_connect(stack):
    auth = stack['nats_auth']

    async def ignore(_err):
        return None

    return await nats.connect(
        servers=[s['url'] for s in stack['clusters'][0]['servers']], tls=_independent_tls(stack), user=auth['app_user'],
        password=Path(auth['app_password_file']).read_text(encoding='utf-8').strip(), connect_timeout=5,
        max_reconnect_attempts=2, error_cb=ignore)


def read_stream(stack, stream, subject=None):
    """``(StreamInfo or None, last message on subject or None)`` read with nats-py's own JetStream API."""
    async def read():
        nc = await _independent_connect(stack)
        try:
            js = nc.jetstream(timeout=10)
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                return None, None
            last = None
            if subject and info.state.messages:
                try:
                    last = await js.get_last_msg(stream, subject)
                except NotFoundError:
                    last = None
            return info, last
        finally:
            await nc.close()

    return asyncio.run(read())


def publish(run_module, nats_params, names, check_mode=False, diff=False, **params):
    args = {'nats': nats_params, 'stream': dict({'name': names['stream'], 'replicas': 3}, **params.pop('stream', {})),
            'subject': names['subject']}
    args.update(params)
    return run_module('jetstream_publish', args, check_mode=check_mode, diff=diff)


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


# ----------------------------------------------------------------------------- stream create / publish / check mode
def test_check_mode_then_publish_then_idempotent(stack, run_module, nats_params, names):
    payload = {'hello': 'wörld', 'n': 1}
    check = ok(publish(run_module, nats_params, names, check_mode=True, diff=True, payload=payload, msg_id='m-1'))
    assert check['changed'] and check['stream_action'] == 'created' and check['would_publish'] and not check['published']
    assert check['seq'] is None and check['stream_config']['replicas'] == 3 and check['diff']['after']['subjects'] == [names['subject']]
    assert read_stream(stack, names['stream']) == (None, None), 'check mode created the stream'

    real = ok(publish(run_module, nats_params, names, payload=payload, msg_id='m-1'))
    assert real['changed'] and real['published'] and not real['duplicate'] and real['seq'] == 1
    assert real['stream'] == names['stream'] and real['stream_action'] == 'created'
    info, last = read_stream(stack, names['stream'], names['subject'])
    assert info.config.num_replicas == 3 and info.config.storage == 'file'
    assert info.config.duplicate_window >= 120 and 0 < info.config.max_msgs_per_subject <= 100
    assert info.state.messages == 1
    assert last.data == _message.canonical_json(payload) and last.headers['Nats-Msg-Id'] == 'm-1'

    again = ok(publish(run_module, nats_params, names, payload=payload, msg_id='m-1'))
    assert not again['changed'] and again['duplicate'] and not again['published'] and again['seq'] == 1
    assert again['stream_action'] == 'unchanged'
    assert read_stream(stack, names['stream'])[0].state.messages == 1

    # check mode for a new message: predicted, not stored
    check = ok(publish(run_module, nats_params, names, check_mode=True, payload='raw text', msg_id='m-2'))
    assert check['changed'] and check['would_publish'] and check['stream_action'] == 'unchanged'
    assert read_stream(stack, names['stream'])[0].state.messages == 1


def test_same_message_id_twice_is_stored_once(stack, run_module, nats_params, names):
    first = ok(publish(run_module, nats_params, names, payload='one', msg_id='dup-1', skip_if_unchanged=False))
    second = ok(publish(run_module, nats_params, names, payload='one', msg_id='dup-1', skip_if_unchanged=False))
    assert first['published'] and not first['duplicate']
    assert second['duplicate'] and not second['published'] and not second['changed'] and second['seq'] == first['seq']
    # the server's window, not the last-message check, caught it: another id in between
    ok(publish(run_module, nats_params, names, payload='two', msg_id='dup-2'))
    third = ok(publish(run_module, nats_params, names, payload='one', msg_id='dup-1'))
    assert third['duplicate'] and not third['changed'] and third['seq'] == first['seq']
    info, last = read_stream(stack, names['stream'], names['subject'])
    assert info.state.messages == 2 and last.data == b'two'


def test_message_without_id_is_published_each_time(stack, run_module, nats_params, names):
    for _round in range(2):
        result = ok(publish(run_module, nats_params, names, payload={'x': 1}))
        assert result['changed'] and result['published'] and result['msg_id'] is None
    assert read_stream(stack, names['stream'])[0].state.messages == 2


# ----------------------------------------------------------------------------- stream update / refusal
def test_stream_update_check_mode_idempotence_and_refusals(stack, run_module, nats_params, names):
    base = {'max_msgs_per_subject': 5, 'duplicate_window': '2m'}
    ok(publish(run_module, nats_params, names, payload='a', msg_id='u-1', stream=base))
    wanted = {'max_msgs_per_subject': 7, 'duplicate_window': '3m', 'description': 'CA bundles'}

    check = ok(publish(run_module, nats_params, names, check_mode=True, diff=True, payload='a', msg_id='u-1', stream=wanted))
    assert check['changed'] and check['stream_action'] == 'updated' and not check['would_publish']
    assert check['stream_changes'] == {'description': {'before': None, 'after': 'CA bundles'},
                                       'duplicate_window': {'before': 120, 'after': 180},
                                       'max_msgs_per_subject': {'before': 5, 'after': 7}}
    assert check['diff']['before']['max_msgs_per_subject'] == 5 and check['diff']['after']['max_msgs_per_subject'] == 7
    info = read_stream(stack, names['stream'])[0]
    assert info.config.max_msgs_per_subject == 5 and info.config.duplicate_window == 120

    real = ok(publish(run_module, nats_params, names, payload='a', msg_id='u-1', stream=wanted))
    assert real['changed'] and real['stream_action'] == 'updated' and not real['published']
    info = read_stream(stack, names['stream'])[0]
    assert info.config.max_msgs_per_subject == 7 and info.config.duplicate_window == 180
    assert info.config.description == 'CA bundles' and info.config.num_replicas == 3

    again = ok(publish(run_module, nats_params, names, payload='a', msg_id='u-1', stream=wanted))
    assert not again['changed'] and again['stream_action'] == 'unchanged' and again['stream_changes'] == {}

    # options left out are not compared (nothing is reset to a default)
    loose = ok(publish(run_module, nats_params, names, payload='a', msg_id='u-1', stream={'replicas': None}))
    assert loose['stream_action'] == 'unchanged' and loose['stream_config']['max_msgs_per_subject'] == 7

    refused = publish(run_module, nats_params, names, payload='a', msg_id='u-1', stream={'storage': 'memory'})
    assert refused['failed'] and refused['kind'] == 'stream' and refused['option'] == 'stream.storage'
    assert 'storage file -> memory' in refused['msg'] and names['stream'] in refused['msg']
    refused = publish(run_module, nats_params, names, payload='a', msg_id='u-1', stream={'retention': 'workqueue'})
    assert refused['failed'] and 'retention limits -> workqueue' in refused['msg']
    refused = publish(run_module, nats_params, names, payload='a', msg_id='u-1', stream={'replicas': 5})
    assert refused['failed'] and refused['kind'] == 'stream' and 'NATS refused to update stream' in refused['msg']
    assert 'replicas 3 -> 5' in refused['msg']
    info = read_stream(stack, names['stream'])[0]
    assert info.config.storage == 'file' and info.config.num_replicas == 3 and info.state.messages == 1


def test_ensure_stream_false_needs_an_existing_stream(stack, run_module, nats_params, names):
    missing = publish(run_module, nats_params, names, payload='x', ensure_stream=False)
    assert missing['failed'] and 'does not exist' in missing['msg']
    assert read_stream(stack, names['stream']) == (None, None)
    ok(publish(run_module, nats_params, names, payload='x', msg_id='e-1'))
    other = publish(run_module, nats_params, names, payload='x', ensure_stream=False, subject='elsewhere.x')
    assert other['failed'] and 'not captured by stream' in other['msg'] and other['option'] == 'subject'


# ----------------------------------------------------------------------------- sizes
def test_message_over_max_payload_is_refused_before_sending(stack, run_module, nats_params, names):
    first = ok(publish(run_module, nats_params, names, payload='small', msg_id='s-1'))
    max_payload = first['max_payload']
    monitor = stack['clusters'][0]['servers'][0]['monitor_url']
    with urllib.request.urlopen(monitor + '/varz', timeout=10) as resp:  # nosec - loopback
        assert json.load(resp)['max_payload'] == max_payload

    big = publish(run_module, nats_params, names, payload='x' * max_payload, msg_id='s-2')
    assert big['failed'] and big['kind'] == 'payload'
    assert 'max_payload of %d bytes' % max_payload in big['msg'] and 'nothing was published' in big['msg']
    # just under the payload limit but over it with the headers: refused too
    edge = publish(run_module, nats_params, names, payload='x' * (max_payload - 10), msg_id='s-3')
    assert edge['failed'] and edge['kind'] == 'payload'
    info, last = read_stream(stack, names['stream'], names['subject'])
    assert info.state.messages == 1 and last.data == b'small'


# ----------------------------------------------------------------------------- TLS and auth failures
@pytest.fixture(scope='module')
def foreign_ca(tmp_path_factory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'Some Other CA')])
    now = dt.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp('foreign') / 'ca.pem'
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.mark.parametrize('case', ['wrong_ca', 'no_client_cert', 'bad_password', 'no_credentials'])
def test_tls_and_auth_failures_are_clear_and_fast(stack, run_module, nats_params, names, foreign_ca, case):
    params = dict(nats_params)
    if case == 'wrong_ca':
        params['ca_file'] = foreign_ca
    elif case == 'no_client_cert':
        del params['cert_file'], params['key_file']
    elif case == 'bad_password':
        params.pop('password_file')
        params['password'] = 'definitely-wrong'
    else:
        del params['user'], params['password_file']
    result = publish(run_module, params, names, payload='x', msg_id='f-1')
    assert result['failed']
    expected_kind = 'tls' if case in ('wrong_ca', 'no_client_cert') else 'auth'
    assert result['kind'] == expected_kind, result['msg']
    # every server was tried exactly once and is named with its own problem
    assert sorted(f['server'] for f in result['failures']) == sorted(nats_params['servers'])
    assert all(f['kind'] == expected_kind for f in result['failures']), result['failures']
    text = {'wrong_ca': 'server certificate is not trusted', 'no_client_cert': 'client certificate',
            'bad_password': 'authorization violation', 'no_credentials': 'none were given'}[case]
    assert text in result['msg'] and all(s in result['msg'] for s in nats_params['servers'])
    assert 'definitely-wrong' not in json.dumps(result)
    assert read_stream(stack, names['stream']) == (None, None)


# ----------------------------------------------------------------------------- the signed announcement
def _announcement(stack, generation, epoch=None):
    bundle = Path(stack['pki']['bundle_file']).read_text(encoding='utf-8')
    epoch = stack['pki'].get('bootstrap_epoch', 0) if epoch is None else epoch
    now = dt.datetime.now(UTC).replace(microsecond=0)
    return {'epoch': epoch, 'generation': generation, 'bundle_pem': bundle,
            'secret_locations': ['openbao/nats-ca-bundle-epoch-%d' % epoch, 'nats/nats-ca-tls'],
            'kv_location': 'secret/ca-bundles/epoch-%d' % epoch,
            'valid_from': now.isoformat(), 'valid_until': (now + dt.timedelta(hours=6)).isoformat()}


def test_signed_announcement_round_trip_and_tampering(stack, run_module, nats_params, openbao_params, bao_client, names):
    transit = (stack['pki']['transit_mount'], stack['pki']['transit_key'])
    params = {'openbao': openbao_params, 'transit_mount': transit[0], 'transit_key': transit[1],
              'stream': {'duplicate_window': '2m', 'max_msgs_per_subject': 10}}

    check = ok(publish(run_module, nats_params, names, check_mode=True, announcement=_announcement(stack, 1), **params))
    assert check['changed'] and check['would_publish'] and check['signature_key_version'] >= 1
    assert read_stream(stack, names['stream']) == (None, None)

    first = ok(publish(run_module, nats_params, names, announcement=_announcement(stack, 1), **params))
    assert first['published'] and first['announcement']['generation'] == 1
    assert first['msg_id'] == 'ca-bundle-1-%s' % first['announcement']['bundle_sha256'][:16]

    info, last = read_stream(stack, names['stream'], names['subject'])
    assert info.config.num_replicas == 3 and info.state.messages == 1
    assert last.headers['Nats-Msg-Id'] == first['msg_id']
    message = bao_transit.verify_with_transit(bao_client, transit[0], transit[1], last.data)  # exactly what clients do
    assert message['signature'] == first['announcement']['signature']
    assert message['bundle_pem'] == Path(stack['pki']['bundle_file']).read_text(encoding='utf-8')
    assert _message.msg_id(message) == first['msg_id']
    assert last.data == _message.canonical_json(message)

    # a later run (new created_at) of the same generation is a no-op
    again = ok(publish(run_module, nats_params, names, announcement=_announcement(stack, 1), **params))
    assert not again['changed'] and again['duplicate'] and again['seq'] == first['seq']

    # tampering with any field of the real, transit-signed message breaks verification
    keys = bao_transit.transit_public_keys(bao_client, *transit)
    for field in _message.SIGNED_FIELDS:
        tampered = copy.deepcopy(message)
        value = tampered[field]
        if isinstance(value, bool) or value is None:
            tampered[field] = 'x'
        elif isinstance(value, int):
            tampered[field] = value + 1
        elif isinstance(value, str):
            tampered[field] = value.replace('0', '1', 1) if '0' in value else value + ' '
        elif isinstance(value, list):
            tampered[field] = value[:-1] if value else ['x']
        assert tampered[field] != message[field], field
        with pytest.raises(MessageVerificationError) as err:
            _message.verify_announcement(_message.canonical_json(tampered), keys)
        assert err.value.reason == 'bad-signature', (field, err.value)
    unsigned = {k: v for k, v in message.items() if k != 'signature'}
    with pytest.raises(MessageVerificationError, match='no signature'):
        _message.verify_announcement(unsigned, keys)

    # a newer generation is published; clients that applied generation 1 accept it
    second = ok(publish(run_module, nats_params, names, announcement=dict(_announcement(stack, 2), kind='rollback'), **params))
    assert second['published'] and second['seq'] == first['seq'] + 1
    newest = _message.verify_announcement(read_stream(stack, names['stream'], names['subject'])[1].data, keys, newer_than=1,
                                          now=dt.datetime.now(UTC))
    assert newest['generation'] == 2 and newest['kind'] == 'rollback'


def test_signing_a_non_announcement_is_refused(stack, run_module, nats_params, openbao_params, names):
    result = publish(run_module, nats_params, names, payload={'schema': 'other/v1'}, sign=True, openbao=openbao_params)
    assert result['failed'] and 'needs an announcement' in result['msg']
    assert read_stream(stack, names['stream']) == (None, None)


# ----------------------------------------------------------------------------- a stopped server
def _healthy(server):
    try:
        with urllib.request.urlopen(server['monitor_url'] + '/healthz', timeout=5) as resp:  # nosec - loopback
            return resp.status == 200
    except OSError:
        return False


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))
        time.sleep(0.2)


@pytest.mark.slow
def test_publish_succeeds_with_the_stream_leader_stopped(stack, run_module, nats_params, names):
    """SIGSTOP the R3 stream's leader (a hung server: TCP still accepts, nothing answers), publish, SIGCONT."""
    ok(publish(run_module, nats_params, names, payload='before', msg_id='h-1'))
    info = read_stream(stack, names['stream'])[0]
    servers = stack['clusters'][0]['servers']
    leader = next(s for s in servers if s['name'] == info.cluster.leader)
    os.kill(leader['pid'], signal.SIGSTOP)
    try:
        # the hung server alone: a clear timeout after connect_timeout, no endless loop
        alone = publish(run_module, dict(nats_params, servers=[leader['url']], connect_timeout=2), names, payload='x', msg_id='h-x')
        assert alone['failed'] and alone['kind'] == 'timeout' and leader['url'] in alone['msg']
        # the cluster: the two others elect a new leader; the publish retries (same msg id) until it is stored
        result = ok(publish(run_module, nats_params, names, payload='during', msg_id='h-2', timeout=120))
        assert result['published'] and result['seq'] == 2, result
        again = ok(publish(run_module, nats_params, names, payload='during', msg_id='h-2', timeout=120))
        assert again['duplicate'] and not again['changed']
    finally:
        os.kill(leader['pid'], signal.SIGCONT)
        _wait(lambda: all(_healthy(s) for s in servers), 180, 'every NATS server to be healthy again')
    info, last = read_stream(stack, names['stream'], names['subject'])
    assert info.state.messages == 2 and last.data == b'during'
    with contextlib.suppress(Exception):
        assert info.cluster.leader  # a leader exists again


# ----------------------------------------------------------------------------- token and NKey authentication
def _free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@contextlib.contextmanager
def small_server(tmp_path, auth_block):
    """One plain (no TLS) nats-server with JetStream and the given authentication, stopped by PID."""
    port, monitor = _free_port(), _free_port()
    conf = tmp_path / 'nats.conf'
    conf.write_text('listen: "127.0.0.1:%d"\nhttp: "127.0.0.1:%d"\njetstream { store_dir: "%s" }\n%s\n'
                    % (port, monitor, tmp_path / 'js', auth_block), encoding='utf-8')
    with open(tmp_path / 'nats.log', 'ab') as log:
        proc = subprocess.Popen([shutil.which('nats-server') or 'nats-server', '-c', str(conf)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
    try:
        _wait(lambda: _healthy({'monitor_url': 'http://127.0.0.1:%d' % monitor}), 60, 'the small nats-server')
        yield 'nats://127.0.0.1:%d' % port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def test_token_authentication(tmp_path, run_module, names):
    with small_server(tmp_path, 'authorization { token: "s3cr3t-token" }') as url:
        good = ok(publish(run_module, {'servers': [url], 'token': 's3cr3t-token'}, names, payload='t', msg_id='t-1',
                          stream={'replicas': 1}))
        assert good['published'] and good['stream_config']['replicas'] == 1
        bad = publish(run_module, {'servers': [url], 'token': 'wrong-token'}, names, payload='t', stream={'replicas': 1})
        assert bad['failed'] and bad['kind'] == 'auth' and url in bad['msg']
        assert 'wrong-token' not in json.dumps(bad) and 's3cr3t-token' not in json.dumps(good)


def test_nkey_seed_authentication(tmp_path, run_module, names):
    nkeys = pytest.importorskip('nkeys')
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    other = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    (tmp_path / 'user.nk').write_bytes(seed + b'\n')
    (tmp_path / 'other.nk').write_bytes(other + b'\n')
    block = 'accounts { APP { jetstream: enabled, users: [ { nkey: "%s" } ] } }' % public
    with small_server(tmp_path, block) as url:
        good = ok(publish(run_module, {'servers': [url], 'nkey_seed_file': str(tmp_path / 'user.nk')}, names, payload='n',
                          msg_id='n-1', stream={'replicas': 1}))
        assert good['published']
        bad = publish(run_module, {'servers': [url], 'nkey_seed_file': str(tmp_path / 'other.nk')}, names, payload='n',
                      stream={'replicas': 1})
        assert bad['failed'] and bad['kind'] == 'auth'


def _jwt(claims, signer):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b'=').decode()

    head = b64(json.dumps({'typ': 'JWT', 'alg': 'ed25519-nkey'}).encode())
    body = b64(json.dumps(claims).encode())
    return '%s.%s.%s' % (head, body, b64(signer.sign(('%s.%s' % (head, body)).encode())))


def test_creds_file_authentication(tmp_path, run_module, names):
    """Decentralized (JWT) auth: an operator, an account with JetStream, a user creds file - made with nkeys."""
    nkeys = pytest.importorskip('nkeys')

    def pair(prefix):
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        key = nkeys.from_seed(bytearray(seed))
        return seed.decode(), key, key.public_key.decode()

    def claims(iss, sub, name, nats_claims):
        return {'jti': uuid.uuid4().hex, 'iat': int(time.time()), 'iss': iss, 'sub': sub, 'name': name, 'nats': nats_claims}

    unlimited = {'subs': -1, 'data': -1, 'payload': -1, 'imports': -1, 'exports': -1, 'wildcards': True, 'conn': -1, 'leaf': -1}
    _op_seed, op_key, op_pub = pair(nkeys.PREFIX_BYTE_OPERATOR)
    _acc_seed, acc_key, acc_pub = pair(nkeys.PREFIX_BYTE_ACCOUNT)
    _sys_seed, _sys_key, sys_pub = pair(nkeys.PREFIX_BYTE_ACCOUNT)
    _rogue_seed, rogue_key, rogue_pub = pair(nkeys.PREFIX_BYTE_ACCOUNT)
    operator = _jwt(claims(op_pub, op_pub, 'OP', {'type': 'operator', 'version': 2, 'system_account': sys_pub}), op_key)
    account = _jwt(claims(op_pub, acc_pub, 'APP', {'type': 'account', 'version': 2, 'limits': dict(
        unlimited, mem_storage=-1, disk_storage=-1, streams=-1, consumer=-1)}), op_key)
    system = _jwt(claims(op_pub, sys_pub, 'SYS', {'type': 'account', 'version': 2, 'limits': unlimited}), op_key)

    def creds(path, account_pub, account_key):
        seed, _key, user_pub = pair(nkeys.PREFIX_BYTE_USER)
        user_claims = {'type': 'user', 'version': 2, 'pub': {}, 'sub': {}, 'subs': -1, 'data': -1, 'payload': -1}
        user = _jwt(claims(account_pub, user_pub, 'publisher', user_claims), account_key)
        path.write_text('-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n'
                        '-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n' % (user, seed), encoding='utf-8')
        return str(path)

    good_creds = creds(tmp_path / 'publisher.creds', acc_pub, acc_key)
    rogue_creds = creds(tmp_path / 'rogue.creds', rogue_pub, rogue_key)  # its account is unknown to the operator
    block = ('operator: "%s"\nsystem_account: "%s"\nresolver: MEMORY\nresolver_preload: {\n  %s: "%s"\n  %s: "%s"\n}'
             % (operator, sys_pub, acc_pub, account, sys_pub, system))
    with small_server(tmp_path, block) as url:
        good = ok(publish(run_module, {'servers': [url], 'creds_file': good_creds}, names, payload='c', msg_id='c-1',
                          stream={'replicas': 1}))
        assert good['published']
        bad = publish(run_module, {'servers': [url], 'creds_file': rogue_creds}, names, payload='c', stream={'replicas': 1})
        assert bad['failed'] and bad['kind'] == 'auth', bad['msg']

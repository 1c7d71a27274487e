# -*- coding: utf-8 -*-
"""module_utils/_nats/ without a NATS server: options, validation, error descriptions, stream config
comparison, header sizes - and connect()'s one-attempt-per-server policy against tiny fake servers on
127.0.0.1 (a silent one, one that refuses the credentials, one that speaks just enough NATS)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl

import pytest
import yaml

from ansible_collections.securetransport.ca_rotation.plugins.doc_fragments.nats import ModuleDocFragment
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import headers as nats_headers
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- option spec vs. documentation
def test_arg_spec_matches_doc_fragment():
    doc = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options']['nats']
    spec = nats_options.NATS_ARG_SPEC['nats']
    assert doc['type'] == spec['type'] == 'dict'
    assert set(doc['suboptions']) == set(spec['options'])
    for name, opt in spec['options'].items():
        documented = doc['suboptions'][name]
        assert documented['type'] == opt['type'], name
        assert documented.get('default') == opt.get('default'), name
        assert documented.get('elements') == opt.get('elements'), name
    secret = {n for n, o in spec['options'].items() if o.get('no_log')}
    assert secret == {'password', 'token'}


def test_conn_params_accepts_full_params_or_sub_dict(monkeypatch):
    monkeypatch.delenv('NATS_URL', raising=False)
    assert nats_options.conn_params({'nats': {'servers': ['a']}})['servers'] == ['a']
    assert nats_options.conn_params({'servers': ['a']})['connect_timeout'] == 5
    monkeypatch.setenv('NATS_URL', 'tls://x:1,tls://y:2')
    assert nats_options.server_list(nats_options.conn_params({})['servers']) == ['tls://x:1', 'tls://y:2']


def test_server_list_splits_and_dedups():
    assert nats_options.server_list(['tls://a:1, tls://b:2', 'tls://a:1', ' ']) == ['tls://a:1', 'tls://b:2']
    assert nats_options.server_list('nats://a:1') == ['nats://a:1']


@pytest.mark.parametrize('params, option, text', [
    ({}, 'servers', 'No NATS server'),
    ({'servers': ['nats://a:1'], 'connect_timeout': 0}, 'connect_timeout', 'positive'),
    ({'servers': ['nats://a:1'], 'token': 't', 'user': 'u', 'password': 'p'}, 'user', 'only one way'),
    ({'servers': ['nats://a:1'], 'password': 'p'}, 'user', 'nats.user is not'),
    ({'servers': ['nats://a:1'], 'user': 'u'}, 'password', 'neither'),
    ({'servers': ['nats://a:1'], 'ca_file': '/nonexistent/ca.pem'}, 'ca_file', 'does not exist'),
    ({'servers': ['nats://a:1'], 'user': 'u', 'password_file': '/nonexistent/pw'}, 'password_file', 'does not exist'),
])
def test_client_options_errors(monkeypatch, params, option, text):
    monkeypatch.delenv('NATS_URL', raising=False)
    with pytest.raises(NatsError) as err:
        nats_options.client_options(params)
    assert err.value.option == option and text in str(err.value) and err.value.kind == 'config'


def test_client_options_password_file_and_tls(tmp_path):
    pw = tmp_path / 'pw'
    pw.write_text('  s3cret\n')
    servers, kwargs = nats_options.client_options({'servers': ['tls://127.0.0.1:4222'], 'user': 'app', 'password_file': str(pw)})
    assert servers == ['tls://127.0.0.1:4222']
    assert kwargs['user'] == 'app' and kwargs['password'] == 's3cret'
    assert isinstance(kwargs['tls'], ssl.SSLContext)  # tls:// gets a verifying context even without ca_file
    assert kwargs['tls'].verify_mode == ssl.CERT_REQUIRED and kwargs['tls'].check_hostname
    plain = nats_options.client_options({'servers': ['nats://127.0.0.1:4222'], 'token': 'x'})[1]
    assert 'tls' not in plain and plain['token'] == 'x'
    empty = tmp_path / 'empty'
    empty.write_text('\n')
    with pytest.raises(NatsError, match='is empty'):
        nats_options.client_options({'servers': ['nats://a:1'], 'user': 'u', 'password_file': str(empty)})


def test_client_options_creds_need_nkeys(tmp_path):
    creds = tmp_path / 'x.creds'
    creds.write_text('creds')
    try:
        import nkeys  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        with pytest.raises(NatsError, match='nkeys'):
            nats_options.client_options({'servers': ['nats://a:1'], 'creds_file': str(creds)})
    else:
        kwargs = nats_options.client_options({'servers': ['nats://a:1'], 'creds_file': str(creds)})[1]
        assert kwargs['user_credentials'] == str(creds)


# ----------------------------------------------------------------------------- error descriptions
def _sslerror(reason):
    err = ssl.SSLError(1, '[SSL: %s] alert' % reason)
    err.reason = reason
    return err


def _verify_error(message):
    err = ssl.SSLCertVerificationError(1, 'certificate verify failed: %s' % message)
    err.verify_message = message
    return err


@pytest.mark.parametrize('exc, kwargs, kind, text', [
    (_verify_error('unable to get local issuer certificate'), {'tls': True}, 'tls', 'partial_chain'),
    (_verify_error("IP address mismatch, certificate is not valid for '10.0.0.1'."), {'tls': True}, 'tls', 'tls_hostname'),
    (_verify_error('certificate has expired'), {'tls': True}, 'tls', 'not trusted (certificate has expired)'),
    (_sslerror('TLSV13_ALERT_CERTIFICATE_REQUIRED'), {'tls': True}, 'tls', 'requires a client certificate'),
    (_sslerror('TLSV1_ALERT_UNKNOWN_CA'), {'tls': True, '_cert_file': 'c.pem'}, 'tls', 'rejected the client certificate'),
    (ConnectionResetError('Connection lost'), {'tls': True, '_cert_file': 'c.pem'}, 'tls', 'rejected the client certificate'),
    (BrokenPipeError(32, 'Broken pipe'), {'tls': True}, 'tls', 'set nats.cert_file'),
    (ConnectionResetError('Connection lost'), {}, 'network', 'closed the connection'),
    (ConnectionRefusedError(111, 'refused'), {}, 'network', 'connection refused'),
    (asyncio.TimeoutError(), {'connect_timeout': 3}, 'timeout', 'connect_timeout=3s'),
    (Exception("nats: 'Authorization Violation'"), {'user': 'u'}, 'auth', 'check nats.user'),
    (Exception("nats: 'Authorization Violation'"), {}, 'auth', 'none were given'),
    (OSError(113, 'No route to host'), {}, 'network', 'No route to host'),
    (ValueError('odd'), {}, 'error', 'ValueError: odd'),
])
def test_describe_connect_error(exc, kwargs, kind, text):
    if kwargs.get('tls'):
        kwargs = dict(kwargs, tls=ssl.create_default_context())
    got_kind, got_text = nats_client.describe_connect_error('nats://127.0.0.1:4222', exc, kwargs)
    assert got_kind == kind and text in got_text, got_text


# ----------------------------------------------------------------------------- streams
@pytest.mark.parametrize('pattern, subject, match', [
    ('metadata.client.ca-cert', 'metadata.client.ca-cert', True),
    ('metadata.client.*', 'metadata.client.ca-cert', True),
    ('metadata.>', 'metadata.client.ca-cert', True),
    ('metadata.*', 'metadata.client.ca-cert', False),
    ('metadata.client.ca-cert.>', 'metadata.client.ca-cert', False),
    ('>', 'a', True),
    ('a.b', 'a', False),
])
def test_subject_matches(pattern, subject, match):
    assert nats_jetstream.subject_matches(pattern, subject) is match


def test_stream_options_defaults_and_durations():
    name, wanted = nats_jetstream.stream_options({'name': 'S', 'duplicate_window': '5m', 'max_age': '1d', 'replicas': 3}, 'a.b')
    assert name == 'S'
    assert wanted == {'duplicate_window': 300, 'max_age': 86400, 'replicas': 3, 'subjects': ['a.b']}
    assert nats_jetstream.stream_options(None, 'x.y') == ('METADATA_CA_CLIENT', {'subjects': ['x.y']})


@pytest.mark.parametrize('opts, option', [
    ({'name': 'A.B'}, 'stream.name'),
    ({'name': 'A B'}, 'stream.name'),
    ({'replicas': 0}, 'stream.replicas'),
    ({'replicas': 6}, 'stream.replicas'),
    ({'max_msgs_per_subject': 0}, 'stream.max_msgs_per_subject'),
    ({'max_bytes': -2}, 'stream.max_bytes'),
    ({'duplicate_window': '0'}, 'stream.duplicate_window'),
    ({'duplicate_window': 'soon'}, 'stream.duplicate_window'),
    ({'duplicate_window': '10m', 'max_age': '5m'}, 'stream.duplicate_window'),
    ({'max_age': 60}, 'stream.duplicate_window'),  # the 2 min default window would exceed it
    ({'subjects': []}, 'stream.subjects'),
])
def test_stream_options_errors(opts, option):
    with pytest.raises(NatsError) as err:
        nats_jetstream.stream_options(opts, 'a.b')
    assert err.value.option == option


SERVER_CONFIG = {
    'name': 'S', 'subjects': ['b', 'a'], 'retention': 'limits', 'max_consumers': -1, 'max_msgs': -1, 'max_bytes': -1,
    'max_age': 0, 'max_msgs_per_subject': 10, 'max_msg_size': -1, 'discard': 'old', 'storage': 'file', 'num_replicas': 3,
    'duplicate_window': 120000000000, 'sealed': False, 'allow_direct': True,
}


def test_stream_changes_compares_only_given_options():
    assert nats_jetstream.stream_changes(SERVER_CONFIG, {'subjects': ['a', 'b'], 'replicas': 3, 'duplicate_window': 120}) == {}
    changes = nats_jetstream.stream_changes(SERVER_CONFIG, {'max_msgs_per_subject': 5, 'duplicate_window': 300, 'storage': 'memory'})
    assert changes == {'duplicate_window': {'before': 120, 'after': 300},
                       'max_msgs_per_subject': {'before': 10, 'after': 5},
                       'storage': {'before': 'file', 'after': 'memory'}}
    applied = nats_jetstream._apply(SERVER_CONFIG, {'duplicate_window': 300})  # pylint: disable=protected-access
    assert applied['duplicate_window'] == 300 * 10 ** 9 and applied['allow_direct'] is True  # unmanaged fields kept


def test_create_config_uses_announcement_defaults():
    config = nats_jetstream._create_config('S', {'subjects': ['a'], 'replicas': 3})  # pylint: disable=protected-access
    options = nats_jetstream.config_to_options(config)
    assert options['storage'] == 'file' and options['replicas'] == 3 and options['duplicate_window'] >= 120
    assert 0 < options['max_msgs_per_subject'] <= 100


# ----------------------------------------------------------------------------- headers and sizes
def test_header_block_size_matches_the_wire_format():
    headers = {'Nats-Msg-Id': 'ca-bundle-1-abc', 'X-Y': 'é'}
    wire = b'NATS/1.0\r\nNats-Msg-Id: ca-bundle-1-abc\r\nX-Y: \xc3\xa9\r\n\r\n'
    assert nats_headers.header_block_size(headers) == len(wire)
    assert nats_headers.header_block_size({}) == 0


def test_check_headers():
    assert nats_headers.check_headers({'A': 1, 'B': None}) == {'A': '1', 'B': ''}
    for bad in ({'A B': 'x'}, {'A:': 'x'}, {'A': 'x\r\ny'}, {'': 'x'}):
        with pytest.raises(NatsError):
            nats_headers.check_headers(bad)


def test_check_size():
    assert nats_headers.check_size(b'x' * 10, {}, 100) == 10
    with pytest.raises(NatsError, match='max_payload of 100 bytes of NATS server nats://s') as err:
        nats_headers.check_size(b'x' * 90, {'Nats-Msg-Id': 'abc'}, 100, server='nats://s')
    assert err.value.kind == 'payload'
    with pytest.raises(NatsError, match='max_msg_size'):
        nats_headers.check_size(b'x' * 60, {}, 100, max_msg_size=50)


def test_parse_headers():
    raw = base64.b64encode(b'NATS/1.0\r\nNats-Msg-Id: abc\r\nX: a:b\r\n\r\n').decode()
    assert nats_jetstream.parse_headers(raw) == {'Nats-Msg-Id': 'abc', 'X': 'a:b'}
    assert nats_jetstream.parse_headers(None) == {}


# ----------------------------------------------------------------------------- connect() against fake servers
class FakeServer:
    """Just enough of the NATS protocol: INFO, then CONNECT/PING answered with PONG (or an auth error)."""

    def __init__(self, mode):
        self.mode = mode  # 'ok', 'auth', 'silent', 'hangup' (closes instead of answering PING)
        self.connections = 0
        self.server = None
        self.port = None

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            if self.mode == 'silent':
                await reader.read()  # like a SIGSTOPped server: the kernel accepts, nobody answers
                return
            info = {'server_id': 'FAKE', 'version': '2.15.1', 'proto': 1, 'max_payload': 4096, 'headers': True,
                    'auth_required': self.mode == 'auth'}
            writer.write(b'INFO ' + json.dumps(info).encode() + b'\r\n')
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b'PING'):
                    if self.mode == 'hangup':
                        return
                    writer.write(b"-ERR 'Authorization Violation'\r\n" if self.mode == 'auth' else b'PONG\r\n')
                    await writer.drain()
                    if self.mode == 'auth':
                        return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, '127.0.0.1', 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    @property
    def url(self):
        return 'nats://127.0.0.1:%d' % self.port


def _closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_connect_tries_each_server_once_and_reports_all():
    async def scenario():
        async with FakeServer('silent') as silent, FakeServer('auth') as auth:
            refused = 'nats://127.0.0.1:%d' % _closed_port()
            params = {'servers': [silent.url, auth.url, refused], 'connect_timeout': 1, 'user': 'u', 'password': 'p'}
            with pytest.raises(NatsError) as err:
                await nats_client.connect(params, randomize=False)
            assert silent.connections == 1 and auth.connections == 1
            return err.value

    err = asyncio.run(scenario())
    assert err.kind == 'auth'
    assert [f['kind'] for f in err.failures] == ['timeout', 'auth', 'network']
    assert 'connect_timeout=1s' in str(err) and 'authorization violation' in str(err) and 'connection refused' in str(err)


def test_connect_skips_a_dead_server_and_keeps_the_pool():
    async def scenario():
        async with FakeServer('silent') as silent, FakeServer('ok') as ok:
            params = {'servers': [silent.url, ok.url], 'connect_timeout': 1}
            client = await nats_client.connect(params, randomize=False)
            try:
                assert client.is_connected
                assert client.connected_url.port == ok.port
                assert client.max_payload == 4096
                assert {s.port for s in client.servers} == {silent.port, ok.port}
            finally:
                await nats_client.close(client)
            assert client.is_closed

    asyncio.run(scenario())


def test_connect_treats_a_hangup_as_a_failure():
    async def scenario():
        async with FakeServer('hangup') as hangup:
            with pytest.raises(NatsError) as err:
                await nats_client.connect({'servers': [hangup.url], 'connect_timeout': 2})
            return err.value

    err = asyncio.run(scenario())
    assert err.kind == 'network' and 'closed the connection' in str(err)


def test_connect_refuses_sync_callbacks():
    def not_async(*_args):
        return None

    with pytest.raises(NatsError, match='async def'):
        asyncio.run(nats_client.connect({'servers': ['nats://127.0.0.1:1']}, error_cb=not_async))


def test_run_returns_the_result():
    async def answer():
        return 42

    assert nats_client.run(answer()) == 42

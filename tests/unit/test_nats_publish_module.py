# -*- coding: utf-8 -*-
"""jetstream_publish main() (run in-process) for everything decided before or at connecting: option
combinations, validation messages, and connection failures. Publishing itself runs against the real
cluster in tests/integration/test_jetstream_publish.py."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.timeout(60)

BUNDLE = """-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUJq3J3p8tY4rYq0dXH9b4R8c3c0kwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""


def _closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def nats(monkeypatch):
    monkeypatch.delenv('NATS_URL', raising=False)
    return {'servers': ['nats://127.0.0.1:%d' % _closed_port()], 'connect_timeout': 1}


def test_payload_and_announcement_are_exclusive(run_module, nats):
    result = run_module('jetstream_publish', {'nats': nats, 'payload': 'x', 'announcement': {
        'epoch': 1, 'generation': 1, 'bundle_pem': BUNDLE, 'valid_from': 0, 'valid_until': 1}})
    assert result['failed'] and 'mutually exclusive' in result['msg']


def test_payload_or_announcement_required(run_module, nats):
    result = run_module('jetstream_publish', {'nats': nats})
    assert result['failed'] and 'one of the following is required' in result['msg']


def test_sign_needs_an_announcement(run_module, nats):
    result = run_module('jetstream_publish', {'nats': nats, 'payload': 'hello', 'sign': True})
    assert result['failed'] and 'sign: true needs an announcement' in result['msg'] and result['field'] == 'sign'


def test_bad_announcement_names_the_field(run_module, nats):
    result = run_module('jetstream_publish', {'nats': nats, 'announcement': {
        'epoch': 1, 'generation': 0, 'bundle_pem': 'not pem', 'valid_from': '2026-01-01T00:00:00Z',
        'valid_until': '2026-01-02T00:00:00Z'}})
    assert result['failed'] and result['field'] == 'bundle_pem', result


@pytest.mark.parametrize('params, option', [
    ({'stream': {'name': 'BAD.NAME'}}, 'stream.name'),
    ({'stream': {'duplicate_window': 'a while'}}, 'stream.duplicate_window'),
    ({'headers': {'Bad Header': 'x'}}, 'headers'),
    ({'msg_id': 'a', 'headers': {'Nats-Msg-Id': 'b'}}, 'msg_id'),
    ({'timeout': 0}, 'timeout'),
])
def test_invalid_options(run_module, nats, params, option):
    result = run_module('jetstream_publish', dict({'nats': nats, 'payload': 'x'}, **params))
    assert result['failed'] and result['option'] == option, result


def test_no_server(run_module, monkeypatch):
    monkeypatch.delenv('NATS_URL', raising=False)
    result = run_module('jetstream_publish', {'payload': 'x'})
    assert result['failed'] and result['option'] == 'servers' and 'NATS_URL' in result['msg']


def test_connection_refused_is_reported_per_server(run_module, nats):
    second = 'nats://127.0.0.1:%d' % _closed_port()
    result = run_module('jetstream_publish', {'nats': dict(nats, servers=nats['servers'] + [second]), 'payload': 'x'},
                        check_mode=True)
    assert result['failed'] and result['kind'] == 'network'
    assert sorted(f['server'] for f in result['failures']) == sorted(nats['servers'] + [second])
    assert 'connection refused' in result['msg']


def test_password_is_not_logged(run_module, nats):
    result = run_module('jetstream_publish', {'nats': dict(nats, user='app', password='pw-123-secret'), 'payload': 'x'})
    assert result['failed']
    assert 'pw-123-secret' not in str(result)

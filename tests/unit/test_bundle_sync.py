# -*- coding: utf-8 -*-
"""scripts/catools/bundle_sync.py (ca-bundle-sync) without NATS: options, state, metrics, and the decision
and apply logic for one announcement (verify, freshness, write, reload).

Announcements are signed with a local ed25519 key (the integration tests use the real OpenBao transit key).
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from catools import bundle_sync as bs
from catools.sync import files as sync_files
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import digest as common_digest

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)


# ----------------------------------------------------------------------------- fixtures
def _ca(cn, key, issuer=None, issuer_key=None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key or key, hashes.SHA256()))


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope='module')
def bundles():
    root_key, k1, k2 = (ec.generate_private_key(ec.SECP256R1()) for _i in range(3))
    root = _ca('Test Root', root_key)
    int1 = _ca('NATS Intermediate CA Epoch 1', k1, root, root_key)
    int2 = _ca('NATS Intermediate CA Epoch 2', k2, root, root_key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'leaf')])
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(int1.subject).public_key(leaf_key.public_key())
            .serial_number(1).not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True).sign(k1, hashes.SHA256()))
    return {'e1': _pem(int1) + _pem(root), 'e2': _pem(int2) + _pem(int1) + _pem(root), 'leaf': _pem(leaf) + _pem(root),
            'e2_without_e1': _pem(int2) + _pem(root)}


def _signer(private_key, version=1):
    def sign(data):
        return 'vault:v%d:%s' % (version, base64.b64encode(private_key.sign(data)).decode())
    return sign


@pytest.fixture(scope='module')
def signing_key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope='module')
def sign(signing_key):
    return _signer(signing_key)


def _public_pem(private_key):
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def announce(sign, pem, generation, epoch, kind='rotation', valid_until=None):
    message = _message.build_announcement(
        epoch=epoch, generation=generation, kind=kind, bundle_pem=pem, certificates=None,
        valid_from=NOW - dt.timedelta(hours=1), valid_until=valid_until or NOW + dt.timedelta(days=1), created_at=NOW)
    return _message.canonical_json(_message.sign_announcement(message, sign))


@pytest.fixture
def env(tmp_path, signing_key):
    """Paths and a make(argv...) that returns (Config, Syncer)."""
    key_file = tmp_path / 'signer.pub'
    key_file.write_text(_public_pem(signing_key))
    paths = {'bundle': tmp_path / 'ca' / 'ca-bundle.pem', 'key': key_file, 'marker': tmp_path / 'reloads.log',
             'metrics': tmp_path / 'metrics.prom', 'tmp': tmp_path}
    paths['bundle'].parent.mkdir()

    def make(*extra, reload=True):
        argv = ['--once', '--service', 'svc', '--bundle-file', str(paths['bundle']), '--public-key-file', str(key_file),
                '--nats-server', 'nats://127.0.0.1:1', '--metrics-file', str(paths['metrics'])]
        if reload:
            script = ('import os; open(%r, "a").write(os.environ["CA_BUNDLE_GENERATION"] + " " + os.environ["CA_BUNDLE_EPOCH"] + '
                      '" " + os.environ["CA_BUNDLE_SHA256"][:8] + "\\n")' % str(paths['marker']))
            argv += ['--reload-command', '%s -c %s' % (sys.executable, json.dumps(script))]
        cfg = bs.load_config(argv + list(extra))
        return cfg, bs.Syncer(cfg, bs.Log('svc', stream=open(os.devnull, 'w', encoding='utf-8')))  # pylint: disable=consider-using-with
    return paths, make


def process(syncer, data):
    import asyncio  # pylint: disable=import-outside-toplevel
    return asyncio.run(syncer.process(data, seq=1))


def reloads(paths):
    return paths['marker'].read_text().split('\n')[:-1] if paths['marker'].exists() else []


# ----------------------------------------------------------------------------- decisions
def test_new_generation_is_applied_then_the_same_is_stale(env, sign, bundles):
    paths, make = env
    cfg, syncer = make()
    data = announce(sign, bundles['e1'], 1, 1)
    outcome = process(syncer, data)
    assert outcome.kind == 'applied'
    assert paths['bundle'].read_text() == bundles['e1']
    assert stat.S_IMODE(os.stat(paths['bundle']).st_mode) == 0o644
    assert reloads(paths) == ['1 1 %s' % common_digest.sha256_hex(bundles['e1'])[:8]]
    state = json.loads(open(cfg.state_file, encoding='utf-8').read())
    assert state['generation'] == 1 and state['epoch'] == 1 and state['bundle_sha256'] == common_digest.sha256_hex(bundles['e1'])
    assert stat.S_IMODE(os.stat(cfg.state_file).st_mode) == 0o600
    assert process(syncer, data).kind == 'stale'
    # a restart reads the state: still stale, never re-applied
    _cfg, again = make()
    assert process(again, data).kind == 'stale'
    assert len(reloads(paths)) == 1


def test_older_generation_is_skipped_and_rollback_is_applied(env, sign, bundles):
    paths, make = env
    _cfg, syncer = make()
    assert process(syncer, announce(sign, bundles['e2'], 5, 2)).kind == 'applied'
    assert process(syncer, announce(sign, bundles['e1'], 4, 1)).kind == 'stale'  # a replayed older generation
    assert process(syncer, announce(sign, bundles['e1'], 5, 1)).kind == 'stale'  # equal generation, other bundle
    assert paths['bundle'].read_text() == bundles['e2']
    outcome = process(syncer, announce(sign, bundles['e1'], 6, 1, kind='rollback'))  # newer generation, older epoch
    assert outcome.kind == 'applied'
    assert paths['bundle'].read_text() == bundles['e1']
    assert syncer.state.generation == 6 and syncer.state.epoch == 1 and syncer.state.kind == 'rollback'
    assert [r.split()[:2] for r in reloads(paths)] == [['5', '2'], ['6', '1']]


def test_same_bundle_with_a_newer_generation_does_not_reload(env, sign, bundles):
    paths, make = env
    _cfg, syncer = make()
    assert process(syncer, announce(sign, bundles['e1'], 1, 1)).kind == 'applied'
    assert process(syncer, announce(sign, bundles['e1'], 2, 1)).kind == 'unchanged'
    assert syncer.state.generation == 2 and len(reloads(paths)) == 1


def _tamper(data, **changes):
    message = json.loads(data)
    message.update(changes)
    return _message.canonical_json(message)


def _resign(sign, data, **changes):
    message = {k: v for k, v in json.loads(data).items() if k != 'signature'}
    message.update(changes)
    message['signature'] = sign(_message.signed_bytes(message))
    return _message.canonical_json(message)


@pytest.mark.parametrize('case, reason', [
    ('forged', 'bad-signature'),
    ('tampered', 'bad-signature'),
    ('unsigned', 'signature-missing'),
    ('garbage', 'json'),
    ('not-json-object', 'json'),
    ('wrong-schema', 'schema'),
    ('sha-mismatch', 'bundle-sha256'),
    ('unknown-key-version', 'unknown-key-version'),
    ('expired', 'expired'),
    ('not-ca', 'certificates'),
])
def test_invalid_messages_are_refused_and_nothing_is_written(env, sign, bundles, case, reason):
    paths, make = env
    _cfg, syncer = make()
    good = announce(sign, bundles['e1'], 3, 1)
    data = {
        'forged': lambda: announce(_signer(ed25519.Ed25519PrivateKey.generate()), bundles['e1'], 3, 1),
        'tampered': lambda: _tamper(good, generation=99),
        'unsigned': lambda: _message.canonical_json({k: v for k, v in json.loads(good).items() if k != 'signature'}),
        'garbage': lambda: b'\xff\x00not json at all',
        'not-json-object': lambda: b'[1, 2, 3]',
        'wrong-schema': lambda: _resign(sign, good, schema='securetransport.ca_bundle/v0'),
        'sha-mismatch': lambda: _resign(sign, good, bundle_sha256='0' * 64),
        'unknown-key-version': lambda: announce(_signer(ed25519.Ed25519PrivateKey.generate(), version=2), bundles['e1'], 3, 1),
        'expired': lambda: announce(sign, bundles['e1'], 3, 1, valid_until=NOW - dt.timedelta(hours=1)),
        'not-ca': lambda: announce(sign, bundles['leaf'], 3, 1),
    }[case]()
    if case == 'unknown-key-version':  # pin versions explicitly: v1 only
        paths['key'].write_text(json.dumps({'1': paths['key'].read_text()}))
        _cfg, syncer = make()
    outcome = process(syncer, data)
    assert (outcome.kind, outcome.reason) == ('invalid', reason), outcome.text
    assert not paths['bundle'].exists() and not reloads(paths) and syncer.state.generation == 0


def test_expiry_tolerates_clock_skew(env, sign, bundles):
    _paths, make = env
    _cfg, syncer = make('--clock-skew', '10m')
    assert process(syncer, announce(sign, bundles['e1'], 1, 1, valid_until=NOW - dt.timedelta(minutes=2))).kind == 'applied'


def test_reload_failure_is_transient_and_retried(env, sign, bundles):
    paths, make = env
    flag = paths['tmp'] / 'fail'
    flag.write_text('x')
    script = 'import os, sys; print("reload output line"); sys.exit(3 if os.path.exists(%r) else 0)' % str(flag)
    _cfg, syncer = make('--reload-command', '%s -c %s' % (sys.executable, json.dumps(script)), reload=False)
    data = announce(sign, bundles['e1'], 1, 1)
    outcome = process(syncer, data)
    assert (outcome.kind, outcome.reason) == ('retry', 'reload')
    assert 'exited with 3' in outcome.text and 'reload output line' in outcome.text
    assert syncer.state.generation == 0  # not recorded: the redelivery applies it again
    flag.unlink()
    assert process(syncer, data).kind == 'applied'  # same bytes on disk, but never reloaded: reload now
    assert syncer.state.generation == 1


def test_reload_timeout_kills_the_command(env, sign, bundles):
    _paths, make = env
    _cfg, syncer = make('--reload-command', '%s -c "import time; time.sleep(60)"' % sys.executable, '--reload-timeout', '0.5',
                        reload=False)
    outcome = process(syncer, announce(sign, bundles['e1'], 1, 1))
    assert (outcome.kind, outcome.reason) == ('retry', 'reload') and 'was killed' in outcome.text


def test_pid_file_signal(env, sign, bundles):
    paths, make = env
    got = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda *_: got.set())
    try:
        pid_file = paths['tmp'] / 'svc.pid'
        pid_file.write_text('%d\n' % os.getpid())
        _cfg, syncer = make('--pid-file', str(pid_file), '--signal', 'usr1', reload=False)
        assert process(syncer, announce(sign, bundles['e1'], 1, 1)).kind == 'applied'
        assert got.wait(5)
        pid_file.write_text('999999999\n')
        outcome = process(syncer, announce(sign, bundles['e2'], 2, 2))
        assert (outcome.kind, outcome.reason) == ('retry', 'reload') and 'not running' in outcome.text
        pid_file.unlink()
        outcome = process(syncer, announce(sign, bundles['e2'], 2, 2))
        assert (outcome.kind, outcome.reason) == ('retry', 'reload') and 'Cannot read a pid' in outcome.text
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_write_failure_is_transient(env, sign, bundles, monkeypatch):
    paths, make = env
    _cfg, syncer = make()

    def refuse(*_args, **_kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(sync_files, 'atomic_write', refuse)
    outcome = process(syncer, announce(sign, bundles['e1'], 1, 1))
    assert (outcome.kind, outcome.reason) == ('retry', 'write') and 'No space left' in outcome.text
    assert not reloads(paths)


def test_transit_key_errors_are_transient(env, sign, bundles):
    _paths, make = env
    _cfg, syncer = make()

    class Down:
        async def keys_for(self, data):
            raise ConnectionError('OpenBao is down')

    syncer.keys = Down()
    outcome = process(syncer, announce(sign, bundles['e1'], 1, 1))
    assert (outcome.kind, outcome.reason) == ('retry', 'keys')


def test_record_counts_and_backoff(env):
    _paths, make = env
    _cfg, syncer = make('--backoff', '1s,2s,3s', '--max-deliver', '4')
    assert [syncer.delay(n) for n in (1, 2, 3, 4, 9)] == [1, 2, 3, 3, 3]
    syncer._record(bs.Outcome('retry', 'reload', 'x'), 7, 2)  # pylint: disable=protected-access
    syncer._record(bs.Outcome('retry', 'reload', 'x'), 7, 4)  # pylint: disable=protected-access
    syncer._record(bs.Outcome('invalid', 'bad-signature', 'x'), 8, 1)  # pylint: disable=protected-access
    assert syncer.state.failures == {'reload': 2, 'max-deliver': 1} and syncer.state.invalid == 1


def test_settle_replies_and_the_last_delivery_is_terminated(env):
    """Applied -> +ACK; invalid -> +TERM <reason>; a failure -> a NAK delayed by the backoff, except on the last
    delivery, which is terminated so that the server drops it from the pending set at once."""
    import asyncio  # pylint: disable=import-outside-toplevel
    _cfg, syncer = env[1]('--backoff', '1s,2s', '--max-deliver', '3')

    class Conn:
        def __init__(self):
            self.sent = []

        async def request(self, subject, payload, timeout):
            self.sent.append((subject, payload))

    class Msg:
        reply = '$JS.ACK.x'

    def reply(outcome, delivered):
        nc = Conn()
        asyncio.run(syncer.settle(nc, Msg(), outcome, delivered))
        return nc.sent[0][1]

    assert reply(bs.Outcome('applied', None, 'x'), 1) == b'+ACK'
    assert reply(bs.Outcome('invalid', 'bad signature', 'x'), 1) == b'+TERM bad-signature'
    assert reply(bs.Outcome('retry', 'reload', 'x'), 1) == b'-NAK {"delay": 1000000000}'
    assert reply(bs.Outcome('retry', 'reload', 'x'), 2) == b'-NAK {"delay": 2000000000}'
    assert reply(bs.Outcome('retry', 'reload', 'x'), 3) == b'+TERM max-deliver'


# ----------------------------------------------------------------------------- pinned keys
def test_pinned_key_formats(tmp_path, signing_key, sign, bundles):
    pem = _public_pem(signing_key)
    raw = base64.b64encode(signing_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)).decode()
    import asyncio  # pylint: disable=import-outside-toplevel
    data = announce(sign, bundles['e1'], 1, 1)
    for content in (pem, json.dumps({'1': pem}), json.dumps({'1': raw, '2': pem})):
        path = tmp_path / 'k'
        path.write_text(content)
        keys = asyncio.run(bs.PinnedKeys(str(path)).keys_for(data))
        assert _message.verify_announcement(data, keys)['generation'] == 1
    for content, match in (('', 'empty'), ('not a key', 'does not hold'), ('{"x": "y"}', 'not a positive integer'),
                           ('{}', 'non-empty')):
        path.write_text(content)
        with pytest.raises(bs.ConfigError, match=match):
            bs.PinnedKeys(str(path))
    with pytest.raises(bs.ConfigError, match='Cannot read'):
        bs.PinnedKeys(str(tmp_path / 'absent'))


# ----------------------------------------------------------------------------- configuration
def test_config_file_and_command_line(tmp_path, signing_key):
    key = tmp_path / 'k.pub'
    key.write_text(_public_pem(signing_key))
    token = tmp_path / 'token'
    token.write_text('s3cr3t-token\n')
    config = tmp_path / 'sync.yml'
    config.write_text('service: from-file\nbundle_file: %s\npublic_key_file: %s\nmax_deliver: 7\nbackoff: [1s, 1m]\n'
                      'reload_command: [systemctl, reload, my service]\n'
                      'nats: {servers: [tls://a:4222], user: u, password: p4ssw0rd}\n' % (tmp_path / 'ca.pem', key))
    cfg = bs.load_config(['--once', '--config', str(config), '--service', 'cli', '--backoff', '2s,3s'])
    assert cfg.service == 'cli' and cfg.durable == 'cli-ca-consumer'
    assert cfg.max_deliver == 7 and cfg.backoff == [2.0, 3.0]
    assert cfg.reload_argv == ['systemctl', 'reload', 'my service']
    assert cfg.state_file == str(tmp_path / '.ca.pem.sync-state.json')
    assert cfg.nats['servers'] == ['tls://a:4222'] and cfg.nats['name'] == 'ca-bundle-sync/cli'
    assert cfg.fetch_timeout == 2.0 and cfg.deliver_policy == 'last' and cfg.signal == signal.SIGHUP
    assert cfg.secrets() == {'p4ssw0rd'}
    cfg = bs.load_config(['--follow', '--config', str(config), '--nats-token-file', str(token), '--nats-user', '',
                          '--reload-command', 'kill -HUP $(cat /run/x.pid)', '--reload-shell'])
    assert cfg.nats['token'] == 's3cr3t-token' and cfg.fetch_timeout == 30.0
    assert cfg.reload_argv == ['/bin/sh', '-c', 'kill -HUP $(cat /run/x.pid)']
    json_config = tmp_path / 'sync.json'
    json_config.write_text(json.dumps({'service': 'j', 'bundle_file': str(tmp_path / 'ca.pem'), 'transit': True,
                                       'openbao': {'url': 'http://127.0.0.1:8200'}, 'nats': {'servers': ['nats://x']}}))
    cfg = bs.load_config(['--check-config', '--config', str(json_config)])
    assert cfg.transit and cfg.transit_key == 'ca-bundle-signer' and cfg.mode == 'check'


@pytest.mark.parametrize('argv, match', [
    ([], 'Choose a mode'),
    (['--once'], '--service is required'),
    (['--once', '--service', 'a.b'], 'only letters'),
    (['--once', '--service', 's'], '--bundle-file is required'),
    (['--once', '--service', 's', '--bundle-file', '/nonexistent-dir/ca.pem'], 'does not exist'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem'], 'No way to verify'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem', '--transit', '--public-key-file', 'k'], 'not both'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem', '--transit'], 'OpenBao address'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem', '--public-key-file', 'k'], 'No NATS server'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem', '--public-key-file', 'k', '--nats-server', 'n',
      '--max-deliver', '2'], 'must be larger than the number of --backoff'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem', '--public-key-file', 'k', '--nats-server', 'n',
      '--backoff', '5x'], 'Invalid --backoff'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem', '--public-key-file', 'k', '--nats-server', 'n',
      '--signal', 'NOPE'], 'not a signal name'),
    (['--once', '--service', 's', '--bundle-file', '{tmp}/ca.pem', '--public-key-file', 'k', '--nats-server', 'n',
      '--bundle-mode', '999'], 'not an octal file mode'),
    (['--once', '--config', '{tmp}/bad.yml'], 'unknown option'),
])
def test_config_errors(tmp_path, monkeypatch, argv, match):
    monkeypatch.delenv('NATS_URL', raising=False)
    monkeypatch.delenv('BAO_ADDR', raising=False)
    monkeypatch.delenv('VAULT_ADDR', raising=False)
    (tmp_path / 'bad.yml').write_text('service: s\nbundel_file: typo\n')
    with pytest.raises(bs.ConfigError, match=match):
        bs.load_config([a.replace('{tmp}', str(tmp_path)) for a in argv])


# ----------------------------------------------------------------------------- state, metrics, lock, log
def test_state_round_trip_and_corruption(tmp_path):
    path = str(tmp_path / 'state.json')
    state = bs.State.load(path)
    assert state.generation == 0 and state.epoch is None
    state.generation, state.epoch, state.invalid = 4, 12, 2
    state.count_failure('reload')
    state.save()
    again = bs.State.load(path)
    assert (again.generation, again.epoch, again.invalid, again.failures) == (4, 12, 2, {'reload': 1})
    for bad in ('{', '[]', json.dumps({'schema': 'other'}), json.dumps({'schema': bs.STATE_SCHEMA, 'generation': -1})):
        (tmp_path / 'state.json').write_text(bad)
        with pytest.raises(bs.ConfigError, match='corrupt'):
            bs.State.load(path)


def test_metrics_parse_as_prometheus_text():
    state = bs.State('/x')
    state.generation, state.epoch, state.applied_ts, state.last_success_ts, state.invalid = 3, 7, 1700000000.5, 1700000001.0, 2
    state.failures = {'reload': 4, 'custom"reason': 1}
    text = bs.render_metrics('svc"1', state, True, 1700000002.25)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    svc = ('service', 'svc"1')
    assert samples[('ca_bundle_sync_last_applied_generation', (svc,))] == 3
    assert samples[('ca_bundle_sync_last_applied_epoch', (svc,))] == 7
    assert samples[('ca_bundle_sync_last_success_timestamp_seconds', (svc,))] == 1700000001.0
    assert samples[('ca_bundle_sync_invalid_messages_total', (svc,))] == 2
    assert samples[('ca_bundle_sync_failures_total', (('reason', 'reload'), svc))] == 4
    assert samples[('ca_bundle_sync_failures_total', (('reason', 'nats'), svc))] == 0
    assert samples[('ca_bundle_sync_failures_total', (('reason', 'custom"reason'), svc))] == 1
    assert samples[('ca_bundle_sync_bundle_file_matches', (svc,))] == 1
    assert families['ca_bundle_sync_failures'].type == 'counter'
    state.epoch = None
    assert 'ca_bundle_sync_last_applied_epoch{service="s"} -1' in bs.render_metrics('s', state, False, 0.0)


def test_instance_lock(tmp_path):
    state = str(tmp_path / 'state.json')
    with bs.instance_lock(state):
        with pytest.raises(bs.Busy):
            with bs.instance_lock(state):
                pass
    with bs.instance_lock(state):  # released
        pass


def test_main_exit_codes_without_nats(tmp_path, signing_key, capsys):
    key = tmp_path / 'k.pub'
    key.write_text(_public_pem(signing_key))
    base = ['--service', 's', '--bundle-file', str(tmp_path / 'ca.pem'), '--public-key-file', str(key),
            '--nats-server', 'nats://127.0.0.1:1']
    assert bs.main(['--check-config'] + base) == bs.EXIT_OK
    assert bs.main(['--check-config'] + base + ['--nats-ca-file', str(tmp_path / 'absent.pem')]) == bs.EXIT_CONFIG
    assert bs.main(['--once', '--service', 's']) == bs.EXIT_CONFIG
    fd = os.open(str(tmp_path / '.ca.pem.sync-state.json.lock'), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert bs.main(['--once'] + base) == bs.EXIT_BUSY
    finally:
        os.close(fd)
    (tmp_path / '.ca.pem.sync-state.json').write_text('{corrupt')
    assert bs.main(['--once'] + base) == bs.EXIT_CONFIG
    err = capsys.readouterr().err
    assert 'event=busy' in err and 'corrupt' in err and 'event=config-ok' in err
    assert all(line.startswith('ts=') for line in err.splitlines())


def test_nats_unreachable_is_a_failure(tmp_path, signing_key, capsys):
    key = tmp_path / 'k.pub'
    key.write_text(_public_pem(signing_key))
    metrics = tmp_path / 'm.prom'
    code = bs.main(['--once', '--service', 's', '--bundle-file', str(tmp_path / 'ca.pem'), '--public-key-file', str(key),
                    '--nats-server', 'nats://127.0.0.1:1', '--nats-connect-timeout', '1', '--metrics-file', str(metrics)])
    assert code == bs.EXIT_FAILURE
    assert 'ca_bundle_sync_failures_total{service="s",reason="nats"} 1' in metrics.read_text()
    assert 'event=nats-failed' in capsys.readouterr().err


def test_log_lines_are_single_lines_without_secrets():
    lines = []

    class Sink:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    log = bs.Log('svc', stream=Sink())
    log.secrets = {'hunter22'}
    log('warning', 'failed', 'first line\nsecond line with hunter22 "quoted"', reason='re load', path='/a b')
    log('debug', 'hidden')
    assert len(lines) == 1 and lines[0].count('\n') == 1
    assert 'hunter22' not in lines[0] and '***' in lines[0]
    assert 'reason="re load"' in lines[0] and '\\n' in lines[0] and 'event=failed' in lines[0]


def test_durations():
    assert bs._seconds('1m30s', 'x') == 90.0  # pylint: disable=protected-access
    assert bs._seconds('0.5', 'x') == 0.5  # pylint: disable=protected-access
    assert bs._seconds(0, 'x', allow_zero=True) == 0.0  # pylint: disable=protected-access
    with pytest.raises(bs.ConfigError):
        bs._seconds('0', 'x')  # pylint: disable=protected-access
    with pytest.raises(bs.ConfigError):
        bs._seconds(True, 'x')  # pylint: disable=protected-access


# ----------------------------------------------------------------------------- what the client_bundle role installs
_CLOSURE = r"""
import sys
sys.path.insert(0, sys.argv[1])
import catools.bundle_sync  # noqa: F401
base = 'ansible_collections.securetransport.ca_rotation.plugins.module_utils.'
before = {m for m in sys.modules if m.startswith(base)}
if sys.argv[2] == 'transit':  # what TransitKeys imports when it first reads the keys
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import connect  # noqa: F401
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_public_keys  # noqa: F401
    before = {m for m in sys.modules if m.startswith(base)} - before
for name in sorted(before):
    print(sys.modules[name].__file__.split('/plugins/module_utils/', 1)[1])
"""


def _closure(kind):
    scripts = Path(bs.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, '-c', _CLOSURE, str(scripts), kind], capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def test_the_client_bundle_role_installs_exactly_the_import_closure():
    """roles/client_bundle/tasks/sync.yml lists the module_utils files ca-bundle-sync imports: no more, no less,
    and the OpenBao code only for transit mode (TransitKeys imports it lazily)."""
    root = Path(bs.__file__).resolve().parents[2]
    listed = (root / 'roles/client_bundle/tasks/sync.yml').read_text().split('_client_bundle_module_utils: >-', 1)[1]
    plain, transit = listed.split('}}', 1)[0].split('+', 1)
    assert sorted(re.findall(r"'([^']+\.py)'", plain)) == _closure('plain')
    assert sorted(re.findall(r"'([^']+\.py)'", transit)) == _closure('transit')
    assert not any(path.startswith('_openbao') for path in _closure('plain'))


_SCRIPT_CLOSURE = """
import sys
sys.path.insert(0, sys.argv[1])
import catools.bundle_sync  # noqa: F401
for name in sorted(m for m in sys.modules if m == 'catools' or m.startswith('catools.')):
    print(sys.modules[name].__file__.split('/scripts/', 1)[1])
"""


def test_the_client_bundle_role_installs_every_part_of_the_script():
    """The script's own modules (scripts/catools/...) are installed by the role: exactly those bundle_sync imports."""
    root = Path(bs.__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, '-c', _SCRIPT_CLOSURE, str(root / 'scripts')], capture_output=True, text=True, check=True).stdout
    installed = re.findall(r'\{name: (catools/[^,]+\.py),', (root / 'roles/client_bundle/tasks/sync.yml').read_text())
    assert sorted(installed) == sorted(out.split())


# ----------------------------------------------------------------------------- hardening (what a signature is trusted for)
def _ca_until(cn, key, not_after, issuer=None, issuer_key=None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=3)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key or key, hashes.SHA256()))


def test_a_generation_far_ahead_is_refused_and_later_real_ones_still_apply(env, sign, bundles):
    paths, make = env
    _cfg, syncer = make()
    assert process(syncer, announce(sign, bundles['e1'], 17, 1)).kind == 'applied'
    outcome = process(syncer, announce(sign, bundles['e2'], 800, 2))  # signed, but 783 ahead
    assert (outcome.kind, outcome.reason) == ('invalid', 'generation-jump'), outcome.text
    assert '--max-generation-jump 100' in outcome.text and syncer.state.generation == 17
    assert process(syncer, announce(sign, bundles['e2'], 18, 2)).kind == 'applied'  # the next real generation
    assert paths['bundle'].read_text() == bundles['e2']
    _cfg, unlimited = make('--max-generation-jump', '0')
    assert process(unlimited, announce(sign, bundles['e2'], 800, 2)).kind in ('applied', 'unchanged')


@pytest.mark.parametrize('junk', ['# comment\n' * 3, 'x' * 100000, '\n' * 5000])
def test_bundle_pem_must_be_certificates_only(env, sign, bundles, junk):
    paths, make = env
    _cfg, syncer = make()
    outcome = process(syncer, announce(sign, bundles['e1'] + junk, 1, 1))
    assert (outcome.kind, outcome.reason) == ('invalid', 'certificates'), outcome.text
    assert 'PEM certificates only' in outcome.text and not paths['bundle'].exists()


def test_valid_until_may_not_outlive_the_certificates(env, sign, bundles):
    paths, make = env
    _cfg, syncer = make()
    outcome = process(syncer, announce(sign, bundles['e1'], 1, 1, valid_until=NOW + dt.timedelta(days=3)))  # certs end NOW + 2d
    assert (outcome.kind, outcome.reason) == ('invalid', 'valid-until'), outcome.text
    assert not paths['bundle'].exists()


def test_valid_until_is_enforced_without_tolerance_by_default(env, sign, bundles):
    _paths, make = env
    _cfg, syncer = make()
    outcome = process(syncer, announce(sign, bundles['e1'], 1, 1, valid_until=NOW - dt.timedelta(seconds=30)))
    assert (outcome.kind, outcome.reason) == ('invalid', 'expired')


def test_a_bundle_of_expired_certificates_is_refused(env, sign):
    paths, make = env
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ended = NOW - dt.timedelta(minutes=3)
    root = _ca_until('Old Root', root_key, ended)
    old = _ca_until('NATS Intermediate CA Epoch 0', key, ended, root, root_key)
    _cfg, syncer = make('--clock-skew', '10m')  # even when a late clock is tolerated
    outcome = process(syncer, announce(sign, _pem(old) + _pem(root), 1, 0, valid_until=ended))
    assert (outcome.kind, outcome.reason) == ('invalid', 'certificates-expired'), outcome.text
    assert not paths['bundle'].exists()


def test_fewer_valid_certificates_only_by_a_signed_rollback(env, sign, bundles):
    paths, make = env
    _cfg, syncer = make()
    assert process(syncer, announce(sign, bundles['e2'], 5, 2)).kind == 'applied'  # 3 certificates
    outcome = process(syncer, announce(sign, bundles['e1'], 6, 1))  # 2: a replayed older bundle with a new generation
    assert (outcome.kind, outcome.reason) == ('invalid', 'fewer-epochs'), outcome.text
    assert paths['bundle'].read_text() == bundles['e2']
    assert process(syncer, announce(sign, bundles['e1'], 7, 1, kind='rollback')).kind == 'applied'
    # a host without state compares with the bundle file in place
    os.unlink(syncer.cfg.state_file)
    paths['bundle'].write_text(bundles['e2'])
    _cfg, fresh = make()
    outcome = process(fresh, announce(sign, bundles['e1'], 1, 1))
    assert (outcome.kind, outcome.reason) == ('invalid', 'fewer-epochs')


def test_a_signed_distrust_is_applied_although_its_epoch_is_not_newer(env, sign, bundles):
    """The rule: an announcement is ordered by its generation, never by its epoch; ``kind: distrust`` (like
    ``rollback``) may trust fewer still-valid certificates. Epoch 1 distrusted during epoch 2: same epoch, newer
    generation, one certificate fewer - applied; the same bundle as a plain rotation is refused; a replay is stale."""
    paths, make = env
    _cfg, syncer = make()
    assert process(syncer, announce(sign, bundles['e2'], 5, 2)).kind == 'applied'
    outcome = process(syncer, announce(sign, bundles['e2_without_e1'], 6, 2))
    assert (outcome.kind, outcome.reason) == ('invalid', 'fewer-epochs'), outcome.text
    outcome = process(syncer, announce(sign, bundles['e2_without_e1'], 7, 2, kind='distrust'))
    assert outcome.kind == 'applied', outcome.text
    assert paths['bundle'].read_text() == bundles['e2_without_e1']
    assert syncer.state.generation == 7 and syncer.state.epoch == 2 and syncer.state.kind == 'distrust'
    assert process(syncer, announce(sign, bundles['e2'], 7, 2, kind='distrust')).kind == 'stale'  # replayed generation
    assert paths['bundle'].read_text() == bundles['e2_without_e1']
    assert [r.split()[:2] for r in reloads(paths)] == [['5', '2'], ['7', '2']]


def test_superseded_generation_is_stale_for_a_host_starting_from_the_newest(env, sign, bundles):
    _paths, make = env
    _cfg, syncer = make()
    syncer.floor = 2  # the stream keeps generation 2: the replayed generation 1 delivered after it is superseded
    assert process(syncer, announce(sign, bundles['e1'], 1, 1)).kind == 'stale'
    assert process(syncer, announce(sign, bundles['e2'], 2, 2)).kind == 'applied'


@pytest.mark.parametrize('mode, accepted', [
    ('0644', 0o644), ('640', 0o640), ('0444', 0o444), ('0600', 0o600),
    ('7777', None), ('0755', None), ('4644', None), ('0666', None), ('0044', None), ('rw', None), ('17777', None),
])
def test_bundle_mode_must_be_a_sane_regular_file_mode(env, mode, accepted):
    _paths, make = env
    if accepted is not None:
        assert make('--bundle-mode', mode)[0].bundle_mode == accepted
        return
    with pytest.raises(bs.ConfigError, match=r'--bundle-mode .*(0644|octal)'):
        make('--bundle-mode', mode)


def test_max_generation_jump_option_is_checked(env):
    _paths, make = env
    assert make()[0].max_generation_jump == 100
    with pytest.raises(bs.ConfigError, match='--max-generation-jump must be an integer >= 0'):
        make('--max-generation-jump', '-1')


# ----------------------------------------------------------------------------- never through a symbolic link
@pytest.mark.parametrize('which', ['bundle', 'state', 'lock', 'metrics'])
def test_a_symlink_planted_at_a_written_path_is_refused(env, capsys, which):
    """ln -s <victim> <path>; run: exit 2 naming the option, the victim and the link untouched (whatever NATS says)."""
    paths, _make = env
    victim = paths['tmp'] / 'victim.txt'
    victim.write_text('precious\n')
    os.chmod(victim, 0o600)
    state = paths['bundle'].parent / ('.%s.sync-state.json' % paths['bundle'].name)
    link = {'bundle': paths['bundle'], 'state': state, 'lock': Path(str(state) + '.lock'), 'metrics': paths['metrics']}[which]
    link.symlink_to(victim)
    code = bs.main(['--once', '--service', 'svc', '--bundle-file', str(paths['bundle']), '--public-key-file', str(paths['key']),
                    '--nats-server', 'nats://127.0.0.1:1', '--nats-connect-timeout', '1', '--metrics-file', str(paths['metrics'])])
    err = capsys.readouterr().err
    assert code == bs.EXIT_CONFIG, err
    assert 'symbolic link' in err and {'bundle': '--bundle-file', 'state': '--state-file', 'lock': '--state-file (its lock)',
                                       'metrics': '--metrics-file'}[which] in err
    assert victim.read_text() == 'precious\n' and stat.S_IMODE(os.stat(victim).st_mode) == 0o600
    assert link.is_symlink()


def test_file_writers_never_follow_a_symlink(tmp_path):
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious\n')
    os.chmod(victim, 0o600)
    link = tmp_path / 'ca.pem'
    link.symlink_to(victim)
    with pytest.raises(Exception, match='symbolic link'):
        sync_files.atomic_write(str(link), 'x', 0o644)
    with pytest.raises(Exception, match='symbolic link'):
        sync_files.set_mode(str(link), 0o644)
    assert sync_files.sha256_file(str(link)) is None
    with pytest.raises(bs.ConfigError, match='state file'):
        bs.State.load(str(link))
    assert victim.read_text() == 'precious\n' and stat.S_IMODE(os.stat(victim).st_mode) == 0o600 and link.is_symlink()


def test_the_lock_file_refuses_links(tmp_path):
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious\n')
    state = str(tmp_path / 'state.json')
    os.symlink(victim, state + '.lock')
    with pytest.raises(bs.ConfigError, match='symbolic link'):
        with bs.instance_lock(state):
            pass
    os.unlink(state + '.lock')
    os.link(victim, state + '.lock')  # a hard link: O_NOFOLLOW does not see it, the link count does
    with pytest.raises(bs.ConfigError, match='links'):
        with bs.instance_lock(state):
            pass
    assert victim.read_text() == 'precious\n'

# -*- coding: utf-8 -*-
"""Pure logic of module_utils/_reload/ and its orchestration over a scripted transport.

No NATS and no Kubernetes here (the integration tests use real servers): the fake transport below
plays back what servers would answer, so each branch (late bundle, rejected reload, restart, server
down, check mode, min_success) is reached on purpose.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import base as reload_base
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import engine as reload_engine
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import kubernetes as reload_kubernetes
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import local as reload_local
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import system as reload_system
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError, TargetError

SHA_A = 'a' * 64
SHA_B = 'b' * 64

# Real nats-server 2.15.1 output (a bad CA bundle, then a good one).
LOG_FAILED = """\
[14170] 2026/11/29 10:49:18.182941 [INF] 127.0.0.1:49019 - rid:19 - Router connection closed: Duplicate Route - Remote: nats-1
[14170] 2026/11/29 10:49:32.316326 [INF] Trapped "hangup" signal
[14170] 2026/11/29 10:49:32.317203 [ERR] Failed to reload server configuration: /s/nats-0/nats.conf:6:1: failed to parse root ca certificate
/s/nats-0/nats.conf:12:3: failed to parse root ca certificate
[14170] 2026/11/29 10:49:33.001000 [INF] 127.0.0.1:50000 - cid:30 - Client connection closed
"""
LOG_OK = """\
[14170] 2026/11/29 10:49:32.921258 [INF] Reloaded: cluster
[14170] 2026/11/29 10:49:32.921260 [INF] Reloaded: tls = enabled
[14170] 2026/11/29 10:49:32.921829 [INF] Reloaded server configuration (sha256:e0def3523aa46fb20096f50d3693f883199eb8690e59a9ab2158d609da5813d6)
"""


# ----------------------------------------------------------------------------- pure helpers
@pytest.mark.parametrize('text, expected', [
    ('2026-11-29T10:49:32.921834321Z', 1795949372921834321),
    ('2026-11-29T10:49:32.9218343Z', 1795949372921834300),
    ('2026-11-29T10:49:32Z', 1795949372000000000),
    ('2026-11-29T11:49:32.5+01:00', 1795949372500000000),
    ('2026-11-29T05:49:32-0500', 1795949372000000000),
])
def test_parse_load_time(text, expected):
    assert reload_base.parse_load_time(text) == expected


@pytest.mark.parametrize('text', ['', None, 'yesterday', '2026-11-29 10:49', '2026-11-29T10:49:32.1234567890Z'])
def test_parse_load_time_rejects(text):
    with pytest.raises(ValueError):
        reload_base.parse_load_time(text)


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2200, 1, 1)),
       st.integers(min_value=0, max_value=999_999_999), st.integers(min_value=1, max_value=10 ** 12))
def test_load_time_order_is_nanosecond_exact(moment, nanos, step):
    """Go prints RFC 3339 with trailing zeros of the nanoseconds trimmed; ordering must survive that."""
    def fmt(ns_total):
        seconds, ns = divmod(ns_total, 10 ** 9)
        base = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
        frac = ('.%09d' % ns).rstrip('0').rstrip('.')
        return base.strftime('%Y-%m-%dT%H:%M:%S') + frac + 'Z'

    before = int((moment - dt.datetime(1970, 1, 1)).total_seconds()) * 10 ** 9 + nanos
    assert reload_base.parse_load_time(fmt(before)) == before
    assert reload_base.load_time_advanced(fmt(before), fmt(before + step))
    assert not reload_base.load_time_advanced(fmt(before + step), fmt(before))
    assert not reload_base.load_time_advanced(fmt(before), fmt(before))


def test_load_time_advanced_is_false_for_garbage():
    assert not reload_base.load_time_advanced('2026-11-29T10:49:32Z', None)
    assert not reload_base.load_time_advanced('nonsense', '2026-11-29T10:49:32Z')


def test_normalize_sha256():
    assert reload_base.normalize_sha256(None) is None
    assert reload_base.normalize_sha256('') is None
    assert reload_base.normalize_sha256('A' * 64) == SHA_A
    assert reload_base.normalize_sha256('sha256:' + SHA_B) == SHA_B
    with pytest.raises(ReloadError) as err:
        reload_base.normalize_sha256('abc')
    assert err.value.option == 'expect_sha256'
    assert '64 hex' in str(err.value)


def test_reload_failure_from_log_takes_the_error_and_its_continuation_lines():
    reason = reload_base.reload_failure_from_log(LOG_FAILED)
    assert reason == ('/s/nats-0/nats.conf:6:1: failed to parse root ca certificate; '
                      '/s/nats-0/nats.conf:12:3: failed to parse root ca certificate')


def test_reload_failure_from_log_only_the_last_reload_counts():
    assert reload_base.reload_failure_from_log(LOG_FAILED + LOG_OK) is None
    assert reload_base.reload_failure_from_log(LOG_OK + LOG_FAILED).startswith('/s/nats-0/nats.conf:6:1')
    assert reload_base.reload_failure_from_log(LOG_OK) is None
    assert reload_base.reload_failure_from_log('') is None
    assert reload_base.reload_failure_from_log(None) is None


def test_exec_status_documents():
    assert reload_kubernetes.exec_status('{"metadata":{},"status":"Success"}') == (0, '')
    failure = {"metadata": {}, "status": "Failure", "message": "command terminated with non-zero exit code",
               "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "137"}]}}
    assert reload_kubernetes.exec_status(json.dumps(failure)) == (137, 'command terminated with non-zero exit code')
    code, message = reload_kubernetes.exec_status(json.dumps({"status": "Failure", "message": "Internal error occurred: boom",
                                                              "reason": "InternalError", "code": 500}))
    assert code is None and 'boom' in message
    assert reload_kubernetes.exec_status('')[0] is None
    assert reload_kubernetes.exec_status('{not json')[0] is None


def test_handshake_failure_parses_the_websocket_refusal():
    reason = ("Handshake status 403 Forbidden -+-+- {'content-type': 'application/json'} -+-+- "
              "b'{\"kind\":\"Status\",\"message\":\"pods \\\\\"nats-0\\\\\" is forbidden\",\"code\":403}'")
    status, text, body = reload_kubernetes.handshake_failure(SimpleNamespace(status=0, reason=reason))
    assert status == 403
    assert text == 'Forbidden'
    assert body.startswith('{"kind":"Status"')
    assert reload_kubernetes.handshake_failure(SimpleNamespace(status=0, reason='Connection refused')) == (None, 'Connection refused', '')


@pytest.mark.parametrize('url, expected', [
    ('tls://127.0.0.1:4333', ('127.0.0.1', 4333)),
    ('nats://user:pw@nats.example.org:4222', ('nats.example.org', 4222)),
    ('nats.example.org', ('nats.example.org', 4222)),
    ('10.0.0.7:4223', ('10.0.0.7', 4223)),
    ('tls://[fd00::7]:4224', ('fd00::7', 4224)),
])
def test_host_port(url, expected):
    assert reload_base.host_port(url) == expected


def test_split_command():
    assert reload_kubernetes.split_command(['kill', '-HUP', '1']) == ['kill', '-HUP', '1']
    assert reload_kubernetes.split_command(['nats-server --signal reload']) == ['nats-server', '--signal', 'reload']
    assert reload_kubernetes.split_command("sh -c 'kill -HUP 1'") == ['sh', '-c', 'kill -HUP 1']
    with pytest.raises(ReloadError):
        reload_kubernetes.split_command([])


def test_log_tail_reads_only_what_came_after_the_mark(tmp_path):
    log = tmp_path / 'nats.log'
    log.write_text(LOG_FAILED)
    tail = reload_base.LogTail(str(log))
    tail.mark()
    assert tail.reason() is None  # the old failure is not ours
    with open(log, 'a') as handle:
        handle.write(LOG_FAILED.replace('nats-0', 'nats-9'))
    assert 'nats-9' in tail.reason()
    log.write_text(LOG_OK)  # rotated: shorter than the mark, read from the start
    assert tail.reason() is None
    assert reload_base.LogTail(str(tmp_path / 'missing.log')).reason() is None


# ----------------------------------------------------------------------------- summarize / min_success
def _res(name, ok, error=None, changed=None):
    return dict(reload_engine.new_result('signal', reload_base.Target(name)), ok=ok, error=error,
                changed=ok if changed is None else changed)


def test_summarize_all_must_pass_by_default():
    out = reload_engine.summarize([_res('a', True), _res('b', False, 'down')], 'signal')
    assert out['failed'] and out['changed']
    assert out['ok_count'] == 1 and out['failed_count'] == 1 and out['min_success'] == 2 and out['reloaded'] == 1
    assert out['msg'] == '1 of 2 NATS servers reloaded and verified; b: down'


def test_summarize_min_success_decides():
    results = [_res('a', True), _res('b', True), _res('c', False, 'down')]
    assert not reload_engine.summarize(results, 'signal', min_success=2)['failed']
    assert reload_engine.summarize(results, 'signal', min_success=3)['failed']
    assert '(min_success 2)' in reload_engine.summarize(results, 'signal', min_success=2)['msg']


def test_summarize_no_servers_fails_unless_zero_are_required():
    assert reload_engine.summarize([], 'kubernetes')['failed']
    assert 'no NATS server found' in reload_engine.summarize([], 'kubernetes')['msg']
    assert not reload_engine.summarize([], 'kubernetes', min_success=0)['failed']


def test_summarize_groups_the_same_failure():
    err = "exec 'kill -HUP 1' in pod 'nats/{}' failed: forbidden; grant 'create' on 'pods/exec'"
    results = [_res(n, False, err.format(n)) for n in ('nats-0', 'nats-1', 'nats-2')]
    msg = reload_engine.summarize(results, 'kubernetes')['msg']
    assert msg.count('forbidden') == 1
    assert 'nats-0, nats-1, nats-2: exec' in msg


def test_summarize_check_mode_predicts_change():
    results = [dict(_res('a', True), changed=False)]
    out = reload_engine.summarize(results, 'signal', check_mode=True)
    assert out['changed'] and 'would be reloaded (check mode)' in out['msg']


# ----------------------------------------------------------------------------- orchestration
def _t(seconds):
    return (dt.datetime(2026, 11, 29, 10, 0, 0) + dt.timedelta(seconds=seconds)).strftime('%Y-%m-%dT%H:%M:%S.%f000Z')


class FakeTransport(reload_base.Transport):
    """Scripted servers: ``servers[name] = {...}`` describes how each one behaves."""

    name = 'fake'
    sha_interval = 0.001
    varz_interval = 0.001

    def __init__(self, servers):
        self.servers = servers
        self.calls = []
        self.lock = threading.Lock()

    def _log(self, *call):
        with self.lock:
            self.calls.append(call)

    def discover(self):
        return [reload_base.Target(name, ca_file=f'/ca/{name}', problem=spec.get('problem'), server_id=spec.get('expect_id'))
                for name, spec in sorted(self.servers.items())]

    def read_ca_text(self, target):
        return self.servers[target.name].get('ca_text')

    def read_sha256(self, target):
        spec = self.servers[target.name]
        self._log('sha', target.name)
        spec['sha_reads'] = spec.get('sha_reads', 0) + 1
        if spec.get('sha_error'):
            raise TargetError(spec['sha_error'], permanent=spec.get('sha_error_permanent', False))
        return SHA_B if spec['sha_reads'] >= spec.get('sha_after', 1) else SHA_A

    def read_varz(self, target):
        spec = self.servers[target.name]
        self._log('varz', target.name)
        if spec.get('down'):
            raise TargetError('connection refused')
        reloaded = spec.get('reloaded', False)
        return {'server_id': spec.get('id', 'ID-' + target.name), 'server_name': target.name,
                'config_load_time': _t(60 if reloaded else 0), 'start': _t(-100 if not (reloaded and spec.get('restart')) else 59),
                'host': '0.0.0.0', 'port': 4222}

    def reload(self, target):
        spec = self.servers[target.name]
        self._log('reload', target.name)
        if spec.get('reload_error'):
            raise TargetError(spec['reload_error'])
        if not spec.get('reject'):
            spec['reloaded'] = True

    def failure_reason(self, target):
        spec = self.servers[target.name]
        return 'failed to parse root ca certificate' if spec.get('reject') and spec.get('log') else None


def run(servers, **kwargs):
    transport = FakeTransport(servers)
    kwargs.setdefault('reload_timeout', 0.3)
    kwargs.setdefault('propagation_timeout', 0.3)
    return transport, reload_engine.reload_servers(transport, **kwargs)


def by_name(result):
    return {r['target']: r for r in result['targets']}


def test_every_server_reloads_and_is_proven():
    transport, out = run({'n0': {}, 'n1': {}, 'n2': {}})
    assert not out['failed'] and out['changed'] and out['reloaded'] == 3
    for res in out['targets']:
        assert res['ok'] and res['changed'] and res['signalled']
        assert res['load_time_before'] == _t(0) and res['load_time_after'] == _t(60)
        assert isinstance(res['reload_ms'], int)
        assert res['sha256_ok'] is None and res['probe_ok'] is None
        assert res['server_id'] == 'ID-' + res['target']


def test_late_bundle_is_waited_for_then_reloaded():
    transport, out = run({'n0': {'sha_after': 5}, 'n1': {}}, expect_sha256=SHA_B, propagation_timeout=10)
    assert not out['failed']
    assert by_name(out)['n0']['sha256_seen'] == SHA_B and by_name(out)['n0']['sha256_ok']
    calls = [c for c in transport.calls if c[1] == 'n0']
    assert [c[0] for c in calls[:5]] == ['sha'] * 5
    assert calls.index(('reload', 'n0')) > 4


def test_bundle_that_never_arrives_fails_without_reloading():
    transport, out = run({'n0': {'sha_after': 10 ** 9}, 'n1': {}}, expect_sha256=SHA_B, propagation_timeout=0.2)
    res = by_name(out)['n0']
    assert out['failed'] and not res['ok'] and not res['signalled']
    assert 'still has sha256 ' + SHA_A in res['error'] and 'expected ' + SHA_B in res['error']
    assert ('reload', 'n0') not in transport.calls
    assert by_name(out)['n1']['ok']


def test_permanent_read_error_fails_at_once():
    servers = {'n0': {'sha_error': "forbidden: grant 'create' on 'pods/exec'", 'sha_error_permanent': True}}
    _transport, out = run(servers, expect_sha256=SHA_B, propagation_timeout=600)
    assert servers['n0']['sha_reads'] == 1  # not polled again for ten minutes
    assert 'pods/exec' in by_name(out)['n0']['error']


def test_transient_read_error_is_retried_and_reported():
    _transport, out = run({'n0': {'sha_error': 'No such file or directory'}}, expect_sha256=SHA_B, propagation_timeout=0.1)
    assert 'No such file' in by_name(out)['n0']['error']


def test_rejected_reload_fails_with_the_servers_reason():
    _transport, out = run({'n0': {'reject': True, 'log': True}, 'n1': {}}, reload_timeout=30)
    res = by_name(out)['n0']
    assert out['failed'] and not res['ok'] and not res['changed'] and res['signalled']
    assert res['error'] == 'NATS rejected the new configuration and kept the old one: failed to parse root ca certificate'
    assert res['load_time_after'] == res['load_time_before']
    assert out['changed'] and out['reloaded'] == 1


def test_unchanged_load_time_without_a_reason_still_fails():
    _transport, out = run({'n0': {'reject': True}}, reload_timeout=0.1)
    assert 'config_load_time did not advance' in by_name(out)['n0']['error']
    assert not out['changed']


def test_reload_error_reply_fails_that_target():
    _transport, out = run({'n0': {'reload_error': 'NATS refused the reload: bad'}, 'n1': {}}, min_success=1)
    assert not out['failed'] and by_name(out)['n0']['error'] == 'NATS refused the reload: bad'


def test_server_down_is_reported_and_min_success_decides():
    servers = {'n0': {}, 'n1': {'down': True}, 'n2': {'problem': 'pod nats/n2 is not running (phase Pending)'}}
    _transport, out = run(servers)
    assert out['failed'] and out['ok_count'] == 1
    assert 'not reachable before the reload' in by_name(out)['n1']['error']
    assert by_name(out)['n2']['error'] == 'pod nats/n2 is not running (phase Pending)'
    _transport, out = run({'n0': {}, 'n1': {'down': True}, 'n2': {}}, min_success=2)
    assert not out['failed'] and out['ok_count'] == 2


def test_restart_is_not_a_reload():
    _transport, out = run({'n0': {'restart': True}})
    assert 'restarted' in by_name(out)['n0']['error']


def test_wrong_monitoring_endpoint_is_detected():
    _transport, out = run({'n0': {'expect_id': 'NOTHERS'}})
    assert 'answers for server ID-n0' in by_name(out)['n0']['error']


def test_check_mode_signals_nothing_and_does_not_wait():
    transport, out = run({'n0': {'sha_after': 10 ** 9}, 'n1': {}}, expect_sha256=SHA_B, propagation_timeout=60, check_mode=True)
    assert not any(c[0] == 'reload' for c in transport.calls)
    assert not out['failed'] and out['changed']
    assert by_name(out)['n0']['sha256_ok'] is False and by_name(out)['n1']['sha256_ok'] is True
    assert all(not r['changed'] and not r['signalled'] and r['load_time_after'] is None for r in out['targets'])


def test_check_mode_still_reports_a_down_server():
    _transport, out = run({'n0': {'down': True}}, check_mode=True)
    assert out['failed'] and not out['changed']


def test_bad_options_are_refused_before_anything_happens():
    transport = FakeTransport({'n0': {}})
    for kwargs, option in (({'expect_sha256': 'xyz'}, 'expect_sha256'), ({'reload_timeout': 0}, 'reload_timeout'),
                           ({'propagation_timeout': -1}, 'propagation_timeout'), ({'min_success': -1}, 'min_success'),
                           ({'probe': {'cert_file': '/nonexistent.pem', 'key_file': '/nonexistent-key.pem'}}, 'probe.cert_file'),
                           ({'probe': [{'cert_file': '/a.pem', 'key_file': '/a-key.pem'}],
                             'probes': [{'cert_file': '/b.pem', 'key_file': '/b-key.pem'}]}, 'probes')):
        with pytest.raises(ReloadError) as err:
            reload_engine.reload_servers(transport, **kwargs)
        assert err.value.option == option
    assert transport.calls == []


def test_one_broken_target_does_not_take_the_others_down():
    class Exploding(FakeTransport):
        def reload(self, target):
            if target.name == 'n0':
                raise RuntimeError('kaboom')
            super().reload(target)

    transport = Exploding({'n0': {}, 'n1': {}})
    out = reload_engine.reload_servers(transport, reload_timeout=0.3)
    assert by_name(out)['n0']['error'] == 'unexpected error: RuntimeError: kaboom'
    assert by_name(out)['n1']['ok']


def test_targets_run_in_parallel():
    barrier = threading.Barrier(3, timeout=10)

    class Gate(FakeTransport):
        def reload(self, target):
            barrier.wait()  # deadlocks (BrokenBarrierError) unless all three reload at the same time
            super().reload(target)

    out = reload_engine.reload_servers(Gate({'n0': {}, 'n1': {}, 'n2': {}}), reload_timeout=5)
    assert not out['failed']


# ----------------------------------------------------------------------------- local transport
def test_local_targets_are_validated():
    with pytest.raises(ReloadError, match='targets is required'):
        reload_local.LocalTransport('signal', [])
    with pytest.raises(ReloadError, match=r'targets\[0\] \(n0\): give pid or pid_file'):
        reload_local.LocalTransport('signal', [{'name': 'n0', 'monitor_url': 'http://x'}])
    with pytest.raises(ReloadError, match='monitor_url is required'):
        reload_local.LocalTransport('signal', [{'name': 'n0', 'pid': 5}])
    with pytest.raises(ReloadError, match='duplicate target name'):
        reload_local.LocalTransport('signal', [{'name': 'n0', 'pid': 5, 'monitor_url': 'http://x'}] * 2)
    with pytest.raises(ReloadError, match='nats_server_path'):
        reload_local.LocalTransport('command', [{'name': 'n0', 'pid': 5, 'monitor_url': 'http://x'}], nats_server_path=None)
    transport = reload_local.LocalTransport('signal', [{'pid_file': '/run/n.pid', 'monitor_url': 'http://x', 'name': None}])
    assert transport.discover()[0].name == '/run/n.pid'


def test_signal_refuses_a_process_that_is_not_nats(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)
    try:
        pid_file = tmp_path / 'stale.pid'
        pid_file.write_text(str(proc.pid))
        transport = reload_local.LocalTransport('signal', [{'name': 'n0', 'pid_file': str(pid_file), 'monitor_url': 'http://x'}])
        with pytest.raises(TargetError, match='not a nats-server: refusing to signal it'):
            transport.reload(transport.discover()[0])
        assert proc.poll() is None  # not signalled
    finally:
        proc.kill()
        proc.wait()


def test_signal_reports_a_missing_process_and_pid_file(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    transport = reload_local.LocalTransport('signal', [{'name': 'gone', 'pid': proc.pid, 'monitor_url': 'http://x'},
                                                       {'name': 'nofile', 'pid_file': str(tmp_path / 'x.pid'), 'monitor_url': 'http://x'}])
    gone, nofile = transport.discover()
    with pytest.raises(TargetError, match='not running'):
        transport.reload(gone)
    with pytest.raises(TargetError, match='cannot read pid file'):
        transport.reload(nofile)


def test_local_sha256_reads_the_file(tmp_path):
    ca = tmp_path / 'ca.crt'
    ca.write_bytes(b'bundle')
    transport = reload_local.LocalTransport('signal', [{'name': 'n0', 'pid': 5, 'monitor_url': 'http://x', 'ca_file': str(ca)}])
    target = transport.discover()[0]
    assert transport.read_sha256(target) == hashlib.sha256(b'bundle').hexdigest()
    os.unlink(ca)
    with pytest.raises(TargetError, match='cannot read CA file'):
        transport.read_sha256(target)


def test_unreachable_monitoring_is_a_target_error():
    with pytest.raises(TargetError, match='cannot read http://127.0.0.1:9/varz'):
        reload_base.http_varz('http://127.0.0.1:9', timeout=2)


# ----------------------------------------------------------------------------- $SYS discovery
def _statsz(active, *peers):
    return {'active_servers': active, 'routes': [{'rid': i, 'name': p} for i, p in enumerate(peers)]}


def test_discovery_is_complete_when_every_server_counts_the_ones_that_answered():
    replies = {'A': {'name': 'n0'}, 'B': {'name': 'n1'}, 'C': {'name': 'n2'}}
    views = {'A': _statsz(3, 'n1', 'n2', 'n1'), 'B': _statsz(3, 'n0', 'n2'), 'C': _statsz(3, 'n0', 'n1')}
    assert reload_system._discovery_complete(replies, views)


def test_discovery_is_not_complete_while_someone_knows_more():
    two = {'A': {'name': 'n0'}, 'B': {'name': 'n1'}}
    assert not reload_system._discovery_complete(two, {'A': _statsz(3, 'n1', 'n2'), 'B': _statsz(3, 'n0', 'n2')})
    # a server that just started knows only itself, but has a route to a peer that has not answered
    assert not reload_system._discovery_complete({'A': {'name': 'n0'}}, {'A': _statsz(1, 'n1')})
    # counts agree, but a route names a server that did not answer
    assert not reload_system._discovery_complete(two, {'A': _statsz(2, 'n1', 'n9'), 'B': _statsz(2, 'n0')})
    assert not reload_system._discovery_complete({}, {})


def _self_signed(kind):
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel
    key = ec.generate_private_key(ec.SECP256R1()) if kind == 'ec' else ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kind)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256() if kind == 'ec' else None))
    return cert.public_bytes(serialization.Encoding.PEM).decode('ascii')


def test_the_ca_file_is_counted_per_family_before_the_reload():
    text = (_self_signed('ec') + _self_signed('ec') + _self_signed('ed25519')).encode('ascii')
    _transport, out = run({'n0': {'ca_text': text}, 'n1': {}})
    assert not out['failed'], out
    targets = by_name(out)
    assert targets['n0']['ca_certificates'] == {'ec': 2, 'ed25519': 1}
    assert targets['n1']['ca_certificates'] is None  # not readable from here (Kubernetes): not counted


def test_a_ca_file_nats_would_read_partly_is_not_reloaded():
    """Two PEM blocks glued together (no line break after END): Go's decoder skips the first without an error, so
    nats-server would reload "successfully" without trusting it. The target fails before any signal; the others go on."""
    first, second = _self_signed('ec'), _self_signed('ec')
    glued = (first.rstrip('\n') + second).encode('ascii')
    transport, out = run({'n0': {'ca_text': glued}, 'n1': {}, 'n2': {}})
    targets = by_name(out)
    assert out['failed'] and not targets['n0']['ok'] and not targets['n0']['signalled']
    assert 'block 1' in targets['n0']['error'] and 'END line' in targets['n0']['error'] and 'not reloaded' in targets['n0']['error']
    assert ('reload', 'n0') not in transport.calls
    assert targets['n1']['ok'] and targets['n2']['ok']
    # check mode predicts the same failure
    _transport, predicted = run({'n0': {'ca_text': glued}}, check_mode=True)
    assert predicted['failed'] and 'END line' in predicted['targets'][0]['error']


def test_a_ca_file_with_a_broken_certificate_is_not_reloaded():
    broken = b'-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'
    _transport, out = run({'n0': {'ca_text': broken}})
    assert out['failed'] and 'does not parse' in out['targets'][0]['error'] and not out['targets'][0]['signalled']


def test_a_varz_read_never_outlasts_the_reload_timeout(monkeypatch):
    """A server that accepts connections but does not answer (SIGSTOPped) must not hold the wait for the default 5 s
    per /varz read when reload_timeout is shorter: every read is bounded by reload_timeout."""
    seen = []

    def fake_varz(url, timeout=5.0):
        seen.append(timeout)
        raise TargetError(f"cannot read {url}/varz: timed out")

    monkeypatch.setattr(reload_local, 'http_varz', fake_varz)
    transport = reload_local.LocalTransport('signal', [{'name': 'n0', 'pid': os.getpid(), 'monitor_url': 'http://127.0.0.1:9'}])
    out = reload_engine.reload_servers(transport, reload_timeout=0.5, propagation_timeout=1)
    assert out['failed'] and 'not reachable before the reload' in out['targets'][0]['error']
    assert seen and set(seen) == {0.5}
    transport = reload_local.LocalTransport('signal', [{'name': 'n0', 'pid': os.getpid(), 'monitor_url': 'http://127.0.0.1:9'}])
    reload_engine.reload_servers(transport, reload_timeout=30, propagation_timeout=1)
    assert seen[-1] == 5.0  # a long reload_timeout keeps the 5 s bound per read

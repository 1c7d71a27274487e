# -*- coding: utf-8 -*-
"""nats_sighup's main() with arguments patched in: option validation and errors that need no server.

Also the Kubernetes transport's reading of pod objects (plain objects shaped like the client's models).
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import kubernetes as reload_kubernetes

MODULE = 'nats_sighup'


@pytest.fixture
def sleeper(tmp_path):
    """A live process that is not a nats-server (must never be signalled), with its pid file."""
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)
    pid_file = tmp_path / 'sleeper.pid'
    pid_file.write_text(str(proc.pid))
    yield proc, str(pid_file)
    proc.kill()
    proc.wait()


def test_signal_needs_targets(run_module):
    result = run_module(MODULE, {'transport': 'signal'})
    assert result['failed'] and 'targets' in result['msg']


def test_target_without_monitor_url_is_refused(run_module):
    result = run_module(MODULE, {'transport': 'signal', 'targets': [{'name': 'n0', 'pid': 12345}]})
    assert result['failed'] and result['option'] == 'targets'
    assert 'targets[0] (n0): monitor_url is required' in result['msg']


def test_bad_expect_sha256_names_the_option(run_module, sleeper):
    targets = [{'name': 'n0', 'pid_file': sleeper[1], 'monitor_url': 'http://127.0.0.1:9'}]
    result = run_module(MODULE, {'transport': 'signal', 'targets': targets, 'expect_sha256': 'not-a-digest'})
    assert result['failed'] and result['option'] == 'expect_sha256' and result['changed'] is False


def test_probe_files_are_checked_first(run_module, sleeper, tmp_path):
    targets = [{'name': 'n0', 'pid_file': sleeper[1], 'monitor_url': 'http://127.0.0.1:9'}]
    result = run_module(MODULE, {'transport': 'signal', 'targets': targets,
                                 'probe': {'cert_file': str(tmp_path / 'nope.pem'), 'key_file': str(tmp_path / 'nope-key.pem')}})
    assert result['failed'] and result['option'] == 'probe.cert_file'
    assert 'nope.pem' in result['msg']
    assert sleeper[0].poll() is None


def test_unreachable_server_fails_and_nothing_is_signalled(run_module, sleeper):
    targets = [{'name': 'n0', 'pid_file': sleeper[1], 'monitor_url': 'http://127.0.0.1:9'}]
    for check_mode in (True, False):
        result = run_module(MODULE, {'transport': 'signal', 'targets': targets}, check_mode=check_mode)
        assert result['failed'] and result['changed'] is False
        res = result['targets'][0]
        assert res['signalled'] is False and 'not reachable before the reload' in res['error']
    assert sleeper[0].poll() is None


def test_kubernetes_without_credentials_is_a_clear_error(run_module, tmp_path):
    result = run_module(MODULE, {'transport': 'kubernetes', 'kubernetes': {'kubeconfig': str(tmp_path / 'missing-kubeconfig')}})
    assert result['failed'] and result['option'] == 'kubernetes'
    assert 'cannot load Kubernetes credentials' in result['msg']


def test_system_without_servers_is_a_clear_error(run_module, monkeypatch):
    monkeypatch.delenv('NATS_URL', raising=False)
    result = run_module(MODULE, {'transport': 'system', 'nats': {'user': 'sys', 'password': 'x'}})
    assert result['failed'] and result['option'] == 'nats.servers'
    assert 'nats.servers' in result['msg']


def test_system_targets_need_a_name_or_id(run_module):
    result = run_module(MODULE, {'transport': 'system', 'nats': {'servers': ['nats://127.0.0.1:9']}, 'targets': [{'ca_file': '/x'}]})
    assert result['failed'] and result['option'] == 'targets'


# ----------------------------------------------------------------------------- pods -> targets
def _pod(name, phase='Running', ip='10.0.0.5', ports=(('client', 4222), ('monitor', 8222)), container='nats', state='running'):
    cstate = SimpleNamespace(running=SimpleNamespace() if state == 'running' else None,
                             waiting=SimpleNamespace(reason=state, message='back-off restarting') if state != 'running' else None,
                             terminated=None)
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name),
        spec=SimpleNamespace(containers=[SimpleNamespace(name=container, ports=[SimpleNamespace(name=n, container_port=p) for n, p in ports])]),
        status=SimpleNamespace(phase=phase, pod_ip=ip, container_statuses=[SimpleNamespace(name=container, state=cstate)]))


@pytest.fixture
def k8s_transport():
    pytest.importorskip('kubernetes')
    return reload_kubernetes.KubernetesTransport({}, monitor_port=8888, client_port=4444, core_factory=lambda: None)


def test_pod_with_named_ports(k8s_transport):
    target = k8s_transport._target(_pod('nats-0', ports=(('nats', 4333), ('monitor', 8333))))
    assert target.problem is None and target.host == '10.0.0.5' and target.port == 4333
    assert target.state['monitor_port'] == 8333
    assert k8s_transport.probe_address(target, {}) == ('10.0.0.5', 4333)


def test_pod_without_named_ports_uses_the_options(k8s_transport):
    target = k8s_transport._target(_pod('nats-0', ports=()))
    assert target.port == 4444 and target.state['monitor_port'] == 8888


@pytest.mark.parametrize('pod, problem', [
    (_pod('p', phase='Pending'), 'is not running (phase Pending)'),
    (_pod('p', state='CrashLoopBackOff'), "container 'nats' of pod nats/p is not running (CrashLoopBackOff: back-off restarting)"),
    (_pod('p', container='server'), "has no container 'nats' (it has: server)"),
    (_pod('p', ip=None), 'has no pod IP yet'),
])
def test_pods_that_cannot_be_reloaded_are_reported(k8s_transport, pod, problem):
    assert problem in k8s_transport._target(pod).problem


def test_reload_command_string_is_split():
    pytest.importorskip('kubernetes')
    transport = reload_kubernetes.KubernetesTransport({}, reload_command=['nats-server --signal reload'], core_factory=lambda: None)
    assert transport.reload_command == ['nats-server', '--signal', 'reload']

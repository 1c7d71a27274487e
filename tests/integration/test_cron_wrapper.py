# -*- coding: utf-8 -*-
"""scripts/ca-rotate-cron: single instance, exit codes, run report and Prometheus textfile metrics.

The wrapper runs a real ansible-playbook; the playbook is a small stand-in for rotate.yml written
by each test (it honours the same report contract), so the tests control timing through files
instead of sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from catools import cron, cron_metrics

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / 'scripts' / 'ca-rotate-cron'

FAKE_PLAYBOOK = r'''
- name: Stand-in for rotate.yml (same report contract)
  hosts: all
  gather_facts: false
  tasks:
    - name: Say that the run started
      ansible.builtin.copy:
        content: "{{ lookup('env', 'BAO_ADDR') }}"
        dest: "{{ fake_started_file }}"
        mode: "0644"
    - name: Wait until the test releases the run
      ansible.builtin.wait_for:
        path: "{{ fake_release_file }}"
        timeout: "{{ fake_wait_timeout | default(600) }}"
      when: fake_release_file | default('') | length > 0
    - name: Write the rotation report
      ansible.builtin.copy:
        content: "{{ fake_report | combine({'env_seen': {'BAO_ADDR': lookup('env', 'BAO_ADDR'),
                   'SECRET_NOT_PASSED': lookup('env', 'SECRET_NOT_PASSED'),
                   'ANSIBLE_STDOUT_CALLBACK': lookup('env', 'ANSIBLE_STDOUT_CALLBACK')}}) | to_json }}"
        dest: "{{ ca_rotation_report_file }}"
        mode: "0644"
      when: fake_report is defined
    - name: Fail when asked to
      ansible.builtin.fail:
        msg: rotation failed on purpose
      when: fake_fail | default(false) | bool
'''


def rotation_report(ok=True, changed=True, failed_server=False, locked_out=False):
    servers = [{'name': 'nats-%d' % i, 'ok': True, 'reload_ms': 12, 'error': None} for i in range(3)]
    if failed_server:
        servers[2] = {'name': 'nats-2', 'ok': False, 'reload_ms': None, 'error': 'config_load_time did not advance'}
    return {
        'started_at': '2025-01-01T00:00:00Z', 'finished_at': '2025-01-01T00:00:30Z', 'ok': ok, 'changed': changed,
        'epoch': 80594, 'generation': 17, 'bundle_sha256': 'ab' * 32, 'bundle_certificates': 5,
        'earliest_expiry': '2025-01-02T06:00:00Z', 'activated_epoch': 80594, 'locked_out': locked_out,
        'clusters': {'local': {'ok': not failed_server, 'reloaded': True, 'servers': servers}},
    }


@pytest.fixture
def setup(tmp_path):
    playbook = tmp_path / 'fake_rotate.yml'
    playbook.write_text(FAKE_PLAYBOOK)
    inventory = tmp_path / 'hosts.ini'
    inventory.write_text('authority ansible_connection=local ansible_python_interpreter=%s\n' % sys.executable)
    return {
        'dir': tmp_path,
        'playbook': playbook,
        'inventory': inventory,
        'lock': tmp_path / 'cron.lock',
        'metrics': tmp_path / 'ca_rotation.prom',
        'report': tmp_path / 'run-report.json',
        'started': tmp_path / 'started',
        'release': tmp_path / 'release',
    }


def wrapper_argv(s, *extra, vars_=None, metrics=True, report=True):
    argv = [sys.executable, str(WRAPPER), '--inventory', str(s['inventory']), '--playbook', str(s['playbook']),
            '--lock-file', str(s['lock'])]
    if metrics:
        argv += ['--metrics-file', str(s['metrics'])]
    if report:
        argv += ['--report-file', str(s['report'])]
    variables = {'fake_started_file': str(s['started'])}
    variables.update(vars_ or {})
    var_file = s['dir'] / ('vars-%d.json' % len(list(s['dir'].glob('vars-*.json'))))
    var_file.write_text(json.dumps(variables))
    argv += ['-e', '@%s' % var_file]
    return argv + list(extra)


def wrapper_env(**extra):
    env = dict(os.environ)
    env.pop('ANSIBLE_STDOUT_CALLBACK', None)
    env.update(BAO_ADDR='http://127.0.0.1:1', SECRET_NOT_PASSED='should-not-leak', ANSIBLE_NOCOLOR='1')
    env.update(extra)
    return env


def run_wrapper(s, *extra, vars_=None, timeout=300, **kwargs):
    return subprocess.run(wrapper_argv(s, *extra, vars_=vars_, **kwargs), env=wrapper_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def wait_for(predicate, timeout=180, what='condition', proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError('process ended (%s) before %s:\n%s\n%s' % (proc.returncode, what, out, err))
        time.sleep(0.1)
    raise AssertionError('timed out waiting for %s' % what)


def metrics(path):
    """{sample name or name{labels}: value}, parsed with prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(Path(path).read_text()):
        for sample in family.samples:
            key = sample.name
            if sample.labels:
                key += '{%s}' % ','.join('%s=%s' % kv for kv in sorted(sample.labels.items()))
            out[key] = sample.value
    return out


# --------------------------------------------------------------------------- the real wrapper
def test_two_wrappers_one_runs_the_other_exits_cleanly(setup):
    s = setup
    first = subprocess.Popen(wrapper_argv(s, vars_={'fake_release_file': str(s['release']), 'fake_report': rotation_report()}),
                             env=wrapper_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(s['started'].exists, what='the first run to start', proc=first)
        second = run_wrapper(s, vars_={'fake_report': rotation_report()})
        assert second.returncode == 75, second.stderr
        assert 'another run holds' in second.stderr and 'pid=%d' % first.pid in second.stderr
        assert not s['metrics'].exists() and not s['report'].exists()  # the busy instance wrote nothing
        zero = run_wrapper(s, '--busy-exit-code', '0', vars_={'fake_report': rotation_report()})
        assert zero.returncode == 0, zero.stderr
        s['release'].write_text('go')
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out + err
    assert 'result=success' in err

    report = json.loads(s['report'].read_text())
    assert report['schema'] == 'securetransport.ca_rotation_run/v1'
    assert report['result'] == 'success' and report['exit_code'] == 0 and report['ansible_playbook_rc'] == 0
    assert report['rotation']['generation'] == 17 and report['generation'] == 17 and report['epoch'] == 80594
    seen = report['rotation']['env_seen']
    assert seen['BAO_ADDR'] == 'http://127.0.0.1:1'  # BAO_* passes through
    assert seen['SECRET_NOT_PASSED'] == ''  # anything else does not
    assert seen['ANSIBLE_STDOUT_CALLBACK'] == 'ansible.builtin.default'

    m = metrics(s['metrics'])
    assert m['ca_rotation_last_run_success'] == 1
    assert m['ca_rotation_current_epoch'] == 80594
    assert m['ca_rotation_generation'] == 17
    assert m['ca_rotation_bundle_certificates'] == 5
    assert m['ca_rotation_bundle_earliest_expiry_timestamp_seconds'] == 1735797600  # 2025-01-02T06:00:00Z
    assert m['ca_rotation_reloads_total{result=ok}'] == 3
    assert m['ca_rotation_reloads_total{result=failed}'] == 0
    assert m['ca_rotation_runs_total{result=success}'] == 1
    assert m['ca_rotation_cluster_ok{cluster=local}'] == 1
    assert m['ca_rotation_duration_seconds'] > 0
    assert abs(m['ca_rotation_last_success_timestamp_seconds'] - time.time()) < 3600
    # the lock is free again
    again = run_wrapper(s, vars_={'fake_report': rotation_report(changed=False)})
    assert again.returncode == 0, again.stderr
    m2 = metrics(s['metrics'])
    assert m2['ca_rotation_reloads_total{result=ok}'] == 6
    assert m2['ca_rotation_runs_total{result=success}'] == 2
    assert m2['ca_rotation_bundle_last_change_timestamp_seconds'] == m['ca_rotation_bundle_last_change_timestamp_seconds']


def test_failed_run_keeps_last_success_and_counts_failures(setup):
    s = setup
    previous = cron_metrics.build_metrics({}, 'success', 1700000000.0, 1700000010.0, 0, rotation_report(), 21600)
    s['metrics'].write_text(previous.render())
    result = run_wrapper(s, vars_={'fake_report': rotation_report(ok=False, failed_server=True), 'fake_fail': True})
    assert result.returncode == 1, result.stderr
    m = metrics(s['metrics'])
    assert m['ca_rotation_last_success_timestamp_seconds'] == 1700000010
    assert m['ca_rotation_last_run_success'] == 0
    assert m['ca_rotation_last_run_exit_code'] == 1
    assert m['ca_rotation_reloads_total{result=ok}'] == 3 + 2
    assert m['ca_rotation_reloads_total{result=failed}'] == 1
    assert m['ca_rotation_runs_total{result=failed}'] == 1
    assert m['ca_rotation_runs_total{result=success}'] == 1
    assert m['ca_rotation_cluster_ok{cluster=local}'] == 0
    assert m['ca_rotation_epoch_duration_seconds'] == 21600  # carried over
    report = json.loads(s['report'].read_text())
    assert report['result'] == 'failed' and report['ansible_playbook_rc'] == 2


def test_report_ok_false_with_exit_zero_is_a_failure(setup):
    s = setup
    result = run_wrapper(s, '--epoch-duration', '20m', vars_={'fake_report': rotation_report(ok=False)})
    assert result.returncode == 1, result.stderr
    m = metrics(s['metrics'])
    assert m['ca_rotation_last_run_success'] == 0
    assert 'ca_rotation_last_success_timestamp_seconds' not in m  # never succeeded
    assert m['ca_rotation_epoch_duration_seconds'] == 1200


def test_openbao_lock_held_elsewhere_is_busy(setup):
    s = setup
    result = run_wrapper(s, vars_={'fake_report': rotation_report(changed=False, locked_out=True)})
    assert result.returncode == 75, result.stderr
    m = metrics(s['metrics'])
    assert m['ca_rotation_runs_total{result=busy}'] == 1
    assert 'ca_rotation_last_run_success' not in m  # neither success nor failure


def test_timeout_kills_the_run(setup):
    s = setup
    result = run_wrapper(s, '--timeout', '5', '--kill-grace', '10',
                         vars_={'fake_release_file': str(s['release']), 'fake_report': rotation_report()})
    assert result.returncode == 4, result.stderr
    assert json.loads(s['report'].read_text())['result'] == 'timeout'
    assert metrics(s['metrics'])['ca_rotation_runs_total{result=timeout}'] == 1


def test_sigterm_is_forwarded(setup):
    s = setup
    proc = subprocess.Popen(wrapper_argv(s, vars_={'fake_release_file': str(s['release'])}), env=wrapper_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(s['started'].exists, what='the run to start', proc=proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 5, out + err
    assert json.loads(s['report'].read_text())['result'] == 'error'


def test_playbook_without_report_still_succeeds(setup):
    s = setup
    result = run_wrapper(s)
    assert result.returncode == 0, result.stderr
    assert 'wrote no report' in result.stderr
    m = metrics(s['metrics'])
    assert m['ca_rotation_last_run_success'] == 1 and 'ca_rotation_current_epoch' not in m


def test_unreachable_host(setup, tmp_path):
    s = setup
    s['inventory'].write_text('authority ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh '
                              'ansible_ssh_common_args="-o ConnectTimeout=5 -o BatchMode=yes"\n')
    if subprocess.run(['which', 'ssh'], capture_output=True, check=False).returncode:
        pytest.skip('no ssh client')
    result = run_wrapper(s)
    assert result.returncode == 3, result.stderr
    assert json.loads(s['report'].read_text())['result'] == 'unreachable'


@pytest.mark.parametrize('change, needle', [
    (lambda a, s: a.__setitem__(a.index('--inventory') + 1, str(s['dir'] / 'missing.ini')), 'inventory'),
    (lambda a, s: a.__setitem__(a.index('--playbook') + 1, str(s['dir'] / 'missing.yml')), 'playbook'),
    (lambda a, s: a.__setitem__(a.index('--metrics-file') + 1, str(s['dir'] / 'nodir' / 'x.prom')), 'metrics-file'),
    (lambda a, s: a.__setitem__(a.index('--lock-file') + 1, str(s['dir'] / 'nodir' / 'x.lock')), 'lock-file'),
    (lambda a, s: a.extend(['--epoch-duration', 'soon']), 'epoch-duration'),
    (lambda a, s: a.extend(['--no-such-option']), 'unrecognized'),
    (lambda a, s: a.extend(['--timeout', 'x']), 'timeout'),
])
def test_configuration_errors_exit_2(setup, change, needle):
    s = setup
    argv = wrapper_argv(s)
    change(argv, s)
    result = subprocess.run(argv, env=wrapper_env(), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert not s['started'].exists()


def test_passthrough_arguments_reach_ansible_playbook(setup):
    s = setup
    result = run_wrapper(s, '--', '--list-tasks')
    assert result.returncode == 0, result.stderr
    assert 'Wait until the test releases the run' in result.stdout
    assert not s['started'].exists()  # --list-tasks ran nothing


# --------------------------------------------------------------------------- pure helpers
def test_classify_table():
    assert cron.classify(0, None, False, None)[:2] == ('success', 0)
    assert cron.classify(0, {'ok': True, 'changed': False}, False, None)[:2] == ('success', 0)
    assert cron.classify(0, {'ok': False}, False, None)[:2] == ('failed', 1)
    assert cron.classify(0, {'ok': 'False'}, False, None)[:2] == ('failed', 1)
    assert cron.classify(0, {'ok': 'true', 'locked_out': 'false'}, False, None)[:2] == ('success', 0)
    assert cron.classify(0, {'ok': True, 'locked_out': True}, False, None)[:2] == ('busy', 75)
    assert cron.classify(2, None, False, None)[:2] == ('failed', 1)
    assert cron.classify(1, None, False, None)[:2] == ('failed', 1)
    assert cron.classify(4, None, False, None)[:2] == ('unreachable', 3)
    assert cron.classify(5, None, False, None)[:2] == ('config', 2)
    assert cron.classify(250, None, False, None)[:2] == ('error', 5)
    assert cron.classify(-9, None, False, None)[:2] == ('error', 5)
    assert cron.classify(-15, None, True, None)[:2] == ('timeout', 4)
    assert cron.classify(-15, None, False, 15)[:2] == ('error', 5)


def test_metrics_render_parse_roundtrip(tmp_path):
    report = rotation_report()
    report['latest_expiry'] = '2025-01-03T12:00:00Z'
    report['epoch_duration'] = 1200
    first = cron_metrics.build_metrics({}, 'success', 100.0, 112.5, 0, report)
    path = tmp_path / 'm.prom'
    path.write_text(first.render())
    parsed = metrics(path)
    assert parsed['ca_rotation_duration_seconds'] == 12.5
    assert parsed['ca_rotation_current_epoch'] == parsed['ca_rotation_bundle_newest_epoch'] == 80594
    with_current = cron_metrics.build_metrics({}, 'success', 0.0, 1.0, 0, dict(report, current_epoch=80593)).render()
    assert 'ca_rotation_current_epoch 80593\n' in with_current and 'ca_rotation_bundle_newest_epoch 80594\n' in with_current
    assert parsed['ca_rotation_bundle_latest_expiry_timestamp_seconds'] == 1735905600
    assert parsed['ca_rotation_epoch_duration_seconds'] == 1200
    assert parsed['ca_rotation_bundle_info{sha256=%s}' % ('ab' * 32)] == 1
    previous = cron_metrics.read_metrics(path)
    assert previous[('ca_rotation_reloads_total', (('result', 'ok'),))] == 3
    # a new bundle moves the change time; a failed run without report keeps the state gauges
    report2 = dict(report, bundle_sha256='cd' * 32)
    second = cron_metrics.build_metrics(previous, 'success', 200.0, 210.0, 0, report2)
    path.write_text(second.render())
    assert metrics(path)['ca_rotation_bundle_last_change_timestamp_seconds'] == 210
    third = cron_metrics.build_metrics(cron_metrics.read_metrics(path), 'failed', 300.0, 301.0, 1, None)
    path.write_text(third.render())
    parsed = metrics(path)
    assert parsed['ca_rotation_last_success_timestamp_seconds'] == 210
    assert parsed['ca_rotation_generation'] == 17
    assert parsed['ca_rotation_bundle_last_change_timestamp_seconds'] == 210
    assert parsed['ca_rotation_bundle_info{sha256=%s}' % ('cd' * 32)] == 1
    assert parsed['ca_rotation_cluster_ok{cluster=local}'] == 1
    assert parsed['ca_rotation_runs_total{result=failed}'] == 1


def test_reload_counts():
    assert cron_metrics.reload_counts(None) == (0, 0)
    assert cron_metrics.reload_counts(rotation_report(failed_server=True)) == (2, 1)
    verified_only = {'clusters': {'a': {'ok': True, 'reloaded': False,
                                        'servers': [{'name': 'n', 'ok': True, 'reload_ms': None, 'error': None}]}}}
    assert cron_metrics.reload_counts(verified_only) == (0, 0)
    assert cron_metrics.reload_counts({'clusters': 'garbage'}) == (0, 0)


def test_label_escaping_roundtrip(tmp_path):
    m = cron_metrics.Metrics()
    m.set('ca_rotation_cluster_ok', 'gauge', 'help "with" \\ chars', 1, {'cluster': 'we"ird\\name\nx'})
    path = tmp_path / 'e.prom'
    path.write_text(m.render())
    assert metrics(path) == {'ca_rotation_cluster_ok{cluster=we"ird\\name\nx}': 1}
    assert cron_metrics.read_metrics(path) == {('ca_rotation_cluster_ok', (('cluster', 'we"ird\\name\nx'),)): 1.0}


def test_metrics_are_pushed_to_a_pushgateway(setup):
    """A real HTTP server stands in for the Pushgateway; the PUT body must parse as Prometheus text."""
    import http.server
    import threading

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers['Content-Length']))
            received.append((self.path, self.headers['Content-Type'], body.decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        s = setup
        url = 'http://127.0.0.1:%d' % server.server_address[1]
        result = run_wrapper(s, '--pushgateway', url, '--pushgateway-job', 'ca rotation', metrics=False,
                             vars_={'fake_report': rotation_report()})
        assert result.returncode == 0, result.stderr
        # an unreachable gateway is logged, the run still succeeds
        down = run_wrapper(s, '--pushgateway', 'http://127.0.0.1:1', metrics=False, vars_={'fake_report': rotation_report()})
        assert down.returncode == 0 and 'cannot push the metrics' in down.stderr
    finally:
        server.shutdown()
        server.server_close()
    (path, content_type, body), = received
    assert path == '/metrics/job/ca%20rotation'
    assert content_type.startswith('text/plain; version=0.0.4')
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families['ca_rotation_current_epoch'].samples[0].value == 80594
    assert families['ca_rotation_last_run_success'].samples[0].value == 1

# -*- coding: utf-8 -*-
"""The run report and the failure message (what operators, ca-rotate-cron and the alerts read)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import results as r

CERTS = [{'epoch': 9, 'not_after': '2026-01-05T00:00:00Z'}, {'epoch': 8, 'not_after': '2026-01-04T00:00:00Z'},
         {'epoch': None, 'not_after': '2036-01-01T00:00:00Z'}]
AUTH = {'go': True, 'started_at': 's', 'epoch': 9, 'sha256': 'f' * 64, 'generation': 4, 'new_bundle': False,
        'certificates': CERTS, 'plan': {'current_epoch': 8, 'schedule': {'epoch_duration': 20}}, 'hold': None,
        'announce_error': None, 'kind': 'rotation'}


def test_a_quiet_run_reports_nothing_changed():
    rep = r.run_report(AUTH, [{'cluster': 'a', 'ok': True, 'reloaded': False}], {'changed': False, 'epoch': 8}, 'f')
    assert rep['ok'] and rep['changed'] is False and rep['activated_epoch'] is None
    assert rep['earliest_expiry'] == '2026-01-04T00:00:00Z' and rep['latest_expiry'] == '2026-01-05T00:00:00Z'
    assert rep['bundle_certificates'] == 3 and rep['epoch_duration'] == 20 and set(rep['clusters']) == {'a'}
    assert r.failure_message(rep) is None


def test_a_failed_cluster_fails_the_run_and_says_nothing_was_activated():
    rep = r.run_report(AUTH, [{'cluster': 'a', 'ok': True}, {'cluster': 'b', 'ok': False, 'error': 'nats-1: no reload'}],
                       {'changed': False, 'epoch': 8}, 'f')
    msg = r.failure_message(rep)
    assert not rep['ok'] and 'cluster(s) b: nats-1: no reload' in msg and 'Epoch 8 was NOT activated' in msg


def test_announcement_and_authority_errors_are_reported():
    rep = r.run_report(dict(AUTH, announce_error='no servers'), [], {'changed': True, 'epoch': 8}, 'f')
    assert 'The announcement failed: no servers' in r.failure_message(rep) and rep['activated_epoch'] == 8
    stopped = r.authority_stopped('s', 'rotation', 'clock is behind', error='clock is behind').to_fact()
    rep = r.run_report(stopped, [], {}, 'f')
    assert not rep['ok'] and r.failure_message(rep).startswith('clock is behind')


def test_locked_out_run_is_ok_and_unchanged():
    stopped = r.authority_stopped('s', 'rotation', 'rotation is locked by x', locked_out=True).to_fact()
    rep = r.run_report(stopped, [], {}, 'f')
    assert rep['ok'] and rep['locked_out'] and rep['changed'] is False


def test_timings_are_kept_per_step():
    t = r.Timings()
    with t.step('plan'):
        pass
    with t.step('plan'):
        pass
    assert list(t.as_dict()) == ['plan'] and t.as_dict()['plan'] >= 0

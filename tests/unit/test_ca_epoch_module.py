# -*- coding: utf-8 -*-
"""Runs the real ca_epoch main() with patched module args and checks the JSON result."""

from __future__ import annotations

import pytest

from helpers import run_module  # tests/helpers.py (shared; tests/ is put on sys.path by tests/conftest.py)


def run(params, check_mode=False):
    return run_module('ca_epoch', params, check_mode=check_mode)


SHORT = dict(epoch_zero='2025-01-01T00:00:00Z', epoch_duration='20s', validity='80s', lead_time='5s', skew_allowance='2s')


def test_defaults_at_fixed_time():
    result = run({'now': '2025-03-01T12:00:00Z'})
    assert result['changed'] is False
    assert 'failed' not in result
    assert result['current_epoch'] == 80594
    assert result['desired_epochs'] == [80591, 80592, 80593, 80594]
    assert result['prepared_epoch'] is None
    assert result['schedule'] == {'epoch_zero': '1970-01-01T00:00:00Z', 'epoch_duration': 21600, 'validity': 86400,
                                  'lead_time': 5400, 'skew_allowance': 300}
    assert result['epoch'] == {'epoch': 80594, 'start': '2025-03-01T12:00:00Z', 'expiry': '2025-03-02T12:00:00Z',
                               'not_before': '2025-03-01T11:55:00Z', 'preparation_at': '2025-03-01T10:30:00Z',
                               'state': 'current', 'valid': True}


def test_short_profile_prepared_and_specific_epoch():
    result = run(dict(SHORT, now='2025-01-01T00:01:16Z', epoch=0))
    assert result['current_epoch'] == 3
    assert result['prepared_epoch'] == 4
    assert result['desired_epochs'] == [0, 1, 2, 3, 4]
    assert [v['epoch'] for v in result['valid_epochs']] == [0, 1, 2, 3]
    assert result['next_epoch_start'] == '2025-01-01T00:01:20Z'
    assert result['next_preparation_at'] == '2025-01-01T00:01:35Z'
    assert result['seconds_until_next_epoch'] == 4
    assert result['epoch']['epoch'] == 0
    assert result['epoch']['state'] == 'valid'
    assert result['epoch']['expiry'] == '2025-01-01T00:01:20Z'
    assert [(e['epoch'], e['state']) for e in result['timeline']] == [
        (0, 'valid'), (1, 'valid'), (2, 'valid'), (3, 'current'), (4, 'prepared')]


def test_integer_and_iso_inputs():
    result = run(dict(epoch_zero=1735689600, epoch_duration=20, validity='PT80S', lead_time=0, skew_allowance=0,
                      now=1735689665))
    assert result['current_epoch'] == 3
    assert result['schedule']['lead_time'] == 0
    assert result['prepared_epoch'] is None


def test_check_mode_same_result():
    params = dict(SHORT, now='2025-01-01T00:01:16Z')
    normal = run(params)
    checked = run(params, check_mode=True)
    normal.pop('invocation', None)
    checked.pop('invocation', None)
    assert checked == normal
    assert checked['changed'] is False


def test_current_time_when_now_unset():
    result = run({'epoch_duration': '1h'})
    assert result['valid_epochs'][-1]['epoch'] == result['current_epoch']
    assert result['current_start'] <= result['now'] < result['next_epoch_start']


@pytest.mark.parametrize('params, option, fragment', [
    ({'epoch_duration': 'soon'}, 'epoch_duration', "Invalid epoch_duration 'soon'"),
    ({'epoch_duration': 0}, 'epoch_duration', 'greater than zero'),
    ({'epoch_duration': '20s', 'validity': '10s'}, 'validity', 'validity (10 seconds) must be at least epoch_duration'),
    ({'epoch_duration': '20s', 'lead_time': '20s'}, 'lead_time', 'lead_time (20 seconds) must be shorter'),
    ({'skew_allowance': '-1m'}, 'skew_allowance', 'Invalid skew_allowance'),
    ({'now': '2025-01-01T00:00:00'}, 'now', 'no timezone'),
    ({'epoch_zero': '2030-01-01T00:00:00Z', 'now': '2025-01-01T00:00:00Z'}, 'now', 'before epoch_zero'),
    ({'epoch': -1}, 'epoch', 'epoch must not be negative'),
])
def test_bad_input_fails_naming_option(params, option, fragment):
    result = run(params)
    assert result['failed'] is True
    assert result['option'] == option
    assert fragment in result['msg']
    assert option in result['msg']


def test_wrong_type_for_epoch_is_rejected_by_ansible():
    result = run({'epoch': 'three'})
    assert result['failed'] is True
    assert 'epoch' in result['msg']


def test_unknown_option_rejected():
    result = run({'epoch_length': '6h'})
    assert result['failed'] is True
    assert 'epoch_length' in result['msg']

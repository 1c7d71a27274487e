# -*- coding: utf-8 -*-
"""Tests for the epoch filter plugins (plugins/filter/epoch.py)."""

from __future__ import annotations

import datetime

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.securetransport.ca_rotation.plugins.filter.epoch import FilterModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, utcnow

F = FilterModule().filters()
SHORT = dict(epoch_zero='2025-01-01T00:00:00Z', epoch_duration='20s', validity='80s', lead_time='5s', skew_allowance='2s')
EXPECTED = {'epoch_number', 'epoch_start', 'epoch_expiry', 'epoch_not_before', 'epoch_valid_epochs', 'epoch_prepared',
            'epoch_desired', 'epoch_info', 'epoch_plan', 'duration_seconds'}


def test_filter_names():
    assert set(F) == EXPECTED


def test_each_filter_has_sidecar_doc():
    import pathlib

    import yaml
    root = pathlib.Path(__file__).resolve().parents[2] / 'plugins' / 'filter'
    for name in EXPECTED:
        doc = yaml.safe_load((root / ('%s.yml' % name)).read_text())
        assert doc['DOCUMENTATION']['name'] == name
        assert doc['RETURN']['_value']['type']
        assert '_input' in doc['DOCUMENTATION']['options']


def test_epoch_number():
    assert F['epoch_number']('2025-01-01T00:01:05Z', **SHORT) == 3
    assert F['epoch_number'](1735689665, **SHORT) == 3
    assert F['epoch_number']('1735689665', **SHORT) == 3
    assert F['epoch_number']('2025-03-01T12:00:00Z') == 80594


def test_epoch_number_now():
    expected = EpochSchedule.from_params({}).epoch(utcnow())
    # may cross a 6h boundary between the two calls only in theory; allow it
    assert F['epoch_number']('now') in (expected, expected + 1)
    assert F['epoch_number'](None) in (expected, expected + 1)


def test_start_expiry_not_before():
    assert F['epoch_start'](3, **SHORT) == '2025-01-01T00:01:00Z'
    assert F['epoch_start']('3', **SHORT) == '2025-01-01T00:01:00Z'
    assert F['epoch_expiry'](3, **SHORT) == '2025-01-01T00:02:20Z'
    assert F['epoch_not_before'](3, **SHORT) == '2025-01-01T00:00:58Z'


def test_valid_prepared_desired():
    assert F['epoch_valid_epochs']('2025-01-01T00:01:05Z', **SHORT) == [0, 1, 2, 3]
    assert F['epoch_prepared']('2025-01-01T00:01:05Z', **SHORT) is None
    assert F['epoch_prepared']('2025-01-01T00:01:16Z', **SHORT) == 4
    assert F['epoch_desired']('2025-01-01T00:01:16Z', **SHORT) == [0, 1, 2, 3, 4]


def test_info_and_plan():
    info = F['epoch_info'](2, now='2025-01-01T00:01:05Z', **SHORT)
    assert info['state'] == 'valid' and info['valid'] is True
    assert F['epoch_info'](9, now='2025-01-01T00:01:05Z', **SHORT)['state'] == 'future'
    plan = F['epoch_plan']('2025-01-01T00:01:16Z', **SHORT)
    assert plan['current_epoch'] == 3
    assert plan['prepared_epoch'] == 4
    assert plan['schedule']['epoch_duration'] == 20


def test_aware_datetime_input():
    t = datetime.datetime(2025, 1, 1, 1, 1, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert F['epoch_number'](t, **SHORT) == 3


def test_duration_seconds():
    assert F['duration_seconds']('PT1H30M') == 5400
    assert F['duration_seconds']('20m') == 1200
    assert F['duration_seconds'](0, allow_zero=True) == 0


@pytest.mark.parametrize('name, args, kwargs, fragments', [
    ('epoch_number', ('2025-01-01T00:00:00',), {}, ['epoch_number', 'no timezone']),
    ('epoch_number', (datetime.datetime(2025, 1, 1),), {}, ['naive']),
    ('epoch_number', ('2025-01-01T00:00:00Z',), {'epoch_duration': 'soon'}, ["Invalid epoch_duration 'soon'", 'PT20M']),
    ('epoch_number', ('2024-12-31T23:59:59Z',), SHORT, ['before epoch_zero']),
    ('epoch_valid_epochs', ('now',), {'epoch_duration': '20s', 'validity': '10s'}, ['validity', 'at least epoch_duration']),
    ('epoch_prepared', ('now',), {'lead_time': '7h'}, ['lead_time', 'shorter than epoch_duration']),
    ('epoch_start', (-1,), {}, ['epoch must not be negative']),
    ('epoch_start', ('three',), {}, ['_input must be an epoch number']),
    ('epoch_start', (True,), {}, ['epoch number']),
    ('epoch_plan', ('now',), {'duration': '6h'}, ['unexpected keyword', 'duration']),
    ('duration_seconds', ('0',), {}, ['greater than zero']),
    ('duration_seconds', ('1.5h',), {}, ['not a duration']),
])
def test_errors_are_filter_errors_naming_option(name, args, kwargs, fragments):
    with pytest.raises(AnsibleFilterError) as err:
        F[name](*args, **kwargs)
    msg = str(err.value)
    assert msg.startswith('securetransport.ca_rotation.%s: ' % name)
    for fragment in fragments:
        assert fragment in msg

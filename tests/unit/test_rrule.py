# -*- coding: utf-8 -*-
"""Tests for the AWX RRULE builder (module_utils/_rrule.py) and the epoch_rrule filter."""

from __future__ import annotations

import datetime
import itertools
import pathlib
import re

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from dateutil import rrule as dateutil_rrule
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.filter.rrule import FilterModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, EpochSchedule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rrule import epoch_rrule, occurrences

UTC = datetime.timezone.utc
F = FilterModule().filters()
AWX_RE = re.compile(r'^DTSTART:\d{8}T\d{6}Z RRULE:FREQ=MINUTELY;INTERVAL=\d+$')


def t(text):
    return datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))


def schedule(**params):
    return EpochSchedule.from_params(params)


def expand(rule, count):
    """The first ``count`` occurrences according to dateutil (the library AWX uses), independent of our code."""
    return [dt.astimezone(UTC) for dt in itertools.islice(dateutil_rrule.rrulestr(rule.replace(' RRULE:', '\nRRULE:')), count)]


def test_six_hour_default_schedule():
    # epoch_zero 1970-01-01, 6h epochs, lead time 90 minutes: preparation at 04:30, 10:30, 16:30, 22:30 UTC
    result = epoch_rrule(schedule(), t('2025-01-01T00:00:00Z'))
    assert result['rrule'] == 'DTSTART:20250101T043000Z RRULE:FREQ=MINUTELY;INTERVAL=360'
    assert result['dtstart'] == '2025-01-01T04:30:00Z'
    assert result['interval_minutes'] == 360
    assert result['lead_time_seconds'] == 5400
    assert result['next_runs'] == ['2025-01-01T04:30:00Z', '2025-01-01T10:30:00Z', '2025-01-01T16:30:00Z']
    s = schedule()
    assert result['prepares_epoch'] == s.epoch(t('2025-01-01T06:00:00Z'))
    assert s.prepared_epoch(t(result['dtstart'])) == result['prepares_epoch']
    assert AWX_RE.match(result['rrule'])


def test_twenty_minute_schedule():
    s = schedule(epoch_zero='2025-01-01T00:00:00Z', epoch_duration='20m')  # lead time 5m
    result = epoch_rrule(s, t('2025-01-01T00:16:00Z'))
    assert result['rrule'] == 'DTSTART:20250101T003500Z RRULE:FREQ=MINUTELY;INTERVAL=20'
    assert result['prepares_epoch'] == 2
    assert result['next_runs'] == ['2025-01-01T00:35:00Z', '2025-01-01T00:55:00Z', '2025-01-01T01:15:00Z']


def test_epoch_zero_offset():
    s = schedule(epoch_zero='2025-03-01T00:07:00Z', epoch_duration='PT20M', lead_time='3m')
    result = epoch_rrule(s, t('2025-03-01T10:00:00Z'))
    # epochs start at :07, :27, :47; prepared 3 minutes earlier
    assert result['dtstart'] == '2025-03-01T10:04:00Z'
    assert result['prepares_epoch'] == s.epoch(t('2025-03-01T10:07:00Z'))
    assert result['next_runs'][1:] == ['2025-03-01T10:24:00Z', '2025-03-01T10:44:00Z']


def test_epoch_zero_with_seconds_is_kept():
    s = schedule(epoch_zero='2025-03-01T00:00:30Z', epoch_duration='1h', lead_time='15m')
    result = epoch_rrule(s, t('2025-03-01T00:00:31Z'))
    assert result['rrule'] == 'DTSTART:20250301T004530Z RRULE:FREQ=MINUTELY;INTERVAL=60'


def test_now_before_epoch_zero_starts_with_epoch_one():
    s = schedule(epoch_zero='2030-01-01T00:00:00Z', epoch_duration='6h')
    result = epoch_rrule(s, t('2025-01-01T00:00:00Z'))
    assert result['dtstart'] == '2030-01-01T04:30:00Z'
    assert result['prepares_epoch'] == 1


def test_exactly_on_preparation_moment_and_inside_lead_window():
    s = schedule(epoch_zero='2025-01-01T00:00:00Z', epoch_duration='20m')
    assert epoch_rrule(s, t('2025-01-01T00:15:00Z'))['dtstart'] == '2025-01-01T00:15:00Z'
    # inside the lead window of epoch 1 (prepared at 00:15): the next one is 00:35
    assert epoch_rrule(s, t('2025-01-01T00:15:01Z'))['dtstart'] == '2025-01-01T00:35:00Z'
    assert epoch_rrule(s, t('2025-01-01T00:19:59Z'))['dtstart'] == '2025-01-01T00:35:00Z'


def test_runs_per_epoch_and_delay():
    s = schedule(epoch_duration='6h')
    result = epoch_rrule(s, t('2025-01-01T00:00:00Z'), runs_per_epoch=4, delay='1m')
    assert result['interval_minutes'] == 90
    assert result['dtstart'] == '2025-01-01T04:31:00Z'
    assert result['delay_seconds'] == 60
    assert result['rrule'].endswith('INTERVAL=90')


def test_delay_larger_than_lead_time_can_pick_current_epoch_moment():
    s = schedule(epoch_zero='2025-01-01T00:00:00Z', epoch_duration='20m', lead_time='1m')
    # epoch 1 prepared at 00:19; with a 5-minute delay the run is at 00:24, which is still ahead at 00:21
    result = epoch_rrule(s, t('2025-01-01T00:21:00Z'), delay='5m')
    assert result['dtstart'] == '2025-01-01T00:24:00Z'
    assert result['prepares_epoch'] == 1


@pytest.mark.parametrize('params, kwargs, option', [
    (dict(epoch_duration='20s', validity='80s', lead_time='5s'), {}, 'epoch_duration'),
    (dict(epoch_duration='90s'), {}, 'epoch_duration'),
    (dict(epoch_duration='6h'), dict(runs_per_epoch=7), 'runs_per_epoch'),
    (dict(epoch_duration='6h'), dict(runs_per_epoch=0), 'runs_per_epoch'),
    (dict(epoch_duration='6h'), dict(runs_per_epoch='x'), 'runs_per_epoch'),
    (dict(epoch_duration='6h'), dict(runs_per_epoch=True), 'runs_per_epoch'),
    (dict(epoch_duration='6h'), dict(delay='6h'), 'delay'),
    (dict(epoch_duration='6h'), dict(runs_per_epoch=4, delay='90m'), 'delay'),
    (dict(epoch_duration='6h'), dict(delay='-1'), 'delay'),
    (dict(epoch_duration='1000d', validity='1000d'), {}, 'epoch_duration'),
    (dict(epoch_zero='2025-01-01T00:00:00.5Z'), {}, 'epoch_zero'),
])
def test_rejects_what_cannot_be_expressed(params, kwargs, option):
    with pytest.raises(EpochError) as err:
        epoch_rrule(schedule(**params), t('2025-06-01T00:00:00Z'), **kwargs)
    assert err.value.option == option


def test_rejects_naive_now_and_bad_schedule():
    with pytest.raises(EpochError):
        epoch_rrule(schedule(), datetime.datetime(2025, 1, 1))
    with pytest.raises(EpochError):
        epoch_rrule({'epoch_duration': '6h'}, t('2025-01-01T00:00:00Z'))


def test_occurrences_after():
    start = t('2025-01-01T00:00:00Z')
    assert occurrences(start, 30, 2, after=t('2025-01-01T00:30:00Z')) == [t('2025-01-01T00:30:00Z'), t('2025-01-01T01:00:00Z')]
    assert occurrences(start, 30, 1, after=t('2025-01-01T00:30:01Z')) == [t('2025-01-01T01:00:00Z')]
    assert occurrences(start, 30, 1, after=t('2024-01-01T00:00:00Z')) == [start]


durations_minutes = st.sampled_from([1, 5, 10, 20, 30, 60, 90, 120, 360, 720, 1440])


@settings(max_examples=300, deadline=None)
@given(
    minutes=durations_minutes,
    lead_fraction=st.integers(min_value=0, max_value=99),
    zero_offset=st.integers(min_value=0, max_value=86400 * 400),
    now_offset=st.integers(min_value=-86400 * 30, max_value=86400 * 3000),
    runs=st.sampled_from([1, 2, 3, 4, 5, 6]),
    delay_fraction=st.integers(min_value=0, max_value=99),
)
def test_property_occurrences_are_preparation_moments(minutes, lead_fraction, zero_offset, now_offset, runs, delay_fraction):
    duration = minutes * 60
    if minutes % runs:
        return
    lead = duration * lead_fraction // 100
    zero = datetime.datetime(2020, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=zero_offset)
    s = EpochSchedule(epoch_zero=zero, duration=duration, validity=4 * duration, lead_time=lead, skew=0)
    interval = duration // runs
    delay = interval * delay_fraction // 100
    now = zero + datetime.timedelta(seconds=now_offset)
    result = epoch_rrule(s, now, runs_per_epoch=runs, delay=delay)

    assert AWX_RE.match(result['rrule'])
    assert result['interval_minutes'] * 60 == interval
    dtstart = t(result['dtstart'])
    assert dtstart >= now
    assert dtstart == s.preparation_at(result['prepares_epoch']) + datetime.timedelta(seconds=delay)
    assert result['prepares_epoch'] >= 1
    # DTSTART is the first preparation moment at or after now (ignoring epoch 0, which is never prepared)
    if result['prepares_epoch'] > 1:
        assert s.preparation_at(result['prepares_epoch'] - 1) + datetime.timedelta(seconds=delay) < now
    # every occurrence, as dateutil (AWX's own library) expands it, is aligned to an epoch boundary minus the lead
    # time plus the delay, and one run per epoch falls exactly on the preparation moment
    runs_seen = expand(result['rrule'], max(3, 2 * runs))
    assert runs_seen[:3] == [t(x) for x in result['next_runs']]
    for index, occurrence in enumerate(runs_seen):
        since_zero = (occurrence - zero).total_seconds() + lead - delay
        assert since_zero % interval == 0
        if index % runs == 0:
            assert since_zero % duration == 0


def test_dateutil_agrees_with_next_runs():
    result = epoch_rrule(schedule(epoch_duration='20m', epoch_zero='2025-01-01T00:02:00Z'), t('2025-02-03T04:05:06Z'),
                         runs_per_epoch=2)
    assert expand(result['rrule'], 3) == [t(x) for x in result['next_runs']]
    assert result['interval_minutes'] == 10


def test_filter():
    out = F['epoch_rrule']('2025-01-01T00:00:00Z', epoch_duration='6h')
    assert out['rrule'] == 'DTSTART:20250101T043000Z RRULE:FREQ=MINUTELY;INTERVAL=360'
    out = F['epoch_rrule'](1735689600, epoch_duration='20m', lead_time='2m', runs_per_epoch=2)
    assert out['dtstart'] == '2025-01-01T00:18:00Z' and out['interval_minutes'] == 10
    now = F['epoch_rrule']('now')
    assert t(now['dtstart']) >= datetime.datetime.now(UTC) - datetime.timedelta(seconds=5)
    with pytest.raises(AnsibleFilterError, match='epoch_duration'):
        F['epoch_rrule']('now', epoch_duration='20s', validity='80s')
    with pytest.raises(AnsibleFilterError, match='timezone'):
        F['epoch_rrule']('2025-01-01T00:00:00')


def test_filter_sidecar_documentation():
    root = pathlib.Path(__file__).resolve().parents[2] / 'plugins' / 'filter'
    doc = yaml.safe_load((root / 'epoch_rrule.yml').read_text())
    assert doc['DOCUMENTATION']['name'] == 'epoch_rrule'
    assert set(doc['DOCUMENTATION']['options']) == {'_input', 'runs_per_epoch', 'delay', 'epoch_zero', 'epoch_duration',
                                                    'validity', 'lead_time', 'skew_allowance'}

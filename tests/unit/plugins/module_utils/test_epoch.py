# -*- coding: utf-8 -*-
"""Unit and property tests for plugins/module_utils/_epoch.py (pure logic)."""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EPOCH_ARG_SPEC,
    EpochError,
    EpochSchedule,
    isoformat,
    now_from_params,
    parse_duration,
    parse_time,
    schedule_from_module_params,
    utcnow,
)

UTC = datetime.timezone.utc
ZERO = datetime.datetime(2025, 1, 1, tzinfo=UTC)
LATEST = datetime.datetime(9000, 1, 1, tzinfo=UTC)


def at(seconds, zero=ZERO):
    return zero + datetime.timedelta(seconds=seconds)


def short_profile(**kwargs):
    params = dict(epoch_zero='2025-01-01T00:00:00Z', epoch_duration='20s', validity='80s', lead_time='5s',
                  skew_allowance='2s')
    params.update(kwargs)
    return EpochSchedule.from_params(params)


# --------------------------------------------------------------------------- strategies
durations = st.integers(min_value=1, max_value=14 * 86400)
zeros = st.datetimes(min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2100, 1, 1),
                     timezones=st.just(UTC))


@st.composite
def schedules(draw):
    duration = draw(durations)
    validity = draw(st.integers(min_value=duration, max_value=duration * 8))
    lead_time = draw(st.integers(min_value=0, max_value=duration - 1))
    skew = draw(st.integers(min_value=0, max_value=3600))
    return EpochSchedule(epoch_zero=draw(zeros), duration=duration, validity=validity, lead_time=lead_time, skew=skew)


@st.composite
def schedule_and_time(draw):
    schedule = draw(schedules())
    room = int((LATEST - schedule.epoch_zero).total_seconds())  # stay far from datetime.max
    offset = draw(st.integers(min_value=0, max_value=min(10 ** 6 * schedule.duration, room)))
    micro = draw(st.integers(min_value=0, max_value=999999))
    t = schedule.epoch_zero + datetime.timedelta(seconds=offset, microseconds=micro)
    return schedule, t


# --------------------------------------------------------------------------- properties
@settings(max_examples=300, deadline=None)
@given(schedule_and_time())
def test_epoch_brackets_time(st_t):
    schedule, t = st_t
    n = schedule.epoch(t)
    assert n >= 0
    assert schedule.start(n) <= t < schedule.start(n + 1)


@settings(max_examples=300, deadline=None)
@given(schedule_and_time())
def test_valid_epochs_match_definition(st_t):
    schedule, t = st_t
    valid = schedule.valid_epochs(t)
    assert valid == sorted(valid)
    assert valid[-1] == schedule.epoch(t)
    for n in valid:
        assert schedule.start(n) <= t < schedule.expiry(n)
        assert schedule.expiry(n) > t
        assert schedule.is_valid(n, t)
    # nothing just outside the range is valid
    if valid[0] > 0:
        assert not schedule.is_valid(valid[0] - 1, t)
    assert not schedule.is_valid(valid[-1] + 1, t)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_multiple_validity_gives_exact_count(data):
    duration = data.draw(durations)
    k = data.draw(st.integers(min_value=1, max_value=8))
    schedule = EpochSchedule(epoch_zero=data.draw(zeros), duration=duration, validity=k * duration,
                             lead_time=duration // 4, skew=0)
    # far enough from epoch_zero that no epoch is cut off by "no negative epochs"
    room = int((LATEST - schedule.epoch_zero).total_seconds())
    offset = data.draw(st.integers(min_value=k * duration, max_value=max(k * duration, min(10 ** 5 * duration, room))))
    t = schedule.epoch_zero + datetime.timedelta(seconds=offset,
                                                 microseconds=data.draw(st.integers(min_value=0, max_value=999999)))
    assert len(schedule.valid_epochs(t)) == k


@settings(max_examples=300, deadline=None)
@given(schedule_and_time())
def test_prepared_epoch_logic(st_t):
    schedule, t = st_t
    n = schedule.epoch(t)
    prepared = schedule.prepared_epoch(t)
    boundary = schedule.start(n + 1) - datetime.timedelta(seconds=schedule.lead_time)
    if t >= boundary:
        assert prepared == n + 1
        assert schedule.desired_epochs(t) == schedule.valid_epochs(t) + [n + 1]
    else:
        assert prepared is None
        assert schedule.desired_epochs(t) == schedule.valid_epochs(t)
    nxt = schedule.next_preparation(t)
    assert nxt > t
    # the next preparation time is a preparation boundary and nothing new is prepared before it
    assert (nxt + datetime.timedelta(seconds=schedule.lead_time) - schedule.epoch_zero) % \
        datetime.timedelta(seconds=schedule.duration) == datetime.timedelta(0)
    assert nxt - t <= datetime.timedelta(seconds=schedule.duration)


@settings(max_examples=200, deadline=None)
@given(schedule_and_time())
def test_plan_is_json_safe_and_consistent(st_t):
    schedule, t = st_t
    plan = schedule.plan(t)
    assert json.loads(json.dumps(plan)) == plan
    assert plan['current_epoch'] == schedule.epoch(t)
    assert [v['epoch'] for v in plan['valid_epochs']] == schedule.valid_epochs(t)
    assert plan['desired_epochs'] == sorted(plan['desired_epochs'])
    assert plan['seconds_until_next_epoch'] >= 1
    assert plan['seconds_until_next_preparation'] >= 1
    states = {entry['epoch']: entry['state'] for entry in plan['timeline']}
    assert states[plan['current_epoch']] == 'current'
    for n in schedule.valid_epochs(t)[:-1]:
        assert states[n] == 'valid'
    if plan['prepared_epoch'] is not None:
        assert states[plan['prepared_epoch']] == 'prepared'
    else:
        assert states[plan['current_epoch'] + 1] == 'future'


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_to_params_round_trip(schedule):
    assert EpochSchedule.from_params(schedule.to_params()) == schedule


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10), st.integers(min_value=0, max_value=23), st.integers(min_value=0, max_value=59),
       st.integers(min_value=0, max_value=59))
def test_duration_forms_agree(d, h, m, s):
    total = d * 86400 + h * 3600 + m * 60 + s
    assume(total > 0)
    unit = ''.join('%d%s' % (v, u) for v, u in ((d, 'd'), (h, 'h'), (m, 'm'), (s, 's')) if v)
    iso = 'P' + ('%dD' % d if d else '')
    if h or m or s:
        iso += 'T' + ''.join('%d%s' % (v, u) for v, u in ((h, 'H'), (m, 'M'), (s, 'S')) if v)
    assert parse_duration(unit, 'x') == total
    assert parse_duration(iso, 'x') == total
    assert parse_duration(str(total), 'x') == total
    assert parse_duration(total, 'x') == total


# --------------------------------------------------------------------------- concrete examples
def test_design_example_four_valid_epochs():
    schedule = short_profile()
    t = at(65)  # epoch 3 (60..80s)
    assert schedule.epoch(t) == 3
    assert schedule.valid_epochs(t) == [0, 1, 2, 3]
    assert schedule.prepared_epoch(t) is None
    t = at(75)  # within lead_time (5s) of epoch 4
    assert schedule.prepared_epoch(t) == 4
    assert schedule.desired_epochs(t) == [0, 1, 2, 3, 4]
    t = at(85)  # epoch 4; epoch 0 expired at 80s
    assert schedule.valid_epochs(t) == [1, 2, 3, 4]


def test_boundaries_are_half_open():
    schedule = short_profile()
    assert schedule.epoch(at(20)) == 1
    assert schedule.epoch(at(19.999999)) == 0
    assert schedule.is_valid(0, at(0))
    assert schedule.is_valid(0, at(79.999999))
    assert not schedule.is_valid(0, at(80))
    assert schedule.prepared_epoch(at(14.999999)) is None
    assert schedule.prepared_epoch(at(15)) == 1
    assert schedule.next_preparation(at(14)) == at(15)
    assert schedule.next_preparation(at(15)) == at(35)


def test_start_expiry_not_before():
    schedule = short_profile()
    assert schedule.start(3) == at(60)
    assert schedule.expiry(3) == at(140)
    assert schedule.not_before(3) == at(58)
    assert schedule.preparation_at(3) == at(55)


def test_defaults():
    schedule = EpochSchedule.from_params({})
    assert schedule.epoch_zero == datetime.datetime(1970, 1, 1, tzinfo=UTC)
    assert schedule.duration == 6 * 3600
    assert schedule.validity == 24 * 3600
    assert schedule.lead_time == 90 * 60
    assert schedule.skew == 300
    assert schedule.to_params() == {'epoch_zero': '1970-01-01T00:00:00Z', 'epoch_duration': 21600, 'validity': 86400,
                                    'lead_time': 5400, 'skew_allowance': 300}
    # None means "default" too (as AnsibleModule passes unset options)
    assert EpochSchedule.from_params(dict.fromkeys(EPOCH_ARG_SPEC)) == schedule


def test_defaults_follow_duration():
    schedule = EpochSchedule.from_params({'epoch_duration': '20s'})
    assert (schedule.validity, schedule.lead_time) == (80, 5)
    schedule = EpochSchedule.from_params({'epoch_duration': 1})
    assert (schedule.validity, schedule.lead_time) == (4, 0)


def test_plan_known_values():
    schedule = EpochSchedule.from_params({})
    plan = schedule.plan(parse_time('2025-03-01T12:00:00Z', 'now'))
    assert plan['current_epoch'] == 80594
    assert plan['current_start'] == '2025-03-01T12:00:00Z'
    assert plan['current_expiry'] == '2025-03-02T12:00:00Z'
    assert plan['valid_epochs'][0] == {'epoch': 80591, 'start': '2025-02-28T18:00:00Z',
                                       'expiry': '2025-03-01T18:00:00Z', 'not_before': '2025-02-28T17:55:00Z'}
    assert plan['desired_epochs'] == [80591, 80592, 80593, 80594]
    assert plan['prepared_epoch'] is None
    assert plan['next_epoch_start'] == '2025-03-01T18:00:00Z'
    assert plan['next_preparation_at'] == '2025-03-01T16:30:00Z'
    assert plan['seconds_until_next_preparation'] == 16200
    assert plan['seconds_until_next_epoch'] == 21600
    assert [(e['epoch'], e['state']) for e in plan['timeline']] == [
        (80590, 'expired'), (80591, 'valid'), (80592, 'valid'), (80593, 'valid'), (80594, 'current'), (80595, 'future')]


def test_plan_rounds_seconds_up():
    plan = short_profile().plan(at(10.2))
    assert plan['seconds_until_next_epoch'] == 10
    assert plan['seconds_until_next_preparation'] == 5
    assert plan['now'] == '2025-01-01T00:00:10Z'


def test_early_epochs_have_no_negative_numbers():
    schedule = short_profile()
    plan = schedule.plan(at(1))
    assert schedule.valid_epochs(at(1)) == [0]
    assert plan['timeline'][0]['epoch'] == 0
    assert [e['state'] for e in plan['timeline']] == ['current', 'future']


def test_describe_states():
    schedule = short_profile()
    t = at(76)
    assert schedule.state(0, t) == 'valid'
    assert schedule.state(3, t) == 'current'
    assert schedule.state(4, t) == 'prepared'
    assert schedule.state(5, t) == 'future'
    assert schedule.state(0, at(81)) == 'expired'
    info = schedule.describe(4, t)
    assert info == {'epoch': 4, 'start': '2025-01-01T00:01:20Z', 'expiry': '2025-01-01T00:02:40Z',
                    'not_before': '2025-01-01T00:01:18Z', 'preparation_at': '2025-01-01T00:01:15Z',
                    'state': 'prepared', 'valid': False}


def test_lead_time_zero_never_prepares():
    schedule = short_profile(lead_time=0)
    assert schedule.prepared_epoch(at(19.999)) is None
    assert schedule.next_preparation(at(19)) == at(20)


def test_time_before_epoch_zero_is_rejected():
    with pytest.raises(EpochError, match='before epoch_zero') as err:
        short_profile().epoch(at(-1))
    assert err.value.option == 'now'


def test_negative_epoch_rejected():
    with pytest.raises(EpochError, match='epoch must not be negative') as err:
        short_profile().start(-1)
    assert err.value.option == 'epoch'
    assert not short_profile().is_valid(-1, at(1))


def test_naive_time_rejected_by_schedule():
    with pytest.raises(EpochError, match='timezone-aware'):
        short_profile().epoch(datetime.datetime(2025, 1, 1))


# --------------------------------------------------------------------------- duration parser table
@pytest.mark.parametrize('value, expected', [
    (1, 1),
    (1200, 1200),
    (1200.0, 1200),
    ('1200', 1200),
    (' 20 ', 20),
    ('20s', 20),
    ('20m', 1200),
    ('6h', 21600),
    ('1d', 86400),
    ('1w', 604800),
    ('1h30m', 5400),
    ('1d6h', 108000),
    ('1d 6h 30s', 108030),
    ('6H', 21600),
    ('PT20M', 1200),
    ('PT6H', 21600),
    ('PT1H30M', 5400),
    ('P1DT2H', 93600),
    ('P1D', 86400),
    ('P2W', 1209600),
    ('PT45S', 45),
    ('pt20m', 1200),
])
def test_parse_duration_valid(value, expected):
    assert parse_duration(value, 'epoch_duration') == expected


@pytest.mark.parametrize('value, why', [
    (0, 'greater than zero'),
    ('0', 'greater than zero'),
    ('0s', 'greater than zero'),
    ('PT0S', 'greater than zero'),
    (-5, 'negative'),
    ('-5', 'negative'),
    ('', 'empty'),
    ('   ', 'empty'),
    ('soon', 'not a duration'),
    ('5x', 'not a duration'),
    ('1.5h', 'not a duration'),
    ('h', 'not a duration'),
    ('1h30', 'not a duration'),
    ('-1h', 'not a duration'),
    ('1h1h', 'given twice'),
    ('P', 'ISO-8601'),
    ('PT', 'ISO-8601'),
    ('P1DT', 'ISO-8601'),
    ('P1Y', 'ISO-8601'),
    ('P1M', 'ISO-8601'),
    ('PT1.5S', 'ISO-8601'),
    (1.5, 'whole seconds'),
    (None, 'expected a duration'),
    (True, 'expected a duration'),
    ([20], 'expected a string or an integer'),
    ('200000w', '100 years'),
])
def test_parse_duration_invalid(value, why):
    with pytest.raises(EpochError) as err:
        parse_duration(value, 'epoch_duration')
    msg = str(err.value)
    assert err.value.option == 'epoch_duration'
    assert msg.startswith('Invalid epoch_duration ')
    assert why in msg
    assert "'20m'" in msg and 'PT20M' in msg  # shows the accepted forms


def test_parse_duration_allow_zero():
    assert parse_duration('0s', 'lead_time', allow_zero=True) == 0
    with pytest.raises(EpochError, match='negative'):
        parse_duration(-1, 'lead_time', allow_zero=True)


# --------------------------------------------------------------------------- time parser
@pytest.mark.parametrize('value, expected', [
    ('2025-01-01T00:00:00Z', ZERO),
    ('2025-01-01T01:00:00+01:00', ZERO),
    ('2025-01-01 00:00:00+00:00', ZERO),
    ('2025-01-01T00:00:00.250Z', ZERO + datetime.timedelta(milliseconds=250)),
    (1735689600, ZERO),
    (1735689600.5, ZERO + datetime.timedelta(milliseconds=500)),
    ('1735689600', ZERO),
    (' 1735689600.5 ', ZERO + datetime.timedelta(milliseconds=500)),
    (0, datetime.datetime(1970, 1, 1, tzinfo=UTC)),
    (datetime.datetime(2025, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))), ZERO),
])
def test_parse_time_valid(value, expected):
    parsed = parse_time(value, 'now')
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize('value, why', [
    ('2025-01-01T00:00:00', 'no timezone'),
    ('2025-01-01', 'no timezone'),
    (datetime.datetime(2025, 1, 1), 'naive'),
    ('yesterday', 'not an ISO-8601 timestamp'),
    ('', 'empty'),
    (None, 'expected a time'),
    (True, 'expected a time'),
    (float('nan'), 'finite'),
    (10 ** 20, 'out of range'),
    ([1], 'expected a string, a number or a datetime'),
])
def test_parse_time_invalid(value, why):
    with pytest.raises(EpochError) as err:
        parse_time(value, 'epoch_zero')
    assert err.value.option == 'epoch_zero'
    assert str(err.value).startswith('Invalid epoch_zero ')
    assert why in str(err.value)


def test_isoformat_and_utcnow():
    assert isoformat(datetime.datetime(2025, 1, 1, 1, 2, 3, 999999, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))) \
        == '2025-01-01T00:02:03Z'
    now = utcnow()
    assert now.tzinfo == UTC


# --------------------------------------------------------------------------- schedule validation
@pytest.mark.parametrize('params, option, fragment', [
    ({'epoch_duration': '20s', 'validity': '10s'}, 'validity', 'must be at least epoch_duration'),
    ({'epoch_duration': '20s', 'lead_time': '20s'}, 'lead_time', 'must be shorter than epoch_duration'),
    ({'epoch_duration': '20s', 'lead_time': '1m'}, 'lead_time', 'must be shorter than epoch_duration'),
    ({'lead_time': -1}, 'lead_time', 'negative'),
    ({'skew_allowance': '-5'}, 'skew_allowance', 'negative'),
    ({'epoch_duration': 0}, 'epoch_duration', 'greater than zero'),
    ({'epoch_duration': 'PT0S'}, 'epoch_duration', 'greater than zero'),
    ({'validity': 0}, 'validity', 'greater than zero'),
    ({'epoch_duration': 'often'}, 'epoch_duration', 'not a duration'),
    ({'epoch_zero': '2025-01-01T00:00:00'}, 'epoch_zero', 'no timezone'),
    ({'epoch_zero': 'genesis'}, 'epoch_zero', 'ISO-8601'),
])
def test_schedule_validation_names_option(params, option, fragment):
    with pytest.raises(EpochError) as err:
        EpochSchedule.from_params(params)
    assert err.value.option == option
    assert option in str(err.value)
    assert fragment in str(err.value)


def test_direct_construction_is_validated():
    with pytest.raises(EpochError) as err:
        EpochSchedule(epoch_zero=ZERO, duration=20, validity=19, lead_time=0, skew=0)
    assert err.value.option == 'validity'
    with pytest.raises(EpochError) as err:
        EpochSchedule(epoch_zero=datetime.datetime(2025, 1, 1), duration=20, validity=80, lead_time=0, skew=0)
    assert err.value.option == 'epoch_zero'
    with pytest.raises(EpochError) as err:
        EpochSchedule(epoch_zero=ZERO, duration=20.5, validity=80, lead_time=0, skew=0)
    assert err.value.option == 'epoch_duration'


def test_lead_time_zero_and_skew_zero_allowed():
    schedule = EpochSchedule.from_params({'lead_time': 0, 'skew_allowance': '0s'})
    assert (schedule.lead_time, schedule.skew) == (0, 0)


def test_validity_equal_duration_allowed():
    schedule = EpochSchedule.from_params({'epoch_duration': '1h', 'validity': 'PT60M'})
    assert schedule.validity == schedule.duration == 3600


# --------------------------------------------------------------------------- module helpers
def test_schedule_from_module_params_ignores_other_keys():
    schedule, now = schedule_from_module_params({'epoch_duration': '20s', 'now': '2025-01-01T00:00:30Z',
                                                 'epoch': 3, 'openbao': {'url': 'x'}})
    assert schedule.duration == 20
    assert now == at(30)


def test_now_from_params_defaults_to_current_time():
    before = utcnow()
    now = now_from_params({'now': None})
    assert before <= now <= utcnow()
    assert before <= now_from_params({'now': ''}) <= utcnow()
    assert before <= now_from_params({}) <= utcnow()
    with pytest.raises(EpochError) as err:
        now_from_params({'now': 'tomorrow'})
    assert err.value.option == 'now'


def test_arg_spec_shape():
    assert set(EPOCH_ARG_SPEC) == {'epoch_zero', 'epoch_duration', 'validity', 'lead_time', 'skew_allowance', 'now'}
    for spec in EPOCH_ARG_SPEC.values():
        assert spec['type'] == 'raw'


def test_out_of_range_is_epoch_error_not_overflow():
    schedule = EpochSchedule.from_params({'epoch_zero': '0001-01-01T00:00:00Z'})
    with pytest.raises(EpochError, match='representable'):
        schedule.plan(parse_time('0001-01-01T07:00:00Z', 'now'))
    with pytest.raises(EpochError, match='representable'):
        EpochSchedule.from_params({}).start(10 ** 12)

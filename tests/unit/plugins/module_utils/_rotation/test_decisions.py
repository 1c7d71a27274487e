# -*- coding: utf-8 -*-
"""The decisions of a rotation run (moved out of Jinja): hold, generation, coalescing, trust of every cluster,
activation, rollback target, clock check."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import decisions as d

SCHEDULE = EpochSchedule.from_params({'epoch_duration': 20, 'validity': 80})


def plan(current, prepared=None):
    return {'current_epoch': current, 'prepared_epoch': prepared}


def test_epochs_to_issue_current_then_prepared():
    assert d.epochs_to_issue(plan(7)) == [7]
    assert d.epochs_to_issue(plan(7, 8)) == [7, 8]
    assert d.newest_due(plan(7)) == 7 and d.newest_due(plan(7, 8)) == 8


def test_clock_behind_is_refused_and_equal_or_ahead_is_fine():
    d.check_clock(plan(9), {'last_epoch': None})
    d.check_clock(plan(9), {'last_epoch': 9})
    d.check_clock(plan(8, 9), {'last_epoch': 9})
    with pytest.raises(d.Refusal, match="clock is behind.*Nothing was changed"):
        d.check_clock(plan(7, 8), {'last_epoch': 9})


@pytest.mark.parametrize('current, release, active', [
    (10, False, True),   # held epoch 10, validity 4 epochs: kept while 10 + 4 - 2 > current
    (11, False, True),
    (12, False, False),  # one full epoch of validity left after the current: rotation resumes
    (10, True, False),   # released by the operator
])
def test_hold_decision(current, release, active):
    hold = {'epoch': 10, 'since': 'x'}
    got, expired = d.hold_decision(hold, release, current, SCHEDULE)
    assert (got is hold) is active
    assert expired is (not active)


def test_no_hold_is_neither_active_nor_expired():
    assert d.hold_decision(None, False, 5, SCHEDULE) == (None, False)


def test_generation_only_moves_for_a_new_bundle():
    assert d.generation({'generation': 4, 'bundle_sha256': 'a'}, 'a') == (False, 4)
    assert d.generation({'generation': 4, 'bundle_sha256': 'a'}, 'b') == (True, 5)
    assert d.generation({'generation': 0, 'bundle_sha256': None}, 'a') == (True, 1)


def test_generation_continues_from_the_stream_when_the_state_is_behind():
    lost = {'generation': 0, 'bundle_sha256': None}
    # the same bundle as the last announcement: nothing to announce, the state takes its generation back
    assert d.reconcile_generation(lost, 'a', {'generation': 17, 'bundle_sha256': 'a'}) == (False, 17, True)
    # a new bundle: the generation after the announced one, never a restarted count
    assert d.reconcile_generation(lost, 'b', {'generation': 17, 'bundle_sha256': 'a'}) == (True, 18, True)
    old_copy = {'generation': 9, 'bundle_sha256': 'x'}
    assert d.reconcile_generation(old_copy, 'b', {'generation': 17, 'bundle_sha256': 'a'}) == (True, 18, True)
    # a state at or ahead of the stream (or no announcement yet) decides alone
    current = {'generation': 17, 'bundle_sha256': 'a'}
    assert d.reconcile_generation(current, 'b', {'generation': 17, 'bundle_sha256': 'a'}) == (True, 18, False)
    assert d.reconcile_generation(current, 'a', {'generation': 16, 'bundle_sha256': 'z'}) == (False, 17, False)
    assert d.reconcile_generation(current, 'b', None) == (True, 18, False)
    assert d.reconcile_generation(lost, 'b', {'generation': None}) == (True, 1, False)


@given(st.integers(min_value=0, max_value=10 ** 6), st.lists(st.sampled_from('abc'), min_size=1, max_size=30))
def test_coalescing_one_generation_per_distinct_bundle(start, bundles):
    """However the runs fall, each run adds at most one generation, and only when the bundle changed."""
    state = {'generation': start, 'bundle_sha256': None}
    changes = 0
    for sha in bundles:
        new, gen = d.generation(state, sha)
        assert gen - state['generation'] == (1 if new else 0)
        changes += new
        state = {'generation': gen, 'bundle_sha256': sha}
    assert state['generation'] == start + changes
    assert changes == 1 + sum(1 for a, b in zip(bundles, bundles[1:]) if a != b)


def test_cluster_reloads_when_delivered_or_not_yet_proven():
    assert d.cluster_needs_reload(True, {'sha256': 's'}, 's')
    assert d.cluster_needs_reload(False, {'sha256': 'old'}, 's')
    assert d.cluster_needs_reload(False, {}, 's')
    assert not d.cluster_needs_reload(False, {'sha256': 's'}, 's')


def ok(name, sha='s'):
    return {'cluster': name, 'ok': True, 'sha256': sha}


def test_all_clusters_proven_needs_every_cluster_ok_on_this_bundle():
    assert d.all_clusters_proven([ok('a'), ok('b')], 2, 's')
    assert not d.all_clusters_proven([ok('a')], 2, 's'), 'a cluster that did not report'
    assert not d.all_clusters_proven([ok('a'), {'cluster': 'b', 'ok': False}], 2, 's')
    assert not d.all_clusters_proven([ok('a'), ok('b', 'other')], 2, 's'), 'a cluster proved another bundle'
    assert not d.all_clusters_proven([], 0, 's'), 'no cluster at all proves nothing'


def auth(**kw):
    base = {'go': True, 'plan': {'current_epoch': 7}, 'hold': None, 'announce_error': None,
            'certificates': [{'epoch': 8}, {'epoch': 7}, {'epoch': None}]}
    base.update(kw)
    return base


def test_activation_epoch_is_the_held_one_under_a_hold():
    assert d.activation_epoch(auth()) == 7
    assert d.activation_epoch(auth(hold={'epoch': 5})) == 5
    # a hold of a bundle whose newest intermediate is the prepared epoch: leaves keep coming from the current one,
    # as the rollback chose (the prepared epoch has not started)
    assert d.activation_epoch(auth(hold={'epoch': 8})) == 7


@pytest.mark.parametrize('kw, proven, enabled, expect', [
    ({}, True, True, True),
    ({}, False, True, False),
    ({}, True, False, False),
    ({'announce_error': 'down'}, True, True, False),
    ({'go': False}, True, True, False),
    ({'hold': {'epoch': 3}}, True, True, False),  # the held epoch is not in the bundle
    # dual mode: the classical default needs the classical intermediate; an ML-DSA one of the epoch does not do
    ({'certificates': [{'epoch': 7, 'family': 'mldsa'}, {'epoch': 8, 'family': 'classical'}]}, True, True, False),
    ({'certificates': [{'epoch': 7, 'family': 'mldsa'}, {'epoch': 7, 'family': 'classical'}]}, True, True, True),
])
def test_may_activate(kw, proven, enabled, expect):
    assert d.may_activate(auth(**kw), proven, enabled)[0] is expect


def test_rollback_target_and_default_epoch():
    history = [{'epoch': 9}, {'epoch': 8}]
    assert d.rollback_target(0, history) == 8
    assert d.rollback_target(6, history) == 6
    with pytest.raises(d.Refusal, match='no previous generation'):
        d.rollback_target(0, [{'epoch': 9}])
    assert d.rollback_default_epoch(8, 7) == 7 and d.rollback_default_epoch(6, 7) == 6


def test_schedule_is_timezone_aware():
    assert SCHEDULE.start(1) - SCHEDULE.start(0) == datetime.timedelta(seconds=20)


def test_a_rollback_must_leave_the_safe_margin():
    from datetime import timedelta

    restored = 100
    expiry = SCHEDULE.expiry(restored)
    margin = 2 * SCHEDULE.duration
    # enough left: the seconds left are returned
    assert d.check_rollback_margin(SCHEDULE, restored, expiry - timedelta(seconds=margin + 1), margin) == margin + 1
    with pytest.raises(d.Refusal) as err:
        d.check_rollback_margin(SCHEDULE, restored, expiry - timedelta(seconds=margin - 60), margin)
    text = str(err.value)
    assert 'epoch 100' in text and 'ca_rotation_rollback_min_validity' in text and 'Nothing was changed' in text
    assert d.span(margin - 60) in text
    with pytest.raises(d.Refusal) as err:
        d.check_rollback_margin(SCHEDULE, restored, expiry + timedelta(seconds=90), margin)
    assert 'expired 1m 30s ago' in str(err.value)


def test_a_hold_ends_at_the_safe_margin():
    from datetime import timedelta

    hold = {'epoch': 100}
    expiry = SCHEDULE.expiry(100)
    margin = 2 * SCHEDULE.duration
    now = expiry - timedelta(seconds=margin + 1)
    assert d.hold_decision(hold, False, SCHEDULE.epoch(now), SCHEDULE, now=now, min_validity=margin) == (hold, False)
    now = expiry - timedelta(seconds=margin)
    assert d.hold_decision(hold, False, SCHEDULE.epoch(now), SCHEDULE, now=now, min_validity=margin) == (None, True)
    # a larger margin ends it earlier; a release ends it at once
    now = expiry - timedelta(seconds=margin + 1)
    assert d.hold_decision(hold, False, SCHEDULE.epoch(now), SCHEDULE, now=now, min_validity=3 * margin) == (None, True)
    assert d.hold_decision(hold, True, SCHEDULE.epoch(now), SCHEDULE, now=now, min_validity=margin) == (None, True)


# ---------------------------------------------------------------- recovery after an outage longer than the validity
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize('reasons, unusable', [
    ([], False),
    (['the certificate expires at 2026-12-02T06:00:10Z, within the renewal window'], False),
    (['it was issued by epoch-7, which is no longer the default issuer (epoch-8)'], False),
    (['the common name is \'x\', not \'nats-0\'', 'subject alternative names missing: localhost'], False),
    (['the certificate expired at 2026-12-02T05:59:00Z'], True),
    (['it was issued by epoch-3, not by issuer_ref epoch-9', 'its issuing epoch 3 has expired'], True),
    (['its issuing CA is no longer an issuer of the mount'], True),
    (['/etc/nats/server.pem does not exist'], True),  # unreadable or missing: anything unknown counts
])
def test_leaf_unusable(reasons, unusable):
    assert d.leaf_unusable(reasons) is unusable


def test_leaf_issuer_is_the_default_while_it_is_valid_else_the_current_epoch():
    assert d.leaf_issuer(NOW + datetime.timedelta(seconds=1), NOW, 42) is None
    assert d.leaf_issuer(NOW, NOW, 42) == 'epoch-42'  # NotAfter is exclusive: expired at that instant
    assert d.leaf_issuer(NOW - datetime.timedelta(hours=1), NOW, 42) == 'epoch-42'
    assert d.leaf_issuer(None, NOW, 42) == 'epoch-42'  # no default issuer at all (pruned)
    # a step past an epoch boundary the authority step did not see: the newest issued epoch, never one nobody issued
    assert d.leaf_issuer(None, NOW, 43, existing=[41, 42]) == 'epoch-42'
    assert d.leaf_issuer(None, NOW, 42, existing=[41, 42, 43]) == 'epoch-42'  # not the prepared one
    assert d.leaf_issuer(None, NOW, 42, existing=[]) == 'epoch-42'


@given(st.integers(min_value=1, max_value=10 ** 6), st.integers(min_value=1, max_value=86400))
def test_lock_ttl_is_capped_at_one_epoch(ttl, duration):
    schedule = EpochSchedule.from_params({'epoch_duration': duration, 'validity': 4 * duration})
    capped, note = d.capped_lock_ttl(ttl, schedule)
    assert capped == min(ttl, duration) == min(ttl, d.max_lock_ttl(schedule))
    assert (note is None) == (ttl <= duration)
    if note:
        assert 'ca_rotation_authority_lock_ttl' in note and 'capped to %ds' % duration in note


def _lock(acquired, expires='2099-01-01T00:00:00Z', holder='killed-run'):
    return {'holder': holder, 'acquired_at': acquired, 'expires_at': expires}


def test_lock_outlived_after_one_epoch_whatever_expiry_it_claims():
    # SCHEDULE: 20 s epochs
    assert not d.lock_outlived(_lock('2026-12-02T05:59:45Z'), NOW, SCHEDULE)
    assert not d.lock_outlived(_lock('2026-12-02T05:59:40Z'), NOW, SCHEDULE)  # exactly one epoch: still a live run's
    assert d.lock_outlived(_lock('2026-12-02T05:59:39Z'), NOW, SCHEDULE)
    assert d.lock_outlived(_lock('2026-12-01T05:00:00+00:00'), NOW, SCHEDULE)
    assert not d.lock_outlived(None, NOW, SCHEDULE)
    assert not d.lock_outlived(_lock('2026-12-01T05:00:00Z', holder=None), NOW, SCHEDULE)  # released
    assert not d.lock_outlived({'holder': 'x'}, NOW, SCHEDULE)  # no acquired_at: leave it to its expiry
    assert not d.lock_outlived(_lock('yesterday'), NOW, SCHEDULE)

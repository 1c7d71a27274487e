# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of a rotation run, as pure functions (no I/O): each one is unit-tested on its own.

hold, generation, coalescing, which epochs to issue, whether a cluster must reload, whether every
cluster proved trust, which epoch to activate, and the rollback target.
"""

from __future__ import annotations

import datetime

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat


class Refusal(Exception):
    """The run must not go ahead; the message says why and what to do. Nothing was changed."""


def epochs_to_issue(plan):
    """The epochs whose intermediate must exist now: the current one and, once due, the prepared one."""
    out = [plan['current_epoch']]
    if plan.get('prepared_epoch') is not None:
        out.append(plan['prepared_epoch'])
    return out


def newest_due(plan):
    """The newest epoch that should be in the bundle now."""
    return plan['prepared_epoch'] if plan.get('prepared_epoch') is not None else plan['current_epoch']


def check_clock(plan, state):
    """Refuse when the newest due epoch is older than the one already announced (this clock is behind)."""
    last = state.get('last_epoch')
    if last is None:
        return
    due = newest_due(plan)
    if due < int(last):
        raise Refusal('The newest due epoch is %d but epoch %d was already announced: this controller\'s clock is behind the '
                      'one that announced it. Nothing was changed; fix the clock (NTP).' % (due, int(last)))


def hold_decision(hold, release_hold, current_epoch, schedule, now=None, min_validity=None):
    """``(active_hold or None, expired)`` for the rollback hold recorded in the state.

    A hold keeps the rolled-back bundle until it is released, or until its newest intermediate has no
    more than ``min_validity`` seconds of validity left at ``now`` (default: two epochs, counted at the
    start of the current one), so that rotation resumes with time to prove the new bundle and renew
    every leaf. ``expired`` is true when a recorded hold no longer applies (it is cleared).
    """
    if not hold:
        return None, False
    if now is None or min_validity is None:
        validity_epochs = schedule.validity // schedule.duration
        active = int(hold['epoch']) + validity_epochs - 2 > int(current_epoch)
    else:
        active = validity_left(schedule, int(hold['epoch']), now) > min_validity
    active = active and not release_hold
    return (hold, False) if active else (None, True)


def validity_left(schedule, epoch, now):
    """Seconds until the intermediate of ``epoch`` expires (negative once it has)."""
    return (schedule.expiry(int(epoch)) - now).total_seconds()


def check_rollback_margin(schedule, leaf_epoch, now, min_validity):
    """Refuse a rollback whose restored issuer would leave the servers and the announcer with certificates about to
    expire: every leaf a rollback issues comes from ``leaf_epoch``'s intermediate and cannot outlive it."""
    left = validity_left(schedule, leaf_epoch, now)
    if left < min_validity:
        raise Refusal(
            'Rolling back to epoch %d would leave the servers and the announcer with certificates from an intermediate that '
            'expires at %s, %s from now: less than the safe margin of %s (ca_rotation_rollback_min_validity). Nothing was '
            'changed. Roll back to a newer epoch (-e ca_rotation_rollback_epoch=<n>), or run rotate.yml.'
            % (int(leaf_epoch), isoformat(schedule.expiry(int(leaf_epoch))), span(left), span(min_validity)))
    return left


def span(seconds):
    seconds = int(seconds)
    if seconds < 0:
        return 'expired %s ago' % span(-seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return ' '.join('%d%s' % (v, u) for v, u in ((hours, 'h'), (minutes, 'm'), (secs, 's')) if v) or '0s'


def generation(state, bundle_sha256):
    """``(new_bundle, generation)``: a bundle that differs from the recorded one gets the next generation.

    Coalescing: however many epochs passed since the last run (missed runs, a crash), the bundle is built
    for *now* and gets exactly one new generation; an unchanged bundle keeps its generation, so a
    re-run announces nothing new.
    """
    current = int(state.get('generation') or 0)
    if bundle_sha256 != state.get('bundle_sha256'):
        return True, current + 1
    return False, current


def reconcile_generation(state, bundle_sha256, announced):
    """``(new_bundle, generation, resync)`` with the last signed announcement on the stream taken into account.

    The generation clients compare is the one they last saw on the stream. When the state document is behind it
    (deleted, or restored from an old copy) the state alone would restart the count and clients would skip every
    announcement until it passed theirs: the count continues from the stream instead (``resync``). An announcement
    of the same bundle is not repeated; the state just takes its generation back.
    """
    new_bundle, gen = generation(state, bundle_sha256)
    if not announced or announced.get('generation') is None:
        return new_bundle, gen, False
    last = int(announced['generation'])
    if last <= int(state.get('generation') or 0):
        return new_bundle, gen, False
    if announced.get('bundle_sha256') == bundle_sha256:
        return False, last, True
    return True, last + 1, True


def cluster_needs_reload(delivered, record, bundle_sha256):
    """A cluster reloads when the bundle was (re)written, or when it has not proven this bundle yet."""
    return bool(delivered) or (record or {}).get('sha256') != bundle_sha256


def all_clusters_proven(results, expected_clusters, bundle_sha256):
    """True only when every expected cluster reported, every one is ok, and all proved this bundle."""
    if expected_clusters <= 0 or len(results) != expected_clusters:
        return False
    if any(not r.get('ok') for r in results):
        return False
    return {r.get('sha256') for r in results} == {bundle_sha256}


def unproven_count(results, expected_clusters):
    return expected_clusters - sum(1 for r in results if r.get('ok'))


def activation_epoch(auth):
    """The epoch that becomes the default issuer: the held epoch under a hold (never one that has not started, as the
    rollback itself chose), else the current one."""
    hold, current = auth.get('hold'), int(auth['plan']['current_epoch'])
    return rollback_default_epoch(hold['epoch'], current) if hold else current


def holds_intermediate(certificates, family='classical', epoch=None):
    """Whether a bundle's ``certificates`` hold an epoch intermediate of ``family`` (of ``epoch``, when given); the
    certificates of a classical-only bundle carry no family mark."""
    return any(c.get('epoch') is not None and c.get('family', 'classical') == family and epoch in (None, c['epoch'])
               for c in certificates or [])


def may_activate(auth, proven, enabled=True):
    """``(bool, reason)``: activation needs every cluster's proof, a recorded announcement and the
    epoch's intermediate in the bundle."""
    if not enabled:
        return False, 'activation is disabled (ca_rotation_activate_enabled)'
    if not auth.get('go'):
        return False, 'the authority step did not go ahead'
    if auth.get('announce_error'):
        return False, 'the announcement failed'
    if not proven:
        return False, 'not every cluster has proven trust'
    epoch = activation_epoch(auth)
    # the classical family's own intermediate (in dual mode an ML-DSA one of the epoch does not stand for it)
    if not holds_intermediate(auth.get('certificates'), 'classical', epoch):
        return False, 'epoch %d is not in the bundle' % epoch
    return True, None


def rollback_target(requested, history):
    """The epoch whose stored bundle a rollback restores: the one asked for, else the previous generation's."""
    if requested and int(requested) > 0:
        return int(requested)
    if len(history or []) > 1:
        return int(history[1]['epoch'])
    raise Refusal('There is no previous generation to roll back to (history has %d entries). '
                  'Name the epoch with -e ca_rotation_rollback_epoch=<n>.' % len(history or []))


def rollback_default_epoch(bundle_epoch, current_epoch):
    """After a rollback new leaves come from the restored epoch, never from one that has not started."""
    return min(int(bundle_epoch), int(current_epoch))


#: renewal reasons (``_openbao.leaf.leaf_renewal_reasons``) of a leaf that still works: renewed after activation
STILL_USABLE = ('the certificate expires at', 'the common name is', 'subject alternative names missing',
                'it was issued by', 'its key is')


def leaf_unusable(reasons):
    """A leaf nothing can connect with any more: expired, from an expired or deleted issuer, unreadable or missing.

    Any reason not known to leave the leaf working counts (a leaf is renewed once too often rather than never)."""
    return any(not str(r).startswith(STILL_USABLE) for r in reasons or [])


def leaf_issuer(default_not_after, now, current_epoch, existing=None):
    """The issuer new leaves come from: the default one (None) while it is valid at ``now``; when it has expired or
    there is none (``default_not_after`` None) - after an outage longer than the validity - ``epoch-<current>``,
    the intermediate this run issued and delivers in its bundle. Nothing can connect with the expired leaves, so
    waiting for a proof of trust before issuing from it would wait forever (the proof itself needs a server leaf
    that has not expired).

    ``existing``: the epochs whose intermediate exists and is valid at ``now``. A step that runs after an epoch
    boundary the authority step did not see (a slow run) then takes the newest of them not after the current epoch,
    never an epoch nobody issued."""
    if default_not_after is not None and default_not_after > now:
        return None
    if existing is not None:
        candidates = [int(n) for n in existing if int(n) <= int(current_epoch)]
        if candidates:
            return 'epoch-%d' % max(candidates)
    return 'epoch-%d' % int(current_epoch)


def max_lock_ttl(schedule):
    """The longest lock a crashed run may leave: one epoch duration.

    A stale lock then delays the next rotation by at most one epoch, while the bundle still holds intermediates
    valid for ``validity - duration`` and leaves renewed at half their life have ``validity / 2`` left (with the
    default validity of 4 epochs: 3 and 2 epochs), so the run after the lock expired converges without an outage."""
    return int(schedule.duration)


def capped_lock_ttl(ttl_seconds, schedule):
    """``(ttl, note)``: the lock TTL to use, capped at :func:`max_lock_ttl` (``note`` says so, None when not capped)."""
    cap = max_lock_ttl(schedule)
    if int(ttl_seconds) <= cap:
        return int(ttl_seconds), None
    return cap, ('ca_rotation_authority_lock_ttl (%ds) is longer than one epoch (%ds), longer than a crashed run may keep '
                 'rotation locked: capped to %ds; set it to at most one epoch duration' % (int(ttl_seconds), cap, cap))


def lock_outlived(lock, now, schedule):
    """True for a lock taken more than :func:`max_lock_ttl` ago, whatever expiry it claims (a run of a configuration
    without the cap, killed while holding it): no run of this schedule can still be holding it."""
    if not lock or not lock.get('holder') or not lock.get('acquired_at'):
        return False
    try:
        acquired = datetime.datetime.fromisoformat(str(lock['acquired_at']).replace('Z', '+00:00'))
    except ValueError:
        return False
    if acquired.tzinfo is None:
        acquired = acquired.replace(tzinfo=datetime.timezone.utc)
    return (now - acquired).total_seconds() > max_lock_ttl(schedule)

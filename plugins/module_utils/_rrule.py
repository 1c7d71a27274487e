# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RRULE strings for schedulers (AWX / Ansible Automation Platform) aligned to the epoch schedule (private).

A rotation run is most useful right when the next epoch becomes *prepared*, that is at
``start(n) - lead_time`` (DESIGN section 2). :func:`epoch_rrule` builds an RFC 5545 recurrence in
the form AWX accepts (``DTSTART:YYYYMMDDTHHMMSSZ RRULE:FREQ=MINUTELY;INTERVAL=<n>``) whose every
occurrence is such a preparation moment (plus an optional ``delay``), optionally with extra runs
spaced evenly inside each epoch (``runs_per_epoch``), so that a missed or failed run is repaired
before the next preparation.

AWX rules honoured (awx/api/serializers.py ``SchedulePreviewSerializer``): DTSTART in UTC with a
``Z`` suffix, ``INTERVAL`` present, no ``SECONDLY`` frequency. Schedules that cannot be expressed
that way are rejected with :class:`EpochError` naming the option: an interval that is not a whole
number of minutes (the 20s/80s test profiles), or occurrences that would need sub-second precision.
"""

from __future__ import annotations

import datetime

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    EpochSchedule,
    isoformat,
    parse_duration,
)

__all__ = ['MAX_INTERVAL_MINUTES', 'epoch_rrule', 'occurrences']

UTC = datetime.timezone.utc

#: Longest interval accepted (one year of minutes); keeps the rule sane for schedulers.
MAX_INTERVAL_MINUTES = 366 * 24 * 60


def _dtstart_text(dt):
    dt = dt.astimezone(UTC)
    return '%04d%02d%02dT%02d%02d%02dZ' % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


def occurrences(dtstart, interval_minutes, count, after=None):
    """The first ``count`` occurrences of ``FREQ=MINUTELY;INTERVAL=interval_minutes`` from ``dtstart``.

    With ``after`` (aware datetime), only occurrences at or after it are returned.
    """
    step = datetime.timedelta(minutes=interval_minutes)
    first = dtstart
    if after is not None and after > dtstart:
        skipped = -((dtstart - after) // step)  # ceil((after - dtstart) / step)
        first = dtstart + skipped * step
    return [first + i * step for i in range(count)]


def epoch_rrule(schedule, now, runs_per_epoch=1, delay=0):
    """An AWX RRULE whose occurrences are the epochs' preparation moments (plus ``delay``).

    :param schedule: an :class:`EpochSchedule`.
    :param now: aware datetime; DTSTART is the first preparation moment (plus ``delay``) at or after it.
        Pass a fixed time (for example when the schedule was first created) to get the same DTSTART,
        and so an unchanged schedule, on every run.
    :param runs_per_epoch: runs in each epoch (>= 1); the interval is ``epoch_duration / runs_per_epoch``
        and must be whole minutes. The first run of each epoch is at its preparation moment.
    :param delay: duration (seconds or ``1m``-style) added to every occurrence, smaller than the interval;
        use it to stay clear of the preparation moment when the scheduler's clock may run ahead.
    :returns: dict with ``rrule``, ``dtstart`` (ISO-8601 ``Z``), ``interval_minutes``, ``runs_per_epoch``,
        ``delay_seconds``, ``prepares_epoch`` (the epoch prepared by the DTSTART run) and ``next_runs``
        (the first three occurrences at or after ``now``, ISO-8601).
    :raises EpochError: naming the option when the schedule cannot be expressed.
    """
    if not isinstance(schedule, EpochSchedule):
        raise EpochError('schedule must be an EpochSchedule, got %r' % (schedule,), option='schedule')
    if not isinstance(now, datetime.datetime) or now.utcoffset() is None:
        raise EpochError('now must be a timezone-aware datetime, got %r' % (now,), option='now')
    now = now.astimezone(UTC)
    if isinstance(runs_per_epoch, bool) or not isinstance(runs_per_epoch, int):
        if isinstance(runs_per_epoch, str) and runs_per_epoch.strip().isdigit():
            runs_per_epoch = int(runs_per_epoch.strip())
        else:
            raise EpochError('runs_per_epoch must be a positive integer, got %r' % (runs_per_epoch,), option='runs_per_epoch')
    if runs_per_epoch < 1:
        raise EpochError('runs_per_epoch must be at least 1, got %d' % runs_per_epoch, option='runs_per_epoch')
    delay = parse_duration(delay, 'delay', allow_zero=True)

    if schedule.duration % 60:
        raise EpochError(
            'epoch_duration of %d seconds is not a whole number of minutes: AWX schedules have minute granularity '
            '(FREQ=SECONDLY is not supported), so this schedule cannot be expressed as an RRULE; use cron or the '
            'Kubernetes CronJob with a run every minute instead' % schedule.duration, option='epoch_duration')
    if (schedule.duration // 60) % runs_per_epoch:
        raise EpochError(
            'runs_per_epoch %d does not divide epoch_duration (%d minutes) into whole minutes; pick a divisor of %d'
            % (runs_per_epoch, schedule.duration // 60, schedule.duration // 60), option='runs_per_epoch')
    interval_minutes = schedule.duration // 60 // runs_per_epoch
    if interval_minutes > MAX_INTERVAL_MINUTES:
        raise EpochError('the interval of %d minutes is longer than a year; schedulers do not handle that well'
                         % interval_minutes, option='epoch_duration')
    if delay >= interval_minutes * 60:
        raise EpochError('delay (%d seconds) must be shorter than the interval between runs (%d seconds)'
                         % (delay, interval_minutes * 60), option='delay')
    if schedule.epoch_zero.microsecond:
        raise EpochError('epoch_zero %s has a fraction of a second; an RRULE DTSTART has whole seconds only'
                         % schedule.epoch_zero.isoformat(), option='epoch_zero')

    # First preparation moment (+ delay) at or after now. Epoch 0 is never "prepared" (it starts at
    # epoch_zero), so the candidates are epochs >= 1.
    base = schedule.epoch(now) if now >= schedule.epoch_zero else 0
    shift = datetime.timedelta(seconds=delay)
    for epoch in range(max(base, 1), base + 3):  # start(base + 2) - lead_time > start(base + 1) > now
        at = schedule.preparation_at(epoch) + shift
        if at >= now:
            break
    dtstart = at
    rrule = 'DTSTART:%s RRULE:FREQ=MINUTELY;INTERVAL=%d' % (_dtstart_text(dtstart), interval_minutes)
    return {
        'rrule': rrule,
        'dtstart': isoformat(dtstart),
        'interval_minutes': interval_minutes,
        'runs_per_epoch': runs_per_epoch,
        'delay_seconds': delay,
        'lead_time_seconds': schedule.lead_time,
        'prepares_epoch': epoch,
        'next_runs': [isoformat(t) for t in occurrences(dtstart, interval_minutes, 3, after=now)],
    }

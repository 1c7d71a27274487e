# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Epoch math for wall-clock intermediate CA rotation (private, stdlib only).

Definitions (DESIGN.md section 2); every other function goes through
:meth:`EpochSchedule.epoch`, the single place where an epoch number is computed::

    epoch(t)     = floor((t - epoch_zero) / epoch_duration)
    start(n)     = epoch_zero + n * epoch_duration
    expiry(n)    = start(n) + validity           (an intermediate's NotAfter, exactly)
    not_before(n)= start(n) - skew_allowance     (an intermediate's NotBefore)
    valid at t   : start(n) <= t < expiry(n)
    prepared at t: epoch(t) + 1 once t >= start(epoch(t) + 1) - lead_time

Conventions:

* All times are timezone-aware ``datetime`` objects in UTC. Naive inputs (an ISO-8601
  string without ``Z``/offset, or a naive ``datetime``) are REJECTED with an error, never
  guessed: Ansible's ``now(utc=true)`` returns a naive value and local-vs-UTC mistakes would
  shift every epoch silently.
* Durations are whole seconds (``int``).
* Epoch 0 starts at ``epoch_zero``; epochs before it do not exist (no negative epoch numbers).
  Asking for the epoch of a time before ``epoch_zero`` raises :class:`EpochError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError

__all__ = [
    'DEFAULT_EPOCH_DURATION',
    'DEFAULT_EPOCH_ZERO',
    'DEFAULT_SKEW_ALLOWANCE',
    'DURATION_FORMS',
    'EPOCH_ARG_SPEC',
    'EPOCH_OPTIONS',
    'EpochError',
    'EpochSchedule',
    'isoformat',
    'now_from_params',
    'parse_duration',
    'parse_time',
    'schedule_from_module_params',
    'utcnow',
]

UTC = datetime.timezone.utc

DEFAULT_EPOCH_ZERO = '1970-01-01T00:00:00Z'
DEFAULT_EPOCH_DURATION = '6h'
DEFAULT_SKEW_ALLOWANCE = '5m'

#: Upper bound for any duration (100 years); keeps datetime arithmetic far from overflow.
MAX_DURATION = 100 * 365 * 86400

DURATION_FORMS = ("integer seconds (1200 or '1200'), a unit string ('20s', '20m', '6h', '1d', '1w', "
                  "or combined like '1h30m'), or ISO-8601 ('PT20M', 'PT1H30M', 'P1DT2H')")

TIME_FORMS = ("an ISO-8601 timestamp with timezone ('2025-01-01T00:00:00Z' or '2025-01-01T01:00:00+01:00') "
              "or Unix seconds (1735689600 or 1735689600.5)")

#: Flat epoch options shared by every module that needs epoch math (doc fragment
#: ``securetransport.ca_rotation.epoch``). ``raw`` so that both ``1200`` and ``'20m'`` pass
#: through unchanged; the values are parsed and validated by :meth:`EpochSchedule.from_params`.
EPOCH_ARG_SPEC = dict(
    epoch_zero=dict(type='raw', default=DEFAULT_EPOCH_ZERO),
    epoch_duration=dict(type='raw', default=DEFAULT_EPOCH_DURATION),
    validity=dict(type='raw'),
    lead_time=dict(type='raw'),
    skew_allowance=dict(type='raw', default=DEFAULT_SKEW_ALLOWANCE),
    now=dict(type='raw'),
)

#: Names of the schedule options (everything in EPOCH_ARG_SPEC except ``now``).
EPOCH_OPTIONS = ('epoch_zero', 'epoch_duration', 'validity', 'lead_time', 'skew_allowance')

_UNIT_SECONDS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
_UNIT_RE = re.compile(r'(\d+)\s*([smhdw])', re.IGNORECASE)
_UNIT_FULL_RE = re.compile(r'(?:\d+\s*[smhdw]\s*)+', re.IGNORECASE)
_ISO_RE = re.compile(
    r'P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?',
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r'[+-]?(?:\d+(?:\.\d*)?|\.\d+)')


class EpochError(CaRotationError, ValueError):
    """Invalid epoch option or time. ``option`` names the offending option.

    Also a ValueError (as it always was), so ``except ValueError`` keeps catching it.
    """

    def __init__(self, message, option=None):
        super().__init__(message, option=option)


def utcnow():
    """Current time, aware, UTC."""
    return datetime.datetime.now(UTC)


def isoformat(dt):
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds, microseconds truncated)."""
    dt = dt.astimezone(UTC)
    return '%04d-%02d-%02dT%02d:%02d:%02dZ' % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


def _ceil_seconds(delta):
    """Whole seconds of a timedelta, rounded up (so waiting that long always suffices)."""
    micro = (delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds
    return -((-micro) // 1000000)


def parse_duration(value, option, allow_zero=False):
    """Parse a duration into whole seconds.

    Accepts integers, digit strings (seconds), unit strings ``20s``/``20m``/``6h``/``1d``/``1w``
    and combinations (``1h30m``, ``1d 6h``), and ISO-8601 durations (``PT20M``, ``P1DT2H``,
    ``P1W``). Zero is accepted only with ``allow_zero=True``; negative values, fractions,
    calendar units (years/months) and anything else raise :class:`EpochError` naming ``option``.
    """
    def fail(why):
        raise EpochError('Invalid %s %r: %s. Accepted forms: %s.' % (option, value, why, DURATION_FORMS), option=option)

    if isinstance(value, bool) or value is None:
        fail('expected a duration')
    if isinstance(value, float):
        if not value.is_integer():
            fail('durations are whole seconds')
        value = int(value)
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            fail('empty value')
        if re.fullmatch(r'[+-]?\d+', text):
            seconds = int(text)
        elif _UNIT_FULL_RE.fullmatch(text):
            seconds = 0
            seen = set()
            for number, unit in _UNIT_RE.findall(text):
                unit = unit.lower()
                if unit in seen:
                    fail('unit %r given twice' % unit)
                seen.add(unit)
                seconds += int(number) * _UNIT_SECONDS[unit]
        elif text[:1] in ('P', 'p'):
            match = _ISO_RE.fullmatch(text)
            if not match or not any(match.groupdict().values()) or text.upper().endswith('T'):
                fail('not a supported ISO-8601 duration (years, months and fractions are not allowed)')
            seconds = sum(int(match.group(k) or 0) * _UNIT_SECONDS[k.lower()] for k in ('w', 'd', 'h', 'm', 's'))
        else:
            fail('not a duration')
    else:
        fail('expected a string or an integer, got %s' % type(value).__name__)

    if seconds < 0:
        fail('must not be negative')
    if seconds == 0 and not allow_zero:
        fail('must be greater than zero')
    if seconds > MAX_DURATION:
        fail('longer than %d seconds (100 years)' % MAX_DURATION)
    return seconds


def parse_time(value, option):
    """Parse a point in time into an aware UTC datetime.

    Accepts aware ``datetime`` objects, ISO-8601 strings with ``Z`` or an offset, and Unix
    seconds (int, float, or a numeric string such as Ansible's ``ansible_date_time.epoch``).
    Naive datetimes and ISO strings without a timezone are rejected (see module docstring).
    """
    def fail(why):
        raise EpochError('Invalid %s %r: %s. Accepted forms: %s.' % (option, value, why, TIME_FORMS), option=option)

    if isinstance(value, bool) or value is None:
        fail('expected a time')
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            fail('naive datetime without timezone; use an aware value, or Unix seconds (for example now().timestamp())')
        return value.astimezone(UTC)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            fail('empty value')
        if _NUMBER_RE.fullmatch(text):
            value = float(text) if any(c in text for c in '.') else int(text)
        else:
            if text[-1:] in ('Z', 'z'):  # fromisoformat() only understands 'Z' from Python 3.11 on
                text = text[:-1] + '+00:00'
            try:
                parsed = datetime.datetime.fromisoformat(text)
            except ValueError:
                fail('not an ISO-8601 timestamp')
            if parsed.tzinfo is None:
                fail("no timezone given; append 'Z' for UTC or an offset such as '+00:00'")
            return parsed.astimezone(UTC)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            fail('not a finite number')
        try:
            if isinstance(value, int):
                return datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=value)
            return datetime.datetime.fromtimestamp(value, UTC)
        except (OverflowError, ValueError, OSError):
            fail('out of range')
    fail('expected a string, a number or a datetime, got %s' % type(value).__name__)
    return None  # pragma: no cover - fail() always raises


@dataclasses.dataclass(frozen=True)
class EpochSchedule:
    """A validated epoch schedule. Durations are whole seconds; ``epoch_zero`` is aware UTC."""

    epoch_zero: datetime.datetime
    duration: int
    validity: int
    lead_time: int
    skew: int

    def __post_init__(self):
        if not isinstance(self.epoch_zero, datetime.datetime) or self.epoch_zero.utcoffset() is None:
            raise EpochError('epoch_zero must be a timezone-aware datetime', option='epoch_zero')
        object.__setattr__(self, 'epoch_zero', self.epoch_zero.astimezone(UTC))
        for option, value in (('epoch_duration', self.duration), ('validity', self.validity),
                              ('lead_time', self.lead_time), ('skew_allowance', self.skew)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise EpochError('%s must be whole seconds (int), got %r' % (option, value), option=option)
        if self.duration <= 0:
            raise EpochError('epoch_duration must be greater than zero, got %d seconds' % self.duration, option='epoch_duration')
        if self.validity < self.duration:
            raise EpochError(
                'validity (%d seconds) must be at least epoch_duration (%d seconds), otherwise there are moments '
                'when no epoch is valid; the default is 4 x epoch_duration' % (self.validity, self.duration),
                option='validity')
        if self.lead_time < 0:
            raise EpochError('lead_time must not be negative, got %d seconds' % self.lead_time, option='lead_time')
        if self.lead_time >= self.duration:
            raise EpochError(
                'lead_time (%d seconds) must be shorter than epoch_duration (%d seconds); the default is '
                'epoch_duration / 4' % (self.lead_time, self.duration), option='lead_time')
        if self.skew < 0:
            raise EpochError('skew_allowance must not be negative, got %d seconds' % self.skew, option='skew_allowance')

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params):
        """Build from a dict of option values (EPOCH_ARG_SPEC names; unrelated keys ignored).

        Missing or ``None`` values get the defaults: epoch_zero 1970-01-01T00:00:00Z,
        epoch_duration 6h, validity 4 x epoch_duration, lead_time epoch_duration / 4 (whole
        seconds, rounded down), skew_allowance 5m.
        """
        params = params or {}

        def get(name, default):
            value = params.get(name)
            return default if value is None else value

        epoch_zero = parse_time(get('epoch_zero', DEFAULT_EPOCH_ZERO), 'epoch_zero')
        duration = parse_duration(get('epoch_duration', DEFAULT_EPOCH_DURATION), 'epoch_duration')
        validity = params.get('validity')
        validity = 4 * duration if validity is None else parse_duration(validity, 'validity')
        lead_time = params.get('lead_time')
        lead_time = duration // 4 if lead_time is None else parse_duration(lead_time, 'lead_time', allow_zero=True)
        skew = parse_duration(get('skew_allowance', DEFAULT_SKEW_ALLOWANCE), 'skew_allowance', allow_zero=True)
        return cls(epoch_zero=epoch_zero, duration=duration, validity=validity, lead_time=lead_time, skew=skew)

    def to_params(self):
        """Normalised options (JSON-safe); ``EpochSchedule.from_params(s.to_params()) == s``."""
        return {
            'epoch_zero': isoformat(self.epoch_zero) if not self.epoch_zero.microsecond else self.epoch_zero.isoformat(),
            'epoch_duration': self.duration,
            'validity': self.validity,
            'lead_time': self.lead_time,
            'skew_allowance': self.skew,
        }

    # ------------------------------------------------------------------ core math
    def epoch(self, t):
        """Epoch number containing ``t``. THE one place epochs are computed."""
        t = self._check_time(t)
        if t < self.epoch_zero:
            raise EpochError(
                'time %s is before epoch_zero %s; epochs are numbered from epoch_zero (epoch 0). Set epoch_zero to '
                'a time at or before now' % (isoformat(t), isoformat(self.epoch_zero)), option='now')
        return (t - self.epoch_zero) // datetime.timedelta(seconds=self.duration)

    def start(self, n):
        """Start of epoch ``n`` (aware UTC)."""
        n = self._check_epoch(n)
        try:
            return self.epoch_zero + datetime.timedelta(seconds=n * self.duration)
        except OverflowError:
            raise EpochError('epoch %d is out of the representable time range' % n, option='epoch') from None

    def expiry(self, n):
        """End of validity of epoch ``n``: start(n) + validity (the intermediate's NotAfter)."""
        return self._shift(self.start(n), self.validity, n)

    def not_before(self, n):
        """NotBefore of the intermediate of epoch ``n``: start(n) - skew_allowance."""
        return self._shift(self.start(n), -self.skew, n)

    def preparation_at(self, n):
        """When epoch ``n`` becomes the prepared epoch: start(n) - lead_time."""
        return self._shift(self.start(n), -self.lead_time, n)

    def is_valid(self, n, t):
        """True when ``start(n) <= t < expiry(n)``."""
        t = self._check_time(t)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            return False
        return self.start(n) <= t < self.expiry(n)

    def valid_epochs(self, t):
        """Every epoch ``n >= 0`` with ``start(n) <= t < expiry(n)``, ascending."""
        current = self.epoch(t)
        # start(n) <= t  <=>  n <= epoch(t);  expiry(n) > t  <=>  start(n) > t - validity  <=>  n > epoch(t - validity)
        try:
            cutoff = self._check_time(t) - datetime.timedelta(seconds=self.validity)
        except OverflowError:  # before year 1, so certainly before epoch_zero
            cutoff = None
        oldest = self.epoch(cutoff) + 1 if cutoff is not None and cutoff >= self.epoch_zero else 0
        return list(range(oldest, current + 1))

    def prepared_epoch(self, t):
        """``epoch(t) + 1`` once ``t >= start(epoch(t) + 1) - lead_time``, else ``None``."""
        nxt = self.epoch(t) + 1
        return nxt if self._check_time(t) >= self.preparation_at(nxt) else None

    def desired_epochs(self, t):
        """Valid epochs plus the prepared one, ascending: the intermediates that must exist at ``t``."""
        epochs = self.valid_epochs(t)
        prepared = self.prepared_epoch(t)
        if prepared is not None:
            epochs.append(prepared)
        return epochs

    def next_preparation(self, t):
        """The next moment strictly after ``t`` at which a new epoch becomes prepared."""
        t = self._check_time(t)
        nxt = self.epoch(t) + 1
        at = self.preparation_at(nxt)
        return at if at > t else self.preparation_at(nxt + 1)

    # ------------------------------------------------------------------ reporting
    def state(self, n, t):
        """``expired`` | ``current`` | ``valid`` | ``prepared`` | ``future`` for epoch ``n`` at ``t``."""
        n = self._check_epoch(n)
        current = self.epoch(t)
        if n == current:
            return 'current'
        if n < current:
            return 'valid' if self.is_valid(n, t) else 'expired'
        return 'prepared' if n == self.prepared_epoch(t) else 'future'

    def describe(self, n, t):
        """JSON-safe facts about epoch ``n`` at time ``t``."""
        n = self._check_epoch(n)
        t = self._check_time(t)
        return {
            'epoch': n,
            'start': isoformat(self.start(n)),
            'expiry': isoformat(self.expiry(n)),
            'not_before': isoformat(self.not_before(n)),
            'preparation_at': isoformat(self.preparation_at(n)),
            'state': self.state(n, t),
            'valid': self.is_valid(n, t),
        }

    def plan(self, t):
        """Everything a rotation run needs to know at ``t``, JSON-safe."""
        t = self._check_time(t)
        current = self.epoch(t)
        valid = self.valid_epochs(t)
        prepared = self.prepared_epoch(t)
        next_start = self.start(current + 1)
        next_prep = self.next_preparation(t)
        first = max(valid[0] - 1, 0)
        last = prepared if prepared is not None else current + 1
        return {
            'now': isoformat(t),
            'current_epoch': current,
            'current_start': isoformat(self.start(current)),
            'current_expiry': isoformat(self.expiry(current)),
            'valid_epochs': [
                {'epoch': n, 'start': isoformat(self.start(n)), 'expiry': isoformat(self.expiry(n)),
                 'not_before': isoformat(self.not_before(n))}
                for n in valid
            ],
            'prepared_epoch': prepared,
            'desired_epochs': self.desired_epochs(t),
            'next_epoch_start': isoformat(next_start),
            'next_preparation_at': isoformat(next_prep),
            'seconds_until_next_preparation': _ceil_seconds(next_prep - t),
            'seconds_until_next_epoch': _ceil_seconds(next_start - t),
            'schedule': self.to_params(),
            'timeline': [self.describe(n, t) for n in range(first, last + 1)],
        }

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_time(t):
        if not isinstance(t, datetime.datetime) or t.utcoffset() is None:
            raise EpochError('time must be a timezone-aware datetime, got %r' % (t,), option='now')
        return t.astimezone(UTC)

    @staticmethod
    def _check_epoch(n):
        if isinstance(n, bool) or not isinstance(n, int):
            raise EpochError('epoch must be an integer, got %r' % (n,), option='epoch')
        if n < 0:
            raise EpochError('epoch must not be negative (epoch 0 starts at epoch_zero), got %d' % n, option='epoch')
        return n

    @staticmethod
    def _shift(dt, seconds, n):
        try:
            return dt + datetime.timedelta(seconds=seconds)
        except OverflowError:
            raise EpochError('epoch %d is out of the representable time range' % n, option='epoch') from None


def now_from_params(params):
    """The ``now`` option parsed (aware UTC), or the current time when it is unset."""
    value = (params or {}).get('now')
    if value is None or (isinstance(value, str) and not value.strip()):
        return utcnow()
    return parse_time(value, 'now')


def schedule_from_module_params(params):
    """``(EpochSchedule, now)`` from a module's params (EPOCH_ARG_SPEC keys; others ignored).

    Raises :class:`EpochError` naming the option; modules turn that into
    ``module.fail_json(msg=str(err), option=err.option)``.
    """
    return EpochSchedule.from_params(params), now_from_params(params)

# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Epoch filters: thin, pure wrappers over module_utils/_epoch.py.

Documentation lives in one sidecar YAML file per filter (``<filter name>.yml``).

Time inputs accept what ``_epoch.parse_time`` accepts (ISO-8601 with timezone, Unix seconds,
aware datetimes) plus the literal string ``now`` (or ``None``) for the current UTC time.
Schedule keywords: ``epoch_zero``, ``epoch_duration``, ``validity``, ``lead_time``,
``skew_allowance`` (same formats and defaults as the modules' options).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    EpochSchedule,
    isoformat,
    parse_duration,
    parse_time,
    utcnow,
)


def _schedule(epoch_zero=None, epoch_duration=None, validity=None, lead_time=None, skew_allowance=None):
    return EpochSchedule.from_params(dict(epoch_zero=epoch_zero, epoch_duration=epoch_duration, validity=validity,
                                          lead_time=lead_time, skew_allowance=skew_allowance))


def _time(value, option):
    if value is None or (isinstance(value, str) and value.strip().lower() in ('', 'now')):
        return utcnow()
    return parse_time(value, option)


def _epoch_number(value, option):
    if isinstance(value, bool):
        raise EpochError('%s must be an epoch number (integer), got %r' % (option, value), option=option)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    raise EpochError('%s must be an epoch number (integer), got %r' % (option, value), option=option)


def _wrap(name, func):
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EpochError as err:
            raise AnsibleFilterError('securetransport.ca_rotation.%s: %s' % (name, err)) from err
        except TypeError as err:
            raise AnsibleFilterError('securetransport.ca_rotation.%s: %s' % (name, err)) from err
    wrapper.__name__ = name
    wrapper.__doc__ = func.__doc__
    return wrapper


def epoch_number(value, **schedule):
    """Epoch number containing the time ``value``."""
    return _schedule(**schedule).epoch(_time(value, '_input'))


def epoch_start(value, **schedule):
    """Start of epoch ``value`` as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return isoformat(_schedule(**schedule).start(_epoch_number(value, '_input')))


def epoch_expiry(value, **schedule):
    """Expiry (intermediate NotAfter) of epoch ``value`` as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return isoformat(_schedule(**schedule).expiry(_epoch_number(value, '_input')))


def epoch_not_before(value, **schedule):
    """NotBefore (start - skew_allowance) of epoch ``value``."""
    return isoformat(_schedule(**schedule).not_before(_epoch_number(value, '_input')))


def epoch_valid_epochs(value, **schedule):
    """Epoch numbers valid at time ``value``, ascending."""
    return _schedule(**schedule).valid_epochs(_time(value, '_input'))


def epoch_prepared(value, **schedule):
    """Prepared next epoch at time ``value``, or None."""
    return _schedule(**schedule).prepared_epoch(_time(value, '_input'))


def epoch_desired(value, **schedule):
    """Valid plus prepared epochs at time ``value``, ascending."""
    return _schedule(**schedule).desired_epochs(_time(value, '_input'))


def epoch_info(value, now=None, **schedule):
    """Facts about epoch ``value`` at time ``now``."""
    return _schedule(**schedule).describe(_epoch_number(value, '_input'), _time(now, 'now'))


def epoch_plan(value, **schedule):
    """The full plan at time ``value`` (as returned by the ca_epoch module)."""
    return _schedule(**schedule).plan(_time(value, '_input'))


def duration_seconds(value, allow_zero=False):
    """A duration (``20m``, ``PT6H``, ``1200``...) in whole seconds."""
    return parse_duration(value, '_input', allow_zero=bool(allow_zero))


_FILTERS = {
    'epoch_number': epoch_number,
    'epoch_start': epoch_start,
    'epoch_expiry': epoch_expiry,
    'epoch_not_before': epoch_not_before,
    'epoch_valid_epochs': epoch_valid_epochs,
    'epoch_prepared': epoch_prepared,
    'epoch_desired': epoch_desired,
    'epoch_info': epoch_info,
    'epoch_plan': epoch_plan,
    'duration_seconds': duration_seconds,
}


class FilterModule(object):
    """Epoch math filters."""

    def filters(self):
        return dict((name, _wrap(name, func)) for name, func in _FILTERS.items())

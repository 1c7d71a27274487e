# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduler filters: a thin wrapper over module_utils/_rrule.py (documentation in ``epoch_rrule.yml``)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    EpochSchedule,
    parse_time,
    utcnow,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rrule import epoch_rrule as _epoch_rrule


def epoch_rrule(value, runs_per_epoch=1, delay=0, epoch_zero=None, epoch_duration=None, validity=None, lead_time=None,
                skew_allowance=None):
    """AWX RRULE aligned to the epochs' preparation moments; ``value`` is the anchor time (or ``now``)."""
    try:
        schedule = EpochSchedule.from_params(dict(epoch_zero=epoch_zero, epoch_duration=epoch_duration, validity=validity,
                                                  lead_time=lead_time, skew_allowance=skew_allowance))
        if value is None or (isinstance(value, str) and value.strip().lower() in ('', 'now')):
            anchor = utcnow()
        else:
            anchor = parse_time(value, '_input')
        return _epoch_rrule(schedule, anchor, runs_per_epoch=runs_per_epoch, delay=delay)
    except EpochError as err:
        raise AnsibleFilterError('securetransport.ca_rotation.epoch_rrule: %s' % err) from err


class FilterModule(object):
    """Scheduler filters."""

    def filters(self):
        return {'epoch_rrule': epoch_rrule}

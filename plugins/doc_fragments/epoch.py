# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """Epoch schedule options (module_utils/_epoch.py EPOCH_ARG_SPEC)."""

    DOCUMENTATION = r'''
options:
  epoch_zero:
    description:
      - Start of epoch 0. Epoch C(n) starts at O(epoch_zero) + C(n) * O(epoch_duration).
      - An ISO-8601 timestamp with timezone (V(2025-01-01T00:00:00Z), V(2025-01-01T01:00:00+01:00))
        or Unix seconds. A timestamp without timezone is rejected rather than guessed.
      - Epochs before O(epoch_zero) do not exist; a time before it is an error.
      - Every host and every run that takes part in a rotation must use the same value.
    type: raw
    default: '1970-01-01T00:00:00Z'
  epoch_duration:
    description:
      - Length of one epoch. A new intermediate CA is issued per epoch.
      - Integer seconds (V(1200)), a unit string (V(20s), V(20m), V(6h), V(1d), V(1w), combined as V(1h30m)),
        or an ISO-8601 duration (V(PT20M), V(PT1H30M), V(P1DT2H)). Must be greater than zero.
    type: raw
    default: 6h
  validity:
    description:
      - How long an epoch's intermediate stays valid after the epoch starts; its NotAfter is exactly
        start + O(validity). The number of epochs valid at once is O(validity) / O(epoch_duration).
      - Same formats as O(epoch_duration). Must be at least O(epoch_duration).
      - Defaults to 4 x O(epoch_duration) when not set.
    type: raw
  lead_time:
    description:
      - How long before its start the next epoch is prepared (issued and distributed to every trust store).
      - Same formats as O(epoch_duration); V(0) disables preparation ahead of time. Must be shorter than O(epoch_duration).
      - Defaults to O(epoch_duration) / 4 (whole seconds, rounded down) when not set.
    type: raw
  skew_allowance:
    description:
      - How far an intermediate's NotBefore is backdated before its epoch start, to absorb clock drift.
      - Same formats as O(epoch_duration); V(0) is allowed.
    type: raw
    default: 5m
  now:
    description:
      - The time to compute for, instead of the current time. Same formats as O(epoch_zero)
        (ISO-8601 with timezone, or Unix seconds such as C(ansible_date_time.epoch)).
      - Unset or empty means the current time (UTC) on the host that runs the module.
    type: raw
'''

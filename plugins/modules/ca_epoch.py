#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: ca_epoch
short_description: Compute the CA rotation epoch plan for a point in time
version_added: 0.1.0
description:
  - Computes, for the current time or O(now), the current epoch, every epoch whose
    intermediate CA is still valid, the prepared next epoch, the epochs whose intermediates
    must exist (RV(desired_epochs)), when the next preparation and the next epoch are due,
    and a small timeline.
  - Epoch math, with t the time and n an epoch number - epoch number of t is
    floor((t - epoch_zero) / epoch_duration); start of n is epoch_zero + n * epoch_duration;
    expiry of n is its start + validity; n is valid while start <= t < expiry; epoch n+1 is
    prepared once t >= start of n+1 - lead_time.
  - Read-only; never reports a change. The same math is available as filters, for example
    P(securetransport.ca_rotation.epoch_number#filter).
author:
  - SecureTransport platform team (!UNKNOWN)
extends_documentation_fragment:
  - securetransport.ca_rotation.epoch
options:
  epoch:
    description:
      - Also describe this epoch number in RV(epoch) (start, expiry, state at O(now)).
      - When not set, RV(epoch) describes the current epoch.
    type: int
attributes:
  check_mode:
    support: full
    description: The module never changes anything; check mode returns the same result.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
notes:
  - All times are UTC and returned as C(YYYY-MM-DDTHH:MM:SSZ).
seealso:
  - plugin: securetransport.ca_rotation.epoch_plan
    plugin_type: filter
    description: The same plan as a filter.
'''

EXAMPLES = r'''
- name: Where are we in the rotation schedule (defaults, 6h epochs)?
  securetransport.ca_rotation.ca_epoch:
  register: epoch_plan

- name: Short test epochs
  securetransport.ca_rotation.ca_epoch:
    epoch_zero: '2025-01-01T00:00:00Z'
    epoch_duration: 20s
    validity: 80s
    lead_time: 5s
  register: epoch_plan

- name: Plan for a fixed moment and describe epoch 12
  securetransport.ca_rotation.ca_epoch:
    epoch_duration: PT6H
    now: '2025-03-01T12:00:00Z'
    epoch: 12
  register: epoch_plan

- name: Intermediates that must exist now
  ansible.builtin.debug:
    msg: "{{ epoch_plan.desired_epochs }}"
'''

RETURN = r'''
now:
  description: The time the plan was computed for.
  returned: success
  type: str
  sample: '2025-03-01T12:00:00Z'
current_epoch:
  description: The epoch containing RV(now).
  returned: success
  type: int
  sample: 80594
current_start:
  description: Start of the current epoch.
  returned: success
  type: str
  sample: '2025-03-01T12:00:00Z'
current_expiry:
  description: Expiry (intermediate NotAfter) of the current epoch.
  returned: success
  type: str
  sample: '2025-03-02T12:00:00Z'
valid_epochs:
  description: Every epoch valid at RV(now), oldest first.
  returned: success
  type: list
  elements: dict
  contains:
    epoch:
      description: Epoch number.
      type: int
    start:
      description: Epoch start.
      type: str
    expiry:
      description: Epoch expiry, the intermediate's NotAfter.
      type: str
    not_before:
      description: The intermediate's NotBefore (start minus skew allowance).
      type: str
prepared_epoch:
  description: The next epoch when it is within O(lead_time) of its start, else V(null).
  returned: success
  type: int
  sample: null
desired_epochs:
  description: Epoch numbers whose intermediates must exist now (valid plus prepared), ascending.
  returned: success
  type: list
  elements: int
  sample: [80591, 80592, 80593, 80594]
next_epoch_start:
  description: Start of the next epoch.
  returned: success
  type: str
  sample: '2025-03-01T18:00:00Z'
next_preparation_at:
  description: The next moment (after RV(now)) at which a new epoch becomes prepared.
  returned: success
  type: str
  sample: '2025-03-01T16:30:00Z'
seconds_until_next_preparation:
  description: Whole seconds (rounded up) until RV(next_preparation_at).
  returned: success
  type: int
  sample: 16200
seconds_until_next_epoch:
  description: Whole seconds (rounded up) until RV(next_epoch_start).
  returned: success
  type: int
  sample: 21600
schedule:
  description: The normalised schedule; durations in seconds.
  returned: success
  type: dict
  contains:
    epoch_zero:
      description: Start of epoch 0.
      type: str
    epoch_duration:
      description: Epoch length in seconds.
      type: int
    validity:
      description: Validity of each epoch in seconds.
      type: int
    lead_time:
      description: Preparation lead time in seconds.
      type: int
    skew_allowance:
      description: NotBefore backdating in seconds.
      type: int
  sample:
    epoch_zero: '1970-01-01T00:00:00Z'
    epoch_duration: 21600
    validity: 86400
    lead_time: 5400
    skew_allowance: 300
timeline:
  description:
    - Epochs from the newest expired one (if any) to the prepared or next epoch, each as in RV(epoch).
  returned: success
  type: list
  elements: dict
epoch:
  description: Facts about O(epoch), or about the current epoch when O(epoch) is not set.
  returned: success
  type: dict
  contains:
    epoch:
      description: Epoch number.
      type: int
    start:
      description: Epoch start.
      type: str
    expiry:
      description: Epoch expiry, the intermediate's NotAfter.
      type: str
    not_before:
      description: The intermediate's NotBefore.
      type: str
    preparation_at:
      description: When the epoch becomes prepared (start minus lead time).
      type: str
    state:
      description: The epoch's state at RV(now).
      type: str
      choices: [expired, valid, current, prepared, future]
    valid:
      description: Whether the epoch's intermediate is valid at RV(now).
      type: bool
  sample:
    epoch: 80594
    start: '2025-03-01T12:00:00Z'
    expiry: '2025-03-02T12:00:00Z'
    not_before: '2025-03-01T11:55:00Z'
    preparation_at: '2025-03-01T10:30:00Z'
    state: current
    valid: true
'''

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EPOCH_ARG_SPEC,
    schedule_from_module_params,
)


def main():
    argument_spec = dict(EPOCH_ARG_SPEC)
    argument_spec['epoch'] = dict(type='int')
    module = CaRotationModule(argument_spec=argument_spec, supports_check_mode=True)

    with module.failures():
        schedule, now = schedule_from_module_params(module.params)
        result = schedule.plan(now)
        epoch = module.params['epoch']
        result['epoch'] = schedule.describe(result['current_epoch'] if epoch is None else epoch, now)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()

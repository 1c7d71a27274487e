#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# This file only documents the module; the action plugin of the same name does the work in the controller.

from __future__ import annotations

DOCUMENTATION = r'''
module: rotation_activate
short_description: Trust first, then issue - activate the proven epoch, or complete a rollback
version_added: 0.1.0
description:
  - Runs on the host of the C(ca_authority) group after every cluster's deliver phase, in the controller.
  - O(mode=rotate) makes the epoch OpenBao's default issuer only when every host of the C(nats_clusters) group has
    proven that it trusts this run's bundle, the announcement succeeded and the epoch is in the bundle (under a rollback
    hold, the held epoch). Then it renews the announcer's client certificate when
    C(ca_rotation_authority_renew_client_leaf) is set.
  - An announcement that failed in the authority step (after an outage longer than the validity, no client could
    connect to servers whose certificates had expired) is made here first, once every cluster proved the bundle and
    the servers hold renewed certificates; the generation is recorded then, and activation follows.
  - O(mode=rollback) announces C(kind=rollback) with the new generation, records it and sets the hold, once every
    cluster is back on the restored bundle.
  - The task never fails (a configuration error or any other error included); its error is its result, and
    M(securetransport.ca_rotation.rotation_finish) releases the lock, writes the report and fails the run with it.
author:
  - SecureTransport platform team (@securetransport)
extends_documentation_fragment:
  - securetransport.ca_rotation.engine
options:
  mode:
    description:
      - C(rotate) or C(rollback).
      - C(distrust) - make the replacement of a distrusted default issuer the default once every cluster proved the
        bundle that holds it (nothing else is activated; a distrusted epoch that is not the default replaces nothing),
        then renew the announcer's leaf when it does not come from the default issuer.
    type: str
    choices: [rotate, rollback, distrust]
    default: rotate
requirements:
  - hvac
  - nats-py (for the rollback announcement)
'''

EXAMPLES = r'''
- name: Activate the proven epoch
  securetransport.ca_rotation.rotation_activate:
'''

RETURN = r'''
msg:
  description: What was activated, or why activation waits.
  returned: always
  type: str
ansible_facts:
  description: The activation result for the run report.
  returned: always
  type: complex
  contains:
    ca_rotation_activation_result:
      description: C(changed), C(epoch), C(activated), C(msg), C(announcer) and C(timings).
      type: dict
      returned: always
'''

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# This file only documents the module; the action plugin of the same name does the work in the controller.

from __future__ import annotations

DOCUMENTATION = r'''
module: rotation_authority
short_description: Tier 1 of a CA rotation in one controller-side step - issue, build, store and announce the bundle
version_added: 0.1.0
description:
  - Runs once per rotation, on the host of the C(ca_authority) group, entirely in the controller (action plugin; no
    module process). It computes the epoch plan for now, takes the rotation lock (check-and-set in OpenBao KV), decides
    whether a rollback hold applies, issues the intermediate of the current epoch and, once due, of the prepared one,
    builds and verifies the CA bundle fresh from OpenBao, stores it in KV, in the per-epoch Kubernetes Secret (when
    enabled) and in the probe directory, signs and announces it on JetStream when it changed, records the new
    generation, keeps a probe client certificate of the bundle's newest epoch and prunes expired issuers.
  - With O(mode=rollback) it chooses the stored bundle to put back (that of the previous generation, or
    C(ca_rotation_rollback_epoch)), verifies it against the root, points the default issuer back at its epoch and
    renews the announcer's certificate from it.
  - One OpenBao client and one login for the whole step; the schedule is parsed once.
  - It reads the C(ca_rotation_*) variables of its host, as documented in the argument specs of the roles
    C(securetransport.ca_rotation.authority) and C(securetransport.ca_rotation.rollback) (their defaults apply when the
    task runs inside those roles).
  - A refusal (clock behind, nothing to roll back to) or an error releases the lock and returns O(mode)'s result with
    C(go=false) and C(error) set; the run fails loudly in M(securetransport.ca_rotation.rotation_finish), after the
    report is written. So does any other error of the task (an undefined variable included); the task itself never
    fails, so that the finish step runs.
  - After an outage longer than the validity (the default issuer has expired) it re-issues the announcer's expired
    certificate from the current epoch's intermediate before announcing. The announcement still fails while the
    servers' certificates are expired; M(securetransport.ca_rotation.rotation_activate) makes it once every cluster
    proved the bundle.
  - The lock TTL is capped at one epoch duration, and a lock taken more than one epoch ago is taken over (see
    C(ca_rotation_authority_lock_ttl)).
author:
  - SecureTransport platform team (@securetransport)
extends_documentation_fragment:
  - securetransport.ca_rotation.engine
options:
  mode:
    description:
      - C(rotate) for C(rotate.yml), C(rollback) for C(rollback.yml).
      - C(distrust) for C(distrust.yml) (C(ca_rotation_distrust_epoch)) - revoke the epoch's intermediate on both mounts,
        record it, issue its replacement when it is the default issuer and build the bundle of this stage (it still holds
        the distrusted intermediate, so that the servers presenting a leaf of it stay trusted while those are re-issued).
      - C(distrust_complete) - the second pass of C(distrust.yml), after the leaf phase - the bundle without the distrusted
        intermediate, once every cluster proved its replacement and re-issued its leaves; keeps the first pass's
        result when that has not happened.
    type: str
    choices: [rotate, rollback, distrust, distrust_complete]
    default: rotate
requirements:
  - hvac
  - cryptography
  - nats-py (for the announcement)
  - kubernetes (for the per-epoch Secret)
'''

EXAMPLES = r'''
- name: Issue, build, store and announce the CA bundle
  securetransport.ca_rotation.rotation_authority:
    mode: rotate
'''

RETURN = r'''
msg:
  description: What the step did, or why it did not go ahead.
  returned: always
  type: str
ansible_facts:
  description: The step's result, for the later plays of the run.
  returned: always
  type: complex
  contains:
    ca_rotation_authority_result:
      description:
        - C(go), C(locked_out), C(kind), C(started_at), C(holder), C(plan), C(epoch), C(sha256), C(pem), C(certificates),
          C(generation), C(new_bundle), C(hold), C(include_root), C(announce_error), C(probe), C(pki), C(error),
          C(timings) (seconds per step) and C(logins) (OpenBao logins of the step).
      type: dict
      returned: always
'''

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# This file only documents the module; the action plugin of the same name does the work in the controller.

from __future__ import annotations

DOCUMENTATION = r'''
module: rotation_finish
short_description: End of a CA rotation run - release the lock, write the report, fail loudly
version_added: 0.1.0
description:
  - Runs last, on the host of the C(ca_authority) group, in the controller. Releases the rotation lock taken by this
    run, builds the run report from the authority, cluster and activation results and writes it as JSON to
    C(ca_rotation_report_file) when set (also in check mode, as it describes the run).
  - Fails when the authority step refused or failed, the announcement failed or any cluster failed, with one message
    naming each; otherwise prints a one-line summary. A cluster host without a result of this run (its task failed or
    the host was unreachable) counts as a failed cluster.
  - The steps before it never fail as tasks (their errors are their results), so that it always runs; when its own
    configuration cannot be read, or it fails itself, it still releases the lock (from the OpenBao connection
    variables alone) and writes the report before failing.
author:
  - SecureTransport platform team (@securetransport)
extends_documentation_fragment:
  - securetransport.ca_rotation.engine
options:
  mode:
    description:
      - C(rotate), or C(rollback) to first complete a rollback - announce C(kind=rollback) with the new generation, record
        it and set the hold, once every cluster proved the restored bundle.
      - C(distrust) - as C(rotate); the run also fails while the distrust is not complete.
    type: str
    choices: [rotate, rollback, distrust]
    default: rotate
requirements:
  - hvac
'''

EXAMPLES = r'''
- name: Release the lock, report, fail loudly on any failure
  securetransport.ca_rotation.rotation_finish:

- name: Complete a rollback, then finish
  securetransport.ca_rotation.rotation_finish:
    mode: rollback
'''

RETURN = r'''
msg:
  description: The summary line, or the failure message.
  returned: always
  type: str
ansible_facts:
  description: The run report (also written to C(ca_rotation_report_file)).
  returned: success
  type: complex
  contains:
    ca_rotation_run_report:
      description:
        - The run report (C(started_at), C(finished_at), C(ok), C(changed), C(epoch), C(current_epoch), C(generation),
          C(bundle_sha256), C(bundle_certificates), C(earliest_expiry), C(latest_expiry), C(kind), C(activated_epoch),
          C(hold), C(clusters), C(announce_error), C(error), C(locked_out), C(timings)).
      returned: success
      type: dict
'''

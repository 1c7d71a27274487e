# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """What every step of the rotation engine has in common (controller-side action plugins)."""

    DOCUMENTATION = r'''
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads and predicts; nothing is issued, written, signalled, announced or locked.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  action:
    description: Indicates this has a corresponding action plugin so some parts of the work happen on the controller.
    support: full
notes:
  - The step runs in the controller (action plugin); it reads the C(ca_rotation_*) variables of its host, documented
    in the argument specs of the roles C(authority), C(nats_reload), C(activate) and C(rollback) and in the README,
    and refuses a bad value naming the variable before anything is changed.
'''

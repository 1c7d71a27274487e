# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Building the shared connection options' argument specs, with or without ansible-core (private).

The scripts import the same specs (to validate and default their configuration) on hosts without
ansible-core: there an environment fallback is simply left out.
"""

from __future__ import annotations

try:
    from ansible.module_utils.basic import env_fallback
except ImportError:  # pragma: no cover - scripts without ansible-core
    env_fallback = None


def fallback(*names):
    """The ``fallback`` of an option read from the environment variables ``names``; None without ansible-core."""
    return (env_fallback, list(names)) if env_fallback else None


def option(**kwargs):
    """One argument-spec entry; a ``fallback`` of None (see :func:`fallback`) is left out."""
    if kwargs.get('fallback') is None:
        kwargs.pop('fallback', None)
    return kwargs

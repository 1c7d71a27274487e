# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one module base class of the collection (private): the collection's errors become ``fail_json`` here,
once, for every module."""

from __future__ import annotations

import contextlib
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError


class CaRotationModule(AnsibleModule):
    """An AnsibleModule whose :meth:`run` (and :meth:`failures`) turn the collection's errors into a failed result.

    ``run(fn, *args)`` calls ``fn(*args)`` and exits with the dict it returns. A :class:`CaRotationError`
    fails with its message and its details (``option``, ``path``, ``status``, ...); extra result keys an
    error carries in ``result`` (for example the destinations already written) are returned too. Anything
    else fails as an unexpected error with the traceback.
    """

    #: what the module does, for the message of an unexpected error ("building the CA bundle")
    doing = None

    @contextlib.contextmanager
    def failures(self):
        """``with module.failures():`` - the collection's errors (and unexpected ones) in the block fail the module."""
        try:
            yield
        except CaRotationError as err:
            extra = dict(err.details())
            extra.update(getattr(err, 'result', None) or {})
            extra.setdefault('changed', False)
            self.fail_json(msg=str(err), **extra)
        except Exception as err:  # pylint: disable=broad-except
            self.fail_json(msg='Unexpected error%s: %s' % (' ' + self.doing if self.doing else '', err),
                           exception=traceback.format_exc())

    def run(self, fn, *args, **kwargs):
        """Exit with the result of ``fn(*args, **kwargs)`` (failed when it says so), errors mapped by :meth:`failures`."""
        with self.failures():
            result = fn(*args, **kwargs)
        failed = result.pop('failed', False)
        if failed:
            self.fail_json(**result)
        self.exit_json(**result)

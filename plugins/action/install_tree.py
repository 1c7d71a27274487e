# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of securetransport.ca_rotation.install_tree: reads each ``files[].src`` on the controller and runs
the module once on the host with the contents."""

from __future__ import annotations

import base64

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        files = args.get('files') or []
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            result.update(failed=True, msg='files must be a list of mappings (src, path, mode). Nothing was changed.')
            return result
        sent = []
        for index, item in enumerate(files):
            item = dict(item)
            src = item.pop('src', None)
            if src is not None and item.get('content') is None:
                try:
                    path = self._find_needle('files', src)
                    with open(self._loader.get_real_file(path, decrypt=False), 'rb') as handle:
                        item['content'] = base64.b64encode(handle.read()).decode('ascii')
                except (AnsibleError, OSError) as err:
                    result.update(failed=True, msg='files[%d].src %s cannot be read on the controller: %s. Nothing was changed.'
                                  % (index, src, err))
                    return result
            sent.append(item)
        args['files'] = sent
        result.update(self._execute_module(module_name='securetransport.ca_rotation.install_tree', module_args=args,
                                           task_vars=task_vars))
        return result

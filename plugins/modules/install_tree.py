#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: install_tree
short_description: Install a set of files from the controller under one directory in one call
version_added: 0.1.0
description:
  - Writes every file of O(files) under O(root) whose content or mode differs (atomically, in its own directory),
    creates O(directories) and removes O(absent), in one module call per host instead of one per file.
  - The action plugin of the same name reads each O(files[].src) on the controller and sends the contents; the module
    compares them with what is on the host, so a run with nothing to change changes nothing.
  - The role P(securetransport.ca_rotation.client_bundle#role) installs C(ca-bundle-sync) with it.
author:
  - SecureTransport platform team (@securetransport)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
options:
  root:
    description: The directory on the host every relative path is under (created when missing, mode 0755).
    type: path
    required: true
  files:
    description:
      - The files to install. O(files[].src) is read on the controller (by the action plugin).
    type: list
    elements: dict
    default: []
    suboptions:
      src:
        description: The file on the controller (required unless O(files[].content) is given).
        type: path
      content:
        description:
          - The file's content, base64-encoded. The action plugin sets it from O(files[].src); give it only to install
            content made in the play.
        type: str
      path:
        description: Where it goes, relative to O(root) (no C(..)); its directories are created (mode 0755).
        type: str
        required: true
      mode:
        description: Its mode, as an octal string.
        type: str
        default: '0644'
  directories:
    description: Directories to create under O(root), with their mode.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Relative to O(root).
        type: str
        required: true
      mode:
        description: Its mode, as an octal string.
        type: str
        default: '0755'
  absent:
    description: Paths under O(root) to remove (a file, or a directory with everything in it) when they exist.
    type: list
    elements: str
    default: []
notes:
  - Files are written as the user the module runs as (use C(become) for a root-owned directory).
'''

EXAMPLES = r'''
- name: Install the script and the code it imports
  securetransport.ca_rotation.install_tree:
    root: /opt/ca-bundle-sync
    directories:
      - {path: state, mode: '0750'}
    files:
      - {src: "{{ role_path }}/files/tool.py", path: bin/tool.py, mode: '0755'}
      - {src: "{{ role_path }}/files/lib/util.py", path: lib/util.py}
    absent: [lib/old_util.py]
'''

RETURN = r'''
installed:
  description: The files written or whose mode was changed (relative paths), in order.
  returned: always
  type: list
  elements: str
  sample: [bin/tool.py]
removed:
  description: The paths of O(absent) that existed and were removed.
  returned: always
  type: list
  elements: str
  sample: [lib/old_util.py]
created:
  description: The directories that were created (relative paths).
  returned: always
  type: list
  elements: str
  sample: [state]
'''

import base64
import os
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import (
    atomic_write,
    file_needs_write,
    parse_mode,
    set_attributes,
)

ARGUMENT_SPEC = {
    'root': {'type': 'path', 'required': True},
    'files': {'type': 'list', 'elements': 'dict', 'default': [], 'options': {
        'src': {'type': 'path'},
        'path': {'type': 'str', 'required': True},
        'mode': {'type': 'str', 'default': '0644'},
        'content': {'type': 'str'},
    }},
    'directories': {'type': 'list', 'elements': 'dict', 'default': [], 'options': {
        'path': {'type': 'str', 'required': True},
        'mode': {'type': 'str', 'default': '0755'},
    }},
    'absent': {'type': 'list', 'elements': 'str', 'default': []},
}


class TreeError(FileError):
    """Bad input, found before anything is written: the message names the option."""


def relative(path, option):
    """``path`` as a normalised relative path, refused when it is absolute or leaves the root."""
    norm = os.path.normpath(str(path or ''))
    if not path or os.path.isabs(norm) or norm == '.' or norm == '..' or norm.startswith('..' + os.sep):
        raise TreeError('%s %r must be a path relative to root, without ..' % (option, path))
    return norm


def octal(mode, option):
    try:
        return parse_mode(mode, option)
    except FileError as err:
        raise TreeError(str(err)) from None


def _makedirs(root, rel, mode, check_mode, created):
    """Create ``root/rel`` and its missing parents (each with ``mode``); record what was created."""
    current = root
    for part in ([] if rel in ('', '.') else rel.split(os.sep)):
        current = os.path.join(current, part)
        if os.path.isdir(current) or os.path.relpath(current, root) in created:
            continue
        if os.path.lexists(current):
            raise NotADirectoryError('%s exists and is not a directory' % current)
        created.append(os.path.relpath(current, root))
        if not check_mode:
            os.mkdir(current, mode)
            os.chmod(current, mode)


def install(root, files, directories, absent, check_mode=False):
    """Apply the tree; returns ``{changed, installed, removed, created}``. ``files``: ``[{path, mode, content}]`` with
    ``content`` the file's bytes base64-encoded."""
    if not os.path.isabs(root):
        raise TreeError('root %r must be an absolute path' % root)
    plan = []
    for i, item in enumerate(files):
        rel = relative(item.get('path'), 'files[%d].path' % i)
        if item.get('content') is None:
            raise TreeError('files[%d] (%s) has neither src nor content' % (i, rel))
        plan.append((rel, octal(item.get('mode') or '0644', 'files[%d].mode' % i), base64.b64decode(item['content'])))
    dirs = [(relative(d.get('path'), 'directories[%d].path' % i), octal(d.get('mode') or '0755', 'directories[%d].mode' % i))
            for i, d in enumerate(directories)]
    gone = [relative(p, 'absent[%d]' % i) for i, p in enumerate(absent)]
    created, installed, removed = [], [], []
    if not os.path.isdir(root):
        if os.path.lexists(root):
            raise NotADirectoryError('root %s exists and is not a directory' % root)
        created.append('.')
        if not check_mode:
            os.makedirs(root, 0o755)
    for rel, mode in dirs:
        _makedirs(root, rel, mode, check_mode, created)
        target = os.path.join(root, rel)
        if os.path.isdir(target) and stat.S_IMODE(os.stat(target).st_mode) != mode:
            installed.append(rel + '/')
            if not check_mode:
                os.chmod(target, mode)
    for rel, mode, data in plan:
        target = os.path.join(root, rel)
        _makedirs(root, os.path.dirname(rel), 0o755, check_mode, created)
        # a symlink in the way is replaced, never written through
        differs, attrs = (True, True) if os.path.islink(target) else file_needs_write(target, data, mode)
        if not (differs or attrs):
            continue
        installed.append(rel)
        if check_mode:
            continue
        if differs:
            atomic_write(target, data, mode)
        else:
            set_attributes(target, mode)
    for rel in gone:
        target = os.path.join(root, rel)
        if not os.path.lexists(target):
            continue
        removed.append(rel)
        if check_mode:
            continue
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
    return {'changed': bool(created or installed or removed), 'installed': installed, 'removed': removed, 'created': created}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        result = install(p['root'], p['files'], p['directories'], p['absent'], check_mode=module.check_mode)
    except TreeError as err:
        module.fail_json(msg='%s. Nothing was changed.' % err)
    except (FileError, OSError) as err:
        module.fail_json(msg='Installing under %s failed: %s' % (p['root'], err))
    module.exit_json(**result)


if __name__ == '__main__':
    main()

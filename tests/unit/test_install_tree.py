"""The install_tree module's logic: only what differs is written, modes are kept, bad paths change nothing."""

from __future__ import annotations

import base64
import os
import re
import stat

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.modules import install_tree as it


def _f(path, text, mode='0644'):
    return {'path': path, 'content': base64.b64encode(text.encode()).decode(), 'mode': mode}


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_installs_then_changes_nothing_then_only_what_differs(tmp_path):
    root = tmp_path / 'a' / 'b'
    files = [_f('bin/tool', '#!/bin/sh\n', '0755'), _f('lib/x/util.py', 'x = 1\n')]
    first = it.install(str(root), files, [{'path': 'state', 'mode': '0750'}], [])
    assert first['changed'] and first['installed'] == ['bin/tool', 'lib/x/util.py']
    assert set(first['created']) == {'.', 'state', 'bin', 'lib', 'lib/x'}
    assert (root / 'bin/tool').read_text() == '#!/bin/sh\n' and _mode(root / 'bin/tool') == 0o755
    assert _mode(root / 'state') == 0o750 and _mode(root / 'lib/x') == 0o755
    again = it.install(str(root), files, [{'path': 'state', 'mode': '0750'}], [])
    assert again == {'changed': False, 'installed': [], 'removed': [], 'created': []}
    os.chmod(root / 'lib/x/util.py', 0o600)
    files[0] = _f('bin/tool', '#!/bin/sh\nexit 0\n', '0755')
    third = it.install(str(root), files, [], [])
    assert third['installed'] == ['bin/tool', 'lib/x/util.py'] and _mode(root / 'lib/x/util.py') == 0o644
    assert (root / 'bin/tool').read_text().endswith('exit 0\n')
    assert not [p for p in (root / 'bin').iterdir() if p.name.startswith('.')], 'no temporary file left'


def test_check_mode_predicts_and_writes_nothing(tmp_path):
    root = tmp_path / 'r'
    res = it.install(str(root), [_f('a/b.py', 'b\n')], [{'path': 'd'}], ['old'], check_mode=True)
    assert res['changed'] and res['installed'] == ['a/b.py'] and set(res['created']) == {'.', 'd', 'a'}
    assert not root.exists()


def test_absent_paths_are_removed_files_and_trees(tmp_path):
    root = tmp_path / 'r'
    (root / 'old/pkg').mkdir(parents=True)
    (root / 'old/pkg/m.py').write_text('m')
    (root / 'gone.py').write_text('g')
    res = it.install(str(root), [], [], ['old', 'gone.py', 'never-there'])
    assert res['removed'] == ['old', 'gone.py'] and not (root / 'old').exists() and not (root / 'gone.py').exists()


def test_a_symlink_in_the_way_is_replaced_not_followed(tmp_path):
    root = tmp_path / 'r'
    root.mkdir()
    victim = tmp_path / 'victim'
    victim.write_text('keep')
    (root / 'f.py').symlink_to(victim)
    res = it.install(str(root), [_f('f.py', 'new\n')], [], [])
    assert res['installed'] == ['f.py'] and not (root / 'f.py').is_symlink()
    assert victim.read_text() == 'keep' and (root / 'f.py').read_text() == 'new\n'


@pytest.mark.parametrize('files, dirs, absent, option', [
    ([_f('../escape.py', 'x')], [], [], 'files[1].path'),
    ([_f('/etc/passwd', 'x')], [], [], 'files[1].path'),
    ([_f('ok.py', 'x', mode='rwx')], [], [], 'files[1].mode'),
    ([], [{'path': 'a/../../b'}], [], 'directories[0].path'),
    ([], [], ['..'], 'absent[0]'),
    ([{'path': 'no-content.py', 'mode': '0644'}], [], [], 'files[1]'),
])
def test_bad_input_names_the_option_and_changes_nothing(tmp_path, files, dirs, absent, option):
    root = tmp_path / 'r'
    with pytest.raises(it.TreeError, match='^' + re.escape(option) + ' '):
        it.install(str(root), [_f('first.py', 'x')] + files, dirs, absent)
    assert not root.exists()

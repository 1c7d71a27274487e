# -*- coding: utf-8 -*-
"""module_utils/_common/files.py: the one atomic writer, modes, owners and the write-or-not comparison."""

from __future__ import annotations

import os
import random
import stat

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import files as common_files
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError, FileError


def test_atomic_write_and_modes(tmp_path):
    path = tmp_path / "key.pem"
    common_files.atomic_write(str(path), "secret\n", 0o600)
    assert path.read_text() == "secret\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert common_files.file_needs_write(str(path), "secret\n", 0o600) == (False, False)
    assert common_files.file_needs_write(str(path), "other\n", 0o600) == (True, False)
    assert common_files.file_needs_write(str(path), "secret\n", 0o644) == (False, True)
    common_files.atomic_write(str(path), "new\n", 0o640)
    assert path.read_text() == "new\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["key.pem"]
    with pytest.raises(FileError, match="does not exist"):
        common_files.atomic_write(str(tmp_path / "nodir" / "x"), "x", 0o600)


def test_parse_mode():
    assert common_files.parse_mode("0644", "mode") == 0o644 and common_files.parse_mode("600", "mode") == 0o600
    assert common_files.parse_mode(0o640, "mode") == 0o640 and common_files.parse_mode(None, "mode") is None
    with pytest.raises(FileError, match="not an octal file mode"):
        common_files.parse_mode("rw-r--r--", "mode")
    with pytest.raises(FileError, match="out of range") as info:
        common_files.parse_mode("77777", "mode")
    assert info.value.option == "mode" and isinstance(info.value, CaRotationError)


def test_missing_file_needs_everything_and_reads_as_none(tmp_path):
    missing = str(tmp_path / "missing")
    assert common_files.file_needs_write(missing, "x", 0o644) == (True, True)
    assert common_files.read_current(missing) == (None, None)


def test_owner_and_group():
    uid, gid = os.geteuid(), os.getegid()
    assert common_files.resolve_owner(None, None) == (-1, -1)
    assert common_files.resolve_owner(str(uid), gid) == (uid, gid)
    with pytest.raises(FileError, match="Unknown owner or group"):
        common_files.resolve_owner("no-such-user-%d" % random.randrange(10 ** 6), None)


def test_attributes_differ_and_set_attributes(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o600)
    st = os.stat(path)
    assert not common_files.attributes_differ(st, 0o600) and not common_files.attributes_differ(st, None)
    assert common_files.attributes_differ(st, 0o644)
    assert common_files.attributes_differ(st, 0o600, uid=st.st_uid + 1)
    common_files.set_attributes(str(path), 0o640)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    with pytest.raises(FileError, match="Cannot set mode/owner"):
        common_files.set_attributes(str(tmp_path / "missing"), 0o640)

# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one atomic file writer, and the comparisons that decide whether to write (private).

Used for leaf certificates and keys (``openbao_leaf``), the CA bundle file (``ca_bundle``) and the
client side (``ca-bundle-sync``: bundle, state and metrics files). Errors are :class:`FileError`
naming the file.
"""

from __future__ import annotations

import os
import tempfile

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError


def parse_mode(value, option):
    """File mode from ``'0644'`` / ``'644'`` / ``0o644`` / ``420``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            raise FileError('%s %r is not an octal file mode such as 0644' % (option, value), option=option) from None
    if not 0 <= mode <= 0o7777:
        raise FileError('%s %r is out of range' % (option, value), option=option)
    return mode


def resolve_owner(owner, group):
    """``(uid, gid)`` for a user/group name or number; -1 for each one not given (None)."""
    import grp  # pylint: disable=import-outside-toplevel
    import pwd  # pylint: disable=import-outside-toplevel
    uid = gid = -1
    try:
        if owner is not None:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        if group is not None:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise FileError('Unknown owner or group %s' % exc) from None
    return uid, gid


def read_current(path):
    """``(content bytes, os.stat_result)`` of the file at ``path``; ``(None, None)`` when it does not exist.

    Other OSErrors are raised as they are."""
    try:
        with open(path, 'rb') as handle:
            current = handle.read()
        st = os.stat(path)
    except FileNotFoundError:
        return None, None
    return current, st


def attributes_differ(st, mode, uid=-1, gid=-1):
    """Whether an existing file (``st``) has another mode (None: any), owner or group (-1: any)."""
    return bool((mode is not None and (st.st_mode & 0o7777) != mode) or (uid != -1 and st.st_uid != uid)
                or (gid != -1 and st.st_gid != gid))


def file_needs_write(path, content, mode, owner=None, group=None):
    """``(content_differs, attributes_differ)`` for ``path``."""
    current, st = read_current(path)
    if st is None:
        return True, True
    uid, gid = resolve_owner(owner, group)
    return current != _bytes(content), attributes_differ(st, mode, uid, gid)


def _bytes(content):
    """``content`` as bytes (str is UTF-8 encoded)."""
    return content if isinstance(content, bytes) else content.encode('utf-8')


def atomic_write(path, content, mode, owner=None, group=None):
    """Write ``content`` (str or bytes) to ``path`` atomically (temp file in the same directory, fsync, rename),
    created with ``mode`` from the start so a private key is never readable by others."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileError('Directory %s of %s does not exist' % (directory, path))
    uid, gid = resolve_owner(owner, group)
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        os.fchmod(fd, 0o600 if mode is None else mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(_bytes(content))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise FileError('Cannot write %s: %s' % (path, exc.strerror or exc)) from None
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass


def set_attributes(path, mode, owner=None, group=None):
    """Give an existing file ``mode`` (None: keep) and ``owner`` / ``group`` (None: keep)."""
    uid, gid = resolve_owner(owner, group)
    try:
        if mode is not None:
            os.chmod(path, mode)
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)
    except OSError as exc:
        raise FileError('Cannot set mode/owner of %s: %s' % (path, exc.strerror or exc)) from None

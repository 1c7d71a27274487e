"""Files ca-bundle-sync reads and writes on the host: never through a symbolic link.

Every file it writes -- the bundle, the state file, its ``.lock``, the metrics file -- is either replaced
atomically (a new temporary file created with ``O_EXCL`` in the same directory, fsync, rename: a rename
replaces a link, never its target) or opened with ``O_NOFOLLOW`` (the lock, a mode fix). A symbolic link
planted at any of these paths is refused with an error naming the option (exit 2, nothing written): a link
could point at any file the service may write, and ``O_CREAT`` + truncate would overwrite it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile

from catools.sync.common import PROG, Busy, ConfigError

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError  # noqa: E402

_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)


def symlink_problem(path, option):
    """An error text when ``path`` is a symbolic link (to be refused), else None."""
    if path and os.path.islink(path):
        return ('%s %s is a symbolic link (to %s); %s never writes through one, it could point at any file: remove the link, '
                'or give the real path' % (option, path, os.readlink(path), PROG))
    return None


def open_nofollow(path, flags, mode=0o600):
    """``os.open`` that refuses a symbolic link at ``path`` (FileError) and anything but a regular file."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if os.path.islink(path):
            raise FileError('%s is a symbolic link; refusing to open it' % path) from None
        raise FileError('Cannot open %s: %s' % (path, exc.strerror or exc)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileError('%s is not a regular file; refusing to use it' % path)
    return fd


def read_text(path):
    """The text of ``path`` (never through a symbolic link); None when it does not exist."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileError:
        if not os.path.lexists(path):
            return None
        raise
    with os.fdopen(fd, 'rb') as handle:
        return handle.read().decode('utf-8')


def sha256_file(path):
    """SHA-256 of the file at ``path``; None when it does not exist, is a symbolic link or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def atomic_write(path, content, mode):
    """Replace ``path`` with ``content`` (str) atomically, created with ``mode`` from the start.

    A new temporary file in the same directory (``O_EXCL``: never an existing file or link), fsync, then a
    rename over ``path``. A symbolic link at ``path`` is refused (FileError), not replaced and not followed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileError('Directory %s of %s does not exist' % (directory, path))
    if os.path.islink(path):
        raise FileError('%s is a symbolic link; refusing to write through or over it' % path)
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(content.encode('utf-8'))
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.islink(path):
            raise OSError(0, '%s became a symbolic link while writing' % path)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FileError('Cannot write %s: %s' % (path, exc.strerror or exc)) from None
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def set_mode(path, mode):
    """Give the regular file at ``path`` ``mode`` without following a symbolic link; True when it changed."""
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) == mode:
            return False
        os.fchmod(fd, mode)
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def instance_lock(state_file):
    """An exclusive, non-blocking flock on ``<state file>.lock`` for the lifetime of the run.

    The lock file is opened with ``O_NOFOLLOW`` and must be a regular file with one link, owned by this user,
    before anything is written to it (a hard link to another file is refused too).
    """
    path = state_file + '.lock'
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileError as exc:
        raise ConfigError('Cannot open the lock file %s: %s' % (path, exc)) from None
    try:
        st = os.fstat(fd)
        if st.st_nlink != 1 or st.st_uid != os.geteuid():
            raise ConfigError('The lock file %s has %d links and owner uid %d: expected a file of its own, owned by uid %d; remove it'
                              % (path, st.st_nlink, st.st_uid, os.geteuid()))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy('another %s holds %s' % (PROG, path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, ('%d\n' % os.getpid()).encode('ascii'))
        yield path
    finally:
        os.close(fd)

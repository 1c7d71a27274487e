"""Files ca-bundle-sync reads and writes: content hashes and the instance lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os

from catools.sync.common import PROG, Busy, ConfigError

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import files as common_files  # noqa: E402


def sha256_file(path):
    try:
        with open(path, 'rb') as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def instance_lock(state_file):
    """An exclusive, non-blocking flock on ``<state file>.lock`` for the lifetime of the run."""
    path = state_file + '.lock'
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError('Cannot open the lock file %s: %s' % (path, exc.strerror or exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy('another %s holds %s' % (PROG, path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, ('%d\n' % os.getpid()).encode('ascii'))
        yield path
    finally:
        os.close(fd)


def atomic_write(path, content, mode):
    """Write ``content`` to ``path`` atomically (temporary file in the same directory, fsync, rename)."""
    common_files.atomic_write(path, content, mode)

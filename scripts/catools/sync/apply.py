"""Applying a bundle on the host: write the file, then reload the service (command and/or signal)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from catools.sync import files
from catools.sync.common import Transient, number

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError  # noqa: E402


def write_bundle(cfg, message):
    """Write the bundle atomically if the file differs; return True when the bytes changed."""
    path = cfg.bundle_file
    pem = message['bundle_pem']
    before = files.sha256_file(path)
    if before == message['bundle_sha256']:
        with contextlib.suppress(OSError, FileError):
            files.set_mode(path, cfg.bundle_mode)
        return False
    try:
        files.atomic_write(path, pem, cfg.bundle_mode)
    except (FileError, OSError) as exc:
        raise Transient('write', 'Cannot write the bundle: %s' % exc) from None
    after = files.sha256_file(path)
    if after != message['bundle_sha256']:
        raise Transient('write', 'The bundle file %s reads back with SHA-256 %s, not %s' % (path, after, message['bundle_sha256']))
    return True


async def reload(cfg, message):
    """Run the reload command and/or signal the pid file; raise Transient on failure. Returns what was done."""
    did = []
    if cfg.reload_argv:
        env = dict(os.environ, CA_BUNDLE_FILE=cfg.bundle_file, CA_BUNDLE_SHA256=message['bundle_sha256'],
                   CA_BUNDLE_EPOCH=str(message['epoch']), CA_BUNDLE_GENERATION=str(message['generation']),
                   CA_BUNDLE_KIND=message['kind'])
        try:
            proc = await asyncio.create_subprocess_exec(
                *cfg.reload_argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            raise Transient('reload', 'Cannot run the reload command %s: %s' % (cfg.reload_argv[0], exc.strerror or exc)) from None
        try:
            output, _stderr = await asyncio.wait_for(proc.communicate(), cfg.reload_timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise Transient('reload', 'The reload command %s did not finish within %ss and was killed'
                            % (cfg.reload_argv[0], number(cfg.reload_timeout))) from None
        if proc.returncode != 0:
            lines = [ln for ln in output.decode('utf-8', 'replace').splitlines() if ln.strip()]
            tail = (lines[-1].strip()[:200]) if lines else ''
            raise Transient('reload', 'The reload command %s exited with %d%s' % (
                cfg.reload_argv[0], proc.returncode, ('; last output line: %s' % tail) if tail else ''))
        did.append('command')
    if cfg.pid_file:
        try:
            text = Path(cfg.pid_file).read_text(encoding='ascii').strip()
            pid = int(text.split()[0])
            if pid <= 1:
                raise ValueError('pid %d' % pid)
        except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise Transient('reload', 'Cannot read a pid from --pid-file %s: %s' % (
                cfg.pid_file, getattr(exc, 'strerror', None) or exc)) from None
        try:
            os.kill(pid, cfg.signal)
        except ProcessLookupError:
            raise Transient('reload', 'Process %d (from %s) is not running' % (pid, cfg.pid_file)) from None
        except PermissionError:
            raise Transient('reload', 'Not allowed to signal process %d (from %s)' % (pid, cfg.pid_file)) from None
        did.append('%s to %d' % (cfg.signal.name, pid))
    return did

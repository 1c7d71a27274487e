# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``signal`` and ``command`` transports: NATS servers on this host (private)."""

from __future__ import annotations

import os
import signal
import subprocess

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import (
    LogTail,
    ReloadError,
    Target,
    TargetError,
    Transport,
    _short,
    http_varz,
)


class LocalTransport(Transport):
    """``signal`` and ``command``: servers on this host, given as targets with a pid or pid file."""

    def __init__(self, mode, targets, nats_server_path=None, command_timeout=30.0):
        if mode not in ('signal', 'command'):
            raise ReloadError(f"transport {mode!r} is not a local transport", option='transport')
        self.name = mode
        self.nats_server_path = nats_server_path
        self.command_timeout = command_timeout
        self.targets = self._targets(targets)
        if mode == 'command' and not nats_server_path:
            raise ReloadError("transport=command needs the nats-server binary: set nats_server_path or put nats-server on PATH",
                              option='nats_server_path')

    @staticmethod
    def _targets(targets):
        if not targets:
            raise ReloadError("targets is required with transport signal or command (one entry per server: pid or pid_file, "
                              "monitor_url)", option='targets')
        result, names = [], set()
        for index, spec in enumerate(targets):
            spec = {k: v for k, v in dict(spec or {}).items() if v not in (None, '')}
            label = spec.get('name') or spec.get('pid_file') or (f"pid {spec['pid']}" if spec.get('pid') else f"targets[{index}]")
            if not spec.get('pid') and not spec.get('pid_file'):
                raise ReloadError(f"targets[{index}] ({label}): give pid or pid_file", option='targets')
            if not spec.get('monitor_url'):
                raise ReloadError(f"targets[{index}] ({label}): monitor_url is required to prove the reload "
                                  "(config_load_time from /varz of the server's monitoring port)", option='targets')
            if label in names:
                raise ReloadError(f"targets[{index}]: duplicate target name {label!r}", option='targets')
            names.add(label)
            spec.pop('name', None)
            if spec.get('pid') is not None:
                spec['pid'] = int(spec['pid'])
            result.append(Target(label, **spec))
        return result

    def discover(self):
        return list(self.targets)

    def read_varz(self, target):
        return http_varz(target.monitor_url, timeout=self.varz_timeout)

    def _pid(self, target):
        if target.pid_file:
            try:
                with open(target.pid_file, encoding='utf-8') as handle:
                    text = handle.read().strip()
                pid = int(text)
            except OSError as exc:
                raise TargetError(f"cannot read pid file {target.pid_file}: {exc.strerror or exc} (is the server running?)") from None
            except ValueError:
                raise TargetError(f"pid file {target.pid_file} does not hold a pid") from None
            where = f"pid {pid} (from {target.pid_file})"
        else:
            pid = int(target.pid)
            where = f"pid {pid}"
        if pid <= 1:
            raise TargetError(f"refusing to signal {where}")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise TargetError(f"no process with {where}: the server is not running") from None
        except PermissionError:
            raise TargetError(f"not permitted to signal {where}: run as the server's user (become) or as root") from None
        command = _process_name(pid)
        if command is not None and 'nats' not in command:
            raise TargetError(f"{where} is {command!r}, not a nats-server: refusing to signal it (stale pid file?)")
        return pid, where

    def reload(self, target):
        pid, where = self._pid(target)
        if self.name == 'signal':
            try:
                os.kill(pid, signal.SIGHUP)
            except OSError as exc:
                raise TargetError(f"cannot send SIGHUP to {where}: {exc.strerror or exc}") from None
            return
        argv = [self.nats_server_path, '--signal', f'reload={pid}']
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.command_timeout, check=False)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{' '.join(argv)} did not finish within {self.command_timeout}s") from None
        except OSError as exc:
            raise TargetError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout or b'').decode('utf-8', 'replace').strip()
            raise TargetError(f"{' '.join(argv)} exited with {proc.returncode}: {_short(out) or 'no output'}")

    def prepare(self, target):
        LogTail.follow(target)


def _process_name(pid):
    """Name of a process (argv[0] or executable basename, preferring one that says nats), None without /proc."""
    names = []
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            names.append(os.path.basename(handle.read().split(b'\0', 1)[0].decode('utf-8', 'replace')))
    except OSError:
        pass
    try:
        names.append(os.path.basename(os.readlink(f'/proc/{pid}/exe')))
    except OSError:
        pass
    names = [n for n in names if n]
    return next((n for n in names if 'nats' in n), names[0] if names else None)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Targets, the transport interface, and the pure helpers of the reload (private).

An unchanged ``config_load_time``, an error reply or a "Failed to reload" in the server's log means
NATS kept its old configuration (it does that with a bad bundle): the target fails with the server's
own message.
"""

from __future__ import annotations

import calendar
import http.client
import json
import os
import re
import urllib.parse

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_of_file
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context

SHA256_RE = re.compile(r'^[0-9a-fA-F]{64}$')
_TIME_RE = re.compile(r'^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)$')
_LOG_LINE_RE = re.compile(r'^\[\d+\] ')
_RELOAD_OK = 'Reloaded server configuration'
_RELOAD_FAILED = 'Failed to reload server configuration'
LOG_TAIL_BYTES = 256 * 1024


#: a server as the modules take it (``targets`` option of nats_sighup and rotation_status)
TARGET_OPTION_SPEC = dict(
    name=dict(type='str'),
    pid=dict(type='int'),
    pid_file=dict(type='path'),
    ca_file=dict(type='path'),
    monitor_url=dict(type='str'),
    server_id=dict(type='str'),
    log_file=dict(type='path'),
    url=dict(type='str'),
)
TARGET_KEYS = tuple(TARGET_OPTION_SPEC)


def reload_specs(targets):
    """Targets with only the keys the reload transports know (the rest - cert_file, names - are for leaves)."""
    return [{k: t[k] for k in TARGET_KEYS if t.get(k) is not None} for t in targets]


class ReloadError(CaRotationError):
    """The run cannot start (bad options, discovery failed): no server was touched."""

    def __init__(self, message, option=None):
        super().__init__(message, option=option)


class TargetError(CaRotationError):
    """One target failed; the message is meant for the operator. ``permanent``: polling again will not help."""

    def __init__(self, message, permanent=False):
        super().__init__(message)
        self.permanent = permanent


# --------------------------------------------------------------------------------------------------
# pure helpers

def parse_load_time(value):
    """``config_load_time`` (RFC 3339 with up to nanoseconds) -> integer nanoseconds since the epoch."""
    match = _TIME_RE.match(str(value or '').strip())
    if not match:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    year, month, day, hour, minute, sec, frac, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(sec), 0, 0, 0))
    if zone != 'Z':
        sign = 1 if zone[0] == '+' else -1
        digits = zone[1:].replace(':', '')
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * 1_000_000_000 + int((frac or '').ljust(9, '0') or 0)


def load_time_advanced(before, after):
    """True when ``after`` is a later ``config_load_time`` than ``before``."""
    try:
        return parse_load_time(after) > parse_load_time(before)
    except ValueError:
        return False


def normalize_sha256(value, option='expect_sha256'):
    if value is None or value == '':
        return None
    text = str(value).strip()
    if text.lower().startswith('sha256:'):
        text = text[7:]
    if not SHA256_RE.match(text):
        raise ReloadError(f"{option} must be a SHA-256 hex digest (64 hex characters), got {value!r}", option=option)
    return text.lower()


def reload_failure_from_log(text):
    """The reason of the last reload in a NATS log excerpt when it failed, else None.

    NATS logs ``[ERR] Failed to reload server configuration: <file>:<line>: <reason>`` followed by
    continuation lines (without the ``[pid]`` prefix) for further errors, or ``Reloaded server
    configuration`` on success. Only the last of those events counts.
    """
    lines = (text or '').splitlines()
    last = None
    for index, line in enumerate(lines):
        if _RELOAD_FAILED in line:
            last = ('failed', index)
        elif _RELOAD_OK in line:
            last = ('ok', index)
    if not last or last[0] != 'failed':
        return None
    index = last[1]
    first = lines[index].split(_RELOAD_FAILED, 1)[1].lstrip(': ').strip()
    parts = [first] if first else []
    for line in lines[index + 1:]:
        if _LOG_LINE_RE.match(line):
            break
        if line.strip():
            parts.append(line.strip())
    return '; '.join(parts) or 'NATS logged a failed reload'


def host_port(url, default_port=4222):
    """(host, port) from ``tls://h:p``, ``nats://h:p``, ``h:p``, ``[v6]:p`` or ``h``."""
    text = str(url).strip()
    if '://' in text:
        text = text.split('://', 1)[1]
    text = text.split('/', 1)[0]
    if '@' in text:
        text = text.rsplit('@', 1)[1]
    if text.startswith('['):
        host, rest = text[1:].split(']', 1) if ']' in text else (text[1:], '')
        port = rest.lstrip(':')
    elif text.count(':') == 1:
        host, port = text.split(':')
    else:
        host, port = text, ''
    return host, int(port) if port else default_port


def _wildcard(host):
    return host in ('', '0.0.0.0', '::', '[::]')


def _short(text, limit=600):
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


class Target:
    """One NATS server to reload (attributes filled by the transport)."""

    def __init__(self, name, **attrs):
        self.name = name
        self.pid = attrs.get('pid')
        self.pid_file = attrs.get('pid_file')
        self.ca_file = attrs.get('ca_file')
        self.monitor_url = attrs.get('monitor_url')
        self.server_id = attrs.get('server_id')
        self.server_name = attrs.get('server_name')
        self.log_file = attrs.get('log_file')
        self.url = attrs.get('url')
        self.host = attrs.get('host')
        self.port = attrs.get('port')
        self.problem = attrs.get('problem')
        self.state = {}

    def __repr__(self):
        return f"Target({self.name!r})"


def http_varz(monitor_url, timeout=5.0):
    """GET ``<monitor_url>/varz`` (plain http.client: ansible's open_url costs 20-40 ms per call, too slow to poll)."""
    url = monitor_url.rstrip('/') + '/varz'
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise TargetError(f"monitor_url {monitor_url!r} is not an http(s) URL", permanent=True)
    if parts.scheme == 'https':
        conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=client_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request('GET', parts.path + (f'?{parts.query}' if parts.query else ''), headers={'Accept': 'application/json'})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise TargetError(f"cannot read {url}: HTTP {response.status} {response.reason}")
        return json.loads(body.decode('utf-8'))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise TargetError(f"cannot read {url}: {exc}") from None
    finally:
        conn.close()


class LogTail:
    """Reads what a NATS log file gained since :meth:`mark`, to explain a failed reload."""

    def __init__(self, path):
        self.path = path
        self.offset = 0

    @classmethod
    def follow(cls, target):
        """Remember where ``target``'s log file (if it has one) ends, for :meth:`Transport.failure_reason`."""
        if target.log_file:
            tail = cls(target.log_file)
            tail.mark()
            target.state['log'] = tail

    def mark(self):
        try:
            self.offset = os.path.getsize(self.path)
        except OSError:
            self.offset = 0

    def reason(self):
        try:
            size = os.path.getsize(self.path)
            start = self.offset if size >= self.offset else 0  # rotated or truncated: read it all
            start = max(start, size - LOG_TAIL_BYTES)
            with open(self.path, 'rb') as handle:
                handle.seek(start)
                text = handle.read().decode('utf-8', 'replace')
        except OSError:
            return None
        return reload_failure_from_log(text)


class Transport:
    """Base: what the orchestration needs from a transport (each method is called from worker threads)."""

    name = None
    sha_interval = 0.2
    varz_interval = 0.02
    #: seconds one ``/varz`` read may take; :func:`reload_servers` bounds it by ``reload_timeout`` so that a server that
    #: accepts connections but does not answer (stopped) cannot stretch the wait past the timeout the user set
    varz_timeout = 5.0

    def discover(self):
        raise NotImplementedError

    def read_sha256(self, target):
        if not target.ca_file:
            raise TargetError("no ca_file known for this target, cannot compare expect_sha256", permanent=True)
        try:
            return sha256_of_file(target.ca_file)
        except OSError as exc:
            raise TargetError(f"cannot read CA file {target.ca_file}: {exc.strerror or exc}") from None

    def ca_location(self, target):
        return target.ca_file

    def read_ca_text(self, target):
        """The CA file's bytes as the server will read them, for the check before the reload; None where they cannot
        be read from here (Kubernetes: the mounted Secret, whose bytes were verified before the write and whose
        SHA-256 is compared)."""
        if not target.ca_file:
            return None
        try:
            with open(target.ca_file, 'rb') as handle:
                return handle.read()
        except OSError as exc:
            raise TargetError(f"cannot read CA file {target.ca_file}: {exc.strerror or exc}") from None

    def read_varz(self, target):
        raise NotImplementedError

    def prepare(self, target):
        """Called just before the reload (e.g. remember where the server's log ends)."""

    def reload(self, target):
        raise NotImplementedError

    def failure_reason(self, target):
        """Why the last reload failed, from the server's own words, or None."""
        tail = target.state.get('log')
        return tail.reason() if tail else None

    def probe_address(self, target, varz):
        host, port = varz.get('host'), varz.get('port')
        if target.url:
            return host_port(target.url)
        if _wildcard(host or ''):
            host = '127.0.0.1'
        return host, int(port or 4222)

    def close(self):
        """Release connections."""

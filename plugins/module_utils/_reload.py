# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reload NATS servers without restarting them, and prove that each one did (private: may change).

One orchestration (:func:`reload_servers`) over four transports:

``signal``      SIGHUP to a local pid (or the pid in a pid file), load time from the monitoring ``/varz``.
``command``     ``nats-server --signal reload=<pid>`` on the local host, same proof.
``kubernetes``  exec ``kill -HUP 1`` (or ``nats-server --signal reload``) in every pod matching a label
                selector, all pods in parallel; load time from ``/varz`` on the pod IP.
``system``      ``$SYS.REQ.SERVER.<id>.RELOAD`` requests as a system-account user; servers discovered with
                ``$SYS.REQ.SERVER.PING``; load time from ``$SYS.REQ.SERVER.<id>.VARZ``.

For every target, in parallel: optionally wait (bounded, polling) until its CA file has the expected
SHA-256, read ``config_load_time``, reload, and poll until ``config_load_time`` has advanced. An unchanged
load time, an error reply or a "Failed to reload" in the server's log means NATS kept its old
configuration (it does that with a bad bundle): that target fails with the server's own message. An
optional TLS probe with a client certificate (e.g. of the new epoch) must then be accepted by every server.
"""

from __future__ import annotations

import asyncio
import calendar
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from types import SimpleNamespace


class _NeverRaised(Exception):
    """Stands in for the kubernetes ApiException until the client is imported (see _k8s.load)."""


# imported on first use by the kubernetes transport (see _k8s.load): other transports skip the ~0.3 s import
k8s_stream = None  # pylint: disable=invalid-name
ApiException = _NeverRaised  # pylint: disable=invalid-name


def _load_k8s():
    global k8s_stream, ApiException  # pylint: disable=global-statement
    lib = _k8s.load()
    if lib is not None:
        k8s_stream = lib.stream.stream
        ApiException = lib.client.rest.ApiException
    return lib


from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _k8s  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s import (  # noqa: E402
    K8sError,
    api_error,
    core_api,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import (  # noqa: E402
    DEFAULT_CONNECT_TIMEOUT,
    NATS_IMPORT_ERROR,
    NatsError,
    build_ssl_context,
    close as nats_close,
    conn_params as nats_conn_params,
    connect as nats_connect,
)

TRANSPORTS = ('signal', 'command', 'kubernetes', 'system')
DEFAULT_RELOAD_COMMAND = ('kill', '-HUP', '1')
ERROR_CHANNEL = 3
SHA256_RE = re.compile(r'^[0-9a-fA-F]{64}$')
_TIME_RE = re.compile(r'^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)$')
_LOG_LINE_RE = re.compile(r'^\[\d+\] ')
_RELOAD_OK = 'Reloaded server configuration'
_RELOAD_FAILED = 'Failed to reload server configuration'
_HANDSHAKE_RE = re.compile(r'Handshake status (\d{3})\s*([^-]*)')
MAX_WORKERS = 64
LOG_TAIL_BYTES = 256 * 1024


class ReloadError(Exception):
    """The run cannot start (bad options, discovery failed): no server was touched."""

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option


class TargetError(Exception):
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


def exec_status(raw):
    """Exit code (and message) from the exec status channel document: (code | None, message)."""
    if not raw:
        return None, 'the exec stream ended without a status'
    try:
        doc = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError:
        return None, f'unreadable exec status {raw!r}'
    if doc.get('status') == 'Success':
        return 0, ''
    for cause in (doc.get('details') or {}).get('causes') or []:
        if cause.get('reason') == 'ExitCode':
            try:
                return int(cause.get('message')), doc.get('message', '')
            except (TypeError, ValueError):
                break
    return None, doc.get('message') or str(doc)


def handshake_failure(exc):
    """(status, reason, body) from the ApiException the client raises when the exec WebSocket is refused."""
    text = str(getattr(exc, 'reason', '') or '')
    match = _HANDSHAKE_RE.search(text)
    if not match:
        return getattr(exc, 'status', None) or None, text, ''
    body = text.rsplit('-+-+-', 1)[-1].strip() if '-+-+-' in text else ''
    if body[:2] in ("b'", 'b"') and body[-1:] in ("'", '"'):
        body = body[2:-1]
    return int(match.group(1)), match.group(2).strip(), body


def sha256_of_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b''):
            digest.update(chunk)
    return digest.hexdigest()


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


# --------------------------------------------------------------------------------------------------
# the TLS probe

def probe_context(probe):
    """An SSL context for the probe (client certificate loaded); raises ReloadError naming the option."""
    probe = dict(probe or {})
    for key in ('cert_file', 'key_file'):
        if not probe.get(key):
            raise ReloadError(f"probe.{key} is required for the TLS probe", option=f'probe.{key}')
    try:
        ctx = build_ssl_context(probe.get('ca_file'), probe['cert_file'], probe['key_file'],
                                bool(probe.get('partial_chain')), prefix='probe.')
    except NatsError as exc:
        raise ReloadError(str(exc), option=f"probe.{exc.option}" if exc.option else 'probe') from None
    if probe.get('ca_file'):
        ctx.check_hostname = bool(probe.get('server_name'))
    else:  # no CA given: only the server's acceptance of our certificate is tested
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _read_line(sock, limit=65536):
    data = b''
    while not data.endswith(b'\r\n') and len(data) < limit:
        chunk = sock.recv(4096 if data.startswith(b'INFO') else 1)
        if not chunk:
            break
        data += chunk
    return data


def tls_probe(host, port, ctx, server_name=None, timeout=10.0, greeting_timeout=3.0):
    """Connect to a NATS client port, upgrade to TLS with the probe certificate, and see the server accept it.

    NATS sends its INFO line in plaintext and expects the TLS upgrade next (servers configured with
    ``handshake_first`` send nothing: then the handshake starts at once). With TLS 1.3 the server checks the
    client certificate after the client's handshake completes, so the proof is reading a protocol line back
    through TLS (PONG, or ``-ERR 'Authorization Violation'`` when the probe sends no credentials: the TLS
    layer accepted the certificate either way). Returns (ok, detail).
    """
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return False, f"cannot connect to {where}: {exc}"
    try:
        raw.settimeout(greeting_timeout)
        try:
            greeting = _read_line(raw)
        except socket.timeout:
            greeting = b''  # handshake_first: the server waits for our ClientHello
        if greeting:
            if not greeting.startswith(b'INFO '):
                return False, f"{where} did not greet like a NATS server: {greeting[:60]!r}"
            try:
                info = json.loads(greeting[5:].decode('utf-8', 'replace'))
            except ValueError:
                info = {}
            if not (info.get('tls_required') or info.get('tls_available')):
                return False, f"{where} does not offer TLS on its client port"
        raw.settimeout(timeout)
        try:
            tls = ctx.wrap_socket(raw, server_hostname=server_name or host)
        except ssl.SSLCertVerificationError as exc:
            return False, f"the certificate of {where} does not verify against probe.ca_file: {exc.verify_message or exc}"
        except (ssl.SSLError, OSError) as exc:
            return False, f"TLS handshake with {where} failed: {exc}"
        version = tls.version() or 'TLS'
        try:
            tls.sendall(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"name":"nats_sighup probe"}\r\nPING\r\n')
            reply = _read_line(tls)
        except ssl.SSLError as exc:
            return False, f"{where} rejected the probe certificate: {getattr(exc, 'reason', None) or exc}"
        except OSError as exc:
            return False, f"{where} closed the connection after the TLS handshake: {exc}"
        finally:
            try:
                tls.close()
            except OSError:
                pass
        if not reply:
            return False, f"{where} closed the connection after the TLS handshake (probe certificate not accepted?)"
        line = reply.decode('utf-8', 'replace').strip()
        return True, f"{version} accepted by {where} ({line[:80]})"
    finally:
        try:
            raw.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------
# targets and transports

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
        conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=ssl.create_default_context())
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
        return http_varz(target.monitor_url)

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
        if target.log_file:
            tail = LogTail(target.log_file)
            tail.mark()
            target.state['log'] = tail


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


class KubernetesTransport(Transport):
    """Pods by label selector; exec in the NATS container of every pod, all in parallel (one API client per thread)."""

    name = 'kubernetes'
    sha_interval = 1.0
    varz_interval = 0.1

    def __init__(self, k8s_params, namespace='nats', label_selector='app=nats', container='nats',
                 ca_file='/etc/nats/ca/ca.crt', reload_command=DEFAULT_RELOAD_COMMAND, client_port=4222,
                 monitor_port=8222, exec_timeout=60.0, core_factory=None):
        if _load_k8s() is None:
            raise ReloadError("the kubernetes Python library is required for transport=kubernetes")
        self.params = dict(k8s_params or {})
        self.namespace = namespace
        self.label_selector = label_selector
        self.container = container
        self.ca_file = ca_file
        self.reload_command = split_command(reload_command)
        self.client_port = int(client_port)
        self.monitor_port = int(monitor_port)
        self.exec_timeout = float(exec_timeout)
        self._core_factory = core_factory or (lambda: core_api(self.params))
        self._local = threading.local()
        self._clients = []
        self._lock = threading.Lock()

    def _core(self):
        core = getattr(self._local, 'core', None)
        if core is None:
            # kubernetes.stream swaps api_client.call_api while a call runs: never share one ApiClient across threads.
            try:
                core = self._core_factory()
            except K8sError as exc:
                raise TargetError(str(exc)) from None
            self._local.core = core
            with self._lock:
                self._clients.append(core)
        return core

    def close(self):
        with self._lock:
            clients, self._clients = self._clients, []
        for core in clients:
            try:
                core.api_client.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def discover(self):
        try:
            core = self._core_factory()
        except K8sError as exc:
            raise ReloadError(str(exc), option='kubernetes') from None
        with self._lock:
            self._clients.append(core)
        where = f"in namespace '{self.namespace}' with label selector '{self.label_selector}'"
        try:
            pods = core.list_namespaced_pod(self.namespace, label_selector=self.label_selector).items
        except ApiException as exc:
            raise ReloadError(str(api_error(exc, 'listing the NATS pods', where, verb='list', resource='pods',
                                                 namespace=self.namespace)), option='label_selector') from None
        except Exception as exc:  # pylint: disable=broad-except  # urllib3 / connection errors
            raise ReloadError(f"listing the NATS pods {where} failed: cannot reach the Kubernetes API: {_short(exc)}",
                              option='kubernetes') from None
        targets = []
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            targets.append(self._target(pod))
        return targets

    def _target(self, pod):
        name = pod.metadata.name
        target = Target(name, ca_file=self.ca_file, server_name=name)
        status = pod.status
        containers = {c.name: c for c in (pod.spec.containers or [])}
        container = containers.get(self.container)
        if container is None:
            target.problem = f"pod {self.namespace}/{name} has no container '{self.container}' (it has: {', '.join(sorted(containers))})"
            return target
        ports = {p.name: p.container_port for p in (container.ports or []) if p.name}
        target.port = ports.get('client') or ports.get('nats') or self.client_port
        target.state['monitor_port'] = ports.get('monitor') or self.monitor_port
        target.host = getattr(status, 'pod_ip', None) if status else None
        phase = getattr(status, 'phase', None) if status else None
        if phase != 'Running':
            target.problem = f"pod {self.namespace}/{name} is not running (phase {phase})"
            return target
        for cstatus in (status.container_statuses or []):
            if cstatus.name == self.container and cstatus.state is not None and cstatus.state.running is None:
                waiting = cstatus.state.waiting or cstatus.state.terminated
                why = getattr(waiting, 'reason', None) or 'not running'
                message = getattr(waiting, 'message', None)
                target.problem = f"container '{self.container}' of pod {self.namespace}/{name} is not running ({why}{': ' + message if message else ''})"
                return target
        if not target.host:
            target.problem = f"pod {self.namespace}/{name} has no pod IP yet"
        return target

    def ca_location(self, target):
        return f"{self.namespace}/{target.name}:{self.ca_file}"

    def exec(self, target, argv):
        """Run ``argv`` in the pod's NATS container: (exit code, stdout, stderr); API failures raise TargetError."""
        core = self._core()
        where = f"'{self.namespace}/{target.name}'"
        try:
            resp = k8s_stream(core.connect_get_namespaced_pod_exec, target.name, self.namespace, command=list(argv),
                              container=self.container, stderr=True, stdin=False, stdout=True, tty=False,
                              _preload_content=False)
        except ApiException as exc:
            status, reason, body = handshake_failure(exc)
            if status:
                error = api_error(SimpleNamespace(status=status, reason=reason, body=body), f"exec {' '.join(argv)!r} in pod",
                                  where, verb='create', resource='pods/exec', namespace=self.namespace)
                raise TargetError(str(error), permanent=status in (400, 401, 403, 404)) from None
            raise TargetError(f"exec {' '.join(argv)!r} in pod {where} failed: {_short(reason or exc)}") from None
        try:
            resp.run_forever(timeout=self.exec_timeout)
            if resp.is_open():
                raise TargetError(f"exec {' '.join(argv)!r} in pod {where} did not finish within {self.exec_timeout:g}s")
            out, err = resp.read_stdout() or '', resp.read_stderr() or ''
            code, message = exec_status(resp.read_channel(ERROR_CHANNEL))
        finally:
            try:
                resp.close()
            except Exception:  # pylint: disable=broad-except
                pass
        if code is None:
            raise TargetError(f"exec {' '.join(argv)!r} in pod {where} failed: {_short(message)}")
        return code, out, err

    def read_sha256(self, target):
        code, out, err = self.exec(target, ['sha256sum', self.ca_file])
        match = re.match(r'\s*([0-9a-fA-F]{64})\b', out or '')
        if code != 0 or not match:
            raise TargetError(f"sha256sum {self.ca_file} in pod {self.namespace}/{target.name} failed (exit {code}): "
                              f"{_short(err or out) or 'no output'}")
        return match.group(1).lower()

    def read_varz(self, target):
        host = target.host
        if ':' in host and not host.startswith('['):
            host = f'[{host}]'
        return http_varz(f"http://{host}:{target.state['monitor_port']}")

    def prepare(self, target):
        target.state['log_marker'] = None
        target.state['log_checked'] = 0.0
        try:
            tail = self._core().read_namespaced_pod_log(target.name, self.namespace, container=self.container, tail_lines=1)
            target.state['log_marker'] = (tail or '').strip() or None
        except Exception as exc:  # pylint: disable=broad-except  # 403 on pods/log: no reasons, not a failure
            target.state['log_error'] = _log_error(exc, self.namespace, target.name)

    def reload(self, target):
        code, out, err = self.exec(target, self.reload_command)
        if code != 0:
            raise TargetError(f"reload command {' '.join(self.reload_command)!r} in pod {self.namespace}/{target.name} exited "
                              f"with {code}: {_short(err or out) or 'no output'}")

    def failure_reason(self, target):
        if target.state.get('log_error'):
            return None
        now = time.monotonic()
        if now - target.state.get('log_checked', 0.0) < 1.0:
            return target.state.get('log_reason')
        target.state['log_checked'] = now
        try:
            text = self._core().read_namespaced_pod_log(target.name, self.namespace, container=self.container, tail_lines=500) or ''
        except Exception as exc:  # pylint: disable=broad-except
            target.state['log_error'] = _log_error(exc, self.namespace, target.name)
            return None
        marker = target.state.get('log_marker')
        if marker and marker in text:
            text = text[text.rindex(marker) + len(marker):]
        target.state['log_reason'] = reload_failure_from_log(text)
        return target.state['log_reason']

    def probe_address(self, target, varz):
        return target.host, int(target.port or self.client_port)


def _log_error(exc, namespace, name):
    if getattr(exc, 'status', None) == 403:
        return f"cannot read the log of pod {namespace}/{name} to explain failures: grant 'get' on 'pods/log'"
    return f"cannot read the log of pod {namespace}/{name}: {_short(exc, 200)}"


def split_command(command):
    """A reload command given as a list, or as one string split like a shell would."""
    if isinstance(command, str):
        argv = shlex.split(command)
    else:
        argv = [str(a) for a in (command or [])]
        if len(argv) == 1 and ' ' in argv[0].strip():
            argv = shlex.split(argv[0])
    if not argv:
        raise ReloadError("reload_command must not be empty", option='reload_command')
    return argv


class _LoopThread:
    """An asyncio loop in a daemon thread, so that worker threads can share one NATS connection."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name='nats-sighup-loop', daemon=True)
        self.thread.start()

    def call(self, coro, timeout):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self):
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class SystemTransport(Transport):
    """``$SYS.REQ.SERVER.<id>.RELOAD`` over NATS as a system-account user; no exec permission needed."""

    name = 'system'
    varz_interval = 0.1

    def __init__(self, nats_params, targets=None, request_timeout=None, discovery_quiet=0.5, discovery_timeout=10.0,
                 connect=None):
        """``nats_params``: the ``nats`` option dict; ``connect``: optional coroutine function (tests)."""
        if connect is None and NATS_IMPORT_ERROR:
            raise ReloadError("the Python library nats-py is required for transport=system", option='transport')
        if request_timeout is None:
            request_timeout = nats_conn_params(nats_params).get('connect_timeout') or DEFAULT_CONNECT_TIMEOUT
        self.request_timeout = float(request_timeout)
        self.discovery_quiet = float(discovery_quiet)
        self.discovery_timeout = float(discovery_timeout)
        self.expected = []
        for index, spec in enumerate(targets or []):
            spec = {k: v for k, v in dict(spec or {}).items() if v not in (None, '')}
            if not spec.get('name') and not spec.get('server_id'):
                raise ReloadError(f"targets[{index}]: with transport=system give the server's name or server_id", option='targets')
            self.expected.append(spec)
        self._loop = _LoopThread()
        self.nc = None
        try:
            self.nc = self._loop.call(connect() if connect else nats_connect(nats_params), self.request_timeout * 4 + 30)
        except NatsError as exc:
            self.close()
            raise ReloadError(f"transport=system: {exc}", option=f"nats.{exc.option}" if exc.option else 'nats') from None
        except Exception as exc:  # pylint: disable=broad-except
            self.close()
            raise ReloadError(f"transport=system: cannot connect to NATS: {_short(exc)}", option='nats') from None

    def close(self):
        if self.nc is not None:
            try:
                self._loop.call(nats_close(self.nc), 10)
            except Exception:  # pylint: disable=broad-except
                pass
            self.nc = None
        self._loop.close()

    async def _ping(self):
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        replies = {}
        try:
            await self.nc.publish('$SYS.REQ.SERVER.PING', b'', reply=inbox)
            await self.nc.flush(timeout=self.request_timeout)
            deadline = time.monotonic() + self.discovery_timeout
            wait = self.request_timeout  # the first reply may take a while; then stop after a quiet period
            views = {}
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=min(wait, max(0.01, deadline - time.monotonic())))
                except asyncio.TimeoutError:
                    break
                except Exception as exc:  # pylint: disable=broad-except  # nats.errors.TimeoutError
                    if 'timeout' in type(exc).__name__.lower():
                        break
                    raise
                if not msg.data and str((msg.headers or {}).get('Status', '')).startswith('503'):
                    break  # no responders: nobody serves $SYS requests for this user
                try:
                    doc = json.loads(msg.data.decode('utf-8'))
                except ValueError:
                    continue
                server = doc.get('server') or {}
                if server.get('id'):
                    replies[server['id']] = server
                    views[server['id']] = doc.get('statsz') or {}
                if _discovery_complete(replies, views):
                    break
                wait = self.discovery_quiet
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # pylint: disable=broad-except
                pass
        return replies

    def discover(self):
        try:
            servers = self._loop.call(self._ping(), self.discovery_timeout + self.request_timeout + 10)
        except Exception as exc:  # pylint: disable=broad-except
            raise ReloadError(f"$SYS.REQ.SERVER.PING failed: {_short(exc)}", option='nats') from None
        if not servers and not self.expected:
            raise ReloadError("no NATS server answered $SYS.REQ.SERVER.PING: the nats user must belong to the system account "
                              "(system_account in the server configuration)", option='nats')
        targets, matched = [], set()
        for server_id, server in sorted(servers.items(), key=lambda kv: (kv[1].get('name') or '', kv[0])):
            spec = next((s for s in self.expected if s.get('server_id') == server_id or
                         (not s.get('server_id') and s.get('name') == server.get('name'))), {})
            if spec:
                matched.add(id(spec))
            targets.append(Target(server.get('name') or server_id, server_id=server_id, server_name=server.get('name'),
                                  ca_file=spec.get('ca_file'), log_file=spec.get('log_file'), url=spec.get('url')))
        for spec in self.expected:
            if id(spec) not in matched:
                label = spec.get('name') or spec.get('server_id')
                targets.append(Target(label, server_id=spec.get('server_id'), ca_file=spec.get('ca_file'),
                                      problem=f"server {label} did not answer $SYS.REQ.SERVER.PING (down, unreachable, or not in "
                                              "this cluster)"))
        return targets

    async def _request(self, subject):
        msg = await self.nc.request(subject, b'', timeout=self.request_timeout)
        return json.loads(msg.data.decode('utf-8'))

    def _call(self, target, verb):
        subject = f"$SYS.REQ.SERVER.{target.server_id}.{verb}"
        try:
            return self._loop.call(self._request(subject), self.request_timeout + 5)
        except ValueError:
            raise TargetError(f"{subject}: unreadable reply") from None
        except Exception as exc:  # pylint: disable=broad-except  # nats timeouts / no responders
            kind = type(exc).__name__
            text = str(exc) or kind
            if 'NoResponders' in kind or 'no responders' in text.lower():
                text = 'no responders (server down, or the user is not in the system account)'
            elif 'Timeout' in kind:
                text = f'no reply within {self.request_timeout:g}s'
            raise TargetError(f"{subject}: {text}") from None

    def read_varz(self, target):
        reply = self._call(target, 'VARZ')
        if reply.get('error'):
            raise TargetError(f"$SYS.REQ.SERVER.{target.server_id}.VARZ: {_error_text(reply['error'])}")
        return reply.get('data') or {}

    def reload(self, target):
        reply = self._call(target, 'RELOAD')
        target.state['delivered'] = True
        if reply.get('error'):
            target.state['reply_error'] = _error_text(reply['error'])
            raise TargetError(f"NATS refused the reload and kept its old configuration: {target.state['reply_error']}")

    def prepare(self, target):
        if target.log_file:
            tail = LogTail(target.log_file)
            tail.mark()
            target.state['log'] = tail


def _discovery_complete(replies, views):
    """Whether the PING replies so far are provably all servers, so there is no need to wait for silence.

    Each server reports how many servers it knows of (``statsz.active_servers``) and its route peers. The
    set is complete when every reply counts exactly the servers that answered and names no route peer that
    did not (a server that just started and knows only itself does not end the wait early).
    """
    names = {server.get('name') for server in replies.values()}
    for statsz in views.values():
        if int(statsz.get('active_servers') or 0) != len(replies):
            return False
        if any(route.get('name') not in names for route in statsz.get('routes') or []):
            return False
    return bool(replies)


def _error_text(error):
    if isinstance(error, dict):
        text = error.get('description') or json.dumps(error)
        return _short('; '.join(line.strip() for line in str(text).splitlines() if line.strip()))
    return _short(error)


# --------------------------------------------------------------------------------------------------
# orchestration

def _poll(fn, timeout, interval, max_interval=1.0, sleep=time.sleep):
    """Call ``fn()`` until it returns a true value or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        sleep(max(0.0, min(interval, deadline - time.monotonic())))
        interval = min(max_interval, interval * 1.5)


def new_result(transport_name, target):
    return {
        'target': target.name, 'transport': transport_name, 'server_id': target.server_id,
        'server_name': target.server_name, 'ca_file': None, 'sha256_seen': None, 'sha256_ok': None,
        'load_time_before': None, 'load_time_after': None, 'reload_ms': None, 'signalled': False,
        'changed': False, 'probe_ok': None, 'probe_detail': None, 'ok': False, 'error': None,
    }


def process_target(transport, target, expect_sha256=None, propagation_timeout=180.0, reload_timeout=30.0,
                   probe=None, check_mode=False, sleep=time.sleep):
    """Pre-check, reload and verify one target; returns its result dict (never raises)."""
    res = new_result(transport.name, target)
    res['ca_file'] = transport.ca_location(target) if (expect_sha256 or target.ca_file) else None
    try:
        _process(transport, target, res, expect_sha256, propagation_timeout, reload_timeout, probe, check_mode, sleep)
    except TargetError as exc:
        res['error'] = str(exc)
    except Exception as exc:  # pylint: disable=broad-except  # one target must not take the others down
        res['error'] = f"unexpected error: {type(exc).__name__}: {_short(exc)}"
    res['ok'] = res['error'] is None
    return res


def _process(transport, target, res, expect, propagation_timeout, reload_timeout, probe, check_mode, sleep):
    if target.problem:
        raise TargetError(target.problem)

    # 1. the expected bundle bytes are visible where the server reads them
    if expect:
        errors = []  # the read error of the last attempt, if it failed

        def seen():
            del errors[:]
            try:
                res['sha256_seen'] = transport.read_sha256(target)
            except TargetError as exc:
                if exc.permanent:
                    raise
                errors.append(exc)
                return False
            return res['sha256_seen'] == expect

        if check_mode:
            seen()
        else:
            _poll(seen, propagation_timeout, transport.sha_interval, max(transport.sha_interval, 2.0), sleep)
        if errors and res['sha256_seen'] is None:
            raise errors[-1]
        res['sha256_ok'] = res['sha256_seen'] == expect
        if not res['sha256_ok'] and not check_mode:
            raise TargetError(f"CA file {transport.ca_location(target)} still has sha256 {res['sha256_seen']} after "
                              f"{propagation_timeout:g}s, expected {expect}: the new bundle has not reached this server "
                              "(kubelet syncs mounted Secrets about once a minute; raise propagation_timeout if needed)")

    # 2. the load time before
    try:
        varz = transport.read_varz(target)
    except TargetError as exc:
        raise TargetError(f"server not reachable before the reload: {exc}") from None
    before = varz.get('config_load_time')
    if not before:
        raise TargetError("the server reports no config_load_time (nats-server older than 2.2?)")
    if target.server_id and varz.get('server_id') and varz['server_id'] != target.server_id:
        raise TargetError(f"the monitoring endpoint answers for server {varz['server_id']} ({varz.get('server_name')}), "
                          f"not {target.server_id}: check monitor_url")
    res['server_id'] = res['server_id'] or varz.get('server_id')
    res['server_name'] = res['server_name'] or varz.get('server_name')
    res['load_time_before'] = before
    if check_mode:
        return

    # 3. reload and see the load time advance
    transport.prepare(target)
    started = time.monotonic()
    try:
        transport.reload(target)
        res['signalled'] = True
    finally:  # a refused reload was still delivered when the server itself answered
        res['signalled'] = res['signalled'] or bool(target.state.get('delivered'))
    state = {'varz': None, 'error': None, 'reason': None}

    def advanced():
        try:
            state['varz'] = transport.read_varz(target)
            state['error'] = None
        except TargetError as exc:
            state['error'] = exc
            state['varz'] = None
        if state['varz'] and load_time_advanced(before, state['varz'].get('config_load_time')):
            return True
        state['reason'] = transport.failure_reason(target)
        return bool(state['reason'])

    _poll(advanced, reload_timeout, transport.varz_interval, 0.5, sleep)
    after = (state['varz'] or {}).get('config_load_time')
    res['load_time_after'] = after
    if not (after and load_time_advanced(before, after)):
        reason = state['reason'] or transport.failure_reason(target)
        if reason:
            raise TargetError(f"NATS rejected the new configuration and kept the old one: {reason}")
        if state['error'] is not None:
            raise TargetError(f"server not reachable after the reload: {state['error']}")
        hint = target.state.get('log_error') or ('see the server log' if not target.log_file else 'nothing in its log explains it')
        raise TargetError(f"config_load_time did not advance within {reload_timeout:g}s (still {before}): the server did not "
                          f"reload, or kept its old configuration ({hint})")
    res['reload_ms'] = int(round((time.monotonic() - started) * 1000))
    if varz.get('start') and state['varz'].get('start') and varz['start'] != state['varz']['start']:
        raise TargetError(f"the server restarted (start {varz['start']} -> {state['varz']['start']}) instead of reloading")
    res['changed'] = True

    # 4. the new trust works
    if probe is not None:
        host, port = transport.probe_address(target, state['varz'])
        ok, detail = tls_probe(host, port, probe['context'], probe.get('server_name'), probe.get('timeout', 10.0))
        res['probe_ok'], res['probe_detail'] = ok, detail
        if not ok:
            raise TargetError(f"reloaded, but the probe certificate is not accepted: {detail}")


def reload_servers(transport, expect_sha256=None, propagation_timeout=180, reload_timeout=30, probe=None,
                   min_success=None, check_mode=False, max_workers=MAX_WORKERS, sleep=time.sleep):
    """Discover, pre-check, reload and verify every target of ``transport`` in parallel; returns the module result.

    ``probe``: None or a dict with ``cert_file``, ``key_file`` and optionally ``ca_file``, ``server_name``,
    ``partial_chain``, ``timeout``. Raises ReloadError when the run cannot start; otherwise the result has
    ``failed`` set when fewer than ``min_success`` (default: every target) passed.
    """
    expect = normalize_sha256(expect_sha256)
    for option, value in (('propagation_timeout', propagation_timeout), ('reload_timeout', reload_timeout)):
        if value is None or float(value) <= 0:
            raise ReloadError(f"{option} must be a positive number of seconds, got {value!r}", option=option)
    if min_success is not None and int(min_success) < 0:
        raise ReloadError(f"min_success must be 0 or more, got {min_success}", option='min_success')
    if probe is not None:
        probe = dict(probe)
        probe['context'] = probe_context(probe)
        probe['timeout'] = float(probe.get('timeout') or 10.0)
    targets = transport.discover()
    if expect and isinstance(transport, SystemTransport):
        missing = [t.name for t in targets if not t.ca_file and not t.problem]
        if missing:
            raise ReloadError("expect_sha256 with transport=system needs each server's ca_file (readable on this host) in "
                              f"targets; missing for: {', '.join(missing)}", option='expect_sha256')
    results = []
    if targets:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets)))) as pool:
            futures = [pool.submit(process_target, transport, target, expect, float(propagation_timeout), float(reload_timeout),
                                   probe, check_mode, sleep) for target in targets]
            results = [f.result() for f in futures]
    return summarize(results, transport.name, min_success, check_mode)


def summarize(results, transport_name, min_success=None, check_mode=False):
    """The module result for per-target ``results``: counts, changed, failed, msg."""
    total = len(results)
    passed = sum(1 for r in results if r['ok'])
    required = total if min_success is None else int(min_success)
    changed = any(r['changed'] for r in results) or (check_mode and any(r['ok'] for r in results))
    failed = passed < required or (total == 0 and min_success != 0)
    verb = 'would be reloaded (check mode)' if check_mode else 'reloaded and verified'
    if total == 0:
        msg = f"no NATS server found (transport {transport_name})"
    else:
        msg = f"{passed} of {total} NATS servers {verb}"
        if min_success is not None:
            msg += f" (min_success {required})"
    groups = {}  # the same failure on several servers is told once, naming them all
    for r in results:
        if r['error']:
            groups.setdefault(r['error'].replace(r['target'], '\0'), []).append(r)
    if groups:
        msg += '; ' + '; '.join(f"{', '.join(r['target'] for r in rs)}: {rs[0]['error']}" for rs in groups.values())
    return {
        'changed': bool(changed), 'failed': bool(failed), 'msg': msg, 'targets': results, 'transport': transport_name,
        'total': total, 'ok_count': passed, 'failed_count': total - passed, 'reloaded': sum(1 for r in results if r['changed']),
        'min_success': required,
    }

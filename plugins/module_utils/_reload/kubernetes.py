# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``kubernetes`` transport: exec in the NATS container of every pod matching a label selector (private).

The kubernetes client (and its ``stream`` module) is imported on first use (see ``_k8s.client.load``):
other transports skip the ~0.3 s import.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from types import SimpleNamespace

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s import client as _k8s
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import K8sError, api_error, core_api
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import (
    ReloadError,
    Target,
    TargetError,
    Transport,
    _short,
    http_varz,
    reload_failure_from_log,
)

DEFAULT_RELOAD_COMMAND = ('kill', '-HUP', '1')
ERROR_CHANNEL = 3
_HANDSHAKE_RE = re.compile(r'Handshake status (\d{3})\s*([^-]*)')


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
        # the route port, when the pod names it (the NATS Helm chart: 'cluster'); a distrust proves refusal there too
        target.state['route_port'] = ports.get('cluster') or ports.get('route') or ports.get('routes')
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

    def read_ca_text(self, target):
        return None  # the Secret's bundle was verified before it was written; the mounted copy's SHA-256 is compared

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
        return http_varz(f"http://{host}:{target.state['monitor_port']}", timeout=self.varz_timeout)

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

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``system`` transport: ``$SYS.REQ.SERVER.<id>.RELOAD`` over NATS as a system-account user (private)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.client import (
    close as nats_close,
    connect as nats_connect,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import (
    DEFAULT_CONNECT_TIMEOUT,
    NATS_IMPORT_ERROR,
    NatsError,
    conn_params as nats_conn_params,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import (
    LogTail,
    ReloadError,
    Target,
    TargetError,
    Transport,
    _short,
)


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
        LogTail.follow(target)


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

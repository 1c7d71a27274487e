# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fail-fast NATS connect, and closing that never hangs (private). nats-py does the protocol.

Behaviour this code relies on (nats-py 2.16, nats-server 2.15):

* nats-py's own initial-connect loop retries every server up to ``max_reconnect_attempts`` times
  with ``reconnect_time_wait`` pauses, and after a failed TLS handshake ``Client.close()`` can hang
  for ever (it waits for the plain TCP stream that start_tls took over). So :func:`connect` makes
  one attempt per server, each with its own client whose ``error_cb`` aborts at the first error,
  closes the socket itself, and reports every server's problem in one ``NatsError``.
  Reconnecting stays on (bounded) once connected.
* With TLS 1.3 a server that rejects the client certificate does so after the handshake: the
  client sees an ``SSLError`` alert, a connection reset or a broken pipe, depending on timing.
* A bad password gives ``-ERR 'Authorization Violation'`` in answer to the first PING.
* ``Client.max_payload`` is the connected server's ``max_payload`` (INFO); the server counts
  headers and payload together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl

try:
    from nats.aio.client import Client as NatsClient
except ImportError:  # pragma: no cover - reported through options.NATS_IMPORT_ERROR
    NatsClient = None

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import (
    NatsError,
    client_options,
    conn_params,
    nats,
)

#: Reconnect policy of a connected client (modules are short-lived; daemons pass their own).
DEFAULT_MAX_RECONNECT_ATTEMPTS = 3
DEFAULT_RECONNECT_TIME_WAIT = 1


class _AttemptFailed(Exception):
    """Raised from error_cb to stop nats-py's own retry loop after the first error of an attempt."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class _AttemptGuard:
    """error_cb of one connection attempt: aborts nats-py's retry loop while connecting, then records
    errors (``errors``) and forwards them to the caller's own error_cb."""

    def __init__(self, forward=None):
        self.connecting = True
        self.errors = []
        self.forward = forward

    async def error_cb(self, exc):
        if self.connecting:
            raise _AttemptFailed(exc)
        self.errors.append(exc)
        del self.errors[:-20]
        if self.forward is not None:
            await self.forward(exc)


def _alert(exc):
    reason = getattr(exc, 'reason', None) or ''
    return reason if 'ALERT' in reason.upper() else None


def describe_connect_error(server, exc, kwargs):
    """``(kind, text)`` for a failed connection attempt to ``server``."""
    tls = kwargs.get('tls') is not None or server.startswith('tls://')
    has_cert = bool(kwargs.get('tls') is not None and kwargs.get('_cert_file'))
    auth_given = any(k in kwargs for k in ('user', 'token', 'user_credentials', 'nkeys_seed'))
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, 'verify_message', None) or text
        hint = 'check that nats.ca_file holds the CA bundle that signed the server certificate'
        if 'mismatch' in why.lower():
            hint = 'connect by a name or IP address the certificate lists, or set nats.tls_hostname'
        elif 'issuer' in why.lower():
            hint += ' (if nats.ca_file holds intermediates but no root, set nats.partial_chain: true)'
        return 'tls', 'TLS: the server certificate is not trusted (%s); %s' % (why, hint)
    if isinstance(exc, ssl.SSLError):
        alert = _alert(exc)
        if alert:
            if 'CERTIFICATE_REQUIRED' in alert.upper() or not has_cert:
                return 'tls', ('TLS: the server requires a client certificate (%s); set nats.cert_file and nats.key_file'
                               % alert.lower() if not has_cert else
                               'TLS: the server rejected the client certificate (%s); check that nats.cert_file is signed by a CA '
                               'the server trusts and has not expired' % alert.lower())
            return 'tls', ('TLS: the server rejected the client certificate (%s); check that nats.cert_file is signed by a CA the '
                           'server trusts (its ca_file) and has not expired' % alert.lower())
        return 'tls', 'TLS error: %s' % (getattr(exc, 'reason', None) or text)
    lowered = text.lower()
    if (nats is not None and isinstance(exc, nats.errors.AuthorizationError)) or 'authorization violation' in lowered \
            or 'authentication' in lowered:
        return 'auth', ('authorization violation: the server refused the credentials (%s)'
                        % ('check nats.user/password, token, creds_file or nkey_seed_file' if auth_given else
                           'none were given: set nats.user and nats.password(_file), nats.token, nats.creds_file or nats.nkey_seed_file'))
    if isinstance(exc, ConnectionRefusedError):
        return 'network', 'connection refused (is nats-server running and listening there?)'
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError, EOFError)) or (
            nats is not None and isinstance(exc, nats.errors.UnexpectedEOF)):
        if tls:
            return 'tls', ('the server closed the connection during the TLS handshake (%s): it most likely rejected the client '
                           'certificate%s' % (type(exc).__name__,
                                              ' - check that nats.cert_file is signed by a CA the server trusts and has not expired'
                                              if has_cert else ' - it requires one: set nats.cert_file and nats.key_file'))
        return 'network', 'the server closed the connection (%s)' % type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return 'timeout', ('no answer within nats.connect_timeout=%ss (server stopped, overloaded, or not a NATS client port)'
                           % kwargs.get('connect_timeout'))
    if isinstance(exc, OSError):
        return 'network', '%s: %s' % (type(exc).__name__, exc.strerror or text)
    if nats is not None and isinstance(exc, nats.errors.Error):
        return 'protocol', text
    return 'error', '%s: %s' % (type(exc).__name__, text)


def _drop_socket(client):
    """Close the socket of an aborted attempt without Client.close() (which can hang after a TLS failure)."""
    transport = getattr(client, '_transport', None)
    with contextlib.suppress(Exception):
        if transport is not None:
            transport.close()
    with contextlib.suppress(Exception):
        client._status = client.CLOSED  # pylint: disable=protected-access


class _QuietSSLEOF(logging.Filter):
    """Drop asyncio's harmless 'returning true from eof_received() has no effect when using ssl' warning,
    logged whenever a NATS server closes a TLS connection (asyncio's StreamReaderProtocol returns True there)."""

    def filter(self, record):
        return 'eof_received()' not in record.getMessage()


_QUIET = _QuietSSLEOF()


async def connect(params, *, allow_reconnect=True, max_reconnect_attempts=DEFAULT_MAX_RECONNECT_ATTEMPTS,
                  reconnect_time_wait=DEFAULT_RECONNECT_TIME_WAIT, error_cb=None, disconnected_cb=None,
                  reconnected_cb=None, closed_cb=None, randomize=True, **extra):
    """Connect to the first server of ``nats.servers`` that accepts us; return the nats-py Client.

    Each server is tried exactly once (in random order unless ``randomize=False``), so bad TLS or
    bad credentials fail within about one ``connect_timeout`` per unreachable server instead of
    looping. If none accepts, raises NatsError naming every server and its problem (``kind`` is
    ``tls`` or ``auth`` when any server failed for that reason). Once connected, the client keeps
    the whole server list and reconnects (at most ``max_reconnect_attempts`` per server, -1 for
    ever). Callbacks must be ``async def``; ``extra`` goes to ``Client.connect``.
    """
    servers, kwargs = client_options(params)
    conn = conn_params(params)
    asyncio_logger = logging.getLogger('asyncio')
    if _QUIET not in asyncio_logger.filters:
        asyncio_logger.addFilter(_QUIET)
    kwargs.update(extra)
    for cb in (error_cb, disconnected_cb, reconnected_cb, closed_cb):
        if cb is not None and not asyncio.iscoroutinefunction(cb):
            raise NatsError('NATS callbacks must be async functions (async def)', 'config')
    order = list(servers)
    if randomize:
        random.shuffle(order)
    failures = []
    for server in order:
        guard = _AttemptGuard(error_cb)
        pool = [server] + [s for s in servers if s != server]
        client = NatsClient()
        client.securetransport_errors = guard.errors
        try:
            await client.connect(
                servers=pool, dont_randomize=True, allow_reconnect=allow_reconnect,
                max_reconnect_attempts=max_reconnect_attempts, reconnect_time_wait=reconnect_time_wait,
                error_cb=guard.error_cb, disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
                closed_cb=closed_cb, **kwargs)
        except asyncio.CancelledError:
            guard.connecting = False
            _drop_socket(client)
            raise
        except Exception as exc:  # pylint: disable=broad-except
            # every failure is described per server
            guard.connecting = False
            _drop_socket(client)
            cause = exc.error if isinstance(exc, _AttemptFailed) else exc
            kind, text = describe_connect_error(server, cause, dict(kwargs, _cert_file=conn['cert_file']))
            failures.append({'server': server, 'kind': kind, 'message': text})
            continue
        guard.connecting = False
        if client.is_connected:
            return client
        # nats-py returns from connect() when the server hangs up instead of answering the first PING
        await close(client, 2.0)
        kind, text = describe_connect_error(server, ConnectionResetError('closed during the handshake'),
                                            dict(kwargs, _cert_file=conn['cert_file']))
        failures.append({'server': server, 'kind': kind, 'message': text})
    kinds = [f['kind'] for f in failures]
    kind = next((k for k in ('tls', 'auth', 'config', 'protocol', 'timeout', 'network') if k in kinds), 'error')
    grouped = {}
    for failure in failures:
        grouped.setdefault(failure['message'], []).append(failure['server'])
    raise NatsError('Cannot connect to NATS: %s' % '; '.join('%s: %s' % (', '.join(where), text) for text, where in grouped.items()),
                    kind, failures)


async def close(client, timeout=5.0):
    """Close a connected client (flushing pending data), never waiting longer than ``timeout``."""
    if client is None:
        return
    try:
        await asyncio.wait_for(client.close(), timeout)
    except Exception:  # pylint: disable=broad-except
        # closing is best effort
        _drop_socket(client)


@contextlib.asynccontextmanager
async def connection(params, **kwargs):
    """``async with connection(params) as nc:`` -- :func:`connect`, then :func:`close`."""
    client = await connect(params, **kwargs)
    try:
        yield client
    finally:
        await close(client)


def run(coro):
    """Run a coroutine to completion from synchronous code (modules, scripts); return its result."""
    return asyncio.run(coro)

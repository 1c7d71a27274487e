# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NATS connection options, a fail-fast connect, and JetStream stream/publish helpers (private).

Shared by every NATS-facing module (``jetstream_publish``, ``nats_sighup``) and by the scripts
(client bundle sync, status report). nats-py does the protocol.

Behaviour this code relies on (nats-py 2.16, nats-server 2.15):

* nats-py's own initial-connect loop retries every server up to ``max_reconnect_attempts`` times
  with ``reconnect_time_wait`` pauses, and after a failed TLS handshake ``Client.close()`` can hang
  for ever (it waits for the plain TCP stream that start_tls took over). So :func:`connect` makes
  one attempt per server, each with its own client whose ``error_cb`` aborts at the first error,
  closes the socket itself, and reports every server's problem in one :class:`NatsError`.
  Reconnecting stays on (bounded) once connected.
* With TLS 1.3 a server that rejects the client certificate does so after the handshake: the
  client sees an ``SSLError`` alert, a connection reset or a broken pipe, depending on timing.
* A bad password gives ``-ERR 'Authorization Violation'`` in answer to the first PING.
* ``Client.max_payload`` is the connected server's ``max_payload`` (INFO); the server counts
  headers and payload together.
* JetStream API requests are plain requests on ``$JS.API.>``; during a leader election they time
  out or answer 503 (``JetStream system temporarily unavailable``), so they are retried until a
  deadline. Publishing is retried only with a ``Nats-Msg-Id`` (the server deduplicates).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import ssl
import time
import traceback

NATS_IMPORT_ERROR = None
try:
    import nats
    import nats.errors
    from nats.aio.client import Client as NatsClient
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    nats = None
    NatsClient = None
    NATS_IMPORT_ERROR = traceback.format_exc()

try:
    from ansible.module_utils.basic import env_fallback
except ImportError:  # pragma: no cover - scripts without ansible-core
    env_fallback = None

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    parse_duration,
)

DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_CLIENT_NAME = 'securetransport.ca_rotation'
#: Reconnect policy of a connected client (modules are short-lived; daemons pass their own).
DEFAULT_MAX_RECONNECT_ATTEMPTS = 3
DEFAULT_RECONNECT_TIME_WAIT = 1

#: Per-request timeout of one JetStream API call inside the overall deadline.
JS_REQUEST_TIMEOUT = 5.0
JS_API_PREFIX = '$JS.API'
HEADER_MSG_ID = 'Nats-Msg-Id'
HEADER_EXPECTED_STREAM = 'Nats-Expected-Stream'
#: JetStream error codes (err_code) treated as transient.
JS_TRANSIENT_ERR_CODES = (10008,)  # JetStream system temporarily unavailable
JS_STREAM_NOT_FOUND = 10059
JS_NO_MESSAGE_FOUND = 10037
JS_STREAM_NAME_IN_USE = 10058

#: Announcement stream defaults (DESIGN section 6).
DEFAULT_STREAM = 'METADATA_CA_CLIENT'
DEFAULT_SUBJECT = 'metadata.client.ca-cert'
#: Used only when a stream is created and the option is not given.
STREAM_CREATE_DEFAULTS = {
    'storage': 'file',
    'replicas': 1,
    'retention': 'limits',
    'discard': 'old',
    'max_msgs': -1,
    'max_msgs_per_subject': 10,
    'max_bytes': -1,
    'max_age': 0,
    'max_msg_size': -1,
    'duplicate_window': 120,
}


def _fallback(*names):
    return (env_fallback, list(names)) if env_fallback else None


def _opt(**kwargs):
    if kwargs.get('fallback') is None:
        kwargs.pop('fallback', None)
    return kwargs


#: The whole ``nats`` option (merge into a module's argument_spec). Documented by the doc fragment
#: ``securetransport.ca_rotation.nats``.
NATS_ARG_SPEC = {
    'nats': dict(
        type='dict',
        apply_defaults=True,
        options=dict(
            servers=_opt(type='list', elements='str', fallback=_fallback('NATS_URL')),
            ca_file=dict(type='path'),
            cert_file=dict(type='path'),
            key_file=dict(type='path', no_log=False),
            partial_chain=dict(type='bool', default=False),
            tls_hostname=dict(type='str'),
            creds_file=dict(type='path'),
            nkey_seed_file=dict(type='path', no_log=False),
            user=dict(type='str'),
            password=dict(type='str', no_log=True),
            password_file=dict(type='path', no_log=False),
            token=dict(type='str', no_log=True),
            connect_timeout=dict(type='int', default=DEFAULT_CONNECT_TIMEOUT),
            name=dict(type='str', default=DEFAULT_CLIENT_NAME),
        ),
    ),
}

#: The ``stream`` option of jetstream_publish (option names, not server field names).
STREAM_OPTION_SPEC = dict(
    name=dict(type='str', default=DEFAULT_STREAM),
    description=dict(type='str'),
    subjects=dict(type='list', elements='str'),
    storage=dict(type='str', choices=['file', 'memory']),
    replicas=dict(type='int'),
    retention=dict(type='str', choices=['limits', 'interest', 'workqueue']),
    discard=dict(type='str', choices=['old', 'new']),
    max_msgs=dict(type='int'),
    max_msgs_per_subject=dict(type='int'),
    max_bytes=dict(type='int'),
    max_age=dict(type='raw'),
    max_msg_size=dict(type='int'),
    duplicate_window=dict(type='raw'),
)

#: option name -> server field; durations are seconds in options, nanoseconds on the wire.
_STREAM_FIELDS = {
    'description': 'description',
    'subjects': 'subjects',
    'storage': 'storage',
    'replicas': 'num_replicas',
    'retention': 'retention',
    'discard': 'discard',
    'max_msgs': 'max_msgs',
    'max_msgs_per_subject': 'max_msgs_per_subject',
    'max_bytes': 'max_bytes',
    'max_age': 'max_age',
    'max_msg_size': 'max_msg_size',
    'duplicate_window': 'duplicate_window',
}
_DURATION_OPTIONS = ('max_age', 'duplicate_window')
#: Changing these is refused by the server (retention only to or from workqueue); we refuse first,
#: with a clearer message.
_IMMUTABLE_OPTIONS = ('storage', 'retention')
_NS = 1000000000


class NatsError(Exception):
    """A failed NATS operation, with a message meant for the operator.

    ``kind``: ``config``, ``tls``, ``auth``, ``network``, ``timeout``, ``protocol``, ``jetstream``,
    ``payload``, ``stream`` or ``error``. ``failures``: ``[{server, kind, message}]`` for a failed
    connect. ``option`` names the offending option when there is one.
    """

    def __init__(self, message, kind='error', failures=None, option=None):
        super().__init__(message)
        self.kind = kind
        self.failures = list(failures or [])
        self.option = option


def check_imports():
    """Raise NatsError when nats-py is missing (for scripts)."""
    if nats is None:
        raise NatsError('The Python library nats-py is required: %s' % NATS_IMPORT_ERROR, 'config')


# --------------------------------------------------------------------------- options
def conn_params(params):
    """The ``nats`` sub-dict with defaults and the NATS_URL fallback applied.

    Accepts a module's full params (with a ``nats`` key) or the sub-dict itself, so scripts can
    pass a plain dict.
    """
    params = params or {}
    if isinstance(params.get('nats'), dict):
        params = params['nats']
    out = {}
    for name, spec in NATS_ARG_SPEC['nats']['options'].items():
        value = params.get(name)
        out[name] = spec.get('default') if value is None else value
    if not out['servers'] and os.environ.get('NATS_URL'):
        out['servers'] = [os.environ['NATS_URL']]
    return out


def server_list(servers):
    """Split, strip and de-duplicate server URLs (comma-separated entries are accepted, as in NATS_URL)."""
    if isinstance(servers, str):
        servers = [servers]
    out = []
    for entry in servers or []:
        for url in str(entry).split(','):
            url = url.strip()
            if url and url not in out:
                out.append(url)
    return out


def _check_file(path, option):
    if not path:
        return None
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise NatsError('nats.%s %r does not exist or is not a file' % (option, path), 'config', option=option)
    if not os.access(path, os.R_OK):
        raise NatsError('nats.%s %r is not readable by this user' % (option, path), 'config', option=option)
    return path


def build_ssl_context(ca_file=None, cert_file=None, key_file=None, partial_chain=False, prefix='nats.'):
    """An ``ssl.SSLContext`` for a NATS (or any TLS) client.

    ``ca_file``: trust anchors (the CA bundle); without it the system store is used.
    ``cert_file``/``key_file``: the client certificate (chain) and key for mutual TLS.
    ``partial_chain``: set ``ssl.VERIFY_X509_PARTIAL_CHAIN`` so that an intermediate in ``ca_file``
    is a trust anchor by itself -- needed when the bundle holds no root (``include_root: false``).
    Errors name the option (``prefix`` + option name) and say what is wrong with the file.
    """
    names = {'ca_file': ca_file, 'cert_file': cert_file, 'key_file': key_file}
    for option, path in names.items():
        names[option] = _check_file(path, option) if path else None
    if names['key_file'] and not names['cert_file']:
        raise NatsError('%skey_file is set but %scert_file is not: give both for mutual TLS' % (prefix, prefix), 'config', option='cert_file')
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=names['ca_file'])
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise NatsError('%sca_file %r holds no usable CA certificate: %s' % (prefix, ca_file, exc), 'config', option='ca_file') from None
    if partial_chain:
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if names['cert_file']:
        try:
            context.load_cert_chain(names['cert_file'], names['key_file'])
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise NatsError('Cannot load the client certificate %scert_file %r / %skey_file %r: %s (they must be PEM, and the key '
                            'must match the certificate)' % (prefix, cert_file, prefix, key_file, exc), 'config', option='cert_file') from None
    return context


def _read_secret(path, option):
    path = _check_file(path, option)
    with open(path, 'r', encoding='utf-8') as handle:
        value = handle.read().strip()
    if not value:
        raise NatsError('nats.%s %r is empty' % (option, path), 'config', option=option)
    return value


def client_options(params):
    """Keyword arguments for ``nats.aio.client.Client.connect`` from the ``nats`` options (no callbacks).

    Validates the option combination and the files (NatsError naming the option). Returns
    ``(servers, kwargs)``.
    """
    check_imports()
    conn = conn_params(params)
    servers = server_list(conn['servers'])
    if not servers:
        raise NatsError('No NATS server: set nats.servers (or the NATS_URL environment variable)', 'config', option='servers')
    timeout = conn['connect_timeout']
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise NatsError('nats.connect_timeout must be a positive number of seconds, got %r' % (timeout,), 'config', option='connect_timeout')
    methods = [name for name in ('creds_file', 'nkey_seed_file', 'token') if conn[name]]
    if conn['user'] or conn['password'] or conn['password_file']:
        methods.append('user')
    if len(methods) > 1:
        raise NatsError('Give only one way to authenticate to NATS, got %s' % ', '.join('nats.%s' % m for m in methods), 'config',
                        option=methods[1])
    if conn['password'] and conn['password_file']:
        raise NatsError('Give nats.password or nats.password_file, not both', 'config', option='password_file')
    kwargs = {
        'name': conn['name'] or DEFAULT_CLIENT_NAME,
        'connect_timeout': timeout,
    }
    tls_wanted = any(conn[k] for k in ('ca_file', 'cert_file', 'key_file', 'partial_chain')) or any(
        s.startswith('tls://') for s in servers)
    if tls_wanted:
        kwargs['tls'] = build_ssl_context(conn['ca_file'], conn['cert_file'], conn['key_file'], conn['partial_chain'])
        if conn['tls_hostname']:
            kwargs['tls_hostname'] = conn['tls_hostname']
    if conn['creds_file']:
        kwargs['user_credentials'] = _check_file(conn['creds_file'], 'creds_file')
    elif conn['nkey_seed_file']:
        kwargs['nkeys_seed'] = _check_file(conn['nkey_seed_file'], 'nkey_seed_file')
    elif conn['token']:
        kwargs['token'] = conn['token']
    elif 'user' in methods:
        if not conn['user']:
            raise NatsError('nats.password is set but nats.user is not', 'config', option='user')
        password = conn['password']
        if conn['password_file']:
            password = _read_secret(conn['password_file'], 'password_file')
        if not password:
            raise NatsError('nats.user is set but neither nats.password nor nats.password_file is', 'config', option='password')
        kwargs['user'] = conn['user']
        kwargs['password'] = password
    if ('user_credentials' in kwargs or 'nkeys_seed' in kwargs):
        try:
            import nkeys  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
        except ImportError:
            raise NatsError('nats.creds_file and nats.nkey_seed_file need the Python library nkeys (pip install nkeys)', 'config',
                            option='creds_file' if 'user_credentials' in kwargs else 'nkey_seed_file') from None
    return servers, kwargs


# --------------------------------------------------------------------------- connect
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


# --------------------------------------------------------------------------- JetStream API
class Deadline:
    """A monotonic deadline; ``timeout()`` gives the per-request timeout that still fits."""

    def __init__(self, seconds):
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds

    def remaining(self):
        return self.end - time.monotonic()

    def expired(self):
        return self.remaining() <= 0

    def timeout(self, cap=JS_REQUEST_TIMEOUT):
        return max(min(cap, self.remaining()), 0.1)


class JetStreamAPIError(NatsError):
    """An error answer of the JetStream API (``code``: HTTP-like status, ``err_code``: JetStream code)."""

    def __init__(self, message, code=None, err_code=None, description=None):
        super().__init__(message, 'jetstream')
        self.code = code
        self.err_code = err_code
        self.description = description


def _transient(exc):
    if isinstance(exc, JetStreamAPIError):
        return exc.code == 503 or exc.err_code in JS_TRANSIENT_ERR_CODES
    if isinstance(exc, asyncio.TimeoutError):
        return True
    if nats is not None and isinstance(exc, (nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError)):
        return True
    return False


async def _retrying(what, deadline, call):
    """Run ``call()`` until it succeeds, a permanent error, or the deadline; back off between tries."""
    delay = 0.2
    attempts = 0
    last = None
    while True:
        attempts += 1
        try:
            return await call()
        except Exception as exc:  # pylint: disable=broad-except
            # transient errors are retried, anything else is raised
            if not _transient(exc):
                raise
            last = exc
        if deadline.remaining() <= delay:
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
    detail = str(last) or type(last).__name__
    raise NatsError('%s did not succeed within %.0fs (%d attempts; last: %s: %s). Is JetStream enabled for this account, and does '
                    'the cluster have a quorum of servers up?' % (what, deadline.seconds, attempts, type(last).__name__, detail),
                    'timeout')


async def js_api(client, subject, payload, deadline, what):
    """One JetStream API request (JSON in, JSON out), retried while the cluster is unavailable."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode('utf-8')

    async def call():
        msg = await client.request('%s.%s' % (JS_API_PREFIX, subject), data, timeout=deadline.timeout())
        resp = json.loads(msg.data)
        err = resp.get('error')
        if err:
            raise JetStreamAPIError('%s: %s (code %s, err_code %s)' % (what, err.get('description'), err.get('code'), err.get('err_code')),
                                    err.get('code'), err.get('err_code'), err.get('description'))
        return resp

    return await _retrying(what, deadline, call)


# --------------------------------------------------------------------------- streams
def stream_options(opts, subject=None):
    """Validate the ``stream`` option dict; return ``(name, wanted)`` with ``wanted`` in option terms
    (durations in seconds), only for the options that were given. ``subjects`` defaults to
    ``[subject]``."""
    opts = dict(opts or {})
    name = opts.get('name') or DEFAULT_STREAM
    if any(c in name for c in ' \t.*>/\\'):
        raise NatsError('stream.name %r is not a valid stream name (no spaces, dots, *, >, / or \\)' % name, 'config', option='stream.name')
    wanted = {}
    for option in _STREAM_FIELDS:
        value = opts.get(option)
        if value is None:
            continue
        if option in _DURATION_OPTIONS:
            try:
                value = parse_duration(value, 'stream.%s' % option, allow_zero=(option == 'max_age'))
            except EpochError as exc:
                raise NatsError(str(exc), 'config', option='stream.%s' % option) from None
        wanted[option] = value
    if 'subjects' not in wanted and subject:
        wanted['subjects'] = [subject]
    if 'subjects' in wanted and not wanted['subjects']:
        raise NatsError('stream.subjects must not be empty', 'config', option='stream.subjects')
    for option in ('replicas',):
        if option in wanted and not 1 <= wanted[option] <= 5:
            raise NatsError('stream.replicas must be between 1 and 5, got %d' % wanted[option], 'config', option='stream.replicas')
    for option in ('max_msgs', 'max_msgs_per_subject', 'max_bytes', 'max_msg_size'):
        if option in wanted and (wanted[option] == 0 or wanted[option] < -1):
            raise NatsError('stream.%s must be -1 (unlimited) or positive, got %d' % (option, wanted[option]), 'config',
                            option='stream.%s' % option)
    window = wanted.get('duplicate_window', STREAM_CREATE_DEFAULTS['duplicate_window'])
    if wanted.get('max_age') and window > wanted['max_age']:
        raise NatsError('stream.duplicate_window (%ds) must not be longer than stream.max_age (%ds)' % (window, wanted['max_age']),
                        'config', option='stream.duplicate_window')
    return name, wanted


def config_to_options(config):
    """Server stream config -> option terms (durations in whole seconds)."""
    out = {'name': config.get('name')}
    for option, field in _STREAM_FIELDS.items():
        value = config.get(field)
        if option in _DURATION_OPTIONS:
            value = int((value or 0) // _NS)
        elif option == 'description':
            value = value or None
        out[option] = value
    return out


def subject_matches(pattern, subject):
    """Whether NATS subject ``subject`` is captured by ``pattern`` (``*`` one token, ``>`` one or more)."""
    want = pattern.split('.')
    have = subject.split('.')
    for index, token in enumerate(want):
        if token == '>':
            return len(have) > index
        if index >= len(have) or (token != '*' and token != have[index]):
            return False
    return len(want) == len(have)


def _same(option, current, wanted):
    if option == 'subjects':
        return sorted(current or []) == sorted(wanted)
    return current == wanted


def stream_changes(current_config, wanted):
    """``{option: {before, after}}`` for every wanted option that differs from the server config."""
    current = config_to_options(current_config)
    return {option: {'before': current.get(option), 'after': value}
            for option, value in sorted(wanted.items()) if not _same(option, current.get(option), value)}


def _apply(config, wanted):
    out = dict(config)
    for option, value in wanted.items():
        out[_STREAM_FIELDS[option]] = value * _NS if option in _DURATION_OPTIONS else value
    return out


def _create_config(name, wanted):
    options = dict(STREAM_CREATE_DEFAULTS)
    options.update(wanted)
    config = {'name': name}
    return _apply(config, options)


async def stream_info(client, name, deadline):
    """The stream's info (``config``, ``state``, ``cluster``) or None when it does not exist."""
    try:
        return await js_api(client, 'STREAM.INFO.%s' % name, b'', deadline, 'Reading stream %s' % name)
    except JetStreamAPIError as exc:
        if exc.err_code == JS_STREAM_NOT_FOUND or exc.code == 404:
            return None
        raise


async def ensure_stream(client, name, wanted, deadline, check_mode=False, create=True):
    """Create the stream, or update the options in ``wanted`` that differ; never touch other options.

    Returns ``{action: created|updated|unchanged, changes, before, config}`` (``config`` in option
    terms; in check mode the predicted one). Refuses (NatsError kind ``stream``) to change the storage
    type or the retention to or from workqueue, and reports the server's reason when it refuses any
    other update.
    """
    info = await stream_info(client, name, deadline)
    if info is None:
        if not create:
            raise NatsError('Stream %s does not exist; set ensure_stream: true to create it, or create it first' % name, 'stream')
        config = _create_config(name, wanted)
        result = {'action': 'created', 'before': None,
                  'changes': {k: {'before': None, 'after': v} for k, v in sorted(config_to_options(config).items())
                              if k != 'name' and v is not None}}
        if check_mode:
            result['config'] = config_to_options(config)
            return result
        try:
            info = await js_api(client, 'STREAM.CREATE.%s' % name, config, deadline, 'Creating stream %s' % name)
        except JetStreamAPIError as exc:
            if exc.err_code != JS_STREAM_NAME_IN_USE:
                raise NatsError('NATS refused to create stream %s: %s (err_code %s)' % (name, exc.description, exc.err_code),
                                'stream') from None
            # A retried create whose first attempt succeeded, or a concurrent run: compare instead.
            return await ensure_stream(client, name, wanted, deadline, check_mode, create=False)
        result['config'] = config_to_options(info['config'])
        return result
    current = info['config']
    changes = stream_changes(current, wanted)
    result = {'action': 'updated' if changes else 'unchanged', 'changes': changes, 'before': config_to_options(current)}
    if not changes:
        result['config'] = result['before']
        return result
    immutable = [o for o in _IMMUTABLE_OPTIONS if o in changes]
    if 'retention' in immutable and 'workqueue' not in (changes['retention']['before'], changes['retention']['after']):
        immutable.remove('retention')  # limits <-> interest is allowed (nats-server 2.10+)
    if immutable:
        raise NatsError('Stream %s cannot be changed in place: %s. NATS does not allow that on an existing stream; create a '
                        'stream with another name (or delete this one, losing its messages) and publish there'
                        % (name, ', '.join('%s %s -> %s' % (o, changes[o]['before'], changes[o]['after']) for o in immutable)),
                        'stream', option='stream.%s' % immutable[0])
    config = _apply(current, wanted)
    if check_mode:
        result['config'] = config_to_options(config)
        return result
    try:
        info = await js_api(client, 'STREAM.UPDATE.%s' % name, config, deadline, 'Updating stream %s' % name)
    except JetStreamAPIError as exc:
        raise NatsError('NATS refused to update stream %s (%s): %s (err_code %s)'
                        % (name, ', '.join('%s %s -> %s' % (o, c['before'], c['after']) for o, c in changes.items()),
                           exc.description, exc.err_code), 'stream') from None
    result['config'] = config_to_options(info['config'])
    return result


def parse_headers(raw):
    """Decode the base64 ``hdrs`` of a stored message into a dict (last value wins)."""
    out = {}
    if not raw:
        return out
    text = base64.b64decode(raw).decode('utf-8', 'replace')
    for line in text.split('\r\n')[1:]:
        if ':' in line:
            key, value = line.split(':', 1)
            out[key.strip()] = value.strip()
    return out


async def last_message(client, stream, subject, deadline):
    """The newest stored message on ``subject`` as ``{seq, headers, data (bytes), time}``, or None."""
    try:
        resp = await js_api(client, 'STREAM.MSG.GET.%s' % stream, {'last_by_subj': subject}, deadline,
                            'Reading the last message on %s from stream %s' % (subject, stream))
    except JetStreamAPIError as exc:
        if exc.err_code in (JS_NO_MESSAGE_FOUND, JS_STREAM_NOT_FOUND) or exc.code == 404:
            return None
        raise
    msg = resp.get('message') or {}
    return {'seq': msg.get('seq'), 'headers': parse_headers(msg.get('hdrs')),
            'data': base64.b64decode(msg.get('data') or b''), 'time': msg.get('time')}


# --------------------------------------------------------------------------- publishing
def header_block_size(headers):
    """Bytes the headers take on the wire (``NATS/1.0\\r\\n`` + ``key: value\\r\\n``... + ``\\r\\n``); 0 without headers."""
    if not headers:
        return 0
    return len(b'NATS/1.0\r\n\r\n') + sum(len(('%s: %s\r\n' % (k, v)).encode('utf-8')) for k, v in headers.items())


def check_headers(headers):
    """Validate user headers (names without spaces or colons, values on one line); return them as str->str."""
    out = {}
    for key, value in (headers or {}).items():
        key = str(key).strip()
        value = '' if value is None else str(value)
        if not key or any(c in key for c in ': \t\r\n'):
            raise NatsError('Header name %r is not valid (no spaces, colons or line breaks)' % key, 'config', option='headers')
        if '\r' in value or '\n' in value:
            raise NatsError('Header %s: the value must be on one line' % key, 'config', option='headers')
        out[key] = value
    return out


def check_size(payload, headers, max_payload, max_msg_size=None, server=None):
    """Refuse (NatsError kind ``payload``) a message larger than the server's max_payload or the stream's max_msg_size."""
    size = len(payload) + header_block_size(headers)
    if max_payload and size > max_payload:
        raise NatsError('The message is %d bytes (payload %d + headers %d), more than the max_payload of %d bytes of NATS server %s; '
                        'nothing was published. Make the payload smaller or raise max_payload in the server configuration'
                        % (size, len(payload), size - len(payload), max_payload, server or '(connected)'), 'payload')
    if max_msg_size and max_msg_size > 0 and size > max_msg_size:
        raise NatsError('The message is %d bytes, more than the stream\'s max_msg_size of %d bytes; nothing was published'
                        % (size, max_msg_size), 'payload')
    return size


async def publish(client, subject, payload, deadline, headers=None, msg_id=None, stream=None):
    """Publish to JetStream and wait for the PubAck; return ``{stream, seq, duplicate, attempts}``.

    Retried on timeouts and 503 only when ``msg_id`` is set (the server's duplicate window makes a
    retry harmless); without it a lost ack fails instead of risking a second copy.
    """
    hdrs = dict(headers or {})
    if msg_id:
        hdrs[HEADER_MSG_ID] = msg_id
    if stream:
        hdrs[HEADER_EXPECTED_STREAM] = stream
    attempts = {'n': 0}

    async def call():
        attempts['n'] += 1
        try:
            msg = await client.request(subject, payload, timeout=deadline.timeout(), headers=hdrs or None)
        except nats.errors.NoRespondersError:
            raise JetStreamAPIError('No JetStream stream answered on %s (no responders)' % subject, 503, None,
                                    'no responders') from None
        resp = json.loads(msg.data)
        err = resp.get('error')
        if err:
            text = 'Publishing to %s: %s (code %s, err_code %s)' % (subject, err.get('description'), err.get('code'), err.get('err_code'))
            raise JetStreamAPIError(text, err.get('code'), err.get('err_code'), err.get('description'))
        return resp

    what = 'Publishing to %s%s' % (subject, ' (stream %s)' % stream if stream else '')
    try:
        if msg_id:
            resp = await _retrying(what, deadline, call)
        else:
            resp = await call()
    except JetStreamAPIError as exc:
        raise NatsError('%s failed: %s' % (what, exc.description or exc), 'jetstream') from None
    except asyncio.TimeoutError:
        raise NatsError('%s: no PubAck within %.0fs and no msg_id to retry safely; the message may or may not be stored'
                        % (what, deadline.timeout()), 'timeout') from None
    return {'stream': resp.get('stream'), 'seq': resp.get('seq'), 'duplicate': bool(resp.get('duplicate', False)),
            'attempts': attempts['n']}

# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``nats`` connection option: argument spec, defaults, validation, TLS and credentials (private).

Shared by every NATS-facing module (``jetstream_publish``, ``nats_sighup``, ``audit_record``,
``rotation_status``) and by the scripts (client bundle sync, status report). The guarded import of
nats-py lives here: ``NATS_IMPORT_ERROR`` says why it is missing.
"""

from __future__ import annotations

import os
import traceback

NATS_IMPORT_ERROR = None
try:
    import nats
    import nats.errors
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    nats = None
    NATS_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import argspec
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError, TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context

DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_CLIENT_NAME = 'securetransport.ca_rotation'


#: The whole ``nats`` option (merge into a module's argument_spec). Documented by the doc fragment
#: ``securetransport.ca_rotation.nats``.
NATS_ARG_SPEC = {
    'nats': dict(
        type='dict',
        apply_defaults=True,
        options=dict(
            servers=argspec.option(type='list', elements='str', fallback=argspec.fallback('NATS_URL')),
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


class NatsError(CaRotationError):
    """A failed NATS operation, with a message meant for the operator.

    ``kind``: ``config``, ``tls``, ``auth``, ``network``, ``timeout``, ``protocol``, ``jetstream``,
    ``payload``, ``stream`` or ``error``. ``failures``: ``[{server, kind, message}]`` for a failed
    connect. ``option`` names the offending option when there is one.
    """

    DETAILS = ('kind', 'failures', 'option')

    def __init__(self, message, kind='error', failures=None, option=None):
        super().__init__(message, option=option)
        self.kind = kind
        self.failures = list(failures or [])


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


def build_ssl_context(ca_file=None, cert_file=None, key_file=None, partial_chain=False, prefix='nats.', verify=True,
                      check_hostname=True):
    """An ``ssl.SSLContext`` for a NATS (or any TLS) client, from file options (``_common.tls.client_context``).

    ``ca_file``: trust anchors (the CA bundle); without it the system store is used.
    ``cert_file``/``key_file``: the client certificate (chain) and key for mutual TLS.
    ``partial_chain``: set ``ssl.VERIFY_X509_PARTIAL_CHAIN`` so that an intermediate in ``ca_file``
    is a trust anchor by itself -- needed when the bundle holds no root (``include_root: false``).
    ``verify`` / ``check_hostname``: see ``client_context``.
    Errors name the option (``prefix`` + option name) and say what is wrong with the file.
    """
    names = {'ca_file': ca_file, 'cert_file': cert_file, 'key_file': key_file}
    for option, path in names.items():
        names[option] = _check_file(path, option) if path else None
    if names['key_file'] and not names['cert_file']:
        raise NatsError('%skey_file is set but %scert_file is not: give both for mutual TLS' % (prefix, prefix), 'config', option='cert_file')
    try:
        return client_context(names['ca_file'], names['cert_file'], names['key_file'], bool(partial_chain), verify=verify,
                              check_hostname=check_hostname)
    except TLSError as exc:
        if exc.option == 'ca_file':
            raise NatsError('%sca_file %r holds no usable CA certificate: %s' % (prefix, ca_file, exc.error), 'config',
                            option='ca_file') from None
        raise NatsError('Cannot load the client certificate %scert_file %r / %skey_file %r: %s (they must be PEM, and the key '
                        'must match the certificate)' % (prefix, cert_file, prefix, key_file, exc.error), 'config',
                        option='cert_file') from None


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

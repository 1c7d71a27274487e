# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OpenBao connection: the ``openbao`` option, connect, and every request (private).

hvac does the HTTP; every request goes through :func:`_request`, which turns failures into
:class:`~.errors.OpenBaoError` messages that name the operation, the path and (for 403) the
capability the token needs. Idempotent requests are retried (with backoff) on 502/503/504.
"""

from __future__ import annotations

import os
import re

try:
    import requests.adapters
    from urllib3.util.retry import Retry
except ImportError:  # pragma: no cover - reported through errors.HVAC_IMPORT_ERROR (hvac needs both)
    requests = None
    Retry = None

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import argspec
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    x509,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.auth import DEFAULT_K8S_TOKEN_PATH, login
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import (
    HVAC_IMPORT_ERROR,
    OpenBaoError,
    _status_error,
    _translate,
    hvac,
)

#: HTTP statuses retried (with backoff) for idempotent methods. 500 is left out on purpose:
#: OpenBao answers some deterministic errors with 500 (e.g. an unknown issuer reference).
RETRY_STATUSES = (502, 503, 504)
#: Methods retried on those statuses and on read errors. POST (issue, sign, generate) is only
#: retried when the connection could not be established: repeating it could issue twice.
RETRY_METHODS = frozenset(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'LIST', 'PATCH'])


#: The whole ``openbao`` option (merge into a module's argument_spec). Documented by the doc
#: fragment ``securetransport.ca_rotation.openbao``. ``token`` has no env fallback here on
#: purpose: :func:`connect` reads BAO_TOKEN/VAULT_TOKEN only when neither ``token`` nor
#: ``token_file`` is set, so an explicit token_file always wins over the environment.
OPENBAO_ARG_SPEC = {
    'openbao': dict(
        type='dict',
        apply_defaults=True,
        options=dict(
            url=argspec.option(type='str', fallback=argspec.fallback('BAO_ADDR', 'VAULT_ADDR')),
            auth_method=dict(type='str', default='token', choices=['token', 'approle', 'kubernetes']),
            token=dict(type='str', no_log=True),
            token_file=dict(type='path', no_log=False),
            role_id=dict(type='str', no_log=True),
            secret_id=dict(type='str', no_log=True),
            kubernetes_role=dict(type='str'),
            kubernetes_token_path=dict(type='path', no_log=False, default=DEFAULT_K8S_TOKEN_PATH),
            auth_mount_point=dict(type='str'),
            namespace=argspec.option(type='str', fallback=argspec.fallback('BAO_NAMESPACE', 'VAULT_NAMESPACE')),
            ca_cert=argspec.option(type='path', fallback=argspec.fallback('BAO_CACERT', 'VAULT_CACERT')),
            validate_certs=dict(type='bool', default=True),
            timeout=dict(type='int', default=30),
            retries=dict(type='int', default=3),
        ),
    ),
}


def check_imports():
    """Raise OpenBaoError when hvac or cryptography is missing (for scripts)."""
    if hvac is None:
        raise OpenBaoError('The Python library hvac is required: %s' % HVAC_IMPORT_ERROR)
    if x509 is None:
        raise OpenBaoError('The Python library cryptography is required: %s' % CRYPTOGRAPHY_IMPORT_ERROR)


# --------------------------------------------------------------------------- connection
def _conn_params(params):
    """The ``openbao`` sub-dict, with defaults and environment fallbacks applied.

    Accepts a module's full params (with an ``openbao`` key) or the sub-dict itself, so that
    scripts can call :func:`connect` with a plain dict.
    """
    params = params or {}
    if isinstance(params.get('openbao'), dict):
        params = params['openbao']
    out = {}
    for name, spec in OPENBAO_ARG_SPEC['openbao']['options'].items():
        value = params.get(name)
        if value is None:
            value = spec.get('default')
        out[name] = value

    def env(*names):
        for name in names:
            if os.environ.get(name):
                return os.environ[name]
        return None

    out['url'] = out['url'] or env('BAO_ADDR', 'VAULT_ADDR')
    out['namespace'] = out['namespace'] or env('BAO_NAMESPACE', 'VAULT_NAMESPACE')
    out['ca_cert'] = out['ca_cert'] or env('BAO_CACERT', 'VAULT_CACERT')
    return out


def _session(conn):
    session = requests.Session()
    retries = max(int(conn['retries'] or 0), 0)
    retry = Retry(
        total=retries, connect=retries, read=retries, status=retries, other=0,
        allowed_methods=RETRY_METHODS, status_forcelist=RETRY_STATUSES,
        backoff_factor=0.5, raise_on_status=False, respect_retry_after_header=True,
    )
    adapter = requests.adapters.HTTPAdapter(max_retries=retry)
    session.mount('http://', adapter)
    session.mount('https://', adapter)
    return session


def connect(params):
    """An authenticated ``hvac.Client`` from the ``openbao`` options (see OPENBAO_ARG_SPEC).

    Token precedence: ``token``, then ``token_file``, then BAO_TOKEN / VAULT_TOKEN. AppRole and
    Kubernetes log in through hvac. TLS is verified against ``ca_cert`` (or the system trust
    store); ``validate_certs: false`` turns verification off explicitly.
    """
    check_imports()
    conn = _conn_params(params)
    url = conn['url']
    if not url:
        raise OpenBaoError('No OpenBao address: set openbao.url (or the BAO_ADDR environment variable)')
    if not re.match(r'^https?://', url):
        raise OpenBaoError('openbao.url %r must start with http:// or https://' % url)
    if conn['timeout'] is not None and int(conn['timeout']) <= 0:
        raise OpenBaoError('openbao.timeout must be a positive number of seconds, got %r' % conn['timeout'])
    if conn['retries'] is not None and int(conn['retries']) < 0:
        raise OpenBaoError('openbao.retries must not be negative, got %r' % conn['retries'])

    if not conn['validate_certs']:
        verify = False
    elif conn['ca_cert']:
        ca_cert = os.path.expanduser(conn['ca_cert'])
        if not os.path.isfile(ca_cert):
            raise OpenBaoError('openbao.ca_cert %r does not exist or is not a file' % conn['ca_cert'])
        verify = ca_cert
    else:
        verify = True

    session = _session(conn)
    session.verify = verify
    client = hvac.Client(url=url, verify=verify, timeout=int(conn['timeout'] or 30), session=session,
                         namespace=conn['namespace'] or None)
    client._securetransport_url = url  # pylint: disable=protected-access
    return login(client, conn)


# --------------------------------------------------------------------------- requests
def _request(client, method, path, operation, data=None, missing_ok=False):
    """Call ``/v1/<path>``; return the decoded JSON body (``{}`` when empty).

    ``missing_ok``: a 404 without error text (OpenBao's answer to LIST on an empty collection)
    returns ``None`` instead of raising.
    """
    headers = {'Content-Type': 'application/merge-patch+json'} if method.upper() == 'PATCH' else None
    kwargs = {}
    if data is not None:
        kwargs['json'] = data
    try:
        resp = client.adapter.request(method.upper(), '/v1/' + path.lstrip('/'), headers=headers,
                                      raise_exception=False, **kwargs)
    except Exception as exc:  # pylint: disable=broad-except
        raise _translate(client, exc, method, path, operation) from None
    if isinstance(resp, dict):
        return resp
    status = resp.status_code
    try:
        body = resp.json() if resp.content else {}
    except ValueError:
        body = {'errors': [resp.text[:500]]}
    if 200 <= status < 300:
        return body if isinstance(body, dict) else {}
    errors = body.get('errors') if isinstance(body, dict) else None
    if status == 404 and missing_ok and not errors:
        return None
    raise _status_error(client, status, errors or [], method, path, operation)


def _data(resp):
    return (resp or {}).get('data') or {}


def _list(client, path, operation):
    """``{key: info}`` of a LIST (``key_info`` when OpenBao gives it); empty when nothing is there."""
    resp = _request(client, 'LIST', path, operation, missing_ok=True)
    data = _data(resp)
    return data.get('key_info') or {k: {} for k in data.get('keys') or []}

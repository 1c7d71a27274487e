# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenBaoError, and the translation of hvac / requests failures into it (private).

Messages name the operation, the path and (for 403) the capability the token needs. The guarded
import of hvac lives here: ``HVAC_IMPORT_ERROR`` says why it is missing.
"""

from __future__ import annotations

import re
import traceback

HVAC_IMPORT_ERROR = None
try:
    import hvac
    import hvac.exceptions
    import requests
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    hvac = None
    requests = None
    HVAC_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError


class OpenBaoError(CaRotationError):
    """A failed OpenBao operation, with a message meant for the operator.

    ``operation`` (what we tried), ``path`` (API path without ``/v1/``) and ``status`` (HTTP
    status, if any) are kept for callers that want to branch on them.
    """

    def __init__(self, message, operation=None, path=None, status=None, errors=None):
        super().__init__(message, path=path, status=status)
        self.operation = operation
        self.errors = list(errors or [])


_CAPABILITY = {'GET': 'read', 'HEAD': 'read', 'LIST': 'list', 'POST': 'update', 'PUT': 'update',
               'PATCH': 'patch', 'DELETE': 'delete'}


def _client_url(client):
    return getattr(client, '_securetransport_url', None) or getattr(client, 'url', None) or '?'


def _translate(client, exc, method, path, operation, login=False):
    """OpenBaoError for an exception raised while calling OpenBao."""
    url = _client_url(client)
    if isinstance(exc, OpenBaoError):
        return exc
    if requests is not None and isinstance(exc, requests.exceptions.SSLError):
        return OpenBaoError(
            'TLS verification failed talking to OpenBao at %s (%s on %r): %s. Set openbao.ca_cert to the CA file that '
            'signed the OpenBao server certificate (validate_certs: false turns verification off, not recommended)'
            % (url, operation, path, _short(exc)), operation=operation, path=path)
    if requests is not None and isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return OpenBaoError(
            'Cannot reach OpenBao at %s (%s on %r): %s. Check openbao.url, that OpenBao is running and unsealed, '
            'and the network; nothing after this step was changed, so re-running converges'
            % (url, operation, path, _short(exc)), operation=operation, path=path)
    if hvac is not None and isinstance(exc, hvac.exceptions.VaultError):
        status = {
            hvac.exceptions.InvalidRequest: 400, hvac.exceptions.Unauthorized: 401,
            hvac.exceptions.Forbidden: 403, hvac.exceptions.InvalidPath: 404,
            hvac.exceptions.RateLimitExceeded: 429, hvac.exceptions.InternalServerError: 500,
            hvac.exceptions.BadGateway: 502, hvac.exceptions.VaultDown: 503,
        }.get(type(exc))
        return _status_error(client, status, list(exc.errors or []) or [str(exc.args[0] if exc.args else exc)],
                             method, path, operation, login=login)
    return OpenBaoError('%s on %r at %s failed: %s' % (operation, path, url, exc), operation=operation, path=path)


#: the first path segment after the mount -> the secrets engine that serves it
_ENGINE_SEGMENTS = {
    'data': 'kv-v2', 'metadata': 'kv-v2', 'delete': 'kv-v2', 'undelete': 'kv-v2', 'destroy': 'kv-v2', 'config': 'kv-v2',
    'keys': 'transit', 'sign': 'transit', 'verify': 'transit', 'encrypt': 'transit', 'decrypt': 'transit',
}


def engine_for_path(path):
    """The secrets engine a request path is meant for (``kv-v2``, ``transit`` or ``pki``), for 'enable it' hints."""
    parts = path.strip('/').split('/')
    return _ENGINE_SEGMENTS.get(parts[1] if len(parts) > 1 else '', 'pki')


def _short(exc):
    text = str(exc)
    match = re.search(r"\((Caused by .*)\)$", text)
    return match.group(1) if match else text


def _status_error(client, status, errors, method, path, operation, login=False):
    url = _client_url(client)
    detail = '; '.join(e.strip() for e in errors if e) or 'no details'
    if status == 403 or (login and status == 400 and 'invalid' in detail.lower()):
        if login:
            msg = '%s failed at %r: %s. Check the role and credentials (role_id/secret_id, kubernetes_role/JWT)' % (
                operation, path, detail)
        else:
            msg = ("Permission denied on %r (%s): the token needs '%s' on that path (or the token is invalid or expired). "
                   "OpenBao said: %s" % (path, operation, _CAPABILITY.get(method.upper(), method.lower()), detail))
    elif status == 404:
        mount = path.split('/', 1)[0]
        if 'no handler for route' in detail:
            msg = ("%s failed: nothing is mounted at %r (%r does not exist). Check the mount option "
                   "(enable it with 'bao secrets enable -path=%s %s')" % (operation, mount + '/', path, mount, engine_for_path(path)))
        else:
            msg = '%s failed: %r not found (%s)' % (operation, path, detail)
    elif status in (502, 503, 504):
        msg = ('OpenBao at %s is unavailable (HTTP %s; sealed, standby or restarting) during %s on %r, after retries: %s'
               % (url, status, operation, path, detail))
    elif status is None:
        msg = '%s on %r failed: %s' % (operation, path, detail)
    else:
        msg = 'OpenBao refused %s on %r (HTTP %s): %s' % (operation, path, status, detail)
    return OpenBaoError(msg, operation=operation, path=path, status=status, errors=errors)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes access shared by every module and script (private: may change without notice).

Uses the official ``kubernetes`` client exactly as against any API server: kubeconfig (path and
context), the in-cluster service account, or an explicit host + bearer token.
"""

from __future__ import annotations

import importlib
import traceback

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import argspec
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError

# The kubernetes client takes ~0.3 s to import (it loads every API model): it is imported on first
# use, so modules and tasks that never talk to Kubernetes do not pay for it.
K8S_IMPORT_ERROR = None
kubernetes = None  # pylint: disable=invalid-name


def load():
    """Import the kubernetes client on first use; return the module, or None when it is missing."""
    global kubernetes, K8S_IMPORT_ERROR  # pylint: disable=global-statement
    if kubernetes is None and K8S_IMPORT_ERROR is None:
        try:
            lib = importlib.import_module('kubernetes')
            importlib.import_module('kubernetes.client.rest')
            importlib.import_module('kubernetes.stream')
            kubernetes = lib
        except ImportError:  # pragma: no cover - reported by check_imports()
            K8S_IMPORT_ERROR = traceback.format_exc()
    return kubernetes


def is_api_exception(exc):
    """True for the client's ApiException (without importing the client when it was never used)."""
    lib = kubernetes
    return lib is not None and isinstance(exc, lib.client.rest.ApiException)


#: The whole ``kubernetes`` option (merge into a module's argument_spec). Documented by the doc
#: fragment ``securetransport.ca_rotation.kubernetes``.
K8S_ARG_SPEC = {
    'kubernetes': dict(
        type='dict',
        apply_defaults=True,
        options=dict(
            kubeconfig=argspec.option(type='path', no_log=False, fallback=argspec.fallback('K8S_AUTH_KUBECONFIG', 'KUBECONFIG')),
            context=argspec.option(type='str', fallback=argspec.fallback('K8S_AUTH_CONTEXT')),
            host=dict(type='str'),
            api_key=dict(type='str', no_log=True),
            ca_cert=dict(type='path', no_log=False),
            validate_certs=dict(type='bool', default=True),
            in_cluster=dict(type='bool', default=False),
        ),
    ),
}


class K8sError(CaRotationError):
    """A failed Kubernetes operation, with a message meant for the operator."""

    def __init__(self, message, status=None):
        super().__init__(message, status=status)


def check_imports():
    """Return (library name, traceback) when the kubernetes client is missing, else None."""
    if load() is None:
        return 'kubernetes', K8S_IMPORT_ERROR
    return None


def api_client(params):
    """Build a ``kubernetes.client.ApiClient`` from the ``kubernetes`` option dict."""
    params = dict(params or {})
    load()
    config = kubernetes.client.Configuration()
    try:
        if params.get('in_cluster'):
            kubernetes.config.load_incluster_config(client_configuration=config)
        elif params.get('host'):
            config.host = params['host']
            if params.get('api_key'):
                config.api_key = {'authorization': 'Bearer ' + params['api_key']}
        else:
            kubernetes.config.load_kube_config(
                config_file=params.get('kubeconfig'), context=params.get('context'), client_configuration=config)
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        where = params.get('kubeconfig') or 'the default kubeconfig (~/.kube/config or KUBECONFIG)'
        if params.get('in_cluster'):
            where = 'the in-cluster service account'
        raise K8sError(f"cannot load Kubernetes credentials from {where}"
                       f"{' (context ' + repr(params['context']) + ')' if params.get('context') else ''}: {exc}") from None
    if params.get('api_key') and not params.get('host'):
        config.api_key = {'authorization': 'Bearer ' + params['api_key']}
    if params.get('ca_cert'):
        config.ssl_ca_cert = params['ca_cert']
    if params.get('validate_certs') is False:
        config.verify_ssl = False
    return kubernetes.client.ApiClient(configuration=config)


def core_api(params):
    """A ``CoreV1Api`` for the ``kubernetes`` option dict."""
    client = api_client(params)
    return kubernetes.client.CoreV1Api(client)


def api_error(exc, operation, target, verb=None, resource=None, namespace=None):
    """Turn an ApiException into a K8sError that names the operation, the target and what to do."""
    status = getattr(exc, 'status', None)
    reason = getattr(exc, 'reason', '') or ''
    body = getattr(exc, 'body', '') or ''
    try:
        import json
        message = json.loads(body).get('message', '') if body else ''
    except ValueError:
        message = body if isinstance(body, str) else ''
    text = f"{operation} {target} failed"
    if status == 403:
        need = f"'{verb}' on '{resource}'" if verb and resource else 'the missing permission'
        scope = f" in namespace '{namespace}'" if namespace else ''
        text += f": forbidden ({message or reason}); grant the rotation identity {need}{scope} in its Role"
    elif status == 404:
        text += f": not found ({message or reason})"
    elif status == 409:
        text += f": conflict ({message or reason}); it changed underneath, re-read and retry"
    elif status in (401,):
        text += f": unauthorized ({message or reason}); check the kubeconfig credentials or token"
    else:
        text += f": HTTP {status} {reason} {message}".rstrip()
    return K8sError(text, status=status)

# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logging in to OpenBao: a token, AppRole or Kubernetes (private; used by :func:`.client.connect`)."""

from __future__ import annotations

import os

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError, _translate

DEFAULT_K8S_TOKEN_PATH = '/var/run/secrets/kubernetes.io/serviceaccount/token'
DEFAULT_AUTH_MOUNTS = {'approle': 'approle', 'kubernetes': 'kubernetes'}


def _read_secret_file(path, option):
    try:
        with open(os.path.expanduser(path), 'r', encoding='utf-8') as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise OpenBaoError('Cannot read openbao.%s %r: %s' % (option, path, exc.strerror or exc)) from None
    if not value:
        raise OpenBaoError('openbao.%s %r is empty' % (option, path))
    return value


def login(client, conn):
    """Authenticate ``client`` (an ``hvac.Client``) with the ``openbao`` options ``conn`` (defaults applied).

    Token precedence: ``token``, then ``token_file``, then BAO_TOKEN / VAULT_TOKEN. AppRole and
    Kubernetes log in through hvac.
    """
    method = conn['auth_method'] or 'token'
    mount = conn['auth_mount_point'] or DEFAULT_AUTH_MOUNTS.get(method)
    if method == 'token':
        token = conn['token']
        if not token and conn['token_file']:
            token = _read_secret_file(conn['token_file'], 'token_file')
        if not token:
            token = os.environ.get('BAO_TOKEN') or os.environ.get('VAULT_TOKEN')
        if not token:
            raise OpenBaoError('No OpenBao token: set openbao.token or openbao.token_file (or BAO_TOKEN), '
                               'or use openbao.auth_method approle / kubernetes')
        client.token = token
    elif method == 'approle':
        if not conn['role_id']:
            raise OpenBaoError('openbao.auth_method is approle but openbao.role_id is not set')
        _login(client, 'AppRole login', 'auth/%s/login' % mount,
               lambda: client.auth.approle.login(role_id=conn['role_id'], secret_id=conn['secret_id'], mount_point=mount))
    elif method == 'kubernetes':
        if not conn['kubernetes_role']:
            raise OpenBaoError('openbao.auth_method is kubernetes but openbao.kubernetes_role is not set')
        jwt = _read_secret_file(conn['kubernetes_token_path'], 'kubernetes_token_path')
        _login(client, 'Kubernetes login', 'auth/%s/login' % mount,
               lambda: client.auth.kubernetes.login(role=conn['kubernetes_role'], jwt=jwt, mount_point=mount))
    else:
        raise OpenBaoError('openbao.auth_method must be one of token, approle, kubernetes; got %r' % method)
    return client


def _login(client, operation, path, call):
    try:
        call()
    except Exception as exc:  # pylint: disable=broad-except
        raise _translate(client, exc, 'POST', path, operation, login=True) from None
    if not client.token:
        raise OpenBaoError('%s at %r returned no token' % (operation, path), operation=operation, path=path)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One client per system per engine call: one OpenBao login, one Kubernetes API client per cluster."""

from __future__ import annotations

import json

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s import client as k8s_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import connect


class Clients:
    """Connections opened on first use and reused for the whole engine call.

    ``openbao``: the ``ca_rotation_openbao`` options; ``kubernetes``: the default Kubernetes
    connection options (a step may name others, e.g. a cluster's own kubeconfig).
    """

    def __init__(self, openbao=None, kubernetes=None):
        self._openbao_params = dict(openbao or {})
        self._k8s_default = dict(kubernetes or {})
        self._openbao = None
        self._core = {}
        self.logins = 0

    def openbao(self):
        if self._openbao is None:
            self._openbao = connect(self._openbao_params)
            self.logins += 1
        return self._openbao

    def core(self, kubernetes=None):
        params = dict(kubernetes if kubernetes is not None else self._k8s_default)
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in self._core:
            missing = k8s_client.check_imports()
            if missing:
                raise k8s_client.K8sError('The Python library %s is required for Kubernetes delivery: %s' % (missing[0], missing[1]))
            self._core[key] = k8s_client.core_api(params)
        return self._core[key]

    def close(self):
        if self._openbao is not None:
            session = getattr(getattr(self._openbao, 'adapter', None), 'session', None)
            if session is not None:
                session.close()

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Shared Kubernetes connection options (``kubernetes``), defined in ``module_utils/_k8s/client.py``."""

    DOCUMENTATION = r'''
options:
  kubernetes:
    description:
      - How to reach the Kubernetes API server, with the official C(kubernetes) Python client.
      - Without O(kubernetes.host) or O(kubernetes.in_cluster), the kubeconfig file and context are used.
    type: dict
    suboptions:
      kubeconfig:
        description:
          - Path of the kubeconfig file.
          - Falls back to E(K8S_AUTH_KUBECONFIG), then E(KUBECONFIG), then C(~/.kube/config).
        type: path
      context:
        description:
          - Context of the kubeconfig to use (one cluster). Falls back to E(K8S_AUTH_CONTEXT), then the current context.
        type: str
      host:
        description:
          - API server URL, instead of a kubeconfig.
        type: str
      api_key:
        description:
          - Bearer token for O(kubernetes.host).
        type: str
      ca_cert:
        description:
          - CA certificate file to verify the API server with.
        type: path
      validate_certs:
        description:
          - Verify the API server's TLS certificate. Turning it off is an explicit opt-in.
        type: bool
        default: true
      in_cluster:
        description:
          - Use the pod's service account (token and CA mounted by Kubernetes).
        type: bool
        default: false
requirements:
  - kubernetes (Python library)
'''

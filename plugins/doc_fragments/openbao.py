# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Shared OpenBao connection options (``openbao``), defined in ``module_utils/_openbao/client.py``."""

    DOCUMENTATION = r'''
options:
  openbao:
    description:
      - How to reach and authenticate to OpenBao (also works with HashiCorp Vault).
      - Requests are retried with exponential backoff when the connection fails; idempotent requests
        (read, list, delete, patch) are also retried on HTTP 502, 503 and 504. Writes that issue or sign
        (HTTP POST) are retried only when the connection could not be established, because repeating them
        could issue twice.
    type: dict
    suboptions:
      url:
        description:
          - Address of OpenBao, for example V(https://openbao.example.com:8200).
          - Falls back to the E(BAO_ADDR), then E(VAULT_ADDR) environment variables.
        type: str
      auth_method:
        description:
          - How to log in.
          - V(token) uses O(openbao.token), else O(openbao.token_file), else the E(BAO_TOKEN) or
            E(VAULT_TOKEN) environment variables.
          - V(approle) logs in with O(openbao.role_id) and O(openbao.secret_id).
          - V(kubernetes) logs in with the service-account JWT read from O(openbao.kubernetes_token_path)
            and the role O(openbao.kubernetes_role).
        type: str
        choices: [token, approle, kubernetes]
        default: token
      token:
        description:
          - OpenBao token for O(openbao.auth_method=token).
          - When neither this nor O(openbao.token_file) is set, E(BAO_TOKEN) or E(VAULT_TOKEN) is used.
        type: str
      token_file:
        description:
          - File holding the token (whitespace is stripped). Used when O(openbao.token) is not set;
            takes precedence over the environment.
        type: path
      role_id:
        description:
          - AppRole role ID, for O(openbao.auth_method=approle).
        type: str
      secret_id:
        description:
          - AppRole secret ID, for O(openbao.auth_method=approle) (omit it for roles with C(bind_secret_id=false)).
        type: str
      kubernetes_role:
        description:
          - Role of the Kubernetes auth method, for O(openbao.auth_method=kubernetes).
        type: str
      kubernetes_token_path:
        description:
          - File holding the service-account JWT, for O(openbao.auth_method=kubernetes).
        type: path
        default: /var/run/secrets/kubernetes.io/serviceaccount/token
      auth_mount_point:
        description:
          - Mount path of the auth method. Defaults to V(approle) or V(kubernetes) after the method.
        type: str
      namespace:
        description:
          - OpenBao namespace. Falls back to E(BAO_NAMESPACE), then E(VAULT_NAMESPACE).
        type: str
      ca_cert:
        description:
          - CA certificate file (PEM) used to verify the TLS certificate of OpenBao.
          - Falls back to E(BAO_CACERT), then E(VAULT_CACERT). Without it the system trust store is used.
        type: path
      validate_certs:
        description:
          - Verify the TLS certificate of OpenBao. Setting V(false) is an explicit, insecure opt-out.
        type: bool
        default: true
      timeout:
        description:
          - Timeout of each HTTP request, in seconds.
        type: int
        default: 30
      retries:
        description:
          - How many times a failed request is retried (with exponential backoff, see above). V(0) disables retries.
        type: int
        default: 3
requirements:
  - hvac (Python library)
  - cryptography (Python library)
'''

# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Shared NATS connection options (``nats``), defined in ``module_utils/_nats/options.py``."""

    DOCUMENTATION = r'''
options:
  nats:
    description:
      - How to reach and authenticate to NATS.
      - Each server is tried once (in random order); the first that accepts the connection is used and the others
        stay known for reconnecting. When none accepts, the task fails at once with every server's problem - an
        untrusted certificate, a rejected client certificate, refused credentials, a refused or timed-out
        connection - instead of retrying in a loop.
      - Give at most one way to authenticate - O(nats.creds_file), O(nats.nkey_seed_file), O(nats.token), or
        O(nats.user) with O(nats.password) or O(nats.password_file).
    type: dict
    suboptions:
      servers:
        description:
          - NATS server URLs, for example V(tls://nats-0.example.com:4222). An entry may hold several URLs separated
            by commas, as in E(NATS_URL).
          - Falls back to the E(NATS_URL) environment variable.
        type: list
        elements: str
      ca_file:
        description:
          - CA bundle (PEM) that verifies the servers' certificates. Without it the system trust store is used.
        type: path
      cert_file:
        description:
          - Client certificate (PEM, optionally followed by its intermediate) for mutual TLS.
        type: path
      key_file:
        description:
          - Private key (PEM) of O(nats.cert_file).
        type: path
      partial_chain:
        description:
          - Accept an intermediate CA in O(nats.ca_file) as a trust anchor by itself (OpenSSL
            C(X509_V_FLAG_PARTIAL_CHAIN)). Needed when the CA bundle holds intermediates but no root
            (C(include_root=false) bundles).
        type: bool
        default: false
      tls_hostname:
        description:
          - Name to verify the server certificate against, when it differs from the host in O(nats.servers).
        type: str
      creds_file:
        description:
          - NATS credentials file (user JWT and NKey seed) for decentralized (JWT) authentication.
          - Needs the Python library C(nkeys).
        type: path
      nkey_seed_file:
        description:
          - File holding an NKey user seed (C(SU...)).
          - Needs the Python library C(nkeys).
        type: path
      user:
        description:
          - User name for user/password authentication.
        type: str
      password:
        description:
          - Password of O(nats.user). Prefer O(nats.password_file).
        type: str
      password_file:
        description:
          - File holding the password of O(nats.user) (surrounding whitespace is stripped).
        type: path
      token:
        description:
          - Authentication token.
        type: str
      connect_timeout:
        description:
          - Seconds to wait for each server to answer (TCP, TLS handshake and NATS handshake).
        type: int
        default: 5
      name:
        description:
          - Client connection name, shown by the server's monitoring (C(/connz)).
        type: str
        default: securetransport.ca_rotation
requirements:
  - nats-py (Python library)
  - nkeys (Python library, only with O(nats.creds_file) or O(nats.nkey_seed_file))
'''

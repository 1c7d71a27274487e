#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: openbao_leaf
short_description: Issue or renew a leaf certificate from OpenBao PKI into certificate, key and chain files
version_added: 0.1.0
description:
  - Keeps a server or client leaf certificate (for example of a NATS server on a VM) in files - the certificate,
    its private key and optionally the CA chain. Each file is written atomically (temporary file in the same
    directory, then rename) with its mode set before any content is written.
  - A new certificate is issued from role O(role) of O(int_mount) when a file is missing or unreadable, the key does
    not match the certificate, the common name or a requested SAN is missing, the remaining lifetime falls within
    O(renew_before), the issuing CA is no longer an issuer of the mount or its epoch has expired, or (with
    O(renew_if_not_default)) the issuer is no longer the mount's default issuer, so leaves follow an activation.
  - Otherwise nothing is issued; only files whose content or mode drifted are rewritten.
  - The private key is never logged and returned only with O(return_content=true).
author:
  - SecureTransport platform team (!UNKNOWN)
extends_documentation_fragment:
  - securetransport.ca_rotation.openbao
  - securetransport.ca_rotation.epoch
options:
  int_mount:
    description:
      - Mount path of the PKI secrets engine that issues the leaf.
    type: str
    default: pki_int
  role:
    description:
      - PKI role used to issue the certificate.
    type: str
    required: true
  common_name:
    description:
      - Common name of the certificate.
    type: str
    required: true
  alt_names:
    description:
      - DNS subject alternative names.
    type: list
    elements: str
    default: []
  ip_sans:
    description:
      - IP subject alternative names.
    type: list
    elements: str
    default: []
  ttl:
    description:
      - Requested lifetime (OpenBao duration such as V(24h)); default is the role's TTL. The issuer truncates it to
        its own NotAfter.
    type: str
  issuer_ref:
    description:
      - Issue from this issuer (name such as V(epoch-12), or ID) instead of the mount's default issuer.
      - A certificate issued by another issuer is renewed.
    type: str
  key_source:
    description:
      - V(openbao) - OpenBao generates the key (C(issue) endpoint); it travels to the managed host in the API response.
      - V(local) - the key is generated on the managed host and only a CSR goes to OpenBao (C(sign) endpoint; the
        role must allow the key type).
    type: str
    choices: [openbao, local]
    default: openbao
  key_type:
    description:
      - Key type. Unset means the role's key type (V(ec) with O(key_source=local)).
      - Needed with O(key_source=openbao) when the role has C(key_type=any).
    type: str
    choices: [ec, rsa, ed25519, mldsa]
  key_bits:
    description:
      - Key size for O(key_type), always sent explicitly - V(0) the family's first size (P-256, RSA 2048); V(mldsa)
        needs the parameter set 44, 65 or 87 (OpenBao's own default, 44, is never relied on); V(ed25519) takes none.
      - Any other combination fails before anything is changed, naming the option.
    type: int
    default: 0
  cert_file:
    description:
      - Certificate file. With O(full_chain) it also holds the issuing CA certificate after the leaf.
    type: path
    required: true
  key_file:
    description:
      - Private key file (PKCS#8 PEM when OpenBao generates it).
    type: path
    required: true
  chain_file:
    description:
      - Optional file for the CA chain of the issuer as OpenBao returns it (issuing CA first).
    type: path
  full_chain:
    description:
      - Append the issuing CA certificate to O(cert_file), so peers that trust only the root can build the chain.
    type: bool
    default: true
  mode:
    description:
      - Mode of O(cert_file) and O(chain_file), as an octal string.
    type: raw
    default: '0644'
  key_mode:
    description:
      - Mode of O(key_file), as an octal string.
    type: raw
    default: '0600'
  owner:
    description:
      - Owner (name or UID) of the files; default is the user running the module.
    type: str
  group:
    description:
      - Group (name or GID) of the files.
    type: str
  renew_before:
    description:
      - Renew once the remaining lifetime is below this - a percentage of the certificate's total lifetime (V(33%))
        or a duration in the formats of O(epoch_duration) (V(2h)).
    type: raw
    default: 33%
  renew_if_not_default:
    description:
      - Renew when the certificate's issuer is no longer the default issuer of O(int_mount) (after an activation).
        Ignored with O(issuer_ref).
    type: bool
    default: true
  force:
    description:
      - Always issue a new certificate.
    type: bool
    default: false
  return_content:
    description:
      - Also return the private key in RV(private_key).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads the files and OpenBao and reports whether a certificate would be issued (and why) or files rewritten.
  diff_mode:
    support: none
    description: Certificate files are not diffed; RV(reasons) says why they change.
notes:
  - The epoch options are used to recognise a leaf whose issuing epoch (issuer C(epoch-<n>)) has expired, and O(now)
    to evaluate the renewal window at another time.
  - Required OpenBao capability - C(update) on C(<int_mount>/issue/<role>) (C(<int_mount>/sign/<role>) with O(key_source=local),
    or the C(issuer/<issuer_ref>/) variants). Listing issuers and reading their certificates need no token.
seealso:
  - module: securetransport.ca_rotation.openbao_intermediate
'''

EXAMPLES = r'''
- name: Server certificate for a NATS server on a VM, renewed after each activation
  securetransport.ca_rotation.openbao_leaf:
    openbao:
      url: https://openbao.example.com:8200
      token_file: /etc/ca-rotation/openbao-token
    role: nats-leaf
    common_name: nats-0.example.com
    alt_names: [nats-0.example.com, localhost]
    ip_sans: [127.0.0.1]
    cert_file: /etc/nats/tls/server.pem
    key_file: /etc/nats/tls/server-key.pem
    chain_file: /etc/nats/tls/chain.pem
    owner: nats
    group: nats
  notify: Reload nats

- name: Client certificate with a key generated locally, renewed with 2h left
  securetransport.ca_rotation.openbao_leaf:
    role: nats-leaf
    common_name: billing-service
    key_source: local
    key_type: ec
    renew_before: 2h
    cert_file: /srv/billing/tls/client.pem
    key_file: /srv/billing/tls/client-key.pem
'''

RETURN = r'''
reasons:
  description: Why a certificate was (or would be) issued or files rewritten; empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: ['it was issued by epoch-41, which is no longer the default issuer (epoch-42)']
issued:
  description: Whether a new certificate was (or in check mode would be) issued.
  returned: always
  type: bool
files_written:
  description: Files whose content was (or would be) rewritten.
  returned: always
  type: list
  elements: str
certificate:
  description: The leaf certificate (PEM) now in O(cert_file); null in check mode when a new one would be issued.
  returned: always
  type: str
serial:
  description: Serial number of the leaf (colon-separated hex).
  returned: always
  type: str
common_name:
  description: Common name of the leaf.
  returned: always
  type: str
sha256:
  description: SHA-256 fingerprint (hex) of the leaf's DER encoding.
  returned: always
  type: str
not_before:
  description: NotBefore of the leaf.
  returned: always
  type: str
not_after:
  description: NotAfter of the leaf.
  returned: always
  type: str
renew_at:
  description: When the leaf enters the renewal window (O(renew_before)).
  returned: always
  type: str
issuer_id:
  description: ID of the issuer that signed the leaf (null if unknown).
  returned: always
  type: str
issuer_name:
  description: Name of that issuer, for example V(epoch-42).
  returned: always
  type: str
epoch:
  description: Epoch of that issuer when it is named C(epoch-<n>), else null.
  returned: always
  type: int
ca_chain:
  description: The CA chain written to O(chain_file) (PEM list, issuing CA first).
  returned: always
  type: list
  elements: str
private_key:
  description: The private key (PEM). Only with O(return_content=true), and only when a certificate was issued in this run.
  returned: when O(return_content=true) and a certificate was issued
  type: str
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import CRYPTOGRAPHY_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import parse_mode
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EPOCH_ARG_SPEC, schedule_from_module_params
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC, connect
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import HVAC_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import ensure_leaf, parse_renew_before
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import KEY_TYPES, key_spec


def _run(module):
    p = module.params
    schedule, now = schedule_from_module_params(p)
    return ensure_leaf(
        connect(p), int_mount=p['int_mount'], role=p['role'], common_name=p['common_name'], cert_file=p['cert_file'],
        key_file=p['key_file'], schedule=schedule, now=now, renew_before=parse_renew_before(p['renew_before']),
        alt_names=p['alt_names'], ip_sans=p['ip_sans'], ttl=p['ttl'], issuer_ref=p['issuer_ref'], key_source=p['key_source'],
        key_type=p['key_type'], key_bits=p['key_bits'], chain_file=p['chain_file'], full_chain=p['full_chain'],
        mode=parse_mode(p['mode'], 'mode'), key_mode=parse_mode(p['key_mode'], 'key_mode'), owner=p['owner'],
        group=p['group'], renew_if_not_default=p['renew_if_not_default'], force=p['force'], check_mode=module.check_mode,
        return_content=p['return_content'])


def main():
    argument_spec = dict(
        int_mount=dict(type='str', default='pki_int'),
        role=dict(type='str', required=True),
        common_name=dict(type='str', required=True),
        alt_names=dict(type='list', elements='str', default=[]),
        ip_sans=dict(type='list', elements='str', default=[]),
        ttl=dict(type='str'),
        issuer_ref=dict(type='str'),
        key_source=dict(type='str', default='openbao', choices=['openbao', 'local']),
        key_type=dict(type='str', choices=list(KEY_TYPES)),
        key_bits=dict(type='int', default=0),
        cert_file=dict(type='path', required=True),
        key_file=dict(type='path', required=True, no_log=False),
        chain_file=dict(type='path'),
        full_chain=dict(type='bool', default=True),
        mode=dict(type='raw', default='0644'),
        key_mode=dict(type='raw', default='0600', no_log=False),
        owner=dict(type='str'),
        group=dict(type='str'),
        renew_before=dict(type='raw', default='33%'),
        renew_if_not_default=dict(type='bool', default=True),
        force=dict(type='bool', default=False),
        return_content=dict(type='bool', default=False),
    )
    argument_spec.update(OPENBAO_ARG_SPEC)
    argument_spec.update(EPOCH_ARG_SPEC)
    module = CaRotationModule(argument_spec=argument_spec, supports_check_mode=True)
    module.doing = 'issuing or renewing the leaf certificate'
    if HVAC_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('hvac'), exception=HVAC_IMPORT_ERROR)
    if CRYPTOGRAPHY_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    if module.params['key_type'] or module.params['key_bits']:
        try:
            key_spec(module.params['key_type'] or 'ec', module.params['key_bits'])
        except ValueError as exc:
            module.fail_json(msg='%s; nothing was changed' % exc, option='key_bits')
    module.run(_run, module)


if __name__ == '__main__':
    main()

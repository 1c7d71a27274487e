#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: nats_host_step
short_description: The host-local steps of NATS servers on a VM - CA file, reload, leaf key and CSR
version_added: 0.1.0
description:
  - Runs on the machine where NATS servers run, one call per host and step; M(securetransport.ca_rotation.rotation_cluster)
    calls it for clusters whose servers are on other machines (C(ca_rotation_nats_reload_run_on=host)). It talks to
    nothing but the local servers and files.
  - O(step=deliver_reload) writes the bundle into every server's C(ca_file) where it differs (atomically), then, when
    something changed (or O(reload=always)), reloads every server by signal or C(nats-server --signal reload) and proves
    each reload (the new bytes are seen, C(config_load_time) advanced, no reload error in the log).
  - O(step=leaf_requests) decides, from the issuer certificates it is given, which server leaves are due and makes a new
    key (kept next to the key file as C(<key_file>.pending), mode 0600) and its CSR for each; the key never leaves the host.
  - O(step=install_leaves) installs the signed certificates with their pending keys and reloads those servers.
author:
  - SecureTransport platform team (@securetransport)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  step:
    description: Which host-local step to run.
    type: str
    required: true
    choices: [deliver_reload, leaf_requests, install_leaves]
  targets:
    description:
      - The servers of this host - name, pid or pid_file, ca_file, monitor_url, url, log_file, and for leaves cert_file,
        key_file, alt_names and ip_sans.
    type: list
    elements: dict
    required: true
  transport:
    description: How servers are reloaded.
    type: str
    choices: [signal, command]
    default: signal
  pem:
    description: The CA bundle to write (O(step=deliver_reload)).
    type: str
  file_mode:
    description: Mode of the CA files.
    type: raw
    default: '0644'
  reload:
    description: When to reload after delivering - C(auto) when a file changed, C(always), or C(never).
    type: str
    choices: [auto, always, never]
    default: auto
  expect_sha256:
    description: SHA-256 every server must see in its CA file before it is reloaded.
    type: str
  propagation_timeout:
    description: Seconds to wait for O(expect_sha256).
    type: int
    default: 180
  reload_timeout:
    description: Seconds to wait for each server's C(config_load_time) to advance.
    type: int
    default: 30
  min_success:
    description: How many servers must pass (default all).
    type: int
  issuers:
    description: Issuer certificates of the intermediate mount (issuer id -> issuer_name, certificate, is_default).
    type: dict
  renew_before:
    description: Renew a leaf when this much of its lifetime is left (percent or duration).
    type: raw
    default: 50%
  key_type:
    description: Key type of new server leaves (the PKI role must allow it).
    type: str
    choices: [ec, rsa, ed25519, mldsa]
    default: ec
  key_bits:
    description:
      - Key size of new server leaves - V(0) the family's first size (P-256, RSA 2048); ML-DSA needs V(44), V(65) or
        V(87).
    type: int
    default: 0
  now:
    description: The time of the run (ISO 8601), so that the host decides exactly as the controller.
    type: str
  schedule:
    description: The epoch schedule (epoch_zero, epoch_duration, validity, lead_time, skew_allowance).
    type: dict
  certificates:
    description: Signed certificates (with their issuing CA) by server name (O(step=install_leaves)).
    type: dict
'''

EXAMPLES = r'''
- name: Deliver the bundle and reload the servers of this VM
  securetransport.ca_rotation.nats_host_step:
    step: deliver_reload
    pem: "{{ bundle_pem }}"
    expect_sha256: "{{ bundle_sha256 }}"
    targets:
      - name: edge-1
        pid_file: /var/run/nats/nats.pid
        ca_file: /etc/nats/ca/ca.crt
        monitor_url: http://127.0.0.1:8222
'''

RETURN = r'''
destinations:
  description: Per server CA file - name, path, changed, before_sha256, after_sha256 (O(step=deliver_reload)).
  returned: when step is deliver_reload
  type: list
  elements: dict
delivered:
  description: Whether a CA file was (or would be) written.
  returned: when step is deliver_reload
  type: bool
previous_pem:
  description: The bundle a CA file held before, for an automatic rollback.
  returned: when step is deliver_reload
  type: str
reload:
  description: The reload summary (per-server targets, counts, msg, failed), or null when no reload was due.
  returned: when step is deliver_reload or install_leaves
  type: dict
leaves:
  description: Per server - name, reasons, csr (null when the leaf is kept).
  returned: when step is leaf_requests
  type: list
  elements: dict
installed:
  description: Servers whose new leaf was installed.
  returned: when step is install_leaves
  type: list
  elements: str
'''


from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.hoststeps import LocalSteps


def main():
    module = CaRotationModule(
        argument_spec=dict(
            step=dict(type='str', required=True, choices=['deliver_reload', 'leaf_requests', 'install_leaves']),
            targets=dict(type='list', elements='dict', required=True),
            transport=dict(type='str', default='signal', choices=['signal', 'command']),
            pem=dict(type='str'),
            file_mode=dict(type='raw', default='0644'),
            reload=dict(type='str', default='auto', choices=['auto', 'always', 'never']),
            expect_sha256=dict(type='str'),
            propagation_timeout=dict(type='int', default=180),
            reload_timeout=dict(type='int', default=30),
            min_success=dict(type='int'),
            issuers=dict(type='dict'),
            renew_before=dict(type='raw', default='50%'),
            key_type=dict(type='str', default='ec', choices=['ec', 'rsa', 'ed25519', 'mldsa']),
            key_bits=dict(type='int', default=0),
            now=dict(type='str'),
            schedule=dict(type='dict'),
            certificates=dict(type='dict'),
        ),
        required_if=[('step', 'deliver_reload', ('pem',)), ('step', 'leaf_requests', ('issuers', 'now', 'schedule')),
                     ('step', 'install_leaves', ('certificates',))],
        supports_check_mode=True,
    )
    p, check = module.params, module.check_mode
    steps = LocalSteps()
    with module.failures():
        if p['step'] == 'deliver_reload':
            out = steps.deliver_reload(pem=p['pem'], targets=p['targets'], transport=p['transport'], file_mode=p['file_mode'],
                                       reload=p['reload'], expect_sha256=p['expect_sha256'],
                                       propagation_timeout=p['propagation_timeout'], reload_timeout=p['reload_timeout'],
                                       min_success=p['min_success'], probes=None, check_mode=check)
            changed = out['delivered'] or bool(out['reload'] and out['reload']['changed'])
        elif p['step'] == 'leaf_requests':
            out = {'leaves': steps.leaf_requests(p['targets'], p['issuers'], p['renew_before'], p['now'], p['schedule'],
                                                 key_type=p['key_type'], key_bits=p['key_bits'], check_mode=check)}
            changed = any(leaf['csr'] for leaf in out['leaves'])
        else:
            out = {'reload': steps.install_and_reload(p['targets'], p['certificates'], p['transport'], p['reload_timeout'],
                                                      check_mode=check),
                   'installed': sorted(p['certificates'])}
            changed = bool(p['certificates'])
    module.exit_json(changed=changed, **out)


if __name__ == '__main__':
    main()

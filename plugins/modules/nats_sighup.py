#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: nats_sighup
short_description: Reload every NATS server without restarting it, and prove that each one did
version_added: 0.1.0
description:
  - Makes NATS servers re-read their configuration, certificates and CA bundle (the same as C(SIGHUP)), then proves
    for each server that the reload happened and was accepted. Existing client connections survive a reload.
  - Before reloading, with O(expect_sha256), waits (polling, at most O(propagation_timeout)) until each server's CA
    file has exactly those bytes - the local file, or the Secret mounted in each pod, read with C(sha256sum) through
    C(exec). Kubelet refreshes mounted Secrets only after its sync period (about a minute), so never sleep instead.
  - After reloading, each server's C(config_load_time) (from the monitoring C(/varz), or from
    C($SYS.REQ.SERVER.<id>.VARZ)) must have advanced past the value read before. NATS keeps its old configuration
    when the new one is bad (for example a CA file that does not parse); an error reply, a C(Failed to reload) in the
    server's log or an unchanged load time fail that server with the server's own message.
  - With O(probe), a TLS connection with the given client certificate (for example one of the new epoch) must then
    be accepted by every server.
  - All servers are handled in parallel. The module fails unless at least O(min_success) servers pass (default all).
author:
  - SecureTransport platform team (!UNKNOWN)
extends_documentation_fragment:
  - securetransport.ca_rotation.kubernetes
  - securetransport.ca_rotation.nats
options:
  transport:
    description:
      - How to reach and reload the servers.
      - V(signal) - send C(SIGHUP) to each server process on this host (O(targets) with a pid or pid file).
      - V(command) - run C(nats-server --signal reload=<pid>) on this host for each of O(targets).
      - V(kubernetes) - exec O(reload_command) in the O(container) container of every pod matching O(label_selector)
        in O(namespace), all pods in parallel, with the O(kubernetes) connection. Needs C(list) on C(pods),
        C(create) on C(pods/exec) and (to explain failures) C(get) on C(pods/log). The load time is read from the
        monitoring port on the pod IP, so run it where pod IPs are reachable (for example the rotation CronJob).
      - V(system) - C($SYS.REQ.SERVER.<id>.RELOAD) requests over the O(nats) connection, which must authenticate as a
        user of the system account. Servers are discovered with C($SYS.REQ.SERVER.PING); needs no exec permission.
    type: str
    required: true
    choices: [signal, command, kubernetes, system]
  targets:
    description:
      - The servers, for O(transport=signal) and O(transport=command) (required there).
      - With O(transport=system), optional - the servers that must answer (by O(targets[].name) or
        O(targets[].server_id)); one that does not answer the discovery is reported as failed. Give
        O(targets[].ca_file) there to use O(expect_sha256), and O(targets[].log_file) for failure reasons.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Name used in the results (and, with O(transport=system), the server name to match).
          - Defaults to O(targets[].pid_file) or the pid.
        type: str
      pid:
        description:
          - Process id of the server.
        type: int
      pid_file:
        description:
          - The server's pid file (read just before the reload, so a restarted server is found).
        type: path
      ca_file:
        description:
          - The server's CA bundle file, compared with O(expect_sha256).
        type: path
      monitor_url:
        description:
          - Base URL of the server's monitoring port, for example V(http://127.0.0.1:8222). Required for
            O(transport=signal) and O(transport=command).
        type: str
      server_id:
        description:
          - Expected server id; the monitoring endpoint must report it (guards against a wrong O(targets[].monitor_url)).
        type: str
      log_file:
        description:
          - The server's log file; what it logs during the reload explains a failure.
        type: path
      url:
        description:
          - Client URL of the server (for example V(tls://127.0.0.1:4222)) for O(probe). Defaults to the host and port
            the server reports.
        type: str
  expect_sha256:
    description:
      - SHA-256 (hex) of the CA bundle every server must see before it is reloaded.
      - In check mode the CA file is read once and the match reported in RV(targets[].sha256_ok), without waiting.
    type: str
  propagation_timeout:
    description:
      - Seconds to wait for each server's CA file to have O(expect_sha256).
    type: int
    default: 180
  reload_timeout:
    description:
      - Seconds to wait for each server's C(config_load_time) to advance after the reload.
    type: int
    default: 30
  min_success:
    description:
      - How many servers must reload and pass every check for the module to succeed. Default - all of them.
    type: int
  probe:
    description:
      - A TLS client certificate that every server must accept after the reload (a handshake on the client port,
        after reading the NATS C(INFO) line; no credentials are sent, so C(Authorization Violation) still proves
        that TLS accepted the certificate).
    type: dict
    suboptions:
      cert_file:
        description:
          - Client certificate (PEM, with its intermediate) to present.
          - When a certificate in it has an ML-DSA key or signature, the probe uses pyOpenSSL over the OpenSSL that
            cryptography bundles (TLS 1.3; Python's C(ssl) cannot present or verify ML-DSA).
        type: path
        required: true
      key_file:
        description:
          - Its private key.
        type: path
        required: true
      ca_file:
        description:
          - Also verify the servers' certificates against this CA file. Without it the servers' certificates are not checked.
        type: path
      server_name:
        description:
          - Host name the servers' certificates must match (checked only together with O(probe.ca_file)).
        type: str
      partial_chain:
        description:
          - Accept an intermediate in O(probe.ca_file) as trust anchor (a bundle without the root).
        type: bool
        default: false
      timeout:
        description:
          - Seconds for the connection and handshake.
        type: int
        default: 10
  probes:
    description:
      - Several TLS client certificates, every one of which each server must accept after the reload - for a CA file
        that serves two key families (a classical and an ML-DSA chain), one probe per family. Each is checked like
        O(probe); the server fails when any of them is refused, and the result names which.
      - Mutually exclusive with O(probe).
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - The probe's name in results and messages. Default - the key family of its certificate chain
            (C(classical) or C(mldsa)). Two probes may not have the same name.
        type: str
      cert_file:
        description:
          - Client certificate (PEM, with its intermediate) to present.
          - When a certificate in it has an ML-DSA key or signature, the probe uses pyOpenSSL over the OpenSSL that
            cryptography bundles (TLS 1.3; Python's C(ssl) cannot present or verify ML-DSA).
        type: path
        required: true
      key_file:
        description:
          - Its private key.
        type: path
        required: true
      ca_file:
        description:
          - Also verify the servers' certificates against this CA file. Without it the servers' certificates are not checked.
        type: path
      server_name:
        description:
          - Host name the servers' certificates must match (checked only together with O(probes[].ca_file)).
        type: str
      partial_chain:
        description:
          - Accept an intermediate in O(probes[].ca_file) as trust anchor (a bundle without the root).
        type: bool
        default: false
      timeout:
        description:
          - Seconds for the connection and handshake.
        type: int
        default: 10
  namespace:
    description:
      - Namespace of the NATS pods (O(transport=kubernetes)).
    type: str
    default: nats
  label_selector:
    description:
      - Label selector of the NATS pods (O(transport=kubernetes)).
    type: str
    default: app=nats
  container:
    description:
      - Container of the NATS server in each pod (O(transport=kubernetes)).
    type: str
    default: nats
  ca_file:
    description:
      - Path of the CA bundle inside the container (O(transport=kubernetes)), compared with O(expect_sha256).
    type: str
    default: /etc/nats/ca/ca.crt
  reload_command:
    description:
      - Command run in each pod to reload NATS (O(transport=kubernetes)), as a list or one string split like a shell.
      - Use V(nats-server --signal reload) where the image has no C(kill).
    type: list
    elements: str
    default: [kill, -HUP, '1']
  client_port:
    description:
      - Client port of the pods when the container declares no port named C(client) or C(nats) (used by O(probe)).
    type: int
    default: 4222
  monitor_port:
    description:
      - Monitoring port of the pods when the container declares no port named C(monitor).
    type: int
    default: 8222
  nats_server_path:
    description:
      - The nats-server binary for O(transport=command). Default - C(nats-server) from E(PATH).
    type: path
attributes:
  check_mode:
    support: full
    description:
      - Discovers the servers, reads each CA file's hash once (without waiting for O(expect_sha256)) and each load time,
        and signals nothing. RV(targets[].sha256_ok) tells whether the expected bundle is already there; C(changed)
        predicts a reload of every reachable server.
  diff_mode:
    support: none
    description: A reload has no before/after text to show; RV(targets[].load_time_before) and RV(targets[].load_time_after) tell it.
requirements:
  - kubernetes (Python library) for O(transport=kubernetes)
  - nats-py for O(transport=system)
  - pyOpenSSL (26 or later, over cryptography 50 or later) for an ML-DSA probe certificate
notes:
  - C(changed) is true when at least one server actually reloaded (its load time advanced). A reload always changes the
    load time, so a second run reports a change again.
  - A reload never restarts the server; a server whose start time changed is reported as failed.
seealso:
  - name: NATS configuration reloading
    description: What a reload re-reads.
    link: https://docs.nats.io/running-a-nats-service/configuration#configuration-reloading
'''

EXAMPLES = r'''
- name: Reload the NATS pods once the new bundle is mounted, and prove they trust epoch 42
  securetransport.ca_rotation.nats_sighup:
    transport: kubernetes
    kubernetes:
      in_cluster: true
    namespace: nats
    label_selector: app=nats
    expect_sha256: "{{ bundle.sha256 }}"
    probe:
      cert_file: /run/probe/epoch-42.pem
      key_file: /run/probe/epoch-42-key.pem

- name: A CA file serving two key families - every server must accept a classical and an ML-DSA client certificate
  securetransport.ca_rotation.nats_sighup:
    transport: signal
    targets: "{{ nats_targets }}"
    expect_sha256: "{{ bundle.sha256 }}"
    probes:
      - cert_file: /run/probe/epoch-42-ec.pem
        key_file: /run/probe/epoch-42-ec-key.pem
      - cert_file: /run/probe/epoch-42-mldsa.pem
        key_file: /run/probe/epoch-42-mldsa-key.pem

- name: Reload through the system account (no exec permission needed)
  securetransport.ca_rotation.nats_sighup:
    transport: system
    nats:
      servers: ["tls://nats.example.org:4222"]
      ca_file: /etc/nats/ca/ca.crt
      cert_file: /etc/nats/client.pem
      key_file: /etc/nats/client-key.pem
      user: sys
      password: "{{ nats_sys_password }}"
    targets:
      - name: nats-0
      - name: nats-1
      - name: nats-2

- name: SIGHUP a local server after writing its bundle; two of three are enough
  securetransport.ca_rotation.nats_sighup:
    transport: signal
    targets:
      - name: nats-0
        pid_file: /var/run/nats/nats.pid
        ca_file: /etc/nats/ca/ca.crt
        monitor_url: http://127.0.0.1:8222
        log_file: /var/log/nats/nats.log
    expect_sha256: "{{ bundle.sha256 }}"
    min_success: 2
'''

RETURN = r'''
targets:
  description: One entry per server, in name order.
  returned: always
  type: list
  elements: dict
  contains:
    target:
      description: Target name (pod name, server name, or O(targets[].name)).
      type: str
    transport:
      description: The transport used.
      type: str
    server_id:
      description: Server id reported by the server.
      type: str
    server_name:
      description: Server name reported by the server.
      type: str
    ca_file:
      description: Where the CA file was compared (pod and path for Kubernetes); null without O(expect_sha256).
      type: str
    sha256_seen:
      description: SHA-256 of the CA file as last read; null without O(expect_sha256).
      type: str
    sha256_ok:
      description: Whether it matched O(expect_sha256); null without it.
      type: bool
    ca_certificates:
      description:
        - The certificates of the CA file as the server reads it, by key family (C(ec), C(rsa), C(ed25519), C(mldsa)),
          checked before the reload; null where the file is not read from here (Kubernetes).
        - A file with a PEM block that nats-server would skip without an error (text after the dashes of a BEGIN or END
          line, e.g. two blocks glued together) is not reloaded, and the target fails naming the block.
      type: dict
      sample: {ec: 3}
    load_time_before:
      description: C(config_load_time) before the reload.
      type: str
      sample: '2026-11-29T10:49:17.162831787Z'
    load_time_after:
      description: C(config_load_time) after the reload (null in check mode).
      type: str
    reload_ms:
      description: Milliseconds from the reload request to the advanced load time being seen.
      type: int
    signalled:
      description: Whether the reload was requested.
      type: bool
    changed:
      description: Whether the server reloaded (its load time advanced).
      type: bool
    probe_ok:
      description: Whether the probe certificate (every one of O(probes)) was accepted; null without a probe.
      type: bool
    probe_detail:
      description: What the probe saw (with O(probes), each probe's name and what it saw).
      type: str
    probes:
      description: With O(probe) or O(probes), each probe's verdict on this server; null without a probe.
      type: list
      elements: dict
      contains:
        name:
          description: The probe's name (O(probes[].name), or its key family).
          type: str
        ok:
          description: Whether the server accepted it.
          type: bool
        detail:
          description: What it saw.
          type: str
    ok:
      description: Whether this server passed every check.
      type: bool
    error:
      description: Why it did not, in the server's words where it gave any; null when it passed.
      type: str
total:
  description: Number of servers found.
  returned: always
  type: int
ok_count:
  description: Servers that passed.
  returned: always
  type: int
failed_count:
  description: Servers that did not pass.
  returned: always
  type: int
reloaded:
  description: Servers whose load time advanced.
  returned: always
  type: int
min_success:
  description: The number of servers that had to pass.
  returned: always
  type: int
transport:
  description: The transport used.
  returned: always
  type: str
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import (
    K8S_ARG_SPEC,
    check_imports as k8s_check_imports,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NATS_ARG_SPEC, NATS_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import TARGET_OPTION_SPEC
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.engine import TRANSPORTS, reload_servers
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.kubernetes import (
    DEFAULT_RELOAD_COMMAND,
    KubernetesTransport,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.local import LocalTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.system import SystemTransport


def build_transport(module):
    p = module.params
    transport = p['transport']
    if transport in ('signal', 'command'):
        path = None
        if transport == 'command':
            path = p['nats_server_path'] or module.get_bin_path('nats-server')
        return LocalTransport(transport, p['targets'], nats_server_path=path)
    if transport == 'kubernetes':
        if p['targets']:
            module.warn('targets is ignored with transport=kubernetes: the pods are found with namespace and label_selector')
        missing = k8s_check_imports()
        if missing:
            module.fail_json(msg=missing_required_lib(missing[0]), exception=missing[1])
        return KubernetesTransport(
            p['kubernetes'], namespace=p['namespace'], label_selector=p['label_selector'], container=p['container'],
            ca_file=p['ca_file'], reload_command=p['reload_command'], client_port=p['client_port'], monitor_port=p['monitor_port'])
    if NATS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('nats-py'), exception=NATS_IMPORT_ERROR)
    return SystemTransport(p['nats'], targets=p['targets'])


#: a probe's options (O(probe), and each of O(probes) with its name)
PROBE_OPTIONS = dict(
    cert_file=dict(type='path', required=True),
    key_file=dict(type='path', required=True, no_log=False),
    ca_file=dict(type='path'),
    server_name=dict(type='str'),
    partial_chain=dict(type='bool', default=False),
    timeout=dict(type='int', default=10),
)


def main():
    argument_spec = dict(
        transport=dict(type='str', required=True, choices=list(TRANSPORTS)),
        targets=dict(type='list', elements='dict', options=TARGET_OPTION_SPEC),
        expect_sha256=dict(type='str'),
        propagation_timeout=dict(type='int', default=180),
        reload_timeout=dict(type='int', default=30),
        min_success=dict(type='int'),
        probe=dict(type='dict', options=dict(PROBE_OPTIONS)),
        probes=dict(type='list', elements='dict', options=dict(PROBE_OPTIONS, name=dict(type='str'))),
        namespace=dict(type='str', default='nats'),
        label_selector=dict(type='str', default='app=nats'),
        container=dict(type='str', default='nats'),
        ca_file=dict(type='str', default='/etc/nats/ca/ca.crt'),
        reload_command=dict(type='list', elements='str', default=list(DEFAULT_RELOAD_COMMAND)),
        client_port=dict(type='int', default=4222),
        monitor_port=dict(type='int', default=8222),
        nats_server_path=dict(type='path'),
    )
    argument_spec.update(K8S_ARG_SPEC)
    argument_spec.update(NATS_ARG_SPEC)
    module = CaRotationModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[('transport', 'signal', ('targets',)), ('transport', 'command', ('targets',))],
        mutually_exclusive=[('probe', 'probes')],
    )
    module.doing = 'reloading the NATS servers'
    module.run(_run, module)


def _run(module):
    p = module.params
    transport = build_transport(module)
    try:
        return reload_servers(
            transport, expect_sha256=p['expect_sha256'], propagation_timeout=p['propagation_timeout'],
            reload_timeout=p['reload_timeout'], probe=p['probe'], probes=p['probes'], min_success=p['min_success'],
            check_mode=module.check_mode)
    finally:
        transport.close()


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: rotation_status
short_description: Consistency report of the CA rotation across OpenBao, KV, Kubernetes, NATS and the announcement
version_added: 0.1.0
description:
  - Read-only. Gathers what every part of the rotation holds and flags every mismatch. It runs in three steps, so that
    each one runs where its credentials are (the playbook C(securetransport.ca_rotation.status) chains them).
  - O(scope=authority) reads the C(epoch-<n>) issuers of O(int_mount) (which one is the default, their expiry), the
    root of O(root_mount), the rotation state (O(kv_mount)/O(state_path) - generation, last epoch, bundle SHA-256,
    lock, hold), the proof record of each of O(clusters), the KV bundle of the state's epoch (O(bundle_path)), with
    O(epoch_secret) the per-epoch Kubernetes Secret, and with O(announcement) the latest announcement on O(subject)
    in O(stream), whose signature is verified with the public key of the transit key.
  - O(scope=cluster) reads, for every NATS server of one cluster (found as O(transport) finds them for
    M(securetransport.ca_rotation.nats_sighup)), the SHA-256 and modification time of its CA file (the local file,
    or the mounted file in the pod through C(exec) C(sha256sum) and C(stat)), its C(config_load_time) (C(/varz), or
    C($SYS.REQ.SERVER.<id>.VARZ)), and the certificate it serves (a TLS handshake on its client port; the issuer
    tells the epoch). With O(live_secret) it also reads the live CA Secret.
  - O(scope=report) compares the facts of both and returns every finding, a JSON document and a text table.
    Mismatches include a CA file, live Secret, KV bundle, per-epoch Secret or announcement whose SHA-256 differs from
    the state's, a server whose C(config_load_time) is older than its CA file (not loaded), an announcement whose
    generation differs from the state's or whose signature does not verify, a default issuer that is not in the
    bundle, an expired intermediate still in the bundle, a server certificate from an epoch outside the bundle, and a
    rotation lock past its expiry.
  - Unreachable services do not fail the module; they become findings, so the report is always produced.
author:
  - SecureTransport platform team (@securetransport)
extends_documentation_fragment:
  - securetransport.ca_rotation.openbao
  - securetransport.ca_rotation.nats
  - securetransport.ca_rotation.kubernetes
  - securetransport.ca_rotation.epoch
options:
  scope:
    description:
      - V(authority) - gather the OpenBao, KV, per-epoch Secret and announcement facts (uses O(openbao), and O(nats)
        for the announcement).
      - V(cluster) - gather the facts of one NATS cluster (uses O(transport) and its options).
      - V(report) - compare O(authority) with O(clusters); talks to nothing.
    type: str
    required: true
    choices: [authority, cluster, report]
  root_mount:
    description: PKI mount of the root CA (O(scope=authority)).
    type: str
    default: pki
  int_mount:
    description: PKI mount of the C(epoch-<n>) intermediates (O(scope=authority)).
    type: str
    default: pki_int
  families:
    description:
      - Dual mode - the other key families' mounts (O(scope=authority)); each family's epoch issuers, default issuer
        and root are read and checked like those of O(int_mount) and O(root_mount), and its certificates in the
        bundle are not flagged as foreign.
      - C(playbooks/status.yml) fills it from C(ca_rotation_pki.mldsa).
    type: list
    elements: dict
    default: []
    suboptions:
      family:
        description: The key family.
        type: str
        required: true
        choices: [mldsa]
      root_mount:
        description: PKI mount of the family's root.
        type: str
        required: true
      int_mount:
        description: PKI mount of the family's C(epoch-<n>) intermediates.
        type: str
        required: true
      enabled:
        description:
          - V(false) - the family is switched off (C(ca_rotation_pki.mldsa.enabled)) - its issuers are not checked
            and a failure to read its mounts is not reported; its root still vouches for the certificates it signed
            in stored bundle records (kept for rollbacks), which are then not flagged as foreign.
        type: bool
        default: true
  kv_mount:
    description: KV v2 mount of the rotation state and the bundles (O(scope=authority)).
    type: str
    default: secret
  state_path:
    description: Path of the rotation state document in O(kv_mount); the proof records are next to it (O(scope=authority)).
    type: str
    default: ca-rotation/state
  bundle_path:
    description: Path template of the stored bundles in O(kv_mount); must contain C({epoch}) (O(scope=authority)).
    type: str
    default: ca-bundles/epoch-{epoch}
  clusters:
    description: Names of the clusters whose proof records are read and whose facts the report expects (O(scope=authority)).
    type: list
    elements: str
    default: []
  announcement:
    description:
      - Whether to read and verify the latest announcement over the O(nats) connection (O(scope=authority)).
    type: bool
    default: true
  stream:
    description: JetStream stream of the announcements (O(scope=authority)).
    type: str
    default: METADATA_CA_CLIENT
  subject:
    description: Subject of the announcements (O(scope=authority)).
    type: str
    default: metadata.client.ca-cert
  transit_mount:
    description: Transit mount of the announcement signing key (O(scope=authority)).
    type: str
    default: transit
  transit_key:
    description: Name of the (ed25519) announcement signing key (O(scope=authority)).
    type: str
    default: ca-bundle-signer
  epoch_secret:
    description:
      - Read the per-epoch bundle Secret of the state's epoch with the O(kubernetes) connection (O(scope=authority)).
        Not set - no per-epoch Secret is checked.
    type: dict
    suboptions:
      namespace:
        description: Its namespace.
        type: str
        default: openbao
      name:
        description: Its name; C({epoch}) is replaced by the epoch.
        type: str
        default: nats-ca-bundle-epoch-{epoch}
      key:
        description: The data key holding the bundle.
        type: str
        default: ca-bundle.pem
  cluster:
    description: Name of the cluster (O(scope=cluster)); the report matches it with O(clusters).
    type: str
  transport:
    description:
      - How to find and reach the servers (O(scope=cluster)), as for M(securetransport.ca_rotation.nats_sighup); nothing is
        reloaded. V(signal) and V(command) - the local O(targets); V(kubernetes) - the pods matching O(label_selector)
        in O(namespace); V(system) - the servers answering C($SYS.REQ.SERVER.PING) over O(nats).
    type: str
    choices: [signal, command, kubernetes, system]
    default: signal
  targets:
    description:
      - The servers, for O(transport=signal) and O(transport=command) (required there); with O(transport=system)
        optional (the servers that must answer; O(targets[].ca_file) lets their CA files be checked).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the server in the report (with O(transport=system), the server name to match).
        type: str
      pid:
        description: Process id of the server (required by the local transports, never signalled).
        type: int
      pid_file:
        description: The server's pid file.
        type: path
      ca_file:
        description: The server's CA bundle file.
        type: path
      monitor_url:
        description: Base URL of its monitoring port, for example V(http://127.0.0.1:8222).
        type: str
      server_id:
        description: Expected server id.
        type: str
      log_file:
        description: Its log file (unused by the report).
        type: path
      url:
        description: Its client URL, for example V(tls://127.0.0.1:4222), for the TLS handshake.
        type: str
  namespace:
    description: Namespace of the NATS pods (O(transport=kubernetes)).
    type: str
    default: nats
  label_selector:
    description: Label selector of the NATS pods (O(transport=kubernetes)).
    type: str
    default: app=nats
  container:
    description: Container of the NATS server in each pod (O(transport=kubernetes)).
    type: str
    default: nats
  ca_file:
    description:
      - Path of the CA bundle inside the container (O(transport=kubernetes)); its modification time is read with
        C(stat -L -c %Y) (whole seconds).
    type: str
    default: /etc/nats/ca/ca.crt
  client_port:
    description: Client port of the pods when the container declares no port named C(client) or C(nats).
    type: int
    default: 4222
  monitor_port:
    description: Monitoring port of the pods when the container declares no port named C(monitor).
    type: int
    default: 8222
  live_secret:
    description:
      - Read the live CA Secret mounted by the NATS pods with the O(kubernetes) connection (O(scope=cluster)).
        Not set - no live Secret is checked.
    type: dict
    suboptions:
      namespace:
        description: Its namespace.
        type: str
        default: nats
      name:
        description: Its name.
        type: str
        default: nats-ca-tls
      key:
        description: The data key holding the bundle.
        type: str
        default: ca.crt
  tls_client:
    description:
      - Client certificate for the TLS handshake that reads each server's certificate (O(scope=cluster)). Not needed
        with TLS 1.3, where a server requiring client certificates checks them after the handshake.
    type: dict
    suboptions:
      cert_file:
        description: Client certificate (PEM).
        type: path
        required: true
      key_file:
        description: Its private key.
        type: path
        required: true
      server_name:
        description: Server name (SNI) to send.
        type: str
  tls_timeout:
    description: Seconds for each connection and TLS handshake.
    type: int
    default: 5
  authority:
    description: The RV(facts) of an O(scope=authority) run (O(scope=report)).
    type: dict
  clusters_facts:
    description: The RV(facts) of the O(scope=cluster) runs, one per cluster (O(scope=report)).
    type: list
    elements: dict
    default: []
  html:
    description:
      - Also return RV(html), the report as an epoch timeline (O(scope=report)) - a self-contained HTML page with an
        inline SVG (no script, nothing fetched from elsewhere) showing each intermediate's validity window and state
        (prepared, active, valid, expired, distrusted), now, and what every server has loaded and serves.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same result.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
requirements:
  - cryptography
  - hvac (O(scope=authority))
  - nats-py (O(announcement), O(transport=system))
  - kubernetes (Python library) for O(transport=kubernetes), O(live_secret) and O(epoch_secret)
notes:
  - Never reports a change. The O(scope=report) result has RV(ok) false when anything mismatches; the playbook fails
    on that only when asked to (C(-e ca_rotation_status_strict=true)).
  - With the root in the bundle a TLS probe proves little about intermediates, so the served certificate's issuer is
    compared with the bundle instead.
seealso:
  - module: securetransport.ca_rotation.nats_sighup
  - module: securetransport.ca_rotation.rotation_state
'''

EXAMPLES = r'''
- name: Authority facts (OpenBao, KV, announcement)
  securetransport.ca_rotation.rotation_status:
    scope: authority
    openbao: "{{ ca_rotation_openbao }}"
    nats: "{{ ca_rotation_authority_nats }}"
    clusters: [east, west]
  register: authority_status

- name: What the servers of one cluster have loaded
  securetransport.ca_rotation.rotation_status:
    scope: cluster
    cluster: east
    transport: kubernetes
    kubernetes:
      context: east
    live_secret:
      name: nats-ca-tls
  register: cluster_status

- name: Compare and report
  securetransport.ca_rotation.rotation_status:
    scope: report
    authority: "{{ authority_status.facts }}"
    clusters_facts: ["{{ cluster_status.facts }}"]
  register: status

- name: Show it
  ansible.builtin.debug:
    msg: "{{ status.table }}"
'''

RETURN = r'''
facts:
  description: What was gathered (O(scope=authority) or O(scope=cluster)); pass it to O(scope=report).
  returned: when scope is authority or cluster
  type: dict
ok:
  description: Whether nothing mismatches.
  returned: when scope is report
  type: bool
mismatch_count:
  description: Number of mismatches.
  returned: when scope is report
  type: int
warning_count:
  description: Number of warnings (facts worth knowing that are not inconsistent, for example a rollback hold).
  returned: when scope is report
  type: int
findings:
  description: Every finding.
  returned: when scope is report
  type: list
  elements: dict
  contains:
    severity:
      description: V(mismatch) or V(warning).
      type: str
    code:
      description: Machine-friendly code, for example V(ca_file_sha256), V(not_loaded), V(announcement_generation).
      type: str
    where:
      description: What it is about, for example V(local/nats-1) or V(kv).
      type: str
    msg:
      description: What is wrong and what to do.
      type: str
distrusted:
  description:
    - The intermediates the rotation state records as distrusted (C(playbooks/distrust.yml)), each with V(valid) (not
      expired), V(pending) (its replacement is not complete) and V(held_by), every place that still holds it (the stored
      bundle, a Secret, a server's CA file or the leaf it serves). A valid one held anywhere is a V(distrusted_held)
      mismatch.
  returned: when scope is report
  type: list
  elements: dict
table:
  description: The report as lines of text.
  returned: when scope is report
  type: list
  elements: str
html:
  description: The epoch timeline page (HTML text), with O(html=true).
  returned: when scope is report and html is true
  type: str
report:
  description: The whole report (schema C(securetransport.ca_rotation_status/v1)) - findings, the authority facts and
    every cluster's facts - to write as JSON.
  returned: when scope is report
  type: dict
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import CRYPTOGRAPHY_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EPOCH_ARG_SPEC, schedule_from_module_params,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import (
    K8S_ARG_SPEC,
    check_imports as k8s_check_imports,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NATS_ARG_SPEC, NATS_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import HVAC_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import TARGET_OPTION_SPEC
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.engine import TRANSPORTS
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.kubernetes import KubernetesTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.local import LocalTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.system import SystemTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.checks import build_report
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.cluster import gather_cluster
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.gather import gather_authority
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.html import model_from_report, render_timeline


def _need_k8s(module):
    missing = k8s_check_imports()
    if missing:
        module.fail_json(msg=missing_required_lib(missing[0]), exception=missing[1])


def _transport(module):
    p = module.params
    if p['transport'] in ('signal', 'command'):
        # read-only: the local transport is only asked for varz and the CA files, never to signal
        return LocalTransport('signal', p['targets'])
    if p['transport'] == 'kubernetes':
        _need_k8s(module)
        return KubernetesTransport(p['kubernetes'], namespace=p['namespace'], label_selector=p['label_selector'],
                                   container=p['container'], ca_file=p['ca_file'], client_port=p['client_port'],
                                   monitor_port=p['monitor_port'])
    if NATS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('nats-py'), exception=NATS_IMPORT_ERROR)
    return SystemTransport(p['nats'], targets=p['targets'])


def _cluster(module, schedule):
    p = module.params
    if not p['cluster']:
        module.fail_json(msg='scope=cluster needs cluster (the name the report knows it by)', option='cluster')
    if p['live_secret']:
        _need_k8s(module)
    transport = None
    error = None
    try:
        transport = _transport(module)
    except ReloadError as err:
        error = str(err)
    try:
        facts = gather_cluster(p['cluster'], transport, live_secret=p['live_secret'], k8s_params=p['kubernetes'],
                               tls_client=p['tls_client'], tls_timeout=p['tls_timeout'], schedule=schedule)
    finally:
        if transport is not None:
            transport.close()
    if error:
        facts['transport'] = p['transport']
        facts['error'] = error
    elif transport is not None:
        facts['transport'] = p['transport']
    return facts


def _authority(module, schedule, now):
    p = module.params
    if HVAC_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('hvac'), exception=HVAC_IMPORT_ERROR)
    if p['announcement'] and NATS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('nats-py'), exception=NATS_IMPORT_ERROR)
    if p['epoch_secret']:
        _need_k8s(module)
    return gather_authority(
        p['openbao'], schedule, now, root_mount=p['root_mount'], int_mount=p['int_mount'], kv_mount=p['kv_mount'],
        state_path=p['state_path'], bundle_path=p['bundle_path'], clusters=p['clusters'],
        nats_params=p['nats'] if p['announcement'] else None, stream=p['stream'], subject=p['subject'],
        transit_mount=p['transit_mount'], transit_key=p['transit_key'],
        k8s_params=p['kubernetes'] if p['epoch_secret'] else None, epoch_secret=p['epoch_secret'], families=p['families'])


def main():
    argument_spec = dict(
        scope=dict(type='str', required=True, choices=['authority', 'cluster', 'report']),
        root_mount=dict(type='str', default='pki'),
        int_mount=dict(type='str', default='pki_int'),
        families=dict(type='list', elements='dict', default=[], options=dict(
            family=dict(type='str', required=True, choices=['mldsa']),
            root_mount=dict(type='str', required=True),
            int_mount=dict(type='str', required=True), enabled=dict(type='bool', default=True))),
        kv_mount=dict(type='str', default='secret'),
        state_path=dict(type='str', default='ca-rotation/state'),
        bundle_path=dict(type='str', default='ca-bundles/epoch-{epoch}'),
        clusters=dict(type='list', elements='str', default=[]),
        announcement=dict(type='bool', default=True),
        stream=dict(type='str', default='METADATA_CA_CLIENT'),
        subject=dict(type='str', default='metadata.client.ca-cert'),
        transit_mount=dict(type='str', default='transit'),
        transit_key=dict(type='str', default='ca-bundle-signer', no_log=False),
        epoch_secret=dict(type='dict', no_log=False, options=dict(
            namespace=dict(type='str', default='openbao'),
            name=dict(type='str', default='nats-ca-bundle-epoch-{epoch}'),
            key=dict(type='str', default='ca-bundle.pem', no_log=False),
        )),
        cluster=dict(type='str'),
        transport=dict(type='str', default='signal', choices=list(TRANSPORTS)),
        targets=dict(type='list', elements='dict', options=TARGET_OPTION_SPEC),
        namespace=dict(type='str', default='nats'),
        label_selector=dict(type='str', default='app=nats'),
        container=dict(type='str', default='nats'),
        ca_file=dict(type='str', default='/etc/nats/ca/ca.crt'),
        client_port=dict(type='int', default=4222),
        monitor_port=dict(type='int', default=8222),
        live_secret=dict(type='dict', no_log=False, options=dict(
            namespace=dict(type='str', default='nats'),
            name=dict(type='str', default='nats-ca-tls'),
            key=dict(type='str', default='ca.crt', no_log=False),
        )),
        tls_client=dict(type='dict', options=dict(
            cert_file=dict(type='path', required=True),
            key_file=dict(type='path', required=True, no_log=False),
            server_name=dict(type='str'),
        )),
        tls_timeout=dict(type='int', default=5),
        authority=dict(type='dict'),
        clusters_facts=dict(type='list', elements='dict', default=[]),
        html=dict(type='bool', default=False),
    )
    argument_spec.update(EPOCH_ARG_SPEC)
    argument_spec.update(OPENBAO_ARG_SPEC)
    argument_spec.update(NATS_ARG_SPEC)
    argument_spec.update(K8S_ARG_SPEC)
    module = CaRotationModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if CRYPTOGRAPHY_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=CRYPTOGRAPHY_IMPORT_ERROR)

    if p['scope'] == 'report':
        if not p['authority']:
            module.fail_json(msg='scope=report needs authority (the facts of a scope=authority run)', option='authority')
        report = build_report(p['authority'], p['clusters_facts'])
        extra = {'html': render_timeline(model_from_report(report))} if p['html'] else {}
        module.exit_json(changed=False, ok=report['ok'], mismatch_count=report['mismatch_count'], warning_count=report['warning_count'],
                         findings=report['findings'], distrusted=report['distrusted'], table=report['table'], report=report,
                         **extra)

    with module.failures():
        schedule, now = schedule_from_module_params(p)
    with module.failures():
        if p['scope'] == 'authority':
            facts = _authority(module, schedule, now)
        else:
            facts = _cluster(module, schedule)
    module.exit_json(changed=False, facts=facts)


if __name__ == '__main__':
    main()

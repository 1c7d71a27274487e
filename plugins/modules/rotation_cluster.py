#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# This file only documents the module; the action plugin of the same name does the work in the controller.

from __future__ import annotations

DOCUMENTATION = r'''
module: rotation_cluster
short_description: Tier 2 of a CA rotation for one NATS cluster - deliver, reload, prove, roll back automatically
version_added: 0.1.0
description:
  - Runs for each host of the C(nats_clusters) group (one host per NATS cluster or VM group), in parallel, entirely in
    the controller (action plugin).
  - O(phase=deliver) puts the bundle of this run's authority step where the servers read their C(ca_file) (each
    server's file, or the live C(nats-ca-tls) Secret), waits until every server sees the new bytes, reloads every
    server without restarting it (signal, C(nats-server --signal reload), Kubernetes exec or C() request), proves
    each reload and the trust of the new epoch with a probe client certificate, and records the proof in OpenBao KV.
    When the proof fails, the previous bundle is put back and the servers reloaded (automatic rollback).
  - Before it delivers, a server leaf nothing can connect with any more (expired, issued by an expired or deleted
    intermediate, unreadable) is re-issued and its server reloaded - from the default issuer, or, when that has expired
    too (an outage longer than the validity), from the current epoch's intermediate, which is in the bundle delivered
    next. With C(ca_rotation_nats_reload_renew_leaves=false) (someone else issues the leaves) the cluster stops before
    anything is delivered, with the instruction to issue those servers leaves from that intermediate and run again.
  - The task never fails; its error is the cluster's result (and fails the run in
    M(securetransport.ca_rotation.rotation_finish)).
  - O(phase=renew) renews each server's leaf certificate (targets with C(cert_file)) from the default issuer when it
    is due or was issued by an issuer that is no longer the default, with the SANs of the target (C(alt_names),
    C(ip_sans); else the host of its C(url)), then reloads those servers within C(ca_rotation_nats_reload_reload_timeout).
  - It reads the C(ca_rotation_*) variables of its host (see the argument spec of the role
    C(securetransport.ca_rotation.nats_reload)) and the result of the authority step.
  - For the signal and command transports with file delivery, the host-local steps (write the CA files, signal, read
    C(/varz), make the leaf key and CSR) run in the controller, or with C(ca_rotation_nats_reload_run_on=host) (the
    default for hosts whose connection is not C(local)) on the inventory host, one M(securetransport.ca_rotation.nats_host_step)
    call per host and step; the trust probe always comes from the controller, to each target's C(url).
author:
  - SecureTransport platform team (@securetransport)
extends_documentation_fragment:
  - securetransport.ca_rotation.engine
options:
  phase:
    description:
      - C(deliver) (after the authority step), C(renew) (after activation), or C(restore) (rollback - server leaves from
        the restored epoch, then the restored bundle).
      - C(distrust) (the last cluster play of C(distrust.yml)) - deliver like C(deliver), then prove that every server
        refuses a leaf of the distrusted intermediate, sent alone and with the intermediate, on its client port (C(url))
        and its route port (C(route_url) of the target, when given); for C(ca_rotation_nats_reload_transport=kubernetes) the running pods, at
        their pod IP and the container ports named C(client) (or C(nats)) and C(cluster) (or C(route)).
      - In a distrust, servers whose leaf this collection does not issue (transport C(kubernetes), no C(cert_file) /
        C(key_file), or C(ca_rotation_nats_reload_renew_leaves) off) must no longer present a leaf of the distrusted
        intermediate before the bundle without it is delivered; until then the cluster fails, naming them, and the
        intermediate stays in the bundle.
    type: str
    choices: [deliver, renew, restore, distrust]
    default: deliver
requirements:
  - hvac
  - cryptography
  - kubernetes (for Secret delivery and the kubernetes transport)
  - nats-py (for the system transport)
'''

EXAMPLES = r'''
- name: Deliver, reload and prove
  securetransport.ca_rotation.rotation_cluster:
    phase: deliver
'''

RETURN = r'''
msg:
  description: The cluster's outcome.
  returned: always
  type: str
ansible_facts:
  description: The cluster's result, for activation and the run report.
  returned: always
  type: complex
  contains:
    ca_rotation_cluster_result:
      description:
        - C(ok), C(cluster), C(reloaded), C(sha256), C(epoch), C(servers) (per-server proof), C(error), C(rolled_back),
          C(renewed) (servers whose leaf was renewed), C(changed), C(timings) and C(module_calls) (host-local module calls).
      type: dict
      returned: always
'''

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rotation status report: gather facts everywhere, compare them, flag every mismatch (private).

Read-only by construction: nothing here writes, signals or reloads. Three steps, so that each part
runs where its credentials are (module ``rotation_status``, playbook ``status.yml``):

``gather.gather_authority``  OpenBao issuers (``epoch-<n>``, the default, expiry), the root, the rotation
                             state (``secret/ca-rotation/state``) and the per-cluster proof records, the KV
                             bundle of the state's epoch, the per-epoch Kubernetes Secret, and the latest
                             announcement on JetStream with its signature checked against the transit key.
``cluster.gather_cluster``   for one NATS cluster, every server's CA file (SHA-256 and modification time,
                             local or read with ``exec`` in the pod), its ``config_load_time`` (``/varz`` or
                             ``$SYS.REQ.SERVER.<id>.VARZ``), the certificate it serves (a TLS handshake on the
                             client port) and the live CA Secret.
``checks.build_report``      pure: compares the facts, returns findings (``mismatch`` or ``warning``), a
                             JSON document and a human table (``render``).

Gathering never raises for an unreachable service: the problem is recorded in the facts and becomes
a finding, so that the report is always produced.
"""

from __future__ import annotations

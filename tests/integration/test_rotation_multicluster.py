"""One rotate.yml run across two emulated Kubernetes clusters (live Secret, kubelet-like volume sync with
delay, exec SIGHUP in each pod) plus a VM-style group (files + signals), authority once, activation after all."""

from __future__ import annotations

import hashlib
import json
import textwrap
import time
from pathlib import Path

import pytest

from rotation_harness import RotationStack

from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import ClusterSet, EmulatedCluster, PodBackend

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi")
    rs = RotationStack(base, epoch_duration="6h", clusters=(("east", 3), ("west", 3), ("vm", 3)))
    by_name = {c["name"]: c for c in rs.info["clusters"]}
    east = EmulatedCluster(name="east", namespaces=["nats", "openbao"], secret_sync_delay=(1, 3),
                           pods=[PodBackend.from_localstack_server(s) for s in by_name["east"]["servers"]])
    west = EmulatedCluster(name="west", namespaces=["nats", "openbao"], secret_sync_delay=(1, 3),
                           pods=[PodBackend.from_localstack_server(s) for s in by_name["west"]["servers"]])
    with ClusterSet([east, west]) as clusters:
        (rs.inventory / "hosts.yml").write_text(textwrap.dedent(f"""\
            all:
              children:
                ca_authority:
                  hosts:
                    authority:
                      ca_rotation_authority_epoch_secret: true
                      ca_rotation_authority_kubernetes: {{kubeconfig: "{clusters.kubeconfig}", context: east}}
                      ca_rotation_authority_nats:
                        servers: "{{{{ ca_rotation_nats_clusters.vm.servers }}}}"
                        ca_file: "{{{{ ca_rotation_nats_client.ca_file }}}}"
                        cert_file: "{{{{ ca_rotation_nats_client.cert_file }}}}"
                        key_file: "{{{{ ca_rotation_nats_client.key_file }}}}"
                        user: "{{{{ ca_rotation_nats_announcer.user }}}}"
                        password_file: "{{{{ ca_rotation_nats_announcer.password_file }}}}"
                nats_clusters:
                  hosts:
                    east:
                      ca_rotation_nats_reload_transport: kubernetes
                      ca_rotation_nats_reload_kubernetes: {{kubeconfig: "{clusters.kubeconfig}", context: east}}
                    west:
                      ca_rotation_nats_reload_transport: kubernetes
                      ca_rotation_nats_reload_kubernetes: {{kubeconfig: "{clusters.kubeconfig}", context: west}}
                    vm:
                      ca_rotation_nats_reload_transport: signal
                      ca_rotation_nats_reload_targets: "{{{{ ca_rotation_nats_clusters.vm.members }}}}"
            """))
        yield rs, clusters
    rs.down()


def test_rotation_across_two_kubernetes_clusters_and_a_vm_group(world):
    rs, clusters = world
    run = rs.playbook("rotate.yml")
    assert run["rc"] == 0, run["stdout"][-4000:]
    report = run["report"]
    assert report["ok"] and set(report["clusters"]) == {"east", "west", "vm"}
    assert all(c["ok"] and c["reloaded"] for c in report["clusters"].values()), report["clusters"]
    assert report["activated_epoch"] == report["current_epoch"] or report["activated_epoch"] is None
    sha = report["bundle_sha256"]

    # every server of every cluster has the bundle where its ca_file points (pods: through the synced volume)
    for server in rs.servers:
        assert hashlib.sha256(Path(server["ca_file"]).read_bytes()).hexdigest() == sha, server["name"]
    for name in ("east", "west"):
        secret = clusters[name].core_api().read_namespaced_secret("nats-ca-tls", "nats")
        assert secret.metadata.annotations["rotation.watcher.io/sha256"] == sha
        # the emulated kubelet syncs the volume 1-3 s after the Secret changed (a rotation that found the bytes
        # already in place may be done before that): poll, bounded by the sync delay
        data = Path(clusters[name].pods[0].mounts["/etc/nats/ca"], "..data")
        deadline = time.monotonic() + 3 + 10
        while not data.is_symlink() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert data.is_symlink(), data
    epoch_secret = clusters["east"].core_api().read_namespaced_secret(f"nats-ca-bundle-epoch-{report['epoch']}", "openbao")
    assert epoch_secret.metadata.labels["epoch"] == str(report["epoch"])
    # the reload in each pod went through exec, after the volume had synced
    for name in ("east", "west"):
        signalled = {rec.pod for rec in clusters[name].exec_log if list(rec.command)[:1] == ["kill"]}
        assert signalled == {p.name for p in clusters[name].pods}, (name, signalled)
    # default issuer is the current epoch, trusted everywhere
    assert rs.default_issuer_epoch() == report["current_epoch"]

    again = rs.playbook("rotate.yml")
    assert again["rc"] == 0 and again["report"]["changed"] is False, json.dumps(again["report"])[:2000]

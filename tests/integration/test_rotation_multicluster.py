"""One rotate.yml run across two emulated Kubernetes clusters (live Secret, kubelet-like volume sync with
delay, exec SIGHUP in each pod) plus a VM-style group (files + signals), authority once, activation after all;
then distrust.yml across the same three clusters."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from rotation_harness import RotationStack

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import host_port
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import refusal
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
        kube = {"kubeconfig": str(clusters.kubeconfig)}
        rs.write_hosts({
            "east": {"ca_rotation_nats_reload_transport": "kubernetes",
                     "ca_rotation_nats_reload_kubernetes": dict(kube, context="east")},
            "west": {"ca_rotation_nats_reload_transport": "kubernetes",
                     "ca_rotation_nats_reload_kubernetes": dict(kube, context="west")},
            "vm": {"ca_rotation_nats_reload_transport": "signal",
                   "ca_rotation_nats_reload_targets": "{{ ca_rotation_nats_clusters.vm.members }}"},
        }, authority={
            "ca_rotation_authority_epoch_secret": True,
            "ca_rotation_authority_kubernetes": dict(kube, context="east"),
            "ca_rotation_authority_nats": {
                "servers": "{{ ca_rotation_nats_clusters.vm.servers }}",
                "ca_file": "{{ ca_rotation_nats_client.ca_file }}",
                "cert_file": "{{ ca_rotation_nats_client.cert_file }}",
                "key_file": "{{ ca_rotation_nats_client.key_file }}",
                "user": "{{ ca_rotation_nats_announcer.user }}",
                "password_file": "{{ ca_rotation_nats_announcer.password_file }}"}})
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


def _served(server: dict) -> x509.Certificate:
    host, port = host_port(server["url"])
    return refusal.served_certificate(host, port, client_context(verify=False))


def test_distrust_waits_for_leaves_it_does_not_issue_then_every_pod_and_vm_refuses_it(world, tmp_path):
    """distrust.yml on the Kubernetes path: the pods' leaves come from elsewhere (cert-manager in a real cluster), so
    the distrusted intermediate stays in the bundle - and the run fails, naming the pods - until they are re-issued;
    the re-run then takes it out of both live Secrets and proves every pod (client and route port) and VM refuses it."""
    rs, clusters = world
    assert rs.playbook("rotate.yml")["rc"] == 0
    n = rs.default_issuer_epoch()
    client, mount = rs.bao(), rs.info["pki"]["int_mount"]
    names = {meta["issuer_name"]: issuer_id for issuer_id, meta in client.list(f"{mount}/issuers")["data"]["key_info"].items()}
    distrusted = x509.load_pem_x509_certificate(
        client.read(f"{mount}/issuer/{names[f'epoch-{n}']}")["data"]["certificate"].encode())
    sha = distrusted.fingerprint(hashes.SHA256()).hex()
    by_cluster = {c["name"]: c["servers"] for c in rs.info["clusters"]}
    pods = by_cluster["east"] + by_cluster["west"]
    extra = {"ca_rotation_distrust_epoch": n, "ca_rotation_distrust_force_intermediates_only": True,
             "ca_rotation_nats_reload_renew_leaves": True}  # the VM group's leaves are the collection's; the pods' are not

    first = rs.playbook("distrust.yml", extra_vars=extra)
    assert first["rc"] != 0, first["stdout"][-4000:]
    report = first["report"]
    assert report["distrust"]["stage"] == "replacing" and "Re-run playbooks/distrust.yml" in report["distrust"]["error"]
    assert report["clusters"]["vm"]["ok"], report["clusters"]["vm"]
    for name in ("east", "west"):
        error = report["clusters"][name]["error"]
        assert not report["clusters"][name]["ok"] and "re-issue them from the default issuer epoch-%d-r1" % n in error, error
        assert all(s["name"] in error for s in by_cluster[name]), error
    assert rs.default_issuer_epoch() == n  # the replacement epoch-<n>-r1 stands for the epoch
    state = client.secrets.kv.v2.read_secret_version(path="ca-rotation/state", mount_point="secret",
                                                     raise_on_deleted_version=True)["data"]["data"]
    assert state["distrust_pending"]["epoch"] == n
    for server in rs.servers:  # trust kept everywhere: the pods' leaves still need it
        shas = {c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(Path(server["ca_file"]).read_bytes())}
        assert sha in shas, server["name"]
    for server in by_cluster["vm"]:
        assert "replacement 1" in _served(server).issuer.rfc4514_string(), server["name"]

    # what cert-manager and a config reloader do in a real cluster: a new leaf from the default issuer, then a reload
    for server in pods:
        rs.stack.issue_leaf(server["name"], Path(server["cert_file"]), Path(server["key_file"]))
        os.kill(int(Path(server["pid_file"]).read_text().strip()), signal.SIGHUP)
    deadline = time.monotonic() + 30
    while not all("replacement 1" in _served(s).issuer.rfc4514_string() for s in pods):
        assert time.monotonic() < deadline, "the pods did not load their new leaves"
        time.sleep(0.2)

    run = rs.playbook("distrust.yml", extra_vars=extra)
    assert run["rc"] == 0, run["stdout"][-4000:]
    report = run["report"]
    assert report["ok"] and report["distrust"]["stage"] == "complete", report["distrust"]
    # the re-run finished the pending distrust with its first replacement: none was issued again
    listed = {meta["issuer_name"] for meta in client.list(f"{mount}/issuers")["data"]["key_info"].values()}
    assert f"epoch-{n}-r1" in listed and f"epoch-{n}-r2" not in listed, sorted(listed)
    assert report["distrust"]["replacement"] == f"epoch-{n}-r1", report["distrust"]
    for name, servers in by_cluster.items():
        proof = report["clusters"][name]["distrust_proof"]
        assert proof["ok"] and {(s["name"], s["port"]) for s in proof["servers"]} == {
            (s["name"], port) for s in servers for port in ("client", "route")}, proof
    for name in ("east", "west"):
        secret = clusters[name].core_api().read_namespaced_secret("nats-ca-tls", "nats")
        held = x509.load_pem_x509_certificates(base64.b64decode(secret.data["ca.crt"]))
        assert sha not in {c.fingerprint(hashes.SHA256()).hex() for c in held}, name
    leaf = rs.issue_client_leaf(tmp_path / "replacement", f"epoch-{n}-r1")
    assert {rs.handshake(*leaf, server)[0] for server in rs.servers} == {True}

    again = rs.playbook("rotate.yml", extra_vars={"ca_rotation_nats_reload_renew_leaves": True})
    assert again["rc"] == 0 and again["report"]["changed"] is False, json.dumps(again["report"])[:2000]


def _state(rs) -> dict:
    return rs.bao().secrets.kv.v2.read_secret_version(path="ca-rotation/state", mount_point="secret",
                                                      raise_on_deleted_version=True)["data"]["data"]


def _ca_shas(server: dict) -> set[str]:
    return {c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(Path(server["ca_file"]).read_bytes())}


def _issuer_subject(rs, name: str) -> x509.Name:
    mount = rs.info["pki"]["int_mount"]
    return x509.load_pem_x509_certificate(rs.bao().read(f"{mount}/issuer/{name}")["data"]["certificate"].encode()).subject


def _reload_leaf(rs, server: dict, issuer_ref: str) -> None:
    """What cert-manager and a config reloader do: a new leaf from ``issuer_ref``, then a reload."""
    rs.stack.issue_leaf(server["name"], Path(server["cert_file"]), Path(server["key_file"]), issuer_ref=issuer_ref)
    os.kill(int(Path(server["pid_file"]).read_text().strip()), signal.SIGHUP)
    want, deadline = _issuer_subject(rs, issuer_ref), time.monotonic() + 30
    while _served(server).issuer != want:
        assert time.monotonic() < deadline, f"{server['name']} did not load its new leaf"
        time.sleep(0.2)


def test_distrusting_an_epoch_that_is_not_the_default_keeps_it_while_a_pod_still_presents_a_leaf_of_it(world, tmp_path):
    """The previous epoch is not the default issuer, yet a pod presents a leaf of it (issued elsewhere): its first pass
    keeps it in every bundle, activates nothing and fails naming the pod; once that pod has a leaf of the default, the
    re-run takes it out everywhere and proves the refusal."""
    rs, clusters = world
    rs.stack.issue_intermediate(rs.default_issuer_epoch() - 1)  # the previous epoch, still valid (a run left it)
    assert rs.playbook("rotate.yml")["rc"] == 0
    client, mount = rs.bao(), rs.info["pki"]["int_mount"]
    listed = {meta["issuer_name"]: (issuer_id, meta) for issuer_id, meta in client.list(f"{mount}/issuers")["data"]["key_info"].items()}
    default = next(name for name, (_id, meta) in listed.items() if meta.get("is_default"))
    epoch = rs.default_issuer_epoch() - 1
    target = f"epoch-{epoch}"
    assert target in listed and not client.read(f"{mount}/issuer/{listed[target][0]}")["data"].get("revoked"), sorted(listed)
    sha = x509.load_pem_x509_certificate(client.read(f"{mount}/issuer/{listed[target][0]}")["data"]["certificate"].encode()
                                         ).fingerprint(hashes.SHA256()).hex()
    pod = next(c["servers"] for c in rs.info["clusters"] if c["name"] == "west")[0]
    _reload_leaf(rs, pod, target)
    extra = {"ca_rotation_distrust_epoch": epoch, "ca_rotation_distrust_force_intermediates_only": True,
             "ca_rotation_nats_reload_renew_leaves": True}

    first = rs.playbook("distrust.yml", extra_vars=extra)
    assert first["rc"] != 0, first["stdout"][-4000:]
    report = first["report"]
    assert report["distrust"]["stage"] == "replacing" and report["distrust"]["activate"] is None, report["distrust"]
    error = report["clusters"]["west"]["error"]
    assert pod["name"] in error and f"re-issue them from the default issuer {default}" in error, error
    assert f"-e ca_rotation_distrust_epoch={epoch}" in error, error
    assert report["clusters"]["east"]["ok"] and report["clusters"]["vm"]["ok"], report["clusters"]
    issuers = {meta["issuer_name"]: meta for meta in client.list(f"{mount}/issuers")["data"]["key_info"].values()}
    assert issuers[default]["is_default"] and f"epoch-{epoch}-r1" not in issuers, issuers  # nothing replaced, nothing activated
    assert _state(rs)["distrust_pending"]["epoch"] == epoch
    assert len(rs.servers) == 9 and all(sha in _ca_shas(server) for server in rs.servers)  # the pod's leaf verifies
    # while it is pending, neither rotate.yml nor a distrust of another epoch goes ahead
    refused = rs.playbook("distrust.yml", extra_vars=dict(extra, ca_rotation_distrust_epoch=rs.default_issuer_epoch()))
    assert refused["rc"] != 0 and f"finish it first with playbooks/distrust.yml -e ca_rotation_distrust_epoch={epoch}" in \
        refused["report"]["msg"], refused["report"]["msg"]
    blocked = rs.playbook("rotate.yml")
    assert blocked["rc"] != 0 and f"The distrust of epoch {epoch} (issuer {target}" in blocked["report"]["msg"], \
        blocked["report"]["msg"]
    assert "the distrusted intermediate stays in the bundle" in blocked["report"]["msg"], blocked["report"]["msg"]

    _reload_leaf(rs, pod, default)
    run = rs.playbook("distrust.yml", extra_vars=extra)
    assert run["rc"] == 0, run["stdout"][-4000:]
    assert run["report"]["distrust"]["stage"] == "complete", run["report"]["distrust"]
    assert "distrust_pending" not in _state(rs) or not _state(rs)["distrust_pending"]
    assert all(run["report"]["clusters"][c]["distrust_proof"]["ok"] for c in ("east", "west", "vm"))
    assert not any(sha in _ca_shas(server) for server in rs.servers)
    for name in ("east", "west"):
        secret = clusters[name].core_api().read_namespaced_secret("nats-ca-tls", "nats")
        held = x509.load_pem_x509_certificates(base64.b64decode(secret.data["ca.crt"]))
        assert sha not in {c.fingerprint(hashes.SHA256()).hex() for c in held}, name
    leaf = rs.issue_client_leaf(tmp_path / "default", default)
    assert {rs.handshake(*leaf, server)[0] for server in rs.servers} == {True}
    again = rs.playbook("rotate.yml", extra_vars={"ca_rotation_nats_reload_renew_leaves": True})
    assert again["rc"] == 0 and again["report"]["changed"] is False, json.dumps(again["report"])[:2000]

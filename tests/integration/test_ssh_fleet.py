"""rotate.yml over a real SSH fleet (scripts/localstack up --vms): each VM a real sshd on its own loopback address
with its own unprivileged user that becomes root with sudo, one nats-server each; in one run with an emulated
Kubernetes cluster and the local group. The bundle is written, the server signalled and its /varz read on the VM
(module nats_host_step over SSH), the trust proven from the controller; leaf keys are made on the VM and only their
CSRs signed by OpenBao; a VM whose sshd is stopped is reported by name and the next run converges."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from catools.procs import http_json
from catools.vmfleet import SSHD, VmFleet
from rotation_harness import RotationStack

from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import ClusterSet, EmulatedCluster, PodBackend

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(600),
    pytest.mark.skipif(not os.access(SSHD, os.X_OK), reason=f"openssh-server is not installed ({SSHD} missing); .ci/run "
                       "installs it (apt-get install openssh-server sudo)"),
]

VMS = 3
CLUSTER = "fleet"  # the VMs' servers are one NATS cluster (the fleet's ca_rotation_cluster_name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("sshfleet")
    rs = RotationStack(base, epoch_duration="6h", clusters=(("local", 3), ("kube", 1)))
    try:
        fleet = VmFleet(rs.stack, VMS)
        fleet.up()
        fleet.write_inventory(rs.inventory / "vmfleet.yml")
        kube = EmulatedCluster(name="kube", namespaces=["nats", "openbao"],
                               pods=[PodBackend.from_localstack_server(s) for s in rs.info["clusters"][1]["servers"]])
        with ClusterSet([kube]) as clusters:
            rs.write_hosts({
                "local": {"ca_rotation_nats_reload_transport": "signal",
                          "ca_rotation_nats_reload_targets": "{{ ca_rotation_nats_clusters.local.members }}",
                          "ca_rotation_nats_reload_renew_leaves": True},
                "kube": {"ca_rotation_nats_reload_transport": "kubernetes",
                         "ca_rotation_nats_reload_kubernetes": {"kubeconfig": str(clusters.kubeconfig), "context": "kube"}}})
            yield rs, fleet, clusters
    finally:
        rs.down()


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _public(path) -> bytes:
    text = Path(path).read_bytes()
    if b"PRIVATE KEY" in text:
        key = serialization.load_pem_private_key(text, password=None).public_key()
    else:
        key = x509.load_pem_x509_certificate(text).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class Recorder:
    """A TCP relay in front of OpenBao (plain HTTP on loopback) that keeps the bytes both ways."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.sent, self.received = b"", b""
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def paths(self) -> list[str]:
        return [m.decode() for m in re.findall(rb"(?:GET|POST|PUT|LIST|DELETE) (\S+) HTTP/1", self.sent)]

    def _pipe(self, src, dst, outgoing: bool):
        try:
            while data := src.recv(65536):
                with self._lock:
                    if outgoing:
                        self.sent += data
                    else:
                        self.received += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self):
        while True:
            try:
                client, _addr = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            for args in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pipe, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def __enter__(self) -> "Recorder":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self._server.close()
        for thread in self._threads:
            thread.join(timeout=5)


def fleet_varz(vm: dict) -> dict:
    status, body = http_json(f"http://{vm['address']}:{vm['monitor_port']}/varz")
    assert status == 200, body
    return body


def _recap(stdout: str) -> dict:
    return {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in re.finditer(r"^(\S+)\s+: (ok=.*)$", stdout, re.M)}


def _fail(run) -> str:
    return run["stdout"][-4000:] + run["stderr"][-2000:]


def test_a_vm_is_reached_over_ssh_as_an_unprivileged_user_who_needs_become_for_the_ca_directory(world):
    _rs, fleet, _clusters = world
    for vm in fleet.vms:
        who = fleet.ssh(vm["name"], f"id -u; test -w {vm['ca_dir']} && echo writable || echo read-only")
        assert who.returncode == 0, who.stderr
        uid, access = who.stdout.split()
        assert uid != "0" and access == "read-only", who.stdout
        become = fleet.ssh(vm["name"], f"sudo -n id -u && sudo -n test -w {vm['ca_dir']} && echo writable")
        assert become.returncode == 0 and become.stdout.split() == ["0", "writable"], become.stdout + become.stderr
        assert os.stat(vm["ca_file"]).st_uid == 0 and os.stat(vm["key_file"]).st_mode & 0o077 == 0
    # the fleet's key is the only way in: another key is refused
    other = fleet.dir / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, capture_output=True)
    vm = fleet.vms[0]
    denied = subprocess.run(["ssh", "-i", str(other), "-p", str(vm["ssh_port"]), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                             "-o", f"UserKnownHostsFile={fleet.info['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
                             "-o", "ControlMaster=no", f"{vm['user']}@{vm['address']}", "true"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert denied.returncode == 255 and "Permission denied" in denied.stderr, denied.stderr


def test_an_unreachable_vm_is_reported_by_name_and_the_next_run_converges(world):
    rs, fleet, _clusters = world
    down = fleet.vms[2]
    before = _sha(down["ca_file"])
    assert fleet.stop_sshd(down["name"])
    try:
        run = rs.playbook("rotate.yml")
    finally:
        fleet.start_sshd(down["name"])
    assert run["rc"] != 0, "a VM that did not report fails the run (every server of the cluster must prove by default)"
    # the cluster step catches the failed connection: the VM's result names it and why, the run fails with its name
    assert f"Cluster {CLUSTER} (host {down['name']}) FAILED" in run["stdout"], _fail(run)
    report = run["report"]
    assert report["ok"] is False and f"cluster(s) {CLUSTER}: host {down['name']}:" in report["msg"], report["msg"]
    fleet_result = report["clusters"][CLUSTER]
    error = fleet_result["hosts"][down["name"]]["error"]
    assert fleet_result["ok"] is False and "Connection refused" in error and down["address"] in error, error
    assert report["activated_epoch"] is None, "not every server of the fleet proved the bundle"
    sha = report["bundle_sha256"]
    for name in ("local", "kube"):
        assert report["clusters"][name]["ok"], (name, report["clusters"][name])
    for vm in fleet.vms[:2]:  # no VM had proven a bundle yet: each reachable one reloads and proves it
        assert fleet_result["hosts"][vm["name"]]["ok"] and fleet_result["hosts"][vm["name"]]["reloaded"], fleet_result
    assert _sha(down["ca_file"]) == before
    loaded = fleet_varz(down)["config_load_time"]

    again = rs.playbook("rotate.yml")
    assert again["rc"] == 0, _fail(again)
    report = again["report"]
    assert report["ok"] and report["bundle_sha256"] == sha
    assert rs.default_issuer_epoch() == report["current_epoch"]
    assert {_sha(vm["ca_file"]) for vm in fleet.vms} == {sha}
    assert {_sha(s["ca_file"]) for s in rs.servers} == {sha}
    # only what was missing: the VM that was down reloads and proves; the others had proven this bundle
    fleet_result = report["clusters"][CLUSTER]
    assert [fleet_result["hosts"][vm["name"]]["reloaded"] for vm in fleet.vms] == [False, False, True], fleet_result
    assert fleet_varz(down)["config_load_time"] != loaded
    assert fleet_result["ok"] and fleet_result["proven_servers"] == VMS and fleet_result["module_calls"] >= 2 * VMS, fleet_result
    (server,) = [s for s in fleet_result["servers"] if s["host"] == down["name"]]
    # SIGHUP on the VM, its /varz read there (config_load_time advanced), the trust probe from the controller
    assert server["ok"] and server["probe_ok"] and server["load_time_after"] > server["load_time_before"], server
    assert "Reloaded server configuration" in Path(down["log_file"]).read_text()


def test_a_run_with_nothing_due_changes_nothing_anywhere(world):
    rs, fleet, _clusters = world
    run = rs.playbook("rotate.yml")
    assert run["rc"] == 0, _fail(run)
    assert run["report"]["changed"] is False, json.dumps(run["report"])[:2000]
    recap = _recap(run["stdout"])
    assert set(recap) == {"authority", "local", "kube"} | {vm["name"] for vm in fleet.vms}, recap
    assert all(r["changed"] == 0 and r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values()), recap
    # per VM: one look at its leaves and one deliver_reload (nothing written, nothing reloaded); the leaf phase reuses
    # the look, the issuers being unchanged
    assert run["report"]["clusters"][CLUSTER]["module_calls"] == 2 * VMS, run["report"]["clusters"][CLUSTER]


def test_leaf_keys_are_made_on_the_vm_and_only_their_csrs_are_signed(world):
    rs, fleet, _clusters = world
    keys = {vm["name"]: _public(vm["key_file"]) for vm in fleet.vms}
    bao = rs.info["openbao"]
    with Recorder(bao["port"]) as wire:
        run = rs.playbook("rotate.yml", extra_vars={
            "ca_rotation_nats_reload_leaf_renew_before": "30d",
            "ca_rotation_openbao": {"url": f"http://127.0.0.1:{wire.port}", "token_file": bao["token_file"]}})
    assert run["rc"] == 0, _fail(run)
    assert run["report"]["clusters"][CLUSTER]["renewed"] == sorted(vm["name"] for vm in fleet.vms), run["report"]["clusters"]
    for vm in fleet.vms:
        assert _public(vm["key_file"]) != keys[vm["name"]], "a new key"
        assert _public(vm["key_file"]) == _public(vm["cert_file"]), "the certificate is of the key made on the VM"
        assert not Path(vm["key_file"] + ".pending").exists()
        assert os.stat(vm["key_file"]).st_uid == 0 and oct(os.stat(vm["key_file"]).st_mode & 0o777) == "0o600"
        cert = x509.load_pem_x509_certificate(Path(vm["cert_file"]).read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {vm["name"]}
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [vm["address"]], "the VM's own address"
        # the server was reloaded with it: a client of the active issuer is accepted at the VM's address
        ok, detail = rs.handshake(*rs.issue_client_leaf(rs.base / f"c-{vm['name']}"), {"url": f"tls://{vm['address']}:{vm['client_port']}"})
        assert ok, detail
    # what went to OpenBao and came back: sign requests (a CSR in, a certificate out), no issue request (whose
    # answer holds a private key), no private key on the wire
    signed = [p for p in wire.paths if re.search(r"/sign/[^/?]+$", p)]
    assert len(signed) >= VMS + 3, wire.paths  # three VMs and the three local servers
    assert not [p for p in wire.paths if "/issue/" in p], wire.paths
    assert b"PRIVATE KEY" not in wire.received and b"private_key" not in wire.received
    assert b"PRIVATE KEY" not in wire.sent

    again = rs.playbook("rotate.yml")
    assert again["rc"] == 0 and again["report"]["changed"] is False, _fail(again)
    assert again["report"]["clusters"][CLUSTER]["renewed"] == [], again["report"]["clusters"]


def test_min_success_decides_when_a_vm_is_unreachable_and_the_next_run_converges(world, tmp_path):
    """With ca_rotation_nats_reload_min_success 2 on the fleet, a new bundle proven by two of its three VMs counts
    for the cluster: the run succeeds and says which VM did not prove it; the next run, with the VM back, delivers it
    there and reloads only that one. (The new bundle: the root left out, ca_rotation_authority_include_root false.)"""
    rs, fleet, _clusters = world
    inventory = yaml.safe_load((rs.inventory / "vmfleet.yml").read_text())
    for host in inventory["all"]["children"]["nats_clusters"]["children"][fleet.info["group"]]["hosts"].values():
        host["ca_rotation_nats_reload_min_success"] = VMS - 1
    (rs.inventory / "vmfleet.yml").write_text(yaml.safe_dump(inventory))
    extra = {"ca_rotation_authority_include_root": False}
    down = fleet.vms[1]
    before = _sha(down["ca_file"])
    assert fleet.stop_sshd(down["name"])
    try:
        run = rs.playbook("rotate.yml", extra_vars=extra)
    finally:
        fleet.start_sshd(down["name"])
    assert run["rc"] == 0, _fail(run)
    report = run["report"]
    fleet_result = report["clusters"][CLUSTER]
    assert report["ok"] and fleet_result["ok"] and fleet_result["proven_servers"] == VMS - 1, fleet_result
    assert fleet_result["min_success"] == VMS - 1 and f"host {down['name']}:" in fleet_result["degraded"], fleet_result
    assert "Connection refused" in fleet_result["hosts"][down["name"]]["error"], fleet_result
    sha = report["bundle_sha256"]
    assert _sha(down["ca_file"]) == before != sha
    assert {_sha(vm["ca_file"]) for vm in fleet.vms if vm is not down} == {sha}
    record = rs.bao().secrets.kv.v2.read_secret_version(path=f"ca-rotation/clusters/{CLUSTER}", mount_point="secret",
                                                        raise_on_deleted_version=True)["data"]["data"]
    assert record["sha256"] == sha and record["hosts"] == sorted(vm["name"] for vm in fleet.vms if vm is not down), record

    again = rs.playbook("rotate.yml", extra_vars=extra)
    assert again["rc"] == 0, _fail(again)
    fleet_result = again["report"]["clusters"][CLUSTER]
    assert {_sha(vm["ca_file"]) for vm in fleet.vms} == {sha}
    assert [fleet_result["hosts"][vm["name"]]["reloaded"] for vm in fleet.vms] == [False, True, False], fleet_result
    assert fleet_result["proven_servers"] == VMS and "degraded" not in fleet_result, fleet_result

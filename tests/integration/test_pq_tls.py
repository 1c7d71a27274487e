"""ML-DSA over TLS against a real nats-server (2.15.1 serves and verifies ML-DSA-65, DESIGN section 10) with a
certificate chain from a real OpenBao: the reload probe and the distrust proof use pyOpenSSL over cryptography's
OpenSSL for an ML-DSA certificate, where Python's ssl cannot even complete the handshake."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.request
import uuid
from pathlib import Path

import nats
import pytest
from helpers import write_text
from catools.procs import find_binary, free_port, spawn, stop_process, wait_for
from cryptography import x509

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import pqtls
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context, peer_certificate
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.intermediate import ensure_epoch_intermediate
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import issue_leaf
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.probe import probe_context, tls_probe
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import refusal

pytestmark = pytest.mark.timeout(300)
SCHED = EpochSchedule.from_params({"epoch_duration": "1h", "skew_allowance": "5m"})


@pytest.fixture(scope="module")
def pq_world(bao_client, tmp_path_factory):
    """An ML-DSA-65 root and epoch intermediate in OpenBao, a second ML-DSA CA nobody trusts, a server, a client and a
    stranger leaf, and a nats-server requiring client certificates from the bundle."""
    base = tmp_path_factory.mktemp("pq")
    client, suffix = bao_client, uuid.uuid4().hex[:8]
    mounts = {k: f"pki_pq{k}_{suffix}" for k in ("root", "int", "other")}
    for mount in mounts.values():
        client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    for key in ("root", "other"):
        client.write_data(f"{mounts[key]}/root/generate/internal", data={
            "common_name": f"PQ {key}", "key_type": "mldsa", "key_bits": 65, "ttl": "87600h", "issuer_name": "root"})
    n = SCHED.epoch(utcnow())
    inter = ensure_epoch_intermediate(client, SCHED, n, root_mount=mounts["root"], int_mount=mounts["int"], key_type="mldsa",
                                      key_bits=65)
    role = {"allow_any_name": True, "allow_ip_sans": True, "enforce_hostnames": False, "server_flag": True,
            "client_flag": True, "key_type": "any", "ttl": "1h", "max_ttl": "200h", "no_store": True}
    client.write_data(f"{mounts['int']}/roles/leaf", data=role)
    client.write_data(f"{mounts['other']}/roles/leaf", data=role)
    files = {"ca": write_text(base / "ca.pem", inter["certificate"] + "\n" + inter["root_certificate"])}
    for name, mount, key_type, bits in (("server", "int", "mldsa", 65), ("client", "int", "mldsa", 65),
                                        ("stranger", "other", "mldsa", 65), ("classical", "int", "ec", 256)):
        leaf = issue_leaf(client, int_mount=mounts[name == "stranger" and "other" or mount], role="leaf",
                          common_name=f"pq-{name}", alt_names=["localhost"], ip_sans=["127.0.0.1"], local_key=True,
                          key_type=key_type, key_bits=bits)
        files[name] = write_text(base / f"{name}.pem", leaf["certificate"] + "\n" + leaf["issuing_ca"])
        files[name + "_leaf"] = write_text(base / f"{name}-leaf.pem", leaf["certificate"])
        files[name + "_key"] = write_text(base / f"{name}-key.pem", leaf["private_key"], 0o600)
    port, leaf_port, monitor_port = free_port(), free_port(), free_port()
    conf = base / "nats.conf"
    tls = f"""tls {{ cert_file: "{files['server']}", key_file: "{files['server_key']}", ca_file: "{files['ca']}", verify: true, timeout: 3 }}"""
    conf.write_text(f"""listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor_port}
{tls}
leafnodes {{ listen: 127.0.0.1:{leaf_port}, {tls} }}
""")
    proc = spawn([find_binary("nats-server"), "-c", str(conf)], base / "nats.log")
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 20, "nats-server (ML-DSA)")
        yield {"port": port, "leaf_port": leaf_port, "monitor_port": monitor_port, "files": files, "inter": inter,
               "base": base}
    finally:
        stop_process(proc.pid, "nats-server")
        for mount in mounts.values():
            client.sys.disable_secrets_engine(mount)


def _probe(files, cert, **extra):
    return probe_context(dict({"cert_file": files[cert], "key_file": files[cert + "_key"], "ca_file": files["ca"]}, **extra))


def test_the_probe_proves_trust_with_an_ml_dsa_client_certificate(pq_world):
    files, port = pq_world["files"], pq_world["port"]
    ctx = _probe(files, "client", server_name="localhost")
    assert isinstance(ctx, pqtls.PQContext)
    ok, detail = tls_probe("127.0.0.1", port, ctx, "localhost", 10.0)
    assert ok and detail.startswith("TLSv1.3 accepted by") and "PONG" in detail, detail
    # a leaf of an ML-DSA CA outside the bundle is refused by the server
    ok, detail = tls_probe("127.0.0.1", port, _probe(files, "stranger"), None, 10.0)
    assert not ok and "rejected the probe certificate" in detail and "unknown ca" in detail, detail
    # our side verifies the server: its name, and its chain against the bundle
    ok, detail = tls_probe("127.0.0.1", port, _probe(files, "client", server_name="nats.example"), "nats.example", 10.0)
    assert not ok and "does not verify against probe.ca_file" in detail and "nats.example" in detail, detail
    wrong_ca = probe_context({"cert_file": files["client"], "key_file": files["client_key"], "ca_file": files["stranger_leaf"]})
    ok, detail = tls_probe("127.0.0.1", port, wrong_ca, None, 10.0)
    assert not ok and "does not verify against probe.ca_file" in detail, detail
    assert "unable to get local issuer certificate (depth 1, CN=NATS Intermediate CA Epoch" in detail, detail  # OpenSSL's


def test_pythons_ssl_cannot_speak_to_the_ml_dsa_server(pq_world):
    """Why the pyOpenSSL path exists: the system OpenSSL behind ssl fails the handshake (the fact is checked here)."""
    ctx = client_context(ca_file=pq_world["files"]["ca"], check_hostname=False)
    with pytest.raises(TLSError) as info:
        peer_certificate("127.0.0.1", pq_world["port"], ctx, None, 10.0)
    assert info.value.stage in ("handshake", "verify"), info.value
    assert isinstance(info.value.error, ssl.SSLError)


def test_the_served_ml_dsa_certificate_is_read_and_an_ml_dsa_witness_is_refused(pq_world):
    files, port = pq_world["files"], pq_world["port"]
    der, version = peer_certificate("127.0.0.1", port, pqtls.PQContext(verify=False), None, 10.0)
    served = x509.load_der_x509_certificate(der)
    assert version == "TLSv1.3" and pqtls.certificate_family(served) == "mldsa" and len(der) > 5000
    assert served.subject.rfc4514_string() == "CN=pq-server"
    witness = {"leaf_file": files["stranger_leaf"], "chain_file": files["stranger"], "key_file": files["stranger_key"]}
    proof = refusal.prove_refused([{"name": "pq-0", "url": f"nats://127.0.0.1:{port}"}], witness, ca_file=files["ca"])
    assert proof["ok"] and proof["servers"][0]["leaf_only"] == proof["servers"][0]["with_intermediate"] == "refused", proof
    # and a witness the server does trust is seen as accepted: the proof can fail
    trusted = {"leaf_file": files["client_leaf"], "chain_file": files["client"], "key_file": files["client_key"]}
    proof = refusal.prove_refused([{"name": "pq-0", "url": f"nats://127.0.0.1:{port}"}], trusted, ca_file=files["ca"])
    assert not proof["ok"] and proof["accepted"], proof


def _self_signed_ec(tmp_path):
    import datetime as dt  # pylint: disable=import-outside-toplevel

    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "classical")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / "ec.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ec-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    return str(tmp_path / "ec.pem"), str(tmp_path / "ec-key.pem")


def test_the_family_of_the_whole_chain_picks_the_tls_stack_and_bad_files_name_the_option(pq_world, tmp_path):
    files, port = pq_world["files"], pq_world["port"]
    cert, key = _self_signed_ec(tmp_path)
    assert isinstance(probe_context({"cert_file": cert, "key_file": key}), ssl.SSLContext)
    assert pqtls.file_family(cert) == "classical" and pqtls.file_family(files["client"]) == "mldsa"
    # an EC leaf signed by the ML-DSA intermediate does not even load into Python's ssl (CA_MD_TOO_WEAK): the chain
    # makes it an ML-DSA matter, and the server (Go) accepts it
    assert pqtls.file_family(files["classical"]) == "mldsa"
    with pytest.raises(TLSError):
        client_context(cert_file=files["classical"], key_file=files["classical_key"], verify=False)
    ok, detail = tls_probe("127.0.0.1", port, _probe(files, "classical"), None, 10.0)
    assert ok and "PONG" in detail, detail
    broken = tmp_path / "key.pem"
    broken.write_text(Path(files["stranger_key"]).read_text())  # a key that is not the certificate's
    with pytest.raises(ReloadError) as info:
        probe_context({"cert_file": files["client"], "key_file": str(broken), "ca_file": files["ca"]})
    assert info.value.option == "probe.key_file" and "is not the key of certificate" in str(info.value), info.value
    with pytest.raises(ReloadError) as info:
        probe_context({"cert_file": files["client"], "key_file": str(tmp_path / "missing-key.pem"), "ca_file": files["ca"]})
    assert info.value.option == "probe.key_file" and "missing-key.pem" in str(info.value), info.value


class _Cluster:
    def __init__(self, targets):
        self.targets, self.transport, self.renew_leaves, self.name = targets, "signal", False, "pq"


def test_status_and_the_served_leaf_check_read_an_ml_dsa_server(pq_world):
    """Python's ssl fails the handshake (see above): the reader retries through pyOpenSSL and sees the ML-DSA leaf."""
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status import cluster as status_cluster
    files, port = pq_world["files"], pq_world["port"]
    facts = status_cluster.served_certificate("127.0.0.1", port, timeout=10)
    assert facts["subject"] == "CN=pq-server" and facts["tls_version"] == "TLSv1.3", facts
    found = refusal.still_served(_Cluster([{"name": "pq-0", "url": f"nats://127.0.0.1:{port}"}]),
                                 pq_world["inter"]["certificate"],
                                 {"cert_file": files["client"], "key_file": files["client_key"]})
    assert found == {"signed": ["pq-0"], "errors": []}, found
    # another intermediate did not sign it
    other = Path(files["stranger"]).read_text().split("-----END CERTIFICATE-----")[1] + "-----END CERTIFICATE-----\n"
    found = refusal.still_served(_Cluster([{"name": "pq-0", "url": f"nats://127.0.0.1:{port}"}]), other.strip() + "\n",
                                 {"cert_file": files["client"], "key_file": files["client_key"]})
    assert found == {"signed": [], "errors": []}, found


def _leafnode(base: Path, name: str, hub_port: int, files: dict, cert: str):
    """A second nats-server as a Go leafnode client of the ML-DSA hub: it presents ``cert`` over TLS 1.3 and serves
    local clients on a plain loopback port (the PQ-only pattern: classical local clients, ML-DSA between servers)."""
    port = free_port()
    conf = base / f"{name}.conf"
    conf.write_text(f"""server_name: {name}
listen: 127.0.0.1:{port}
leafnodes {{ remotes: [ {{ url: "tls://127.0.0.1:{hub_port}",
  tls: {{ cert_file: "{files[cert]}", key_file: "{files[cert + '_key']}", ca_file: "{files['ca']}" }} }} ] }}
""")
    proc = spawn([find_binary("nats-server"), "-c", str(conf)], base / f"{name}.log")
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 20, f"nats-server {name}")
    return proc, port, base / f"{name}.log"


def _leafz(monitor_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/leafz", timeout=5) as resp:
        return json.load(resp)


def test_a_pq_only_deployment_carries_messages_between_go_leafnode_clients(pq_world):
    """ML-DSA servers only: two nats-servers connect as leafnodes with ML-DSA-65 client certificates, a message
    published on one reaches a subscriber on the other through the hub; a leafnode with a stranger ML-DSA leaf is
    refused by the hub."""
    files, base, monitor = pq_world["files"], pq_world["base"], pq_world["monitor_port"]
    procs = []
    try:
        for name, cert in (("leaf-a", "client"), ("leaf-b", "client"), ("leaf-x", "stranger")):
            procs.append(_leafnode(base, name, pq_world["leaf_port"], files, cert))

        def names():
            return sorted(leaf.get("name", "") for leaf in _leafz(monitor).get("leafs") or [])

        wait_for(lambda: names() == ["leaf-a", "leaf-b"], 30, "two ML-DSA leafnodes on the hub")
        # the stranger's leafnode is refused by the hub's certificate check (Go's client does not even send a leaf whose
        # issuer is not among the hub's acceptable CAs), and it keeps retrying
        wait_for(lambda: "TLS leafnode handshake error" in (base / "nats.log").read_text(), 30,
                 "the hub refusing the stranger leafnode")
        assert names() == ["leaf-a", "leaf-b"]

        async def crossing():
            sub_nc = await nats.connect(f"nats://127.0.0.1:{procs[1][1]}", allow_reconnect=False)
            pub_nc = await nats.connect(f"nats://127.0.0.1:{procs[0][1]}", allow_reconnect=False)
            try:
                sub = await sub_nc.subscribe("pq.hello")
                await sub_nc.flush()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # until the subscription's interest has reached leaf-a
                    await pub_nc.publish("pq.hello", b"over ML-DSA leafnodes")
                    await pub_nc.flush()
                    try:
                        return (await sub.next_msg(timeout=0.5)).data
                    except nats.errors.TimeoutError:
                        continue
                return None
            finally:
                await sub_nc.close()
                await pub_nc.close()

        assert asyncio.run(crossing()) == b"over ML-DSA leafnodes"
    finally:
        for proc, _port, _log in procs:
            stop_process(proc.pid, "nats-server leafnode")

"""A bundle of two key families from a real OpenBao (an EC P-256 root and an ML-DSA-65 root, each with its epoch
intermediates) in the CA file of a real nats-server: a classical client (nats-py over Python's ssl) and an ML-DSA
client (pyOpenSSL) are both accepted by one server; when the ML-DSA family is switched off and the server reloads,
the ML-DSA client is refused and the classical one keeps working."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import uuid

import nats
import pytest
from helpers import write_text
from catools.procs import find_binary, free_port, http_json, spawn, stop_process, wait_for

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import families as fam
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import family_counts
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.intermediate import ensure_epoch_intermediate
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import issue_leaf
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.probe import probe_context, tls_probe

pytestmark = pytest.mark.timeout(300)
SCHED = EpochSchedule.from_params({"epoch_duration": "1h", "skew_allowance": "5m"})
CHAIN = {"classical": ("ec", 256), "mldsa": ("mldsa", 65)}


@pytest.fixture(scope="module")
def dual(bao_client, tmp_path_factory):
    base = tmp_path_factory.mktemp("dual")
    client, suffix = bao_client, uuid.uuid4().hex[:8]
    mounts = {(family, kind): f"pki_dual_{family}_{kind}_{suffix}" for family in CHAIN for kind in ("root", "int")}
    for mount in mounts.values():
        client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    n = SCHED.epoch(utcnow())
    specs, files = {}, {}
    try:
        for family, (key_type, bits) in CHAIN.items():
            root = client.write_data(f"{mounts[family, 'root']}/root/generate/internal", data={
                "common_name": f"Dual {family} root", "key_type": key_type, "key_bits": bits, "ttl": "87600h",
                "issuer_name": "root"})["data"]["certificate"]
            inters = [ensure_epoch_intermediate(client, SCHED, e, root_mount=mounts[family, "root"],
                                                int_mount=mounts[family, "int"], key_type=key_type, key_bits=bits,
                                                cn_prefix=f"NATS {family} Intermediate CA")["certificate"] for e in (n, n + 1)]
            specs[family] = {"intermediates": inters, "root_pem": root}
            client.write_data(f"{mounts[family, 'int']}/roles/leaf", data={
                "allow_any_name": True, "allow_ip_sans": True, "enforce_hostnames": False, "server_flag": True,
                "client_flag": True, "key_type": "any", "ttl": "1h", "max_ttl": "200h", "no_store": True})
            names = ("server", "client") if family == "classical" else ("client",)
            for name in names:
                leaf = issue_leaf(client, int_mount=mounts[family, "int"], role="leaf", common_name=f"dual-{family}-{name}",
                                  alt_names=["localhost"], ip_sans=["127.0.0.1"], local_key=True, key_type=key_type,
                                  key_bits=bits)
                files[f"{family}_{name}"] = write_text(base / f"{family}-{name}.pem", leaf["certificate"] + "\n" + leaf["issuing_ca"])
                files[f"{family}_{name}_key"] = write_text(base / f"{family}-{name}-key.pem", leaf["private_key"], 0o600)
        bundle = fam.build_family_bundle(specs, SCHED, utcnow())
        ca_file = base / "ca.crt"
        ca_file.write_text(bundle["pem"])
        port, monitor = free_port(), free_port()
        conf = base / "nats.conf"
        conf.write_text(f"""listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor}
pid_file: "{base / 'nats.pid'}"
tls {{ cert_file: "{files['classical_server']}", key_file: "{files['classical_server_key']}", ca_file: "{ca_file}",
      verify: true, timeout: 3 }}
""")
        proc = spawn([find_binary("nats-server"), "-c", str(conf)], base / "nats.log")
        try:
            wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 20, "nats-server")
            yield {"port": port, "monitor": monitor, "files": files, "bundle": bundle, "specs": specs, "ca_file": ca_file,
                   "pid": proc.pid, "epoch": n, "pid_file": str(base / "nats.pid")}
        finally:
            stop_process(proc.pid, "nats-server")
    finally:
        for mount in mounts.values():
            client.sys.disable_secrets_engine(mount)


def _classical_connects(world) -> bool:
    files = world["files"]
    ctx = client_context(ca_file=str(world["ca_file"]), cert_file=files["classical_client"],
                         key_file=files["classical_client_key"])

    async def main():
        nc = await nats.connect(f"tls://127.0.0.1:{world['port']}", tls=ctx, tls_hostname="localhost",
                                allow_reconnect=False, connect_timeout=5)
        try:
            sub = await nc.subscribe("dual.hello")
            await nc.publish("dual.hello", b"classical")
            return (await sub.next_msg(timeout=5)).data == b"classical"
        finally:
            await nc.close()

    return asyncio.run(main())


def _mldsa_probe(world):
    files = world["files"]
    ctx = probe_context({"cert_file": files["mldsa_client"], "key_file": files["mldsa_client_key"],
                         "ca_file": str(world["ca_file"]), "server_name": "localhost"})
    return tls_probe("127.0.0.1", world["port"], ctx, "localhost", 10.0)


def _reload(world):
    before = http_json(f"http://127.0.0.1:{world['monitor']}/varz")[1]["config_load_time"]
    os.kill(world["pid"], signal.SIGHUP)
    wait_for(lambda: http_json(f"http://127.0.0.1:{world['monitor']}/varz")[1]["config_load_time"] != before, 20,
             "the nats-server reload")


def test_one_server_trusts_a_classical_and_an_ml_dsa_client_through_a_two_family_bundle(dual):
    bundle = dual["bundle"]
    assert bundle["counts"] == {"classical": 3, "mldsa": 3}, bundle["counts"]
    assert bundle["families"]["classical"]["epochs"] == bundle["families"]["mldsa"]["epochs"] == [dual["epoch"] + 1,
                                                                                                  dual["epoch"]]
    assert family_counts(pem_certificates(dual["ca_file"].read_text(), "ca.crt", strict=True)) == {"ec": 3, "mldsa": 3}
    assert _classical_connects(dual)  # Python's ssl (OpenSSL 3.0) skips the ML-DSA entries of the CA file
    ok, detail = _mldsa_probe(dual)
    assert ok and "PONG" in detail, detail


def test_switching_the_ml_dsa_family_off_drops_it_and_the_server_refuses_ml_dsa_clients(dual):
    assert _mldsa_probe(dual)[0]
    off = fam.family_bundle_from_pem(dual["ca_file"].read_text(), SCHED, utcnow(), enabled=("classical",))
    assert off["dropped_families"] == ["mldsa"] and off["counts"] == {"classical": 3}
    try:
        dual["ca_file"].write_text(off["pem"])
        _reload(dual)
        ok, detail = _mldsa_probe(dual)
        assert not ok and "rejected the probe certificate" in detail, detail
        assert _classical_connects(dual)
    finally:  # and back on: the same two-family bundle, byte for byte
        on = fam.build_family_bundle(dual["specs"], SCHED, utcnow())
        assert on["sha256"] == hashlib.sha256(dual["bundle"]["pem"].encode()).hexdigest() == dual["bundle"]["sha256"]
        dual["ca_file"].write_text(on["pem"])
        _reload(dual)
    ok, detail = _mldsa_probe(dual)
    assert ok, detail


def _sighup(run_module, world, specs=None, **extra):
    target = {"name": "dual-0", "pid_file": world["pid_file"], "ca_file": str(world["ca_file"]),
              "monitor_url": f"http://127.0.0.1:{world['monitor']}", "url": f"tls://127.0.0.1:{world['port']}"}
    files = world["files"]
    specs = specs or [{"cert_file": files[f"{family}_client"], "key_file": files[f"{family}_client_key"],
                       "ca_file": str(world["ca_file"]), "server_name": "localhost"} for family in ("classical", "mldsa")]
    return run_module("nats_sighup", {"transport": "signal", "targets": [target], "probes": specs,
                                      "expect_sha256": hashlib.sha256(world["ca_file"].read_bytes()).hexdigest(), **extra})


def test_nats_sighup_proves_each_family_with_its_own_probe(dual, run_module):
    """nats_sighup's probes: one client certificate per key family, each of which every server must accept."""
    both = _sighup(run_module, dual)
    assert not both.get("failed"), both
    verdicts = both["targets"][0]["probes"]
    assert [(v["name"], v["ok"]) for v in verdicts] == [("classical", True), ("mldsa", True)], verdicts
    assert both["targets"][0]["ca_certificates"] == {"ec": 3, "mldsa": 3}
    off = fam.family_bundle_from_pem(dual["ca_file"].read_text(), SCHED, utcnow(), enabled=("classical",))
    try:
        dual["ca_file"].write_text(off["pem"])
        refused = _sighup(run_module, dual)
        assert refused.get("failed") and refused["targets"][0]["changed"], refused  # reloaded, then the proof failed
        assert [(v["name"], v["ok"]) for v in refused["targets"][0]["probes"]] == [("classical", True), ("mldsa", False)]
        error = refused["targets"][0]["error"]
        assert "the probe certificate mldsa is not accepted" in error and "classical:" not in error, error
    finally:
        dual["ca_file"].write_text(dual["bundle"]["pem"])
        _reload(dual)
    # bad input: probe and probes together, two probes of one name
    both_given = _sighup(run_module, dual, probe={"cert_file": dual["files"]["classical_client"],
                                                  "key_file": dual["files"]["classical_client_key"]})
    assert both_given.get("failed") and "mutually exclusive" in both_given["msg"], both_given
    classical = {"cert_file": dual["files"]["classical_client"], "key_file": dual["files"]["classical_client_key"]}
    twice = _sighup(run_module, dual, specs=[classical, dict(classical)])
    assert twice.get("failed") and "probes[1] and probes[0] are both named 'classical'" in twice["msg"], twice
    assert twice.get("option") == "probes[1].name" and "targets" not in twice, twice  # refused before any reload
    absent = {"cert_file": str(dual["ca_file"]) + ".absent", "key_file": dual["files"]["mldsa_client_key"]}
    missing = _sighup(run_module, dual, specs=[classical, absent])
    assert missing.get("failed") and missing.get("option") == "probes[1].cert_file", missing
    assert "targets" not in missing, missing

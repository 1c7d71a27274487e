"""Reload + verify time of nats_sighup's logic for 3 and for 30 local NATS servers, per key family (a benchmark, not a test).

For each cluster size it starts a private LocalStack (real mTLS nats-servers, JetStream off), then times
complete runs of ``reload_servers`` per transport: discovery, reading each CA file's SHA-256 (``expect_sha256``),
the reload itself, polling ``config_load_time`` until it advanced, and the TLS probe with the client
certificate. The ``kubernetes`` transport goes through the emulated Kubernetes API of tests/k8s_emulator
(pods backed by the same servers; exec over WebSocket), so it includes that API's overhead.

Each family gets its own stack: ``ec`` (EC P-256 root, intermediates and leaves; the TLS probe through Python's ssl)
and ``mldsa`` (ML-DSA-65 throughout, a PQ-only world; the probe through pyOpenSSL). The ML-DSA rows run beside the EC
rows of the same size in the same run, so the difference is the family's cost. The ``system`` transport needs nats-py,
which cannot speak ML-DSA: it has no ML-DSA row.

It prints one table row per (family, servers, transport): the whole run (median / min / max over the rounds) and the
per-server reload latency (signal -> advanced load time seen; p50 / p95 / max over all servers and rounds).

    python bench/bench_reload.py                        # 3 and 30 servers, 5 rounds, every transport
    python bench/bench_reload.py --sizes 3 --rounds 20 --transports signal,system
    python bench/bench_reload.py --families mldsa --mldsa-sizes 3,30
    python bench/bench_reload.py --json bench/results/reload.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from catools import ensure_collection_importable  # noqa: E402  pylint: disable=wrong-import-position

ensure_collection_importable()

# pylint: disable=wrong-import-position
from catools.localstack import LocalStack  # noqa: E402
from catools.procs import find_binary  # noqa: E402

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import pqtls  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import engine as reload_engine  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import kubernetes as reload_kubernetes  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import local as reload_local  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import system as reload_system  # noqa: E402

TRANSPORTS = ("signal", "command", "system", "kubernetes")


def percentile(values, pct):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(pct / 100.0 * (len(ordered) - 1)))))
    return ordered[index]


def make_transport(name, info, cluster=None):
    servers = info["clusters"][0]["servers"]
    auth = info["nats_auth"]
    if name in ("signal", "command"):
        targets = [{k: s[k] for k in ("name", "pid_file", "ca_file", "monitor_url", "log_file", "url")} for s in servers]
        return reload_local.LocalTransport(name, targets, nats_server_path=find_binary("nats-server"))
    if name == "system":
        params = {"servers": [s["url"] for s in servers[:3]], "ca_file": auth["ca_file"], "cert_file": auth["client_cert_file"],
                  "key_file": auth["client_key_file"], "user": auth["sys_user"], "password_file": auth["sys_password_file"]}
        return reload_system.SystemTransport(params, targets=[{"name": s["name"], "ca_file": s["ca_file"]} for s in servers])
    return reload_kubernetes.KubernetesTransport({"kubeconfig": cluster.kubeconfig, "context": cluster.context})


FAMILIES = ("ec", "mldsa")


def bench_size(size, transports, rounds, state_root, log, family="ec"):
    stack = LocalStack(Path(state_root) / ("stack-%s-%d" % (family, size)), clusters=[("bench", size)], jetstream=False,
                       key_type=family)
    started = time.monotonic()
    info = stack.up()
    served = pqtls.file_family(info["clusters"][0]["servers"][0]["cert_file"])
    if served != ("mldsa" if family == "mldsa" else "classical"):
        raise SystemExit("the %s stack's servers present a %s certificate chain" % (family, served))
    log("  %d %s servers up in %.1fs (their certificate chain: %s)" % (size, family, time.monotonic() - started, served))
    rows = []
    cluster = None
    try:
        if "kubernetes" in transports:
            sys.path.insert(0, str(REPO / "tests"))
            from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import (  # pylint: disable=import-outside-toplevel
                EmulatedCluster, PodBackend,
            )
            pods = [PodBackend.from_localstack_server(s) for s in info["clusters"][0]["servers"]]
            cluster = EmulatedCluster(name="bench", pods=pods, namespaces=["nats"], secret_sync_delay=0).start()
        servers = info["clusters"][0]["servers"]
        expect = hashlib.sha256(Path(servers[0]["ca_file"]).read_bytes()).hexdigest()
        auth = info["nats_auth"]
        probe = {"cert_file": auth["client_cert_file"], "key_file": auth["client_key_file"], "ca_file": auth["ca_file"]}
        for name in transports:
            totals, per_server, failures = [], [], 0
            for _round in range(rounds):
                begin = time.perf_counter()
                transport = make_transport(name, info, cluster)
                try:
                    result = reload_engine.reload_servers(transport, expect_sha256=expect, probe=probe, reload_timeout=60)
                finally:
                    transport.close()
                totals.append((time.perf_counter() - begin) * 1000.0)
                if result["failed"]:
                    failures += 1
                    log("  %s round failed: %s" % (name, result["msg"][:300]))
                per_server.extend(r["reload_ms"] for r in result["targets"] if r["reload_ms"] is not None)
            row = {"family": family, "servers": size, "transport": name, "rounds": rounds, "failed_rounds": failures,
                   "run_ms_median": statistics.median(totals), "run_ms_min": min(totals), "run_ms_max": max(totals),
                   "reload_ms_p50": percentile(per_server, 50), "reload_ms_p95": percentile(per_server, 95),
                   "reload_ms_max": max(per_server) if per_server else float("nan")}
            rows.append(row)
            log("  %-10s done: median %.0f ms" % (name, row["run_ms_median"]))
    finally:
        if cluster is not None:
            cluster.stop()
        stack.down()
    return rows


def print_table(rows):
    header = ("family", "servers", "transport", "rounds", "failed", "run median ms", "run min ms", "run max ms",
              "reload p50 ms", "reload p95 ms", "reload max ms")
    lines = [header]
    for r in rows:
        lines.append((r["family"], str(r["servers"]), r["transport"], str(r["rounds"]), str(r["failed_rounds"]),
                      "%.0f" % r["run_ms_median"], "%.0f" % r["run_ms_min"], "%.0f" % r["run_ms_max"],
                      "%.0f" % r["reload_ms_p50"], "%.0f" % r["reload_ms_p95"], "%.0f" % r["reload_ms_max"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(widths[i]) if i not in (0, 2) else cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,30", help="cluster sizes (comma-separated), default 3,30")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per size and transport (default 5)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="default: %s" % ",".join(TRANSPORTS))
    parser.add_argument("--families", default=",".join(FAMILIES), help="key families (default %s)" % ",".join(FAMILIES))
    parser.add_argument("--mldsa-sizes", default="3", help="cluster sizes for the mldsa family (default 3)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if [f for f in families if f not in FAMILIES]:
        parser.error("unknown family: %s (known: %s)" % (", ".join(f for f in families if f not in FAMILIES), ", ".join(FAMILIES)))
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = [t for t in transports if t not in TRANSPORTS]
    if unknown:
        parser.error("unknown transport(s): %s" % ", ".join(unknown))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as state_root:
        for family in families:
            sizes = args.mldsa_sizes if family == "mldsa" else args.sizes
            kinds = [t for t in transports if not (family == "mldsa" and t == "system")]  # nats-py has no ML-DSA
            for size in [int(s) for s in sizes.split(",") if s.strip()]:
                print("== %d %s servers" % (size, family), file=sys.stderr)
                rows.extend(bench_size(size, kinds, args.rounds, state_root, lambda msg: print(msg, file=sys.stderr),
                                       family=family))
    print("nats_sighup reload + verify (expect_sha256 + reload + config_load_time + TLS probe), nats-server on 127.0.0.1")
    print_table(rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 1 if any(r["failed_rounds"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

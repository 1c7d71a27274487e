"""Issuance time per key type against a real OpenBao dev server (a benchmark, not a test).

For each key type it times ``ensure_epoch_intermediate`` (generate key + CSR in the intermediate mount,
sign with the root, set-signed, name the issuer) and ``issue_leaf`` from the resulting issuer, and prints
a table with the median / p90 / min of the whole call and the median of each OpenBao request.

The number of issuers on the mount is held constant (one extra issuer, deleted after each round; DESIGN
section 10: set-signed slows down as issuers pile up).

    python bench/bench_issuance.py                 # starts its own dev server, 20 rounds
    python bench/bench_issuance.py -n 50 --json bench/results/issuance.json
    BAO_ADDR=... BAO_TOKEN=... python bench/bench_issuance.py --use-env   # an existing server (temporary mounts)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from catools import ensure_collection_importable  # noqa: E402  pylint: disable=wrong-import-position

ensure_collection_importable()

# pylint: disable=wrong-import-position
import hvac  # noqa: E402
from catools.procs import find_binary, free_port, http_json, spawn, stop_process, wait_for  # noqa: E402

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (  # noqa: E402
    EpochSchedule,
    utcnow,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import client as bao_client  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import intermediate as bao_intermediate  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import leaf as bao_leaf  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import pki as bao_pki  # noqa: E402

KEY_TYPES = (("ec", 256), ("rsa", 2048), ("ed25519", 0), ("mldsa", 44), ("mldsa", 65), ("mldsa", 87))


#: the modules that send OpenBao requests (each holds its own reference to _request)
_CALLERS = (bao_pki, bao_intermediate, bao_leaf)


class Timer:
    """Wraps module_utils' request function to time each OpenBao operation."""

    def __init__(self):
        self.samples = defaultdict(list)
        self._orig = bao_client._request  # pylint: disable=protected-access

    def __enter__(self):
        def timed(client, method, path, operation, *args, **kwargs):
            start = time.perf_counter()
            try:
                return self._orig(client, method, path, operation, *args, **kwargs)
            finally:
                self.samples[_phase(method, path)].append(time.perf_counter() - start)
        for module in _CALLERS:
            module._request = timed  # pylint: disable=protected-access
        return self

    def __exit__(self, *exc):
        for module in _CALLERS:
            module._request = self._orig  # pylint: disable=protected-access

    def reset(self):
        self.samples.clear()


def _phase(method, path):
    for marker, name in (("intermediate/generate", "generate"), ("sign-intermediate", "sign"),
                         ("set-signed", "set-signed"), ("/issue/", "leaf")):
        if marker in path:
            return name
    if method.upper() == "PATCH":
        return "name"
    return "reads"


def ms(values):
    return 1000.0 * values


def summary(samples):
    data = sorted(samples)
    if not data:
        return {"median": None, "p90": None, "min": None, "n": 0}
    p90 = data[min(len(data) - 1, int(round(0.9 * (len(data) - 1))))]
    return {"median": ms(statistics.median(data)), "p90": ms(p90), "min": ms(data[0]), "n": len(data)}


def start_dev_server(tmp: Path):
    port = free_port()
    token = "bench-" + secrets.token_hex(12)
    argv = [find_binary("bao"), "server", "-dev", "-dev-no-store-token", f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}"]
    proc = spawn(argv, tmp / "bao.log", {"HOME": str(tmp), "PATH": "/usr/bin:/bin"})
    addr = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_json(f"{addr}/v1/sys/health")[0] == 200, 60, f"OpenBao on {addr}")
    return proc, f"127.0.0.1:{port}", addr, token


def bench(client, rounds, key_types):
    sched = EpochSchedule.from_params({"epoch_duration": "1h"})
    suffix = secrets.token_hex(4)
    root_mount = f"bench_root_{suffix}"
    client.sys.enable_secrets_engine("pki", path=root_mount, config={"max_lease_ttl": "87600h"})
    client.write_data(f"{root_mount}/root/generate/internal",
                      data={"common_name": "Bench Root", "key_type": "ec", "ttl": "87600h"})
    mounts = [root_mount]
    rows = []
    try:
        for key_type, bits in key_types:
            mount = f"bench_int_{key_type}{bits or ''}_{suffix}"
            client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
            mounts.append(mount)
            n = sched.epoch(utcnow())
            # a standing default issuer (epoch n-1, still valid), so the timed epoch n is never the default
            bao_intermediate.ensure_epoch_intermediate(client, sched, n - 1, root_mount=root_mount, int_mount=mount, key_type=key_type,
                                                       key_bits=bits)
            client.write_data(f"{mount}/roles/bench", data={"allow_any_name": True, "enforce_hostnames": False,
                                                            "key_type": key_type, "key_bits": bits, "ttl": "1h",
                                                            "no_store": True})
            totals, leaf_totals = [], []
            with Timer() as timer:
                for _round in range(rounds):
                    start = time.perf_counter()
                    res = bao_intermediate.ensure_epoch_intermediate(client, sched, n, root_mount=root_mount, int_mount=mount,
                                                                     key_type=key_type, key_bits=bits)
                    totals.append(time.perf_counter() - start)
                    assert res["created"], res
                    bao_intermediate.remove_epoch_intermediate(client, mount, n)
                intermediate_phases = {k: summary(v) for k, v in timer.samples.items()}
                timer.reset()
                for _round in range(rounds):
                    start = time.perf_counter()
                    bao_leaf.issue_leaf(client, int_mount=mount, role="bench", common_name="bench.example")
                    leaf_totals.append(time.perf_counter() - start)
                leaf_phases = {k: summary(v) for k, v in timer.samples.items()}
            rows.append({"key_type": key_type, "key_bits": bits or None, "rounds": rounds,
                         "intermediate": summary(totals), "intermediate_phases": intermediate_phases,
                         "leaf": summary(leaf_totals), "leaf_request": leaf_phases.get("leaf")})
    finally:
        for mount in mounts:
            client.sys.disable_secrets_engine(mount)
    return rows


def print_table(rows, meta):
    print(f"OpenBao issuance benchmark - {meta['openbao']} - {meta['rounds']} rounds per key type - {meta['when']}")
    head = (f"{'key':<12}{'intermediate ms':>28}{'generate':>10}{'sign':>8}{'set-signed':>12}{'name':>7}"
            f"{'leaf issue ms':>24}")
    print(head)
    print(f"{'':<12}{'median':>10}{'p90':>9}{'min':>9}{'median':>10}{'median':>8}{'median':>12}{'median':>7}"
          f"{'median':>10}{'p90':>7}{'min':>7}")
    print("-" * len(head))

    def f(value):
        return "-" if value is None else f"{value:.1f}"

    for row in rows:
        ph = row["intermediate_phases"]
        label = f"{row['key_type']} {row['key_bits'] or ''}".strip()
        print(f"{label:<12}{f(row['intermediate']['median']):>10}{f(row['intermediate']['p90']):>9}"
              f"{f(row['intermediate']['min']):>9}{f(ph.get('generate', {}).get('median')):>10}"
              f"{f(ph.get('sign', {}).get('median')):>8}{f(ph.get('set-signed', {}).get('median')):>12}"
              f"{f(ph.get('name', {}).get('median')):>7}{f(row['leaf']['median']):>10}{f(row['leaf']['p90']):>7}"
              f"{f(row['leaf']['min']):>7}")
    print("intermediate = the whole ensure_epoch_intermediate call (includes listing/reading issuers and keys);"
          " phases are single OpenBao requests.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("-n", "--rounds", type=int, default=20, help="issuances per key type (default 20)")
    parser.add_argument("--key-types", default="ec,rsa,ed25519,mldsa",
                        help="comma-separated subset of ec,rsa,ed25519,mldsa (mldsa: 44, 65 and 87)")
    parser.add_argument("--use-env", action="store_true", help="use BAO_ADDR/BAO_TOKEN instead of a private dev server")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    wanted = [kt for kt in KEY_TYPES if kt[0] in args.key_types.split(",")]

    proc = marker = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-bao-")
    try:
        if args.use_env:
            addr, token = os.environ["BAO_ADDR"], os.environ["BAO_TOKEN"]
        else:
            proc, marker, addr, token = start_dev_server(Path(tmp.name))
        client = hvac.Client(url=addr, token=token, verify=os.environ.get("BAO_CACERT") or True)
        version = client.sys.read_health_status(method="GET").get("version", "?")
        rows = bench(client, args.rounds, wanted)
        meta = {"openbao": f"OpenBao {version}", "rounds": args.rounds,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count()}
        print_table(rows, meta)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    finally:
        if proc is not None:
            stop_process(proc.pid, marker)
            proc.wait(timeout=10)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

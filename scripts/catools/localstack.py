"""The embedded local stack: a real OpenBao dev server and real mTLS NATS clusters on 127.0.0.1.

Used by ``scripts/localstack`` (``up | down | status | env``), by ``make demo`` and by the test
suite's session fixtures (``tests/conftest.py`` imports this module; nothing is copied).

Everything lives in one state directory (default ``<repo>/.localstack``):

    stack.json            what runs: pids, ports, paths (no secrets)
    secrets/              OpenBao root token, NATS passwords (mode 0600)
    openbao/              dev server log (and TLS material with ``openbao_tls``)
    pki/                  root certificate, current bundle, client certificate
    nats/<server>/        config, pid file, log, server certificate, ca/ca.crt, JetStream store

Processes are started in their own session, with output redirected to log files, and are
stopped by PID (checked against their command line, so a recycled PID is never signalled).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import COLLECTION_ROOT, ensure_collection_importable, inventory, natsconf
from .inventory import SERVER_ALT_NAMES, SERVER_IP_SANS
from .procs import (  # noqa: E402
    StackError,
    free_port,
    port_open,
    wait_for,
    write_secret,
    write_file,
    http_json,
    process_alive,
    log_tail,
    stop_process,
    spawn,
    find_binary,
)

ensure_collection_importable()

# pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _epoch  # noqa: E402

DEFAULT_STATE_DIR = COLLECTION_ROOT / ".localstack"
DEFAULT_INVENTORY_DIR = COLLECTION_ROOT / "inventories" / "local"
STATE_FILE = "stack.json"

ROOT_MOUNT = "pki"
INT_MOUNT = "pki_int"
LEAF_ROLE = "nats-leaf"
TRANSIT_MOUNT = "transit"
TRANSIT_KEY = "ca-bundle-signer"
KV_MOUNT = "secret"
CN_PREFIX = "NATS Intermediate CA"
MLDSA_ROOT_MOUNT = "pki_mldsa"
MLDSA_INT_MOUNT = "pki_int_mldsa"
MLDSA_CN_PREFIX = "NATS ML-DSA Intermediate CA"
MAX_SERVERS = 7
#: without JetStream (the benchmarks' many-server clusters) a cluster may be larger
MAX_SERVERS_NO_JETSTREAM = 64


# --------------------------------------------------------------------------------------------
# the stack


class LocalStack:
    """A real OpenBao dev server plus one or more real 3-node (by default) mTLS NATS clusters."""

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        clusters: tuple | list = (("local", 3),),
        epoch_duration: str | int = "6h",
        validity: str | int | None = None,
        lead_time: str | int | None = None,
        epoch_zero: str = "1970-01-01T00:00:00Z",
        skew_allowance: str | int = "5m",
        openbao_tls: bool = False,
        jetstream: bool = True,
        inventory_dir: str | Path | None = None,
        key_type: str = "ec",
        key_bits: int = 0,
        mldsa_family: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir or os.environ.get("CA_ROTATION_STACK_DIR") or DEFAULT_STATE_DIR).resolve()
        self.clusters = [(str(name), int(size)) for name, size in clusters]
        limit = MAX_SERVERS if jetstream else MAX_SERVERS_NO_JETSTREAM
        for name, size in self.clusters:
            if not 1 <= size <= limit:
                raise StackError(f"cluster {name}: {size} servers asked for (--servers); a local cluster has 1 to {limit} "
                                 f"servers (3 by default, the JetStream R3 the announcement stream uses; up to "
                                 f"{MAX_SERVERS_NO_JETSTREAM} without JetStream)")
        self.schedule = _epoch.EpochSchedule.from_params(
            {
                "epoch_zero": epoch_zero,
                "epoch_duration": epoch_duration,
                "validity": validity,
                "lead_time": lead_time,
                "skew_allowance": skew_allowance,
            }
        )
        self.openbao_tls = openbao_tls
        self.jetstream = jetstream
        self.inventory_dir = Path(inventory_dir).resolve() if inventory_dir else None
        self.key_type = key_type
        # an ML-DSA stack is ML-DSA throughout (root, intermediates, leaves): a PQ-only world; other key types keep the
        # EC root and EC leaves
        self.key_bits = int(key_bits or (65 if key_type == "mldsa" else 0))
        pq = key_type == "mldsa"
        self._chain_key = {"key_type": "mldsa", "key_bits": self.key_bits} if pq else {"key_type": "ec", "key_bits": 256}
        #: dual mode: an ML-DSA root and intermediate mount beside the classical ones (the ML-DSA parameter set; 0: off)
        self.mldsa_family = int(mldsa_family or 0)
        if self.mldsa_family and pq:
            raise StackError("mldsa_family is the second family of a classical stack; this stack is ML-DSA already")
        self._log = log or (lambda msg: None)
        self.info: dict = self._load() or {}

    # ---------------------------------------------------------------- persistence
    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def _load(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def _save(self) -> None:
        write_file(self.state_file, json.dumps(self.info, indent=2, sort_keys=True) + "\n", 0o600)

    # ---------------------------------------------------------------- status
    def processes(self) -> list[dict]:
        """Every process of the recorded stack with whether it runs."""
        procs = []
        bao = self.info.get("openbao")
        if bao:
            procs.append({"name": "openbao", "pid": bao["pid"], "marker": bao["marker"], "port": bao["port"]})
        for cluster in self.info.get("clusters", []):
            for server in cluster["servers"]:
                procs.append({"name": server["name"], "pid": server["pid"], "marker": server["config_file"], "port": server["client_port"]})
        for proc in procs:
            proc["running"] = process_alive(proc["pid"], proc["marker"])
        return procs

    def status(self) -> dict:
        procs = self.processes()
        return {
            "state_dir": str(self.state_dir),
            "configured": bool(self.info),
            "running": bool(procs) and all(p["running"] for p in procs),
            "processes": [{k: p[k] for k in ("name", "pid", "port", "running")} for p in procs],
        }

    # ---------------------------------------------------------------- up
    def up(self, rebuild: bool = False) -> dict:
        """Start the stack; a no-op (``info['changed'] = False``) when everything already runs.

        A recorded stack whose OpenBao no longer runs has lost its in-memory PKI: starting again means a new root CA,
        a new transit key and new ports. That is refused unless ``rebuild`` is set; ``info['rebuilt']`` then says what
        was replaced.
        """
        started = time.monotonic()
        rebuilt = None
        if self.info:
            procs = self.processes()
            if procs and all(p["running"] for p in procs):
                self.info["changed"] = False
                self._write_inventory()
                return self.info
            bao = next((p for p in procs if p["name"] == "openbao"), None)
            if bao and bao["running"]:
                # OpenBao (in-memory) still holds the PKI: restart only the NATS servers that stopped.
                for cluster in self.info["clusters"]:
                    for server in cluster["servers"]:
                        if not process_alive(server["pid"], server["config_file"]):
                            self._start_nats(server)
                self._wait_nats()
                self.info["changed"] = True
                self.info["restarted"] = [p["name"] for p in procs if not p["running"]]
                self._save()
                return self.info
            running = [p["name"] for p in procs if p["running"]]
            lost = (f"OpenBao (pid {bao['pid']}) is not running, so the stack's in-memory PKI is lost" if bao
                    else "the recorded stack has no OpenBao")
            if not rebuild:
                raise StackError(
                    f"{lost}; still running: {', '.join(running) or 'nothing'}. Starting again creates a new root CA, a new "
                    f"transit signing key and new ports (clients and servers then trust only the new root). Nothing was "
                    f"changed; run 'localstack up --rebuild' to rebuild it, or 'localstack down' to remove it")
            rebuilt = {"reason": lost, "stopped": running,
                       "replaced": ["root CA", "epoch intermediates", "transit signing key", "server and client certificates",
                                    "passwords", "ports"]}
            self.down()
        for attempt in range(3):
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.info = {"version": 1, "state_dir": str(self.state_dir), "epoch": self._epoch_info(), "jetstream": self.jetstream}
            try:
                self._start_openbao()
                self._bootstrap_pki()
                self._prepare_nats()
                for cluster in self.info["clusters"]:
                    for server in cluster["servers"]:
                        self._start_nats(server)
                self._save()
                self._wait_nats()
                break
            except StackError as exc:
                self._save()
                lost_race = self._port_race()
                self.down(purge=lost_race and attempt < 2)
                if not lost_race or attempt == 2:
                    raise
                self._log(f"a port was taken before a server could bind it ({exc}); starting again")
            except BaseException:
                self._save()
                self.down(purge=False)
                raise
        self.info["changed"] = True
        if rebuilt:
            self.info["rebuilt"] = rebuilt
        self.info["up_seconds"] = round(time.monotonic() - started, 3)
        self._save()
        self._write_inventory()
        return self.info

    def _port_race(self) -> bool:
        """Did a process of this stack exit because its port was taken meanwhile (then a new attempt helps)?"""
        logs = [self.info.get("openbao", {}).get("log_file")]
        logs += [s["log_file"] for c in self.info.get("clusters", []) for s in c["servers"]]
        for log in filter(None, logs):
            try:
                if "address already in use" in Path(log).read_text(encoding="utf-8", errors="replace"):
                    return True
            except OSError:
                continue
        return False

    def _epoch_info(self) -> dict:
        sched = self.schedule
        return {
            "epoch_zero": _epoch.isoformat(sched.epoch_zero),
            "epoch_duration": sched.duration,
            "validity": sched.validity,
            "lead_time": sched.lead_time,
            "skew_allowance": sched.skew,
        }

    # ---------------------------------------------------------------- OpenBao
    def _start_openbao(self) -> None:
        port = free_port()
        token = "dev-" + secrets.token_hex(20)
        token_file = self.state_dir / "secrets" / "openbao-root-token"
        write_secret(token_file, token)
        bao_dir = self.state_dir / "openbao"
        bao_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            find_binary("bao"), "server", "-dev", "-dev-no-store-token",
            f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}",
        ]
        ca_cert = None
        if self.openbao_tls:
            tls_dir = bao_dir / "tls"
            tls_dir.mkdir(parents=True, exist_ok=True)
            argv += ["-dev-tls", f"-dev-tls-cert-dir={tls_dir}"]
            ca_cert = str(tls_dir / "vault-ca.pem")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(bao_dir)  # dev mode must not touch the operator's ~/.vault-token
        proc = spawn(argv, bao_dir / "openbao.log", env)
        scheme = "https" if self.openbao_tls else "http"
        addr = f"{scheme}://127.0.0.1:{port}"
        self.info["openbao"] = {
            "addr": addr, "port": port, "pid": proc.pid, "token_file": str(token_file),
            "ca_cert": ca_cert, "log_file": str(bao_dir / "openbao.log"), "marker": f"127.0.0.1:{port}",
        }
        self._save()

        def healthy() -> bool:
            if proc.poll() is not None:
                raise StackError(f"OpenBao exited with {proc.returncode}; see {bao_dir / 'openbao.log'}; its last lines:"
                                 f"{log_tail(bao_dir / 'openbao.log')}")
            if ca_cert and not os.path.exists(ca_cert):
                return False
            return http_json(f"{addr}/v1/sys/health", cafile=ca_cert)[0] == 200

        wait_for(healthy, 30, f"OpenBao on {addr}")

    def bao_client(self):
        """An hvac client for the stack's OpenBao, authenticated with the root token."""
        import hvac  # pylint: disable=import-outside-toplevel

        bao = self.info["openbao"]
        token = Path(bao["token_file"]).read_text(encoding="utf-8").strip()
        return hvac.Client(url=bao["addr"], token=token, verify=bao["ca_cert"] or True, timeout=30)

    def _bootstrap_chain(self, client, root_file: Path, current: int, now: _dt.datetime, *, root_mount: str,
                         int_mount: str, cn_prefix: str, root_cn: str, key: dict, int_key: dict) -> str:
        """One chain of trust: a root on ``root_mount`` (written to ``root_file``), the intermediate of epoch
        ``current`` on ``int_mount`` made the default, and the leaf role (``key``: the root's and the leaves' key,
        ``int_key``: the intermediate's); returns its part of the bootstrap bundle (intermediate, root)."""
        long_ttl = "87600h"
        client.sys.enable_secrets_engine("pki", path=root_mount, config={"max_lease_ttl": long_ttl})
        root = client.write_data(
            f"{root_mount}/root/generate/internal",
            data=dict({"common_name": root_cn, "issuer_name": "root", "key_name": "root", "ttl": long_ttl}, **key),
        )["data"]
        write_file(root_file, root["certificate"].strip() + "\n")
        client.sys.enable_secrets_engine("pki", path=int_mount, config={"max_lease_ttl": long_ttl})
        intermediate = self._issue(client, current, now, root_mount, int_mount, cn_prefix, int_key, activate=True)
        client.write_data(
            f"{int_mount}/roles/{LEAF_ROLE}",
            data={
                "allow_any_name": True, "allow_localhost": True, "allow_ip_sans": True,
                "enforce_hostnames": False, "server_flag": True, "client_flag": True,
                **key, "max_ttl": long_ttl, "ttl": f"{self.schedule.validity}s",
                "no_store": True, "issuer_ref": "default",
            },
        )
        return intermediate["certificate"].strip() + "\n" + root["certificate"].strip() + "\n"

    def _bootstrap_pki(self) -> None:
        client = self.bao_client()
        pki_dir = self.state_dir / "pki"
        client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
        client.write_data(f"{TRANSIT_MOUNT}/keys/{TRANSIT_KEY}", data={"type": "ed25519"})
        now = _epoch.utcnow()
        current = self.schedule.epoch(now)
        bundle = self._bootstrap_chain(client, pki_dir / "root.pem", current, now, root_mount=ROOT_MOUNT, int_mount=INT_MOUNT,
                                       cn_prefix=CN_PREFIX, root_cn="NATS Local Root CA", key=self._chain_key,
                                       int_key={"key_type": self.key_type, "key_bits": self.key_bits})
        if self.mldsa_family:  # dual mode: the ML-DSA chain beside the classical one
            mldsa = {"key_type": "mldsa", "key_bits": self.mldsa_family}
            bundle += self._bootstrap_chain(client, pki_dir / "root-mldsa.pem", current, now, root_mount=MLDSA_ROOT_MOUNT,
                                            int_mount=MLDSA_INT_MOUNT, cn_prefix=MLDSA_CN_PREFIX,
                                            root_cn="NATS Local ML-DSA Root CA", key=mldsa, int_key=mldsa)
        write_file(pki_dir / "ca-bundle.pem", bundle)
        self.info["pki"] = {
            "root_mount": ROOT_MOUNT, "int_mount": INT_MOUNT, "role": LEAF_ROLE,
            "transit_mount": TRANSIT_MOUNT, "transit_key": TRANSIT_KEY, "kv_mount": KV_MOUNT,
            "root_pem_file": str(pki_dir / "root.pem"), "cn_prefix": CN_PREFIX,
            "bundle_file": str(pki_dir / "ca-bundle.pem"), "bundle_sha256": hashlib.sha256(bundle.encode()).hexdigest(),
            "bootstrap_epoch": current, "key_type": self.key_type,
        }
        if self.mldsa_family:
            self.info["pki"]["mldsa"] = {"root_mount": MLDSA_ROOT_MOUNT, "int_mount": MLDSA_INT_MOUNT, "role": LEAF_ROLE,
                                         "key_bits": self.mldsa_family, "cn_prefix": MLDSA_CN_PREFIX,
                                         "root_pem_file": str(pki_dir / "root-mldsa.pem")}

    def _issue(self, client, epoch: int, now: _dt.datetime, root_mount: str, int_mount: str, cn_prefix: str, key: dict,
               activate: bool) -> dict:
        """Issue (and activate) the intermediate of ``epoch`` on ``int_mount`` (the collection's own code path)."""
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import intermediate as bao_intermediate

        result = bao_intermediate.ensure_epoch_intermediate(
            client, self.schedule, epoch, root_mount=root_mount, int_mount=int_mount, cn_prefix=cn_prefix, now=now, **key)
        if activate:
            bao_intermediate.set_default_issuer(client, int_mount, f"epoch-{epoch}")
        return result

    def issue_intermediate(self, epoch: int, activate: bool = False) -> dict:
        """The intermediate of ``epoch`` (an earlier one, as an earlier run would have left it), not made the default."""
        return self._issue(self.bao_client(), epoch, _dt.datetime.now(_dt.timezone.utc), ROOT_MOUNT, INT_MOUNT, CN_PREFIX,
                           {"key_type": self.key_type, "key_bits": self.key_bits}, activate=activate)

    def issue_leaf(self, common_name: str, cert_file: Path, key_file: Path, client=None, issuer_ref: str | None = None) -> None:
        """Issue a server+client leaf from the default issuer (or ``issuer_ref``); write cert (+ chain) and key (0600)."""
        client = client or self.bao_client()
        data = client.write_data(
            f"{INT_MOUNT}/issuer/{issuer_ref}/issue/{LEAF_ROLE}" if issuer_ref else f"{INT_MOUNT}/issue/{LEAF_ROLE}",
            data={"common_name": common_name, "alt_names": ",".join(SERVER_ALT_NAMES), "ip_sans": ",".join(SERVER_IP_SANS)},
        )["data"]
        chain = [data["certificate"].strip()]
        chain += [c.strip() for c in data.get("ca_chain", []) if "NATS Local Root CA" not in c]
        write_file(cert_file, "\n".join(chain[:2]) + "\n")
        write_secret(key_file, data["private_key"].strip() + "\n")

    # ---------------------------------------------------------------- NATS
    def _prepare_nats(self) -> None:
        app_password = secrets.token_urlsafe(18)
        sys_password = secrets.token_urlsafe(18)
        announcer_password = secrets.token_urlsafe(18)
        sec = self.state_dir / "secrets"
        write_secret(sec / "nats-app-password", app_password)
        write_secret(sec / "nats-sys-password", sys_password)
        write_secret(sec / "nats-announcer-password", announcer_password)
        client = self.bao_client()
        pki_dir = self.state_dir / "pki"
        self.issue_leaf("nats-client", pki_dir / "client.pem", sec / "client-key.pem", client)
        self.info["nats_auth"] = {
            "ca_file": self.info["pki"]["bundle_file"],
            "client_cert_file": str(pki_dir / "client.pem"),
            "client_key_file": str(sec / "client-key.pem"),
            "app_user": "app", "app_password_file": str(sec / "nats-app-password"),
            "sys_user": "sys", "sys_password_file": str(sec / "nats-sys-password"),
            "announcer_user": "announcer", "announcer_password_file": str(sec / "nats-announcer-password"),
        }
        clusters = []
        for cluster_name, size in self.clusters:
            servers = []
            for index in range(size):
                name = f"nats-{index}" if len(self.clusters) == 1 else f"{cluster_name}-nats-{index}"
                base = self.state_dir / "nats" / name
                ports = (free_port(), free_port(), free_port())
                servers.append({
                    "name": name, "cluster": cluster_name, "host": "127.0.0.1",
                    "client_port": ports[0], "cluster_port": ports[1], "monitor_port": ports[2],
                    "url": f"tls://127.0.0.1:{ports[0]}", "route_url": f"tls://127.0.0.1:{ports[1]}" if size > 1 else None,
                    "monitor_url": f"http://127.0.0.1:{ports[2]}",
                    "config_file": str(base / "nats.conf"), "pid_file": str(base / "nats.pid"),
                    "log_file": str(base / "nats.log"), "cert_file": str(base / "server.pem"),
                    "key_file": str(base / "server-key.pem"), "ca_dir": str(base / "ca"),
                    "ca_file": str(base / "ca" / "ca.crt"), "store_dir": str(base / "jetstream"), "pid": None,
                })
            for server in servers:
                base = Path(server["config_file"]).parent
                self.issue_leaf(server["name"], Path(server["cert_file"]), Path(server["key_file"]), client)
                write_file(Path(server["ca_file"]), Path(self.info["pki"]["bundle_file"]).read_text(encoding="utf-8"))
                config = self._nats_config(server, servers, cluster_name, app_password, sys_password, announcer_password)
                write_file(Path(server["config_file"]), config, 0o600)
            clusters.append({"name": cluster_name, "servers": servers})
        self.info["clusters"] = clusters

    def _nats_config(self, server: dict, servers: list[dict], cluster_name: str, app_password: str, sys_password: str,
                     announcer_password: str) -> str:
        """The server's configuration (a method: benchmarks override it, e.g. to turn JetStream off per cluster)."""
        passwords = {"app": app_password, "sys": sys_password, "announcer": announcer_password}
        return natsconf.server_config(server, servers, cluster_name, passwords, self.jetstream)

    def _start_nats(self, server: dict) -> None:
        proc = spawn([find_binary("nats-server"), "-c", server["config_file"]], Path(server["log_file"]))
        server["pid"] = proc.pid

    def _wait_nats(self) -> None:
        def ready(server: dict, peers: int) -> bool:
            if not process_alive(server["pid"], server["config_file"]):
                raise StackError(f"nats-server {server['name']} (pid {server['pid']}) exited; see {server['log_file']}; "
                                 f"its last lines:{log_tail(server['log_file'])}")
            if http_json(f"{server['monitor_url']}/healthz")[0] != 200:
                return False
            routez = http_json(f"{server['monitor_url']}/routez")[1]
            routed = {r.get("remote_name") for r in (routez or {}).get("routes", [])}
            return len(routed) >= peers

        for cluster in self.info["clusters"]:
            for server in cluster["servers"]:
                wait_for(lambda s=server, n=len(cluster["servers"]) - 1: ready(s, n), 60,
                         f"nats-server {server['name']} to be healthy and routed")

    # ---------------------------------------------------------------- down
    def down(self, purge: bool = True) -> dict:
        """Stop every process this stack started (by PID) and remove its state (kept, logs included, with purge=False)."""
        from .vmfleet import down_fleet  # pylint: disable=import-outside-toplevel  # the SSH VMs first (localstack up --vms)

        stopped = down_fleet(self.state_dir, self._log)["stopped"]
        for proc in self.processes():
            if stop_process(proc["pid"], proc["marker"]):
                stopped.append(proc["name"])
        for proc in self.processes():
            if proc.get("port"):
                wait_for(lambda p=proc["port"]: not port_open(p), 10, f"port {proc['port']} to be free")
        if purge and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.inventory_dir:
            generated = self.inventory_dir / "group_vars" / "all" / "localstack.yml"
            if generated.exists():
                generated.unlink()
        self.info = {}
        return {"stopped": stopped}

    # ---------------------------------------------------------------- env / inventory
    def env(self) -> dict:
        bao = self.info["openbao"]
        servers = [s for c in self.info["clusters"] for s in c["servers"]]
        env = {
            "CA_ROTATION_STACK_DIR": str(self.state_dir),
            "BAO_ADDR": bao["addr"],
            "NATS_URL": ",".join(s["url"] for s in servers),
        }
        if bao.get("ca_cert"):
            env["BAO_CACERT"] = bao["ca_cert"]
        return env

    def inventory_vars(self) -> dict:
        """Variables for inventories/local: addresses, ports, paths, pid files — never secret values."""
        return inventory.inventory_vars(self.info, self.state_dir)

    def _write_inventory(self) -> None:
        if self.inventory_dir and self.info:
            inventory.write_inventory(self.inventory_dir, self.info, self.state_dir)


# --------------------------------------------------------------------------------------------
# command line


def _print_status(stack: LocalStack, as_json: bool) -> int:
    status = stack.status()
    if as_json:
        print(json.dumps(status, indent=2))
    elif not status["configured"]:
        print(f"local stack: not running (state dir {status['state_dir']})")
    else:
        state = "running" if status["running"] else "DEGRADED"
        print(f"local stack: {state} (state dir {status['state_dir']})")
        for proc in status["processes"]:
            print(f"  {proc['name']:<12} pid {proc['pid']!s:<8} port {proc['port']!s:<6} {'up' if proc['running'] else 'DOWN'}")
    return 0 if status["running"] or not status["configured"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localstack", description="Embedded OpenBao + NATS stack on 127.0.0.1")
    parser.add_argument("--state-dir", default=None, help="state directory (default: $CA_ROTATION_STACK_DIR or <repo>/.localstack)")
    parser.add_argument("--inventory", default=None, help="inventory directory to write group_vars into (default: inventories/local for the default state dir)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack (idempotent)")
    up.add_argument("--epoch-duration", default=os.environ.get("CA_ROTATION_EPOCH_DURATION", "6h"))
    up.add_argument("--validity", default=os.environ.get("CA_ROTATION_VALIDITY"))
    up.add_argument("--lead-time", default=os.environ.get("CA_ROTATION_LEAD_TIME"))
    up.add_argument("--servers", type=int, default=3, help="NATS servers per cluster")
    up.add_argument("--cluster", action="append", default=None, help="cluster name (repeatable)")
    up.add_argument("--openbao-tls", action="store_true", help="serve OpenBao over TLS (-dev-tls)")
    up.add_argument("--mldsa-family", type=int, default=0, choices=(0, 44, 65, 87),
                    help="dual mode: an ML-DSA root and intermediate mount beside the classical ones (the ML-DSA "
                         "parameter set; the inventory gets ca_rotation_pki.mldsa)")
    up.add_argument("--rebuild", action="store_true",
                    help="when a recorded stack's OpenBao no longer runs, rebuild everything (new root CA, keys, ports)")
    up.add_argument("--vms", type=int, default=0,
                    help="also start N SSH VMs (sshd + one nats-server each, cluster 'fleet'; needs root, openssh-server, sudo)")
    up.add_argument("--json", action="store_true")
    sub.add_parser("down", help="stop the stack's processes and remove its state")
    st = sub.add_parser("status", help="what runs")
    st.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print shell exports for the running stack")
    args = parser.parse_args(argv)

    state_dir = Path(args.state_dir).resolve() if args.state_dir else None
    inventory = args.inventory
    if inventory is None and (state_dir is None or state_dir == DEFAULT_STATE_DIR) and not os.environ.get("CA_ROTATION_STACK_DIR"):
        inventory = str(DEFAULT_INVENTORY_DIR)
    kwargs: dict[str, Any] = {"inventory_dir": inventory, "log": print}
    if args.command == "up":
        kwargs.update(
            epoch_duration=args.epoch_duration, validity=args.validity, lead_time=args.lead_time,
            clusters=[(name, args.servers) for name in (args.cluster or ["local"])], openbao_tls=args.openbao_tls,
            mldsa_family=args.mldsa_family,
        )
    try:
        stack = LocalStack(state_dir, **kwargs)
        if args.command == "up":
            info = stack.up(rebuild=args.rebuild)
            if args.vms:
                from .vmfleet import VmFleet  # pylint: disable=import-outside-toplevel

                fleet = VmFleet(stack, args.vms, log=print).up()
                info = dict(info, vmfleet=fleet, changed=info.get("changed") or fleet["changed"])
            if args.json:
                print(json.dumps(info, indent=2, sort_keys=True))
            elif info.get("changed"):
                if info.get("rebuilt"):
                    rebuilt = info["rebuilt"]
                    print(f"rebuilt the stack: {rebuilt['reason']}; stopped {', '.join(rebuilt['stopped']) or 'nothing'}; "
                          f"new: {', '.join(rebuilt['replaced'])}")
                elif info.get("restarted"):
                    print(f"restarted {', '.join(info['restarted'])} (OpenBao and the PKI were kept)")
                print(f"local stack up in {info.get('up_seconds', 0):.1f}s (state dir {stack.state_dir})")
                _print_status(stack, False)
            else:
                print(f"local stack already running, nothing to do (state dir {stack.state_dir})")
            if args.vms and not args.json:
                vms = ", ".join(f"{v['name']} {v['user']}@{v['address']}:{v['ssh_port']}" for v in info["vmfleet"]["vms"])
                print(f"SSH fleet: {vms}; "
                      f"inventory {info['vmfleet']['inventory']} (ansible-playbook -i {inventory or '<the inventory of this stack>'} "
                      f"-i {info['vmfleet']['inventory']} playbooks/rotate.yml)")
            return 0
        if args.command == "down":
            result = stack.down()
            print(f"local stack down; stopped: {', '.join(result['stopped']) or 'nothing was running'}")
            return 0
        if args.command == "status":
            return _print_status(stack, args.json)
        if not stack.info:
            print("local stack is not running; run 'scripts/localstack up' first", file=sys.stderr)
            return 1
        for key, value in stack.env().items():
            print(f"export {key}='{value}'")
        print(f"export BAO_TOKEN=\"$(cat '{stack.info['openbao']['token_file']}')\"")
        return 0
    except (StackError, _epoch.EpochError) as exc:
        print(f"localstack: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

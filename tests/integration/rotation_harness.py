"""Harness for end-to-end rotation tests: a private local stack with short epochs, an inventory for it,
continuous JetStream traffic, and an observer that proves trust comes before activation."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import threading
import time
import uuid
from pathlib import Path

from catools.localstack import LocalStack
from helpers import REPO, ansible_playbook

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import base as reload_base
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import probe as reload_probe


class RotationStack:
    """A LocalStack with its own inventory directory and helpers to run the playbooks against it."""

    def __init__(self, base: Path, epoch_duration: str = "20s", clusters=(("local", 3),), **kwargs):
        self.base = base
        self.inventory = base / "inventory"
        (self.inventory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "inventories" / "local" / "hosts.yml", self.inventory / "hosts.yml")
        shutil.copy(REPO / "inventories" / "local" / "group_vars" / "all" / "main.yml", self.inventory / "group_vars" / "all" / "main.yml")
        self.stack = LocalStack(base / "state", epoch_duration=epoch_duration, clusters=clusters,
                                inventory_dir=self.inventory, **kwargs)
        self.info = self.stack.up()
        self.runs: list[dict] = []

    @property
    def servers(self) -> list[dict]:
        return [s for c in self.info["clusters"] for s in c["servers"]]

    def bao(self):
        return self.stack.bao_client()

    def playbook(self, name: str, *args: str, extra_vars: dict | None = None, check: bool = False, inventory=None):
        # unique per call: runs may be started concurrently (each must read its own report)
        report = self.base / f"report-{len(self.runs)}-{uuid.uuid4().hex[:8]}.json"
        extra = {"ca_rotation_report_file": str(report)}
        extra.update(extra_vars or {})
        started = time.monotonic()
        proc = ansible_playbook(REPO / "playbooks" / name, *args, inventory=inventory or self.inventory,
                                extra_vars=extra, check=check)
        run = {"playbook": name, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
               "seconds": time.monotonic() - started, "report": json.loads(report.read_text()) if report.exists() else None}
        self.runs.append(run)
        return run

    def default_issuer_epoch(self, int_mount: str | None = None) -> int | None:
        return _epoch_of(self.default_issuer_name(int_mount))

    def default_issuer_name(self, int_mount: str | None = None) -> str | None:
        issuers = self.bao().list(f"{int_mount or self.info['pki']['int_mount']}/issuers")["data"]["key_info"]
        return next((meta.get("issuer_name") for meta in issuers.values() if meta.get("is_default")), None)

    def write_hosts(self, clusters: dict[str, dict], authority: dict | None = None) -> None:
        """The inventory's hosts.yml: the ``authority`` host (with its variables) and one ``nats_clusters`` host per
        cluster with its variables (JSON, which is YAML)."""
        hosts = {"all": {"children": {"ca_authority": {"hosts": {"authority": authority}},
                                      "nats_clusters": {"hosts": clusters}}}}
        (self.inventory / "hosts.yml").write_text(json.dumps(hosts, indent=2))

    def ca_file_sha256s(self) -> set[str]:
        import hashlib
        return {hashlib.sha256(Path(s["ca_file"]).read_bytes()).hexdigest() for s in self.servers}

    def issue_client_leaf(self, dest: Path, issuer_ref: str = "default", leaf_only: bool = False, client=None,
                          int_mount: str | None = None, **params) -> tuple[str, str]:
        """A client leaf from ``issuer_ref``; its cert file holds leaf + intermediate, or the leaf alone with ``leaf_only``
        (then a server accepts it only if its CA file lists that intermediate). ``params`` go to the issue call
        (e.g. ``not_after``); ``client`` is an hvac client to use instead of a new one; ``int_mount``: another family's
        intermediate mount (dual mode)."""
        mount = int_mount or self.info['pki']['int_mount']
        data = (client or self.bao()).write_data(f"{mount}/issuer/{issuer_ref}/issue/{self.info['pki']['role']}",
                                                 data={"common_name": f"e2e-client-{dest.name}", **params})["data"]
        dest.mkdir(parents=True, exist_ok=True)
        cert, key = dest / "cert.pem", dest / "key.pem"
        chain = [data["certificate"].strip()] + ([] if leaf_only else [data["issuing_ca"].strip()])
        cert.write_text("\n".join(chain) + "\n")
        key.write_text(data["private_key"].strip() + "\n")
        key.chmod(0o600)
        return str(cert), str(key)

    def handshake(self, cert_file: str, key_file: str, server: dict) -> tuple[bool, str]:
        ctx = reload_probe.probe_context({"cert_file": cert_file, "key_file": key_file, "ca_file": self.info["pki"]["root_pem_file"]})
        host, port = reload_base.host_port(server["url"])
        return reload_probe.tls_probe(host, port, ctx, timeout=5)

    def down(self):
        self.stack.down()


def _epoch_of(issuer_name: str | None) -> int | None:
    """The epoch an issuer stands for (a replacement epoch-<n>-r<k> stands for epoch n); None for another name."""
    match = re.fullmatch(r"epoch-(\d+)(?:-r\d+)?", issuer_name or "")
    return int(match.group(1)) if match else None


class Observer(threading.Thread):
    """Every `interval` s: a client holding a leaf of the *default* issuer must be accepted by every server.

    If the default issuer ever named an epoch that some server did not trust yet ("issue before trust"),
    a handshake fails and is recorded.

    ``by_name``: the default issuer is told by its name, not its epoch (a replacement ``epoch-<n>-r<k>`` is another
    issuer of epoch n; ``leaves`` and ``epochs_seen`` are keyed by the name), and a refusal counts only while that
    issuer is still the default after the check (a distrust drops the distrusted issuer from the bundle once its
    replacement is the default).
    """

    def __init__(self, rs: RotationStack, workdir: Path, interval: float = 0.5, int_mount: str | None = None,
                 by_name: bool = False):
        super().__init__(daemon=True)
        self.rs, self.workdir, self.interval = rs, workdir, interval
        #: the family's intermediate mount whose default issuer is watched (dual mode: the ML-DSA one)
        self.int_mount = int_mount
        self.by_name = by_name
        self.stop_event = threading.Event()
        self.failures: list[str] = []
        self.checks = 0
        self.leaves: dict[int | str, tuple[str, str]] = {}
        self.epochs_seen: list[int | str] = []

    def run(self):
        while not self.stop_event.wait(self.interval):
            try:
                self._check()
            except Exception as exc:  # noqa: BLE001 - an observer error is a finding too
                self.failures.append(f"observer error: {exc!r}")

    def _check(self):
        name = self.rs.default_issuer_name(self.int_mount)
        epoch = _epoch_of(name)
        if epoch is None:
            return
        key, ref = (name, name) if self.by_name else (epoch, f"epoch-{epoch}")
        if key not in self.leaves:
            self.leaves[key] = self.rs.issue_client_leaf(self.workdir / ref, ref, int_mount=self.int_mount)
            self.epochs_seen.append(key)
        for server in self.rs.servers:
            ok, detail = self.rs.handshake(*self.leaves[key], server)
            self.checks += 1
            if not ok and (not self.by_name or self.rs.default_issuer_name(self.int_mount) == name):
                self.failures.append(f"default issuer {ref} not trusted by {server['name']}: {detail}")

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)


class Traffic(threading.Thread):
    """Continuous JetStream publishing (acked, R3) and consuming over one long-lived mTLS connection each."""

    PUBLISH_TIMEOUT = 5.0  # seconds a publish waits for its acknowledgement

    def __init__(self, rs: RotationStack, stream: str = "E2E", rate: float = 50.0, servers: list[str] | None = None,
                 fetch_retry: bool = False, publish_retry: int = 0):
        """``servers``: the URLs both clients connect to (default: every server of the first cluster).
        ``fetch_retry``: a pull that fails (e.g. 503 while a server is stopped) is recorded in ``fetch_errors`` and
        retried, as a client would, instead of ending the consumer.
        ``publish_retry``: a publish whose acknowledgement times out is sent again, up to that many times, with the same
        ``Nats-Msg-Id`` (the stream deduplicates, so a message stored before the timeout is not stored twice), as a
        producer that must not lose messages does; every retry is recorded in ``publish_retries`` as (wall time the timed-out attempt was sent,
        message number, error). With 0 a timeout is
        an error."""
        super().__init__(daemon=True)
        self.rs, self.stream, self.rate, self.servers, self.fetch_retry = rs, stream, rate, servers, fetch_retry
        self.fetch_errors: list[tuple[float, str]] = []
        self.publish_retry = publish_retry
        self.publish_retries: list[tuple[float, int, str]] = []  # (sent at, message number, error) per retry
        self.acked: list[int] = []
        self.samples: list[tuple[float, float]] = []  # (wall time, publish-to-ack latency in ms) per acked publish
        self.consumed: set[int] = set()
        self.errors: list[str] = []
        self.reconnects = 0
        self.disconnects = 0
        self.stop_event = threading.Event()
        self.ready = threading.Event()

    def _tls(self):
        auth = self.rs.info["nats_auth"]
        ctx = ssl.create_default_context(cafile=self.rs.info["pki"]["root_pem_file"])
        ctx.load_cert_chain(auth["client_cert_file"], auth["client_key_file"])
        return ctx

    async def _main(self):
        import nats  # pylint: disable=import-outside-toplevel
        from nats import errors as nats_errors  # pylint: disable=import-outside-toplevel
        auth = self.rs.info["nats_auth"]
        password = Path(auth["app_password_file"]).read_text().strip()

        async def on_reconnect():
            self.reconnects += 1

        async def on_disconnect():
            self.disconnects += 1

        async def on_error(exc):
            self.errors.append(repr(exc))

        servers = self.servers or [s["url"] for s in self.rs.info["clusters"][0]["servers"]]
        pub = await nats.connect(servers, tls=self._tls(), tls_hostname="127.0.0.1", user="app", password=password,
                                 reconnected_cb=on_reconnect, disconnected_cb=on_disconnect, error_cb=on_error, name="e2e-pub")
        sub_nc = await nats.connect(servers, tls=self._tls(), tls_hostname="127.0.0.1", user="app", password=password,
                                    reconnected_cb=on_reconnect, disconnected_cb=on_disconnect, error_cb=on_error, name="e2e-sub")
        js = pub.jetstream()
        await js.add_stream(name=self.stream, subjects=[f"{self.stream.lower()}.>"], num_replicas=3)
        sjs = sub_nc.jetstream()
        psub = await sjs.pull_subscribe(f"{self.stream.lower()}.>", durable="e2e-consumer")
        self.ready.set()

        async def consume():
            while not self.stop_event.is_set() or len(self.consumed) < len(self.acked):
                try:
                    msgs = await psub.fetch(100, timeout=1)
                except asyncio.TimeoutError:
                    if self.stop_event.is_set():
                        break
                    continue
                except Exception as exc:  # noqa: BLE001 - only with fetch_retry; recorded
                    if not self.fetch_retry:
                        raise
                    self.fetch_errors.append((time.time(), repr(exc)))
                    await asyncio.sleep(0.2)
                    continue
                for msg in msgs:
                    self.consumed.add(msg.metadata.sequence.stream)
                    await msg.ack()

        consumer = asyncio.ensure_future(consume())
        i = 0
        while not self.stop_event.is_set():
            wall, started = time.time(), time.perf_counter()
            for attempt in range(self.publish_retry + 1):
                sent = time.time()
                try:
                    ack = await js.publish(f"{self.stream.lower()}.msg", f"m{i}".encode(), timeout=self.PUBLISH_TIMEOUT,
                                           headers={"Nats-Msg-Id": f"{self.stream}-m{i}"})
                except nats_errors.TimeoutError as exc:
                    if attempt < self.publish_retry:
                        self.publish_retries.append((sent, i, repr(exc)))
                        continue
                    self.errors.append(f"publish {i}: {exc!r}")
                except Exception as exc:  # noqa: BLE001
                    self.errors.append(f"publish {i}: {exc!r}")
                else:
                    self.samples.append((wall, (time.perf_counter() - started) * 1000.0))
                    if not (ack.duplicate and self.acked and ack.seq in self.acked[-self.publish_retry - 1:]):
                        self.acked.append(ack.seq)
                break
            i += 1
            await asyncio.sleep(max(0.0, 1.0 / self.rate - (time.perf_counter() - started)))
        await asyncio.wait_for(consumer, timeout=60)
        self.disconnects_during = self.disconnects  # close() below fires the callback too
        info = await js.stream_info(self.stream)
        self.stream_last_seq = info.state.last_seq
        self.stream_messages = info.state.messages
        await js.delete_stream(self.stream)
        await pub.close()
        await sub_nc.close()

    def run(self):
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"traffic crashed: {exc!r}")
            self.ready.set()

    def stop(self):
        self.stop_event.set()
        self.join(timeout=120)

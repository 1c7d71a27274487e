"""An observer of the rotation that knows only OpenBao and NATS (no code of the collection).

Every round it lists the ``epoch-<n>`` issuers of the intermediate mount, issues its own client leaf from each new
one (NotAfter asked for = the epoch's expiry by the schedule), reads which issuer is the default, and makes a
*leaf-only* mTLS handshake with every held leaf against every server: a server accepts such a leaf only if the
leaf's intermediate is in its CA file, so each sample says exactly whether that server trusts that epoch now.
Samples are recorded raw; :func:`judge` decides afterwards, against the schedule and the measured runs.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509

ACCEPTED, REFUSED, ERROR = "accepted", "refused", "error"
# x509 times have a resolution of one second: a sample this close to an expiry is not judged
CLOCK_SLACK = 1.0


@dataclass(frozen=True)
class Schedule:
    """The epoch math of the design (§2), done here again so the observer does not use the code it checks."""

    zero: float
    duration: int
    validity: int
    lead: int

    @classmethod
    def from_info(cls, epoch_info: dict) -> Schedule:
        zero = datetime.fromisoformat(str(epoch_info["epoch_zero"]).replace("Z", "+00:00")).timestamp()
        duration = int(epoch_info["epoch_duration"])
        lead = epoch_info.get("lead_time")
        return cls(zero, duration, int(epoch_info.get("validity") or 4 * duration),
                   int(lead) if lead not in (None, "") else duration // 4)

    def epoch(self, t: float) -> int:
        return int((t - self.zero) // self.duration)

    def start(self, n: int) -> float:
        return self.zero + n * self.duration

    def prepare(self, n: int) -> float:
        return self.start(n) - self.lead

    def expiry(self, n: int) -> float:
        return self.start(n) + self.validity

    def next_boundary(self, t: float) -> float:
        """The first phase boundary after ``t``: an epoch's preparation (start - lead) or its start."""
        n = self.epoch(t)
        return min(b for b in (self.prepare(n + 1), self.start(n + 1), self.prepare(n + 2)) if b > t)


def client_context(cert_file: str, key_file: str, root_file: str) -> ssl.SSLContext:
    """A client context presenting exactly what ``cert_file`` holds and verifying the server against the root."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(root_file)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def leaf_handshake(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> tuple[str, str]:
    """One mTLS handshake with a NATS client port (INFO comes in plaintext first, then TLS); (result, detail).

    With TLS 1.3 the server judges the client certificate after the handshake, so acceptance is proven by a protocol
    line read back through TLS (``-ERR 'Authorization Violation'``: no credentials are sent, the TLS layer accepted).
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return ERROR, f"connect: {exc}"
    try:
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return ERROR, "closed before INFO"
            greeting += chunk
        try:
            tls = ctx.wrap_socket(sock, do_handshake_on_connect=False)
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            return ERROR, f"the server's own certificate does not verify: {exc.verify_message}"
        except ssl.SSLError as exc:
            return REFUSED, f"handshake: {exc.reason or exc}"
        try:
            tls.sendall(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"name":"soak observer"}\r\nPING\r\n')
            reply = tls.recv(4096)
        except ssl.SSLError as exc:
            return REFUSED, f"after handshake: {exc.reason or exc}"
        except OSError as exc:
            return ERROR, f"after handshake: {exc!r}"
        if not reply:
            return REFUSED, "closed after the handshake"
        return ACCEPTED, reply.decode("utf-8", "replace").strip()[:60]
    except OSError as exc:
        return ERROR, repr(exc)
    finally:
        sock.close()


@dataclass
class Sample:
    t: float            # wall time the handshake started
    epoch: int
    server: str
    result: str
    detail: str
    default: bool       # the epoch was OpenBao's default issuer before and after this handshake


@dataclass
class Leaf:
    cert: str
    key: str
    not_after: float
    ctx: ssl.SSLContext


class LeafObserver(threading.Thread):
    """Samples leaf-only handshakes of every ``epoch-<n>`` issuer against every server, every ``interval`` seconds."""

    def __init__(self, rs, workdir: Path, schedule: Schedule, interval: float, handshake_timeout: float):
        super().__init__(daemon=True)
        self.rs, self.workdir, self.schedule = rs, Path(workdir), schedule
        self.interval, self.handshake_timeout = interval, handshake_timeout
        self.servers = [(s["name"], s["url"]) for s in rs.servers]
        self.root = rs.info["pki"]["root_pem_file"]
        self.int_mount = rs.info["pki"]["int_mount"]
        self.stop_event = threading.Event()
        self.skip: set[str] = set()          # servers not to sample (one the test has stopped)
        self.leaves: dict[int, Leaf] = {}
        self.samples: list[Sample] = []
        self.defaults: list[tuple[float, int | None]] = []
        self.errors: list[str] = []
        self.rounds = 0

    def _issuers(self, client) -> tuple[set[int], int | None]:
        key_info = client.list(f"{self.int_mount}/issuers")["data"]["key_info"]
        epochs, default = set(), None
        for meta in key_info.values():
            name = meta.get("issuer_name") or ""
            if name.startswith("epoch-") and name[6:].isdigit():
                epochs.add(int(name[6:]))
                if meta.get("is_default"):
                    default = int(name[6:])
        return epochs, default

    def _issue(self, client, n: int):
        expiry = datetime.fromtimestamp(self.schedule.expiry(n), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        cert, key = self.rs.issue_client_leaf(self.workdir / f"epoch-{n}", f"epoch-{n}", leaf_only=True, client=client,
                                              not_after=expiry)
        not_after = x509.load_pem_x509_certificate(Path(cert).read_bytes()).not_valid_after_utc.timestamp()
        if abs(not_after - self.schedule.expiry(n)) > CLOCK_SLACK:
            self.errors.append(f"a leaf of epoch-{n} asked to expire at {expiry} expires at "
                               f"{datetime.fromtimestamp(not_after, timezone.utc):%H:%M:%S} (its intermediate's NotAfter is not expiry(n))")
        self.leaves[n] = Leaf(cert, key, not_after, client_context(cert, key, self.root))

    def run(self):
        client = self.rs.bao()
        while not self.stop_event.is_set():
            began = time.monotonic()
            try:
                self._round(client)
            except Exception as exc:  # noqa: BLE001 - an observer error is a finding too
                self.errors.append(f"observer round {self.rounds}: {exc!r}")
            self.rounds += 1
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _round(self, client):
        epochs, default = self._issuers(client)
        self.defaults.append((time.time(), default))
        for n in sorted(epochs - set(self.leaves)):
            if time.time() < self.schedule.expiry(n):
                self._issue(client, n)
        now = time.time()
        # every leaf until one epoch after its expiry (then it has been seen refused)
        live = [n for n in sorted(self.leaves) if now < self.leaves[n].not_after + self.schedule.duration]
        round_samples = []
        for n in live:
            leaf = self.leaves[n]
            for name, url in self.servers:
                if name in self.skip:
                    continue
                host, port = url.split("://", 1)[-1].rsplit(":", 1)
                t = time.time()
                result, detail = leaf_handshake(host, int(port), leaf.ctx, self.handshake_timeout)
                round_samples.append(Sample(t, n, name, result, detail, False))
        _epochs_after, default_after = self._issuers(client)
        for sample in round_samples:
            sample.default = default is not None and sample.epoch == default == default_after
        self.samples.extend(round_samples)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=60)


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    accepted: int = 0
    refused: int = 0
    errors: int = 0
    refused_expired: int = 0
    refused_exempt: int = 0
    default_checks: int = 0
    trust_lead: list[float] = field(default_factory=list)   # per epoch: start(n) - first time every server accepted it
    expired_epochs: int = 0

    def summary(self) -> dict:
        lead = sorted(self.trust_lead)
        return {"handshakes_accepted": self.accepted, "handshakes_refused": self.refused, "handshake_errors": self.errors,
                "refused_expired": self.refused_expired, "expired_epochs_refused": self.expired_epochs, "refused_during_rollback": self.refused_exempt,
                "default_issuer_checks": self.default_checks, "violations": len(self.violations),
                "trusted_before_start_s": {"min": round(lead[0], 2), "median": round(statistics.median(lead), 2),
                                           "max": round(lead[-1], 2)} if lead else None}


def judge(samples: list[Sample], schedule: Schedule, servers: list[str], required_from: dict[int, float],
          exempt: list[tuple[float, float, int]], epochs_required: range, end: float) -> Verdict:
    """Turn raw samples into violations.

    - the default issuer: a sample of the epoch that was default throughout the handshake must be accepted, always;
    - valid epochs: from ``required_from[n]`` (the end of the first good run that started once epoch n was due) to its
      expiry, every sample of n must be accepted — except a refusal inside an ``exempt`` window ``(t0, t1, newest)``
      (a rollback: epochs newer than ``newest`` are not trusted then, by design); every epoch of ``epochs_required``
      must have been accepted by every server;
    - expired epochs: every sample after the expiry must be refused, and every sampled epoch that expired before
      ``end`` must have been refused by every server at least once.
    """
    v = Verdict()
    first_ok: dict[tuple[int, str], float] = {}
    refused_after_expiry: set[tuple[int, str]] = set()
    for s in samples:
        v.accepted += s.result == ACCEPTED
        v.refused += s.result == REFUSED
        v.errors += s.result == ERROR
        expiry = schedule.expiry(s.epoch)
        if s.result == ACCEPTED:
            first_ok.setdefault((s.epoch, s.server), s.t)
        if s.default:
            v.default_checks += 1
            if s.result != ACCEPTED:
                v.violations.append(f"{s.t:.1f}: the default issuer epoch-{s.epoch} is not trusted by {s.server}: {s.detail}")
                continue
        if s.t > expiry + CLOCK_SLACK:
            if s.result == ACCEPTED:
                v.violations.append(f"{s.t:.1f}: epoch {s.epoch} expired {s.t - expiry:.1f}s ago and {s.server} accepted it")
            elif s.result == REFUSED:
                v.refused_expired += 1
                refused_after_expiry.add((s.epoch, s.server))
        elif s.epoch in required_from and required_from[s.epoch] <= s.t < expiry - CLOCK_SLACK and s.result != ACCEPTED:
            if s.result == REFUSED and any(t0 <= s.t <= t1 and s.epoch > newest for t0, t1, newest in exempt):
                v.refused_exempt += 1
            else:
                v.violations.append(f"{s.t:.1f}: valid epoch {s.epoch} ({s.t - schedule.start(s.epoch):+.1f}s from its start) "
                                    f"{s.result} by {s.server}: {s.detail}")
    for n in epochs_required:
        missing = [srv for srv in servers if (n, srv) not in first_ok]
        if missing:
            v.violations.append(f"epoch {n} was never accepted by {', '.join(missing)}")
        else:
            v.trust_lead.append(schedule.start(n) - max(first_ok[(n, srv)] for srv in servers))
    for n in sorted({s.epoch for s in samples}):
        if schedule.expiry(n) + CLOCK_SLACK < end:
            missing = [srv for srv in servers if (n, srv) not in refused_after_expiry]
            if missing:
                v.violations.append(f"epoch {n} expired but was never seen refused by {', '.join(missing)}")
    v.expired_epochs = len({n for n, _srv in refused_after_expiry})
    return v

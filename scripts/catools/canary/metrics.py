"""The canary's Prometheus metrics (``prometheus_client``; one registry per canary).

Gauges describe the last round (their label sets are rebuilt each round); counters and the histogram accumulate.

What a handshake measures carries a ``port`` label: ``client`` (the client port) or ``route`` (the route / cluster
port, where one is configured and route probing is on). It is one measurement at two listeners of the same server, so
it is one metric family with a label rather than a second family: a rule or panel covers both ports, ``by (port)``
tells them apart, and a server without a probed route port simply has no ``port="route"`` series. The CA file metrics
(``bundle_member_expiry_seconds``) are about the file and have no ``port``; neither do the violations of the CA file
invariants (``port=""``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from catools.canary.checks import ERROR_SOURCES, INVARIANTS, listeners, parse_time

P = 'ca_trust_canary_'
SERVER = ('cluster', 'server')
LISTENER = SERVER + ('port',)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class CanaryMetrics:
    """Every metric family of the canary, registered in :attr:`registry`."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.accepted = Gauge(P + 'epoch_accepted', 'Whether the server accepted a leaf-only client certificate of the epoch '
                              '(1) or refused it (0) in the last round on its port (client or route); absent when the '
                              'handshake was inconclusive.', LISTENER + ('epoch',), registry=r)
        self.served_epoch = Gauge(P + 'served_epoch', 'Epoch of the issuer of the certificate the server serves on the port.',
                                  LISTENER, registry=r)
        self.served_expiry = Gauge(P + 'served_certificate_expiry_seconds', 'Seconds until the certificate the server '
                                   'serves on the port expires (negative: expired).', LISTENER, registry=r)
        self.member_expiry = Gauge(P + 'bundle_member_expiry_seconds', "Seconds until each certificate of a server's CA "
                                   'file expires (negative: expired); epoch "root" for the root.', SERVER + ('epoch',),
                                   registry=r)
        self.server_up = Gauge(P + 'server_up', 'Whether the port of the server was reachable (TCP; the NATS greeting and '
                               'the TLS offer on the client port, TLS on the route port) in the last round.',
                               LISTENER, registry=r)
        self.openbao_up = Gauge(P + 'openbao_up', 'Whether OpenBao could be read in the last round.', registry=r)
        self.default_epoch = Gauge(P + 'default_issuer_epoch', "Epoch of OpenBao's default issuer.", registry=r)
        self.issuer_expiry = Gauge(P + 'issuer_expiry_seconds', 'Seconds until each epoch issuer expires, by state.',
                                   ('epoch', 'state'), registry=r)
        self.violation = Gauge(P + 'violation', 'Whether the invariant is violated on the server (and port) in the last '
                               'round (1); cluster and server are empty for violations that are not about one server, port '
                               'for those about its CA file.', ('invariant',) + LISTENER, registry=r)
        self.violations_seen = Gauge(P + 'violations', 'Number of invariant violations in the last round, by invariant.',
                                     ('invariant',), registry=r)
        self.violations_total = Counter(P + 'invariant_violations', 'Invariant violations seen, by invariant (one per '
                                        'round, server and port).', ('invariant',), registry=r)
        self.errors_total = Counter(P + 'check_errors', 'Checks that could not be made, by source (openbao, server, route, '
                                    'leaf, ca_file, tls): never counted as violations.', ('source',), registry=r)
        self.check_errors = Gauge(P + 'check_errors_last', 'Checks that could not be made in the last round, by source.',
                                  ('source',), registry=r)
        self.handshake = Histogram(P + 'handshake_seconds', 'Duration of the leaf-only TLS handshakes (connect, INFO, TLS, '
                                   'first protocol line), by port.', LISTENER, buckets=BUCKETS, registry=r)
        self.rounds = Counter(P + 'rounds', 'Check rounds run.', registry=r)
        self.last_round = Gauge(P + 'last_round_timestamp_seconds', 'Unix time of the last check round.', registry=r)
        self.round_duration = Gauge(P + 'last_round_duration_seconds', 'Duration of the last check round.', registry=r)
        self.verdict_ok = Gauge(P + 'verdict_ok', 'Whether the last round saw no violation (1).', registry=r)
        self.interval = Gauge(P + 'interval_seconds', 'Configured seconds between rounds (for the alert rules).', registry=r)
        for invariant in INVARIANTS:  # every invariant has a series from the start (rate() and absent() work)
            self.violations_total.labels(invariant)
        for source in ERROR_SOURCES:
            self.errors_total.labels(source)

    def _listener(self, labels, probe, now):
        if probe.get('reachable') is not None:
            self.server_up.labels(*labels).set(1 if probe['reachable'] else 0)
        for epoch, ok in (probe.get('accepted') or {}).items():
            if ok is not None:
                self.accepted.labels(*labels, str(epoch)).set(1 if ok else 0)
        served = probe.get('served') or {}
        if served.get('issuer_epoch') is not None:
            self.served_epoch.labels(*labels).set(served['issuer_epoch'])
        if served.get('not_after'):
            self.served_expiry.labels(*labels).set((parse_time(served['not_after']) - now).total_seconds())

    def update(self, obs, result, handshakes, interval, duration):
        """Set the gauges from one round; ``handshakes`` is ``[((cluster, server, port), seconds)]``."""
        now = obs['now']
        for gauge in (self.accepted, self.served_epoch, self.served_expiry, self.member_expiry, self.server_up,
                      self.issuer_expiry, self.violation, self.violations_seen, self.check_errors):
            gauge.clear()
        self.openbao_up.set(1 if (obs.get('openbao') or {}).get('ok') else 0)
        if obs.get('default_epoch') is not None:
            self.default_epoch.set(obs['default_epoch'])
        for issuer in obs.get('issuers') or []:
            not_after = parse_time(issuer.get('not_after'))
            if not_after is not None:
                self.issuer_expiry.labels(str(issuer['epoch']), issuer.get('state') or '').set((not_after - now).total_seconds())
        for server in obs.get('servers') or []:
            labels = (server['cluster'], server['name'])
            for port, probe in listeners(server):
                self._listener(labels + (port,), probe, now)
            for member in server.get('ca_members') or []:
                name = 'root' if member.get('kind') == 'root' else str(member.get('epoch'))
                self.member_expiry.labels(*labels, name).set((parse_time(member['not_after']) - now).total_seconds())
        for (cluster, server, port), seconds in handshakes:
            self.handshake.labels(cluster, server, port).observe(seconds)
        counts = dict.fromkeys(INVARIANTS, 0)
        for v in result['violations']:
            counts[v['invariant']] = counts.get(v['invariant'], 0) + 1
            self.violation.labels(v['invariant'], v.get('cluster') or '', v.get('server') or '', v.get('port') or '').set(1)
            self.violations_total.labels(v['invariant']).inc()
        for invariant, count in counts.items():
            self.violations_seen.labels(invariant).set(count)
        errors = dict.fromkeys(ERROR_SOURCES, 0)
        for e in result['errors']:
            errors[e['source']] = errors.get(e['source'], 0) + 1
            self.errors_total.labels(e['source']).inc()
        for source, count in errors.items():
            self.check_errors.labels(source).set(count)
        self.rounds.inc()
        self.last_round.set(now.timestamp())
        self.round_duration.set(duration)
        self.verdict_ok.set(1 if result['ok'] else 0)
        self.interval.set(interval)

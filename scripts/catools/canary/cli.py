"""``ca-trust-canary``: the check round, the outputs (metrics, verdict, HTML) and the daemon loop."""

from __future__ import annotations

import concurrent.futures
import datetime
import http.server
import json
import signal
import sys
import threading
import time

from catools import ensure_collection_importable
from catools.canary.config import ConfigError, build_config, build_parser, load_file

EXIT_OK, EXIT_VIOLATION, EXIT_CONFIG, EXIT_INCOMPLETE = 0, 1, 2, 3
UTC = datetime.timezone.utc
MAX_WORKERS = 16


def _log(message):
    print('ca-trust-canary: %s' % message, file=sys.stderr, flush=True)


class Canary:
    """One canary: its configuration, leaves, metrics and the last round's outputs."""

    def __init__(self, cfg):
        # pylint: disable=import-outside-toplevel
        from catools.canary.metrics import CanaryMetrics
        from catools.canary.probe import LeafStore
        self.cfg = cfg
        self.metrics = CanaryMetrics()
        self.leaves = LeafStore(cfg.pki['int_mount'], cfg.role, cfg.common_name, cfg.leaf_ttl)
        self.client = None
        self.role_ready = not cfg.ensure_role
        self.bundles = {}  # (epoch, sha256) -> epochs of a proven bundle
        self.last = {'verdict': None, 'html': None}
        self.lock = threading.Lock()
        self.seen = set()

    def close(self):
        self.leaves.close()

    # ------------------------------------------------------------------ OpenBao
    def _connect(self, _params=None):
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import connect
        if self.client is None:
            self.client = connect(self.cfg.openbao)
        return self.client

    def _proven(self, records):
        """``{cluster: {'epochs', 'note'}}``: the epochs of the bundle each cluster's proof record names."""
        # pylint: disable=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError, bundle_unverified
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import expand, read_kv
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
        out = {}
        for cluster in self.cfg.clusters:
            name = cluster['name']
            record = records.get(name)
            if not record or record.get('epoch') is None:
                out[name] = {'epochs': None, 'note': 'no proof record of cluster %s yet' % name}
                continue
            key = (int(record['epoch']), record.get('sha256'))
            if key not in self.bundles:
                try:
                    _version, data = read_kv(self.client, self.cfg.pki['kv_mount'], expand(self.cfg.pki['bundle_path'], key[0]))
                    parsed = bundle_unverified((data or {}).get('ca-bundle.pem') or '')
                except (OpenBaoError, BundleError) as exc:
                    out[name] = {'epochs': None, 'note': 'the bundle cluster %s proved is not readable: %s' % (name, exc)}
                    continue
                if parsed['sha256'] != key[1]:
                    out[name] = {'epochs': None, 'note': 'the stored bundle of epoch-%s is not the one cluster %s proved '
                                 '(a rotation is under way)' % (key[0], name)}
                    continue
                self.bundles[key] = parsed['epochs']
            out[name] = {'epochs': self.bundles[key], 'note': None}
        return out

    def _authority(self, now):
        # pylint: disable=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.gather import gather_authority
        from catools.canary.probe import ensure_role
        cfg = self.cfg
        facts = gather_authority(cfg.openbao, cfg.schedule, now, root_mount=cfg.pki['root_mount'], int_mount=cfg.pki['int_mount'],
                                 kv_mount=cfg.pki['kv_mount'], state_path=cfg.pki['state_path'], bundle_path=cfg.pki['bundle_path'],
                                 clusters=[c['name'] for c in cfg.clusters], nats_params=None, connect=self._connect)
        fatal = [e['msg'] for e in facts['errors'] if e.get('source') in ('openbao', 'issuers')]
        obs = {'openbao': {'ok': not fatal, 'error': '; '.join(fatal) or None}, 'issuers': facts.get('issuers'),
               'default_epoch': (facts.get('default_issuer') or {}).get('epoch'), 'proven': {}}
        if fatal:
            self.client = None  # log in again next round
            return obs
        if not self.role_ready:
            try:
                if ensure_role(self.client, cfg.pki['int_mount'], cfg.role, cfg.common_name, cfg.leaf_ttl):
                    _log('wrote the PKI role %s/roles/%s' % (cfg.pki['int_mount'], cfg.role))
                self.role_ready = True
            except Exception as exc:  # pylint: disable=broad-except  # reported, retried next round
                obs['openbao'] = {'ok': False, 'error': 'ensuring the canary role %s: %s' % (cfg.role, exc)}
                return obs
        obs['proven'] = self._proven(facts.get('cluster_records') or {})
        return obs

    # ------------------------------------------------------------------ servers
    def _probe(self, server, leaves, kind):
        """Every leaf against one listener (``client`` or ``route``) of ``server``: ``{'reachable', 'error', 'accepted',
        'details', 'served', 'problems', 'handshakes'}``; the first unreachable handshake ends it."""
        # pylint: disable-next=import-outside-toplevel
        from catools.canary.probe import handshake
        cfg = self.cfg
        host, port = server.endpoint(kind)
        out = {'host': host, 'port': port, 'reachable': None, 'error': None, 'accepted': {}, 'details': {}, 'served': None,
               'problems': [], 'handshakes': []}
        for epoch, leaf in sorted(leaves.items()):
            res = handshake(server, leaf, cfg.tls_ca_file, cfg.tls_server_name, cfg.timeout, kind)
            if res['seconds'] is not None:
                out['handshakes'].append(res['seconds'])
            if res['outcome'] == 'unreachable':
                out.update(reachable=False, error=res['detail'])
                break
            out['reachable'] = True
            out['served'] = out['served'] or res['served']
            if res.get('server_problem') and res['server_problem'] not in out['problems']:
                out['problems'].append(res['server_problem'])
            if res['outcome'] in ('accepted', 'refused'):
                out['accepted'][epoch] = res['outcome'] == 'accepted'
                out['details'][epoch] = res['detail']
            else:
                out['accepted'][epoch] = None
                out['problems'].append('epoch-%s: %s' % (epoch, res['detail']))
        return out

    def _server(self, server, leaves):
        """One server's observation: the client port's results at the top (``reachable``, ``accepted``, ...), the
        route port's under ``route`` (None when it is not probed), and its CA file."""
        # pylint: disable-next=import-outside-toplevel
        from catools.canary.probe import read_ca_file
        cfg = self.cfg
        client = self._probe(server, leaves, 'client')
        entry = {'cluster': server.cluster, 'name': server.name, 'url': server.url, 'ca_file': server.ca_file,
                 'ca_members': None, 'ca_error': None, 'route': None}
        entry.update({k: v for k, v in client.items() if k not in ('host', 'port')})
        if cfg.probe_routes and server.route:
            entry['route'] = self._probe(server, leaves, 'route')
        if server.ca_file:
            entry['ca_members'], entry['ca_error'] = read_ca_file(server.ca_file, cfg.schedule)
        return entry

    def observe(self):
        now = datetime.datetime.now(UTC)
        obs = self._authority(now)
        obs['now'] = now
        issuers = obs.get('issuers') or []
        obs['leaf_errors'] = self.leaves.refresh(self.client if obs['openbao']['ok'] else None, issuers, now) if issuers else {}
        # a leaf that ends within this round proves nothing about its epoch (it is refused for its own expiry); the leaves
        # of expired or revoked epochs are kept and tried: a server must refuse them
        margin = datetime.timedelta(seconds=self.cfg.timeout + 1)
        ended = {i['epoch'] for i in issuers if i.get('state') in ('expired', 'revoked')}
        leaves = {e: leaf for e, leaf in self.leaves.leaves.items() if e in ended or leaf['not_after'] > now + margin}
        servers = self.cfg.servers
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(servers)))) as pool:
            obs['servers'] = list(pool.map(lambda s: self._server(s, leaves), servers))
        return obs

    # ------------------------------------------------------------------ a round
    def round(self):
        # pylint: disable=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import atomic_write
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.html import render_timeline
        from prometheus_client import write_to_textfile
        from catools.canary.checks import evaluate, timeline_model, verdict_document
        cfg = self.cfg
        started = time.monotonic()
        obs = self.observe()
        result = evaluate(obs, cfg.expired_grace, cfg.served_min_validity)
        duration = round(time.monotonic() - started, 3)
        verdict = verdict_document(obs, result, cfg.interval, duration)
        page = render_timeline(timeline_model(obs, result, [c['name'] for c in cfg.clusters]))
        handshakes = [((s['cluster'], s['name'], 'client'), t) for s in obs['servers'] for t in s['handshakes']]
        handshakes += [((s['cluster'], s['name'], 'route'), t) for s in obs['servers'] for t in (s.get('route') or {}).get('handshakes', [])]
        self.metrics.update(obs, result, handshakes, cfg.interval, duration)
        with self.lock:
            self.last = {'verdict': verdict, 'html': page}
        if cfg.verdict_file:
            atomic_write(cfg.verdict_file, json.dumps(verdict, indent=2, sort_keys=True) + '\n', 0o644)
        if cfg.html_file:
            atomic_write(cfg.html_file, page, 0o644)
        if cfg.metrics_file:
            write_to_textfile(cfg.metrics_file, self.metrics.registry)
        self._report(result)
        return verdict

    def _report(self, result):
        keys = set()
        for v in result['violations']:
            key = (v['invariant'], v['cluster'], v['server'], v.get('port'), v['epoch'])
            keys.add(key)
            if key not in self.seen:
                _log('VIOLATION %s: %s' % (v['invariant'], v['msg']))
        for key in self.seen - keys:
            _log('resolved %s on %s/%s%s' % (key[0], key[1], key[2], ' (%s port)' % key[3] if key[3] else ''))
        self.seen = keys
        for e in result['errors']:
            _log('not checked (%s) %s: %s' % (e['source'], e['where'], e['msg']))


def serve(canary, host, port):
    """The HTTP endpoint: /metrics, / (the timeline), /verdict.json, /healthz. Returns the server (already serving)."""
    # pylint: disable-next=import-outside-toplevel
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            path = self.path.split('?', 1)[0]
            with canary.lock:
                last = dict(canary.last)
            if path == '/metrics':
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(canary.metrics.registry))
            elif path in ('/', '/index.html'):
                self._send(200 if last['html'] else 503, 'text/html; charset=utf-8',
                           (last['html'] or 'no round has run yet\n').encode('utf-8'))
            elif path == '/verdict.json':
                self._send(200 if last['verdict'] else 503, 'application/json',
                           (json.dumps(last['verdict']) + '\n').encode('utf-8'))
            elif path == '/healthz':
                self._send(200, 'text/plain', b'ok\n')
            else:
                self._send(404, 'text/plain', b'not found\n')

        def _send(self, status, ctype, body):
            self.send_response(status)
            self.send_header('Content-Type', ctype)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin  # quiet: scraped every few seconds
            return

    httpd = http.server.ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name='canary-http', daemon=True).start()
    return httpd


def _exit_code(verdict):
    if verdict['violation_count']:
        return EXIT_VIOLATION
    return EXIT_OK if verdict['complete'] else EXIT_INCOMPLETE


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        ensure_collection_importable()
        cfg = build_config(load_file(args.config) if args.config else {}, args)
    except ConfigError as exc:
        _log('configuration error: %s' % exc)
        return EXIT_CONFIG
    canary = Canary(cfg)
    stop = threading.Event()
    httpd = None
    try:
        if args.once:
            return _exit_code(canary.round())
        if cfg.listen:
            try:
                httpd = serve(canary, *cfg.listen)
            except OSError as exc:
                _log('configuration error: listen %s:%s: %s' % (cfg.listen[0], cfg.listen[1], exc.strerror or exc))
                return EXIT_CONFIG
            _log('serving /metrics, / and /verdict.json on %s:%s' % httpd.server_address[:2])
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_a: stop.set())
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                canary.round()
            except Exception as exc:  # pylint: disable=broad-except  # a daemon keeps checking; the metrics go stale
                _log('round failed: %s: %s' % (type(exc).__name__, exc))
            next_at += cfg.interval
            stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - cfg.interval)
        return EXIT_OK
    finally:
        if httpd is not None:
            httpd.shutdown()
        canary.close()

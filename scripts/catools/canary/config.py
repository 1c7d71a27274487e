"""The canary's configuration: a YAML (or JSON) file, overridden by command-line options. Every error names the option."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROLE = 'ca-trust-canary'
DEFAULT_COMMON_NAME = 'ca-trust-canary'
DEFAULT_INTERVAL = '30s'
DEFAULT_LEAF_TTL = '1h'
DEFAULT_TIMEOUT = '5s'
DEFAULT_EXPIRED_GRACE = '10m'

TOP_KEYS = {'openbao', 'pki', 'schedule', 'clusters', 'tls', 'leaf', 'interval', 'timeout', 'expired_grace',
            'served_min_validity', 'listen', 'metrics_file', 'verdict_file', 'html_file', 'probe_routes'}
PKI_KEYS = {'root_mount', 'int_mount', 'kv_mount', 'state_path', 'bundle_path'}
LEAF_KEYS = {'role', 'ensure_role', 'ttl', 'common_name'}
TLS_KEYS = {'ca_file', 'server_name'}
SCHEDULE_KEYS = {'epoch_zero', 'epoch_duration', 'validity', 'lead_time', 'skew_allowance'}
SERVER_KEYS = {'name', 'url', 'ca_file', 'route'}
CLUSTER_KEYS = {'name', 'servers', 'route_port'}
#: the NATS default cluster (route) port, when ``route`` names a host without a port
DEFAULT_ROUTE_PORT = 6222


class ConfigError(Exception):
    """A configuration problem (exit 2); ``option`` names the setting."""

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option


@dataclass
class Server:
    cluster: str
    name: str
    url: str
    host: str
    port: int
    ca_file: str | None = None
    #: the route (cluster) listener, ``(host, port)``; None: not probed there
    route: tuple | None = None

    @property
    def where(self):
        return '%s/%s' % (self.cluster, self.name)

    def endpoint(self, kind):
        """``(host, port)`` of the listener ``kind`` (``client`` or ``route``); None when it is not configured."""
        return (self.host, self.port) if kind == 'client' else self.route


@dataclass
class Config:
    openbao: dict
    schedule: object
    clusters: list
    pki: dict = field(default_factory=dict)
    role: str = DEFAULT_ROLE
    ensure_role: bool = False
    common_name: str = DEFAULT_COMMON_NAME
    leaf_ttl: int = 3600
    interval: int = 30
    timeout: float = 5.0
    expired_grace: int = 600
    served_min_validity: int | None = None
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    listen: tuple | None = None
    metrics_file: str | None = None
    verdict_file: str | None = None
    html_file: str | None = None
    probe_routes: bool = True

    @property
    def servers(self):
        return [s for c in self.clusters for s in c['servers']]


def _mapping(value, option, keys):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError('%s must be a mapping, got %s' % (option, type(value).__name__), option)
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ConfigError('%s: unknown setting(s) %s (known: %s)' % (option, ', '.join(unknown), ', '.join(sorted(keys))),
                          '%s.%s' % (option, unknown[0]))
    return dict(value)


def _duration(value, option, allow_zero=False):
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, parse_duration
    try:
        return parse_duration(value, option, allow_zero=allow_zero)
    except EpochError as exc:
        raise ConfigError(str(exc), option) from None


def _output(value, option):
    if not value:
        return None
    parent = Path(value).expanduser().resolve().parent
    if not parent.is_dir():
        raise ConfigError('%s %r: directory %s does not exist' % (option, value, parent), option)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError('%s %r: directory %s is not writable' % (option, value, parent), option)
    return str(value)


def _readable(value, option):
    if value and not os.path.isfile(os.path.expanduser(value)):
        raise ConfigError('%s %r does not exist or is not a file' % (option, value), option)
    return os.path.expanduser(value) if value else None


def _listen(value, option='listen'):
    if value in (None, '', False):
        return None
    text = str(value)
    host, sep, port = text.rpartition(':')
    if not sep:
        host, port = '0.0.0.0', text  # nosec - the metrics endpoint listens where it is told
    try:
        number = int(port)
    except ValueError:
        raise ConfigError('%s %r must be [HOST:]PORT' % (option, value), option) from None
    if not 0 <= number <= 65535:
        raise ConfigError('%s %r: port out of range' % (option, value), option)
    return (host.strip('[]') or '0.0.0.0', number)  # nosec


def _host_port(url, option, default_port=4222):
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import host_port
    try:
        host, port = host_port(url, default_port)
    except (TypeError, ValueError) as exc:
        raise ConfigError('%s %r is not a NATS URL (tls://host:port): %s' % (option, url, exc), option) from None
    if not host or not port:
        raise ConfigError('%s %r is not a NATS URL (tls://host:port)' % (option, url), option)
    return host, int(port)


def _openbao(raw):
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC
    keys = set(OPENBAO_ARG_SPEC['openbao']['options']) | {'secret_id_file'}
    conn = _mapping(raw, 'openbao', keys)
    if conn.get('token'):
        raise ConfigError('openbao.token: do not put a token in the configuration file; use openbao.token_file, '
                          'BAO_TOKEN, or AppRole / Kubernetes auth', 'openbao.token')
    if conn.get('secret_id'):
        raise ConfigError('openbao.secret_id: use openbao.secret_id_file (a secret does not belong in the configuration)',
                          'openbao.secret_id')
    if not (conn.get('url') or os.environ.get('BAO_ADDR') or os.environ.get('VAULT_ADDR')):
        raise ConfigError('openbao.url is required (or the BAO_ADDR environment variable)', 'openbao.url')
    conn['token_file'] = _readable(conn.get('token_file'), 'openbao.token_file')
    conn['ca_cert'] = _readable(conn.get('ca_cert'), 'openbao.ca_cert')
    secret_file = _readable(conn.pop('secret_id_file', None), 'openbao.secret_id_file')
    if secret_file:
        conn['secret_id'] = Path(secret_file).read_text(encoding='utf-8').strip()
    return conn


def _port(value, option):
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ConfigError('%s %r must be a port number (1-65535)' % (option, value), option)
    number = int(value)
    if not 0 < number <= 65535:
        raise ConfigError('%s %r: port out of range (1-65535)' % (option, value), option)
    return number


def _route(value, host, port, option):
    """``(host, port)`` of a server's route listener: ``route`` is a port (on the host of ``url``) or
    ``[nats-route://]host[:port]`` (default port 6222)."""
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        route = (host, _port(value, option))
    elif isinstance(value, str) and value.strip():
        route = _host_port(value.strip(), option, DEFAULT_ROUTE_PORT)
        if not 0 < route[1] <= 65535:
            raise ConfigError('%s %r: port out of range (1-65535)' % (option, value), option)
    else:
        raise ConfigError('%s %r must be a port number or nats-route://host:port' % (option, value), option)
    if route == (host, port):
        raise ConfigError('%s %r is the server\'s client port (url): name its cluster (route) listener' % (option, value), option)
    return route


def _clusters(raw):
    if not isinstance(raw, list) or not raw:
        raise ConfigError('clusters must be a non-empty list, each with a name and servers (name, url, ca_file)', 'clusters')
    clusters, seen = [], set()
    for i, item in enumerate(raw):
        option = 'clusters[%d]' % i
        entry = _mapping(item, option, CLUSTER_KEYS)
        name = entry.get('name')
        if not name or not isinstance(name, str):
            raise ConfigError('%s.name is required' % option, option + '.name')
        if name in seen:
            raise ConfigError('%s.name %r is given twice' % (option, name), option + '.name')
        seen.add(name)
        servers = entry.get('servers')
        if not isinstance(servers, list) or not servers:
            raise ConfigError('%s.servers must be a non-empty list' % option, option + '.servers')
        route_port = None
        if entry.get('route_port') is not None:
            route_port = _port(entry['route_port'], option + '.route_port')
        out = []
        for j, srv in enumerate(servers):
            sopt = '%s.servers[%d]' % (option, j)
            if isinstance(srv, str):
                srv = {'url': srv}
            srv = _mapping(srv, sopt, SERVER_KEYS)
            if not srv.get('url'):
                raise ConfigError('%s.url is required' % sopt, sopt + '.url')
            host, port = _host_port(srv['url'], sopt + '.url')
            route = srv.get('route', route_port)
            if route is not None and route is not False:
                route = _route(route, host, port, sopt + '.route' if 'route' in srv else option + '.route_port')
            out.append(Server(cluster=name, name=str(srv.get('name') or '%s:%s' % (host, port)), url=srv['url'], host=host,
                              port=port, ca_file=os.path.expanduser(srv['ca_file']) if srv.get('ca_file') else None,
                              route=route or None))
        if len({s.name for s in out}) != len(out):
            raise ConfigError('%s.servers: server names must be unique' % option, option + '.servers')
        clusters.append({'name': name, 'servers': out})
    return clusters


def load_file(path):
    """The mapping in a YAML / JSON file."""
    import yaml  # pylint: disable=import-outside-toplevel
    try:
        text = Path(path).read_text(encoding='utf-8')
    except OSError as exc:
        raise ConfigError('--config %r: %s' % (path, exc.strerror or exc), 'config') from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError('--config %r is not valid YAML/JSON: %s' % (path, exc), 'config') from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError('--config %r must hold a mapping' % path, 'config')
    return data


def build_config(raw, args=None):
    """A :class:`Config` from the file's mapping ``raw`` and the command-line ``args`` (which win)."""
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, EpochSchedule
    raw = _mapping(raw, 'config', TOP_KEYS)
    overrides = {k: getattr(args, k, None) for k in ('interval', 'listen', 'metrics_file', 'verdict_file', 'html_file')}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    pki = _mapping(raw.get('pki'), 'pki', PKI_KEYS)
    pki = {'root_mount': pki.get('root_mount') or 'pki', 'int_mount': pki.get('int_mount') or 'pki_int',
           'kv_mount': pki.get('kv_mount') or 'secret', 'state_path': pki.get('state_path') or 'ca-rotation/state',
           'bundle_path': pki.get('bundle_path') or 'ca-bundles/epoch-{epoch}'}
    if '{epoch}' not in pki['bundle_path']:
        raise ConfigError('pki.bundle_path %r must contain {epoch}' % pki['bundle_path'], 'pki.bundle_path')
    sched_raw = _mapping(raw.get('schedule'), 'schedule', SCHEDULE_KEYS)
    try:
        schedule = EpochSchedule.from_params(sched_raw)
    except EpochError as exc:
        raise ConfigError('schedule: %s' % exc, 'schedule.%s' % (exc.option or 'epoch_duration')) from None
    leaf = _mapping(raw.get('leaf'), 'leaf', LEAF_KEYS)
    tls = _mapping(raw.get('tls'), 'tls', TLS_KEYS)
    interval = _duration(raw.get('interval') or DEFAULT_INTERVAL, 'interval')
    timeout = _duration(raw.get('timeout') or DEFAULT_TIMEOUT, 'timeout')
    leaf_ttl = _duration(leaf.get('ttl') or DEFAULT_LEAF_TTL, 'leaf.ttl')
    if leaf_ttl < 2 * interval:
        raise ConfigError('leaf.ttl (%ds) must be at least two intervals (%ds): a leaf is renewed at a third of its lifetime'
                          % (leaf_ttl, 2 * interval), 'leaf.ttl')
    served = raw.get('served_min_validity')
    probe_routes = raw.get('probe_routes', True)
    if getattr(args, 'no_route_probes', False):
        probe_routes = False
    if not isinstance(probe_routes, bool):
        raise ConfigError('probe_routes %r must be true or false' % (probe_routes,), 'probe_routes')
    return Config(
        openbao=_openbao(raw.get('openbao')),
        schedule=schedule,
        clusters=_clusters(raw.get('clusters')),
        pki=pki,
        role=str(leaf.get('role') or DEFAULT_ROLE),
        ensure_role=bool(leaf.get('ensure_role', False)),
        common_name=str(leaf.get('common_name') or DEFAULT_COMMON_NAME),
        leaf_ttl=leaf_ttl,
        interval=interval,
        timeout=float(timeout),
        expired_grace=_duration(raw.get('expired_grace') or DEFAULT_EXPIRED_GRACE, 'expired_grace', allow_zero=True),
        # default: one epoch - a server's leaf is renewed long before its epoch is that close to expiry
        served_min_validity=schedule.duration if served is None else _duration(served, 'served_min_validity', allow_zero=True),
        tls_ca_file=_readable(tls.get('ca_file'), 'tls.ca_file'),
        tls_server_name=tls.get('server_name'),
        listen=_listen(raw.get('listen')),
        metrics_file=_output(raw.get('metrics_file'), 'metrics_file'),
        verdict_file=_output(raw.get('verdict_file'), 'verdict_file'),
        html_file=_output(raw.get('html_file'), 'html_file'),
        probe_routes=probe_routes,
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog='ca-trust-canary', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Every interval: a leaf-only TLS handshake with a client leaf of every valid epoch against every NATS '
                    'server, checks of the trust invariants, Prometheus metrics, a verdict JSON file and an HTML timeline.',
        epilog='exit codes (--once): 0 no violation, 1 a trust invariant is violated, 2 configuration error, '
               '3 OpenBao or a server could not be checked (no violation seen)\n\n'
               'The configuration file (YAML or JSON) is described in deploy/kubernetes/canary/README.md; the options below '
               'override it.')
    parser.add_argument('-c', '--config', default=os.environ.get('CA_TRUST_CANARY_CONFIG'),
                        help='configuration file (YAML or JSON) [CA_TRUST_CANARY_CONFIG]')
    parser.add_argument('--once', action='store_true', help='one check, then exit (for cron)')
    parser.add_argument('--interval', help='seconds between checks (30s, 1m, PT30S; default 30s)')
    parser.add_argument('--listen', help='[HOST:]PORT of the HTTP endpoint (/metrics, / for the timeline, /verdict.json)')
    parser.add_argument('--metrics-file', help='write Prometheus textfile metrics here (name it *.prom)')
    parser.add_argument('--verdict-file', help='write the last verdict as JSON here (read by ca-rotate-cron --canary-verdict)')
    parser.add_argument('--html-file', help='write the epoch timeline page here')
    parser.add_argument('--no-route-probes', action='store_true',
                        help="do not probe the servers' route (cluster) ports, even where the configuration names them "
                             '(probe_routes: false)')
    return parser

"""The trust invariants, as a pure function of one round's observation (no I/O; unit-tested).

Observation (what ``cli.Canary.observe`` gathered)::

    {'now': datetime, 'openbao': {'ok': bool, 'error': str | None},
     'issuers': [{'epoch', 'issuer_name', 'state', 'not_before', 'not_after', 'sha256'}] | None,
     'default_epoch': int | None,
     'proven': {cluster: {'epochs': [int] | None, 'note': str | None}},
     'leaf_errors': {epoch: str},
     'servers': [{'cluster', 'name', 'reachable': bool | None, 'error': str | None,
                  'accepted': {epoch: True | False | None},        # None: the handshake was inconclusive
                  'served': {'issuer_epoch', 'not_after', ...} | None,
                  'ca_file': str | None, 'ca_members': [{'epoch', 'kind', 'not_after', 'sha256'}] | None,
                  'ca_error': str | None,
                  'route': None | {'host', 'port', 'reachable', 'error', 'accepted', 'details', 'served', 'problems'}}]}

The top-level ``reachable`` / ``accepted`` / ``served`` of a server are its client port's; ``route`` holds the same for
its route (cluster) port, or is None when that port is not probed (none configured, or route probing off). The
handshake invariants below hold on every probed port: each such violation names its ``port`` (``client`` or
``route``); the CA file invariants are about the file and name no port.

Invariants (each violation names one of these):

``default_not_trusted``   a server refuses a leaf of the default issuer's epoch (issue before trust)
``valid_refused``         a server refuses a valid epoch of the bundle its cluster proved (the rotation's proof
                          record): the server did not load what the rotation says it proved
``expired_accepted``      a server accepts a leaf of an expired epoch (its clock, or its TLS stack)
``distrusted_accepted``   a server accepts a leaf of a revoked (distrusted) issuer's epoch
``expired_in_bundle``     a server's CA file holds a certificate expired for longer than ``expired_grace``
``distrusted_in_bundle``  a server's CA file holds the intermediate of a revoked issuer
``served_expiring``       a server serves a certificate that expires within ``served_min_validity`` (or has expired)

Whatever could not be checked (OpenBao down, a server or its route port unreachable, a leaf that could not be issued,
an unreadable CA file) is an *error*, never a violation.
"""

from __future__ import annotations

import datetime

INVARIANTS = ('default_not_trusted', 'valid_refused', 'expired_accepted', 'distrusted_accepted', 'expired_in_bundle',
              'distrusted_in_bundle', 'served_expiring')
ERROR_SOURCES = ('openbao', 'server', 'route', 'leaf', 'ca_file', 'tls')
PORTS = ('client', 'route')
SCHEMA = 'securetransport.ca_trust_canary_verdict/v1'
_VALID_STATES = ('active', 'valid', 'prepared')


def parse_time(value):
    if value is None or isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value).replace('Z', '+00:00'))


def _seconds(delta):
    return round(delta.total_seconds(), 3)


def listeners(server):
    """``[(port, probe)]``: the server's probed listeners, the client port first (its results are the server's own
    top-level fields), then the route port when it was probed."""
    out = [('client', server)]
    if server.get('route'):
        out.append(('route', server['route']))
    return out


def evaluate(obs, expired_grace=0, served_min_validity=0):
    """``{'ok', 'violations': [...], 'errors': [...]}`` for one observation; ``ok`` means no violation
    (errors are reported beside it: nothing could be proven about what was not reached)."""
    now = obs['now']
    violations, errors = [], []

    def violate(invariant, server, msg, epoch=None, port=None):
        violations.append({'invariant': invariant, 'cluster': server.get('cluster') if server else None,
                           'server': server.get('name') if server else None, 'port': port, 'epoch': epoch, 'msg': msg})

    bao = obs.get('openbao') or {}
    if not bao.get('ok'):
        errors.append({'source': 'openbao', 'where': 'openbao', 'msg': bao.get('error') or 'OpenBao could not be read'})
    for epoch, msg in sorted((obs.get('leaf_errors') or {}).items()):
        errors.append({'source': 'leaf', 'where': 'epoch-%s' % epoch, 'msg': msg})
    issuers = {i['epoch']: i for i in obs.get('issuers') or [] if i.get('epoch') is not None}
    states = {n: i.get('state') for n, i in issuers.items()}
    revoked_sha = {i.get('sha256') for i in issuers.values() if i.get('state') == 'revoked' and i.get('sha256')}
    default = obs.get('default_epoch')
    proven = obs.get('proven') or {}

    for server in obs.get('servers') or []:
        name = '%s/%s' % (server.get('cluster'), server.get('name'))
        for port, probe in listeners(server):
            where = name if port == 'client' else '%s route port %s:%s' % (name, probe.get('host'), probe.get('port'))
            if probe.get('reachable') is False:
                errors.append({'source': 'server' if port == 'client' else 'route', 'where': where,
                               'msg': probe.get('error') or 'unreachable'})
            for problem in probe.get('problems') or []:
                errors.append({'source': 'tls', 'where': where, 'msg': problem})
            if not probe.get('reachable'):
                continue
            accepted = probe.get('accepted') or {}
            details = probe.get('details') or {}
            if default is not None and accepted.get(default) is False:
                violate('default_not_trusted', server, '%s refuses a leaf of epoch-%s, the default issuer: new leaves are '
                        'issued by an epoch this server does not trust (%s)' % (where, default, details.get(default)), default, port)
            record = proven.get(server.get('cluster')) or {}
            for epoch in record.get('epochs') or []:
                if states.get(epoch) in _VALID_STATES and accepted.get(epoch) is False and epoch != default:
                    violate('valid_refused', server, '%s refuses a leaf of epoch-%s, which is valid and in the bundle its '
                            'cluster proved (%s)' % (where, epoch, details.get(epoch)), epoch, port)
            for epoch, ok in sorted(accepted.items()):
                if ok and states.get(epoch) == 'expired':
                    violate('expired_accepted', server, '%s accepts a leaf of expired epoch-%s' % (where, epoch), epoch, port)
                if ok and states.get(epoch) == 'revoked':
                    violate('distrusted_accepted', server, '%s accepts a leaf of distrusted (revoked) epoch-%s' % (where, epoch),
                            epoch, port)
            served = probe.get('served') or {}
            not_after = parse_time(served.get('not_after'))
            if not_after is not None:
                left = (not_after - now).total_seconds()
                if left < served_min_validity:
                    violate('served_expiring', server, '%s serves a certificate of epoch-%s that %s' % (
                        where, served.get('issuer_epoch'), 'expired %ss ago' % _seconds(now - not_after) if left < 0 else
                        'expires in %ss (less than %ss)' % (round(left, 1), served_min_validity)), served.get('issuer_epoch'),
                        port)
        where = name
        if server.get('ca_error'):
            errors.append({'source': 'ca_file', 'where': where, 'msg': server['ca_error']})
        for member in server.get('ca_members') or []:
            not_after = parse_time(member.get('not_after'))
            label = 'the root' if member.get('kind') == 'root' else 'epoch-%s' % member.get('epoch')
            if not_after is not None and (now - not_after).total_seconds() > expired_grace:
                violate('expired_in_bundle', server, '%s: its CA file %s holds %s, expired %ss ago (more than %ss)' % (
                    where, server.get('ca_file'), label, _seconds(now - not_after), expired_grace), member.get('epoch'))
            if member.get('sha256') in revoked_sha:
                violate('distrusted_in_bundle', server, '%s: its CA file %s holds %s, whose issuer is revoked' % (
                    where, server.get('ca_file'), label), member.get('epoch'))
    return {'ok': not violations, 'violations': violations, 'errors': errors}


def verdict_document(obs, result, interval, duration=None):
    """The verdict JSON (schema :data:`SCHEMA`) that ``ca-rotate-cron --canary-verdict`` reads."""
    now = obs['now']
    return {
        'schema': SCHEMA,
        'checked_at': now.strftime('%Y-%m-%dT%H:%M:%SZ'),
        'interval_seconds': interval,
        'duration_seconds': duration,
        'ok': result['ok'],
        'complete': not result['errors'],
        'violation_count': len(result['violations']),
        'violations': result['violations'],
        'errors': result['errors'],
        'default_epoch': obs.get('default_epoch'),
        'openbao_ok': bool((obs.get('openbao') or {}).get('ok')),
        'epochs': [{k: i.get(k) for k in ('epoch', 'issuer_name', 'state', 'not_before', 'not_after')}
                   for i in obs.get('issuers') or []],
        'servers': [{
            'cluster': s.get('cluster'), 'name': s.get('name'), 'reachable': s.get('reachable'),
            'accepted': {str(k): v for k, v in sorted((s.get('accepted') or {}).items())},
            'served_epoch': (s.get('served') or {}).get('issuer_epoch'), 'served_not_after': (s.get('served') or {}).get('not_after'),
            'ca_epochs': sorted({m['epoch'] for m in s.get('ca_members') or [] if m.get('epoch') is not None}, reverse=True)
            if s.get('ca_members') is not None else None,
            'error': s.get('error'),
            'route': _route_document(s.get('route')),
        } for s in obs.get('servers') or []],
    }


def _route_document(route):
    """The verdict's view of a server's route port; None when it was not probed."""
    if not route:
        return None
    return {'host': route.get('host'), 'port': route.get('port'), 'reachable': route.get('reachable'),
            'accepted': {str(k): v for k, v in sorted((route.get('accepted') or {}).items())},
            'served_epoch': (route.get('served') or {}).get('issuer_epoch'),
            'served_not_after': (route.get('served') or {}).get('not_after'), 'error': route.get('error')}


_TIMELINE_STATES = {'active': 'active', 'prepared': 'prepared', 'valid': 'valid', 'expired': 'expired', 'revoked': 'distrusted'}


def timeline_model(obs, result, clusters):
    """The ``_status.html`` timeline model of one round."""
    bad = {}
    for v in result['violations']:
        bad.setdefault((v['cluster'], v['server'], v.get('port')), []).append(v['invariant'])
    servers = {(s.get('cluster'), s.get('name')): s for s in obs.get('servers') or []}
    out_clusters = []
    for name in clusters:
        rows = []
        for (cluster, sname), s in servers.items():
            if cluster != name:
                continue
            for port, probe in listeners(s):
                codes = bad.get((cluster, sname, port)) or []
                if port == 'client':  # a CA file violation is shown on the server's own (client) row
                    codes = codes + (bad.get((cluster, sname, None)) or [])
                status = 'unreachable' if probe.get('reachable') is False else ('mismatch' if codes else (
                    'ok' if probe.get('reachable') else 'unknown'))
                members = s.get('ca_members') if port == 'client' else None
                note = ', '.join(sorted(set(codes))) or probe.get('error') or ''
                if port == 'route':
                    note = ('route port %s:%s' % (probe.get('host'), probe.get('port'))) + (': ' + note if note else '')
                rows.append({'name': sname if port == 'client' else '%s route' % sname, 'status': status,
                             'loaded': None if members is None else sorted({m['epoch'] for m in members if m.get('epoch') is not None},
                                                                           reverse=True),
                             'served_epoch': (probe.get('served') or {}).get('issuer_epoch'),
                             'served_not_after': (probe.get('served') or {}).get('not_after'),
                             'accepted': {k: v for k, v in (probe.get('accepted') or {}).items() if v is not None},
                             'note': note})
        note = ((obs.get('proven') or {}).get(name) or {}).get('note')
        out_clusters.append({'name': name, 'servers': rows, 'note': note})
    now = obs['now'].strftime('%Y-%m-%dT%H:%M:%SZ')
    text = 'no violation' if result['ok'] else '%d violation(s)' % len(result['violations'])
    if result['errors']:
        text += '; %d could not be checked' % len(result['errors'])
    return {
        'title': 'CA trust canary',
        'now': now, 'generated_at': now,
        'verdict': {'ok': result['ok'], 'text': text,
                    'items': [v['msg'] for v in result['violations']] + ['%s: %s' % (e['where'], e['msg']) for e in result['errors']]},
        'epochs': [{'epoch': i['epoch'], 'name': i.get('issuer_name'), 'not_before': i.get('not_before'),
                    'not_after': i.get('not_after'), 'state': _TIMELINE_STATES.get(i.get('state'), i.get('state')),
                    'in_bundle': None} for i in obs.get('issuers') or []],
        'clusters': out_clusters,
    }

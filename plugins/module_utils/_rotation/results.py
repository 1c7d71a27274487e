# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed results of the engine's steps, each built by one function and serialised once into facts.

``ca_rotation_authority_result`` (authority -> clusters, activation, finish), ``ca_rotation_cluster_result``
(each cluster -> activation, finish) and ``ca_rotation_run_report`` (the JSON run report) keep the keys
the roles set before the engine moved to Python.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional


class Timings:
    """Wall-clock seconds per named step, in the order they ran."""

    def __init__(self):
        self.steps: Dict[str, float] = {}
        self._t0 = time.monotonic()

    def step(self, name):
        timings = self

        class _Step:
            def __enter__(self):
                self.t = time.monotonic()

            def __exit__(self, *exc):
                timings.steps[name] = round(timings.steps.get(name, 0.0) + time.monotonic() - self.t, 4)
                return False
        return _Step()

    def total(self):
        return round(time.monotonic() - self._t0, 4)

    def as_dict(self):
        return dict(self.steps)


@dataclasses.dataclass
class AuthorityResult:
    go: bool
    started_at: str
    kind: str = 'rotation'
    locked_out: bool = False
    msg: Optional[str] = None
    error: Optional[str] = None
    holder: Optional[str] = None
    plan: Optional[dict] = None
    epoch: Optional[int] = None
    sha256: Optional[str] = None
    pem: Optional[str] = None
    certificates: List[dict] = dataclasses.field(default_factory=list)
    generation: Optional[int] = None
    new_bundle: bool = False
    hold: Optional[dict] = None
    include_root: bool = True
    announce_error: Optional[str] = None
    probe: Optional[dict] = None
    pki: Optional[dict] = None
    changed: bool = False
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)
    logins: int = 0
    #: a rollback points the default issuer back at this epoch (None when it already was)
    activated_epoch: Optional[int] = None
    #: a distrust (playbooks/distrust.yml): the distrusted intermediate, the stage and the witness leaf
    distrust: Optional[dict] = None

    def to_fact(self):
        return dataclasses.asdict(self)


def authority_stopped(started_at, kind, msg, locked_out=False, plan=None, error=None, timings=None, changed=False):
    """The result of an authority step that did not go ahead (locked out, refused or failed; ``changed``: what it
    had written before it failed)."""
    return AuthorityResult(go=False, started_at=started_at, kind=kind, locked_out=locked_out, msg=msg, error=error,
                           plan=plan, timings=dict(timings or {}), changed=bool(changed))


def authority_went_ahead(*, started_at, kind, holder, plan, bundle, generation, new_bundle, hold, include_root,
                         announce_error, probe, pki, changed, timings, logins):
    """The result of an authority step that built (or restored) a bundle for the clusters."""
    return AuthorityResult(
        go=True, started_at=started_at, kind=kind, holder=holder, plan=plan, epoch=bundle['epoch'], sha256=bundle['sha256'],
        pem=bundle['pem'], certificates=list(bundle['certificates']), generation=int(generation), new_bundle=bool(new_bundle),
        hold=hold, include_root=bool(include_root), announce_error=announce_error, probe=probe, pki=dict(pki),
        changed=bool(changed), timings=dict(timings), logins=logins)


@dataclasses.dataclass
class ClusterResult:
    ok: bool
    cluster: str
    reloaded: bool = False
    sha256: Optional[str] = None
    epoch: Optional[int] = None
    servers: List[dict] = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    rolled_back: bool = False
    #: what the automatic rollback did (``restore_previous``), None when none was tried
    rollback: Optional[dict] = None
    renewed: List[str] = dataclasses.field(default_factory=list)
    changed: bool = False
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)
    #: the run (lock holder) this result belongs to: a result left in a fact cache by an earlier run never counts
    holder: Optional[str] = None
    #: the inventory host whose step this is, and the cluster's min_success (0: every server)
    host: Optional[str] = None
    min_success: int = 0
    #: how many servers this step is for (its targets; the pods found for Kubernetes)
    server_count: int = 0
    #: the deliver phase's look at the host's leaves (``{issuers: digest, due: [names]}``), for the leaf phase
    leaf_look: Optional[dict] = None
    #: a distrust's proof on this cluster (``refusal.prove_refused``), None when there was none
    distrust_proof: Optional[dict] = None

    def to_fact(self):
        out = dataclasses.asdict(self)
        if self.ok:
            out.pop('rolled_back')
            out.pop('rollback')
            if out['error'] is None:
                out.pop('error')
        if out['distrust_proof'] is None:
            out.pop('distrust_proof')
        return out


def cluster_result(name, auth, ok, reloaded=False, servers=None, error=None, rolled_back=False, changed=False, timings=None,
                   rollback=None, host=None, min_success=0, server_count=None):
    """One cluster's outcome of the deliver phase (of one host's part of it, for a cluster spread over hosts)."""
    return ClusterResult(ok=bool(ok), cluster=name, reloaded=bool(reloaded), sha256=auth.get('sha256') if ok else None,
                         epoch=auth.get('epoch') if ok else None, servers=list(servers or []), error=error,
                         rolled_back=bool(rolled_back), rollback=rollback, changed=bool(changed), timings=dict(timings or {}),
                         holder=auth.get('holder'), host=host, min_success=int(min_success or 0),
                         server_count=len(servers or []) if server_count is None else int(server_count))


def group_clusters(results, members, auth):
    """One result per cluster: a cluster spread over several inventory hosts (``members``: ``{cluster: [hosts]}``)
    is judged as one from its hosts' results.

    Every host proves all of its own servers or puts its previous bundle back; the cluster has proven the bundle
    when every host did, or - with ``min_success`` - when the hosts that did hold at least that many servers. A host
    without a result of this run (unreachable, or its step failed as a task) proved nothing. Clusters of one host
    keep their own result as it is.
    """
    sha = (auth or {}).get('sha256')
    spread = {name: hosts for name, hosts in members.items() if len(hosts) > 1}
    by_host = {r.get('host'): r for r in results if r.get('host')}
    out = [r for r in results if r.get('cluster') not in spread]
    out.extend(_spread_result(name, hosts, by_host, sha, auth) for name, hosts in spread.items())
    return out


def _server_count(result):
    return max(int(result.get('server_count') or 0), len(result.get('servers') or []))


def _spread_result(name, hosts, by_host, sha, auth):
    parts = {h: by_host.get(h) for h in hosts}
    proven = [h for h, r in parts.items() if r and r.get('ok') and r.get('sha256') == sha]
    need = max([int(r.get('min_success') or 0) for r in parts.values() if r] or [0])
    servers, errors, renewed, timings, calls = [], [], [], {}, 0
    for host, r in parts.items():
        if r is None:
            errors.append('host %s: no result of this run (it failed or was unreachable; see its task above)' % host)
            continue
        servers.extend(dict(s, host=host) for s in r.get('servers') or [])
        renewed.extend(r.get('renewed') or [])
        timings[host] = r.get('timings') or {}
        calls += int(r.get('module_calls') or 0)
        if not r.get('ok'):
            errors.append('host %s: %s' % (host, r.get('error') or 'failed'))
    proven_servers = sum(_server_count(parts[h]) for h in proven)
    ok = len(proven) == len(hosts) if not need else proven_servers >= need
    out = {
        'ok': ok, 'cluster': name, 'holder': (auth or {}).get('holder'), 'hosts': {
            h: {'ok': h in proven, 'reloaded': bool(r and r.get('reloaded')), 'servers': _server_count(r or {}),
                'rolled_back': bool(r and r.get('rolled_back')), 'error': None if h in proven else (
                    (r or {}).get('error') or 'no result of this run')} for h, r in parts.items()},
        'reloaded': any(r and r.get('reloaded') for r in parts.values()),
        'changed': any(r and r.get('changed') for r in parts.values()),
        'rolled_back': any(r and r.get('rolled_back') for r in parts.values()),
        'sha256': sha if ok else None, 'epoch': (auth or {}).get('epoch') if ok else None,
        'servers': servers, 'renewed': sorted(set(renewed)), 'timings': timings, 'module_calls': calls,
        'min_success': need, 'proven_servers': proven_servers,
    }
    if errors:
        # with min_success met the cluster counts as proven: what did not is still said
        out['error' if not ok else 'degraded'] = '; '.join(errors) + (
            '' if not need else ' (%d of the %d server(s) min_success asks for proved the bundle)' % (proven_servers, need))
    return out


def this_runs_clusters(results, auth):
    """The cluster results of this run only (same lock holder as the authority step's)."""
    return [c for c in results if c and c.get('holder') == (auth or {}).get('holder')]


def _first(values):
    values = [v for v in values if v is not None]
    return sorted(values)[0] if values else None


def run_report(auth, clusters, activation, finished_at):
    """The JSON run report (the keys of ``ca_rotation_run_report``)."""
    auth = auth or {}
    certs = auth.get('certificates') or []
    failed = [c for c in clusters if not c.get('ok')]
    activated = activation.get('epoch') if activation.get('activated', activation.get('changed')) else None
    if auth.get('kind') == 'rollback':
        activated = auth.get('activated_epoch')
    # an announcement that failed in the authority step and was made after the clusters' proof (activation) counts
    announce_error = None if activation.get('announced') is not None else auth.get('announce_error')
    dis = auth.get('distrust')
    distrust_error = None
    if dis and auth.get('go') and dis.get('stage') != 'complete':
        distrust_error = ('The distrust of epoch %s is not complete: its replacement %s is in the bundle next to the '
                          'distrusted %s, which stays in until every cluster proved the replacement and re-issued its '
                          'leaves. Re-run playbooks/distrust.yml' % (dis.get('epoch'), dis.get('replacement'),
                                                                     dis.get('issuer_name')))
    return {
        'distrust': dict(dis, error=distrust_error) if dis else None,
        'started_at': auth.get('started_at'),
        'finished_at': finished_at,
        'ok': (not failed and announce_error is None and auth.get('error') is None and not activation.get('error')
               and distrust_error is None),
        'activation_error': activation.get('error'),
        'announce_error': announce_error,
        'error': auth.get('error'),
        'locked_out': bool(auth.get('locked_out')),
        'changed': bool(auth.get('new_bundle') or auth.get('changed') or any(c.get('reloaded') or c.get('changed') for c in clusters)
                        or activation.get('changed')),
        'epoch': auth.get('epoch'),
        'current_epoch': (auth.get('plan') or {}).get('current_epoch'),
        'generation': activation['announced'] if activation.get('announced') is not None else auth.get('generation'),
        'bundle_sha256': auth.get('sha256'),
        'bundle_certificates': len(certs),
        'earliest_expiry': _first(c.get('not_after') for c in certs),
        'latest_expiry': (sorted(c['not_after'] for c in certs if isinstance(c.get('epoch'), int)) or [None])[-1],
        'epoch_duration': ((auth.get('plan') or {}).get('schedule') or {}).get('epoch_duration'),
        'kind': auth.get('kind') or 'rotation',
        'activated_epoch': activated,
        'hold': {k: v for k, v in auth['hold'].items() if k != 'pem'} if auth.get('hold') else None,
        'clusters': {c['cluster']: c for c in clusters},
        'timings': {'authority': auth.get('timings') or {}, 'activation': activation.get('timings') or {},
                    'clusters': {c['cluster']: c.get('timings') or {} for c in clusters}},
    }


def failure_message(report):
    """The message the run fails with, or None when it succeeded."""
    if report['ok']:
        return None
    parts = []
    if report.get('error'):
        parts.append(report['error'])
    if report.get('activation_error'):
        parts.append(report['activation_error'] + '.')
    if report.get('announce_error'):
        parts.append('The announcement failed: %s (the servers got the bundle; the generation was not recorded, the next run '
                     'announces again).' % report['announce_error'])
    failed = [c for c in report['clusters'].values() if not c.get('ok')]
    if failed:
        parts.append('Rotation failed on cluster(s) %s: %s.' % (', '.join(c['cluster'] for c in failed),
                                                                '; '.join(c.get('error') or 'failed' for c in failed)))
    if (report.get('distrust') or {}).get('error'):
        parts.append(report['distrust']['error'] + '.')
    if report.get('activated_epoch') is None and report.get('kind') == 'rotation' and report.get('current_epoch') is not None:
        parts.append('Epoch %s was NOT activated.' % report.get('current_epoch'))
    return ' '.join(parts)


def summary_line(report):
    """One line for the console."""
    clusters = ' '.join('%s=%s%s' % (name, 'ok' if c.get('ok') else 'FAILED', ' (reloaded)' if c.get('reloaded') else '')
                        for name, c in report['clusters'].items())
    return 'epoch %s (current %s), generation %s, bundle %s with %d certificates; clusters: %s' % (
        report['epoch'], report['current_epoch'], report['generation'], (report['bundle_sha256'] or '')[:16],
        report['bundle_certificates'], clusters or 'none')

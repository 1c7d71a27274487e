# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tier 2, one NATS cluster (or VM group): deliver -> wait for propagation -> reload -> prove -> proof record;
on a failed proof put the previous bundle back and reload (automatic rollback). Leaf renewal is a later
phase of the same step (after activation, so that leaves come from the new default issuer).
"""

from __future__ import annotations

import ipaddress
import json
import shutil

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import issue_leaf
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import issuer_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import host_port
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.engine import reload_servers, summarize
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.kubernetes import KubernetesTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.local import LocalTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.probe import probe_context, tls_probe
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.system import SystemTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import decisions
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.authority import leaf_issuer_ref
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import family_mounts
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.hoststeps import LocalSteps
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import cluster_result
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.store import deliver


class ClusterFailure(Exception):
    def __init__(self, msg, servers=None):
        super().__init__(msg)
        self.servers = servers or []


def build_transport(cc, targets=None):
    """The reload transport of a cluster (``targets``: a subset of the cluster's servers)."""
    if cc.transport in ('signal', 'command'):
        path = shutil.which('nats-server') if cc.transport == 'command' else None
        return LocalTransport(cc.transport, cc.reload_targets(targets), nats_server_path=path)
    if cc.transport == 'kubernetes':
        return KubernetesTransport(cc.kubernetes, namespace=cc.namespace, label_selector=cc.label_selector,
                                   container=cc.container, ca_file=cc.pod_ca_file, reload_command=cc.command)
    return SystemTransport(cc.system, targets=cc.reload_targets(targets) or None)


def _reload(cc, expect_sha256, probes, check_mode, targets=None, min_success=None):
    transport = build_transport(cc, targets)
    try:
        return reload_servers(transport, expect_sha256=expect_sha256, propagation_timeout=cc.propagation_timeout,
                              reload_timeout=cc.reload_timeout, probes=probes, min_success=min_success, check_mode=check_mode)
    finally:
        transport.close()


def _destinations(cc):
    if cc.delivery == 'file':
        return [('file', {'path': t['ca_file'], 'mode': cc.file_mode}) for t in cc.targets]
    return [('live_secret', {'namespace': cc.namespace, 'name': cc.live_secret, 'key': cc.secret_key,
                             'kubernetes': cc.kubernetes})]


def _bundle(pem):
    return {'pem': pem, 'sha256': sha256_hex(pem)}


def probe_options(auth):
    probe = auth.get('probe') or {}
    return {'cert_file': probe['cert_file'], 'key_file': probe['key_file'], 'ca_file': probe['bundle_file'],
            'partial_chain': not auth.get('include_root', True)}


def probe_set(auth, leaf_family='classical'):
    """What every server must accept after a reload: one probe per key family of the bundle (``classical``; in dual
    mode ``mldsa`` too), each verifying the server against the bundle. Servers presenting ML-DSA leaves
    (``leaf_family``) are probed through pyOpenSSL also with the classical certificate (Python's ssl cannot verify
    them)."""
    probe = probe_options(auth)
    mldsa = (auth.get('probe') or {}).get('mldsa')
    if not mldsa:
        return [probe]
    pq = {'pyopenssl': True} if leaf_family == 'mldsa' else {}
    return [dict(probe, name='classical', **pq),
            dict(probe, name='mldsa', cert_file=mldsa['cert_file'], key_file=mldsa['key_file'])]


def check_leaf_family(cc, auth):
    """Refuse a bundle without the ML-DSA family for a cluster whose servers present ML-DSA leaves: they chain to an
    ML-DSA intermediate, so its servers would stop trusting each other and every client."""
    if cc.leaf_family == 'mldsa' and not decisions.holds_intermediate(auth.get('certificates'), 'mldsa'):
        raise decisions.Refusal(
            'The servers of this cluster present ML-DSA leaves (ca_rotation_nats_reload_leaf_family: mldsa) but the '
            'bundle %s holds no ML-DSA intermediate (ca_rotation_pki.mldsa is off, or a rollback or hold chose a '
            'bundle from before dual mode): those servers would stop trusting each other and every client. Nothing '
            'was delivered to this cluster. Switch the family on, choose a bundle that holds it, or set the cluster\'s '
            'leaf_family to classical once its servers present classical leaves' % (auth.get('sha256') or '')[:12])


def uses_host_steps(cc):
    """Files written and servers signalled where they run: the host-local steps (controller or VM)."""
    return cc.delivery == 'file' and cc.transport in ('signal', 'command')


LOCAL_NAMES = ('localhost', '0.0.0.0', '::', '::1')


def probe_address(target, probe_host=None):
    """Where the controller reaches a server on another machine: its ``url``, with a loopback or wildcard host (or
    no url at all) replaced by the machine's own address (``probe_host``: ansible_host or the inventory name)."""
    host, port = host_port(target['url']) if target.get('url') else (None, 4222)
    if probe_host and (not host or host in LOCAL_NAMES or host.startswith('127.')):
        host = probe_host
    return host, port


def probe_after(summary, cc, probes, min_success, probe_host=None):
    """The trust probe from the controller (``probes``: :func:`probe_set`), after servers reloaded elsewhere (on
    their VM)."""
    probes = [dict(p, context=probe_context(p)) for p in probes]
    by_name = {t['name']: t for t in cc.targets}
    for res in summary['targets']:
        if not res['ok']:
            continue
        host, port = probe_address(by_name.get(res['target']) or {}, probe_host)
        if not host:
            res.update(ok=False, error='no url in the target to probe the new trust from the controller')
            continue
        verdicts = []
        for probe in probes:
            ok, detail = tls_probe(host, port, probe['context'], probe.get('server_name'), 10.0)
            verdicts.append({'name': probe.get('name') or 'probe', 'ok': ok, 'detail': detail})
        refused = [v for v in verdicts if not v['ok']]
        res.update(probe_ok=not refused, probe_detail='; '.join('%s: %s' % (v['name'], v['detail']) for v in verdicts)
                   if len(verdicts) > 1 else verdicts[0]['detail'])
        if len(verdicts) > 1:
            res['probes'] = verdicts
        if refused:
            res.update(ok=False, error='reloaded, but the %s certificate is not accepted: %s' % (
                'probe' if len(verdicts) == 1 else ' and '.join(v['name'] + ' probe' for v in refused),
                '; '.join(v['detail'] for v in refused)))
    return summarize(summary['targets'], summary['transport'], min_success)


def deliver_and_prove(cfg, cc, auth, clients, timings, check_mode=False, steps=None):
    """The deliver phase of one cluster; returns a ClusterResult (never raises for a cluster failure).

    ``steps``: where the host-local steps run (default: in this process, for servers the controller reaches).
    """
    steps = steps or LocalSteps()
    kv_mount = cfg.pki['kv_mount']
    previous_pem, delivered, reloaded, servers = None, False, False, []
    min_success = cc.own_min_success
    try:
        with timings.step('deliver'):
            record = _state.read_cluster(clients.openbao(), cc.record_name, kv_mount, cfg.state_path)
        unproven = decisions.cluster_needs_reload(False, record, auth['sha256'])
        check_leaf_family(cc, auth)
        probes = probe_set(auth, cc.leaf_family) if cc.probe else None
        if probes is not None and not check_mode:  # unreadable probe files stop here, before anything is written
            for one in probes:
                probe_context(one)
        look = {}
        with timings.step('repair_leaves'):
            repaired = repair_dead_leaves(cfg, cc, clients, check_mode, steps, look=look)
        if uses_host_steps(cc):
            # verified by the authority in this run (against the root, which an intermediates-only bundle lacks);
            # delivered here byte for byte
            with timings.step('reload'):
                res = steps.deliver_reload(
                    pem=auth['pem'], targets=cc.targets, transport=cc.transport, file_mode=cc.file_mode,
                    reload='always' if unproven else 'auto', expect_sha256=None if check_mode else auth['sha256'],
                    propagation_timeout=cc.propagation_timeout, reload_timeout=cc.reload_timeout, min_success=min_success,
                    probes=probes if steps.local else None, check_mode=check_mode)
            previous_pem, delivered, out = res['previous_pem'], res['delivered'], res['reload']
            if out is not None and probes is not None and not steps.local and not check_mode and not out['failed']:
                with timings.step('prove'):
                    out = probe_after(out, cc, probes, min_success, getattr(steps, 'probe_host', None))
        else:
            with timings.step('deliver'):
                results = deliver(_destinations(cc), {'pem': auth['pem'], 'sha256': auth['sha256']}, auth['epoch'], None, clients, check_mode)
            previous_pem = next((r.get('previous_pem') for r in results if r.get('previous_pem')), None)
            delivered = any(r['changed'] for r in results)
            out = None
            if delivered or unproven:
                with timings.step('reload'):
                    out = _reload(cc, None if check_mode else auth['sha256'], probes, check_mode, min_success=min_success)
        if out is not None:
            servers = out['targets']
            if out['failed']:
                raise ClusterFailure(out['msg'], servers)
            reloaded = True
            record = {'generation': auth['generation'], 'sha256': auth['sha256'], 'cluster': cc.name,
                      'proven_at': isoformat(utcnow()), 'epoch': auth['epoch']}
            if cc.spread:
                record['host'] = cc.host
            with timings.step('record'):
                _state.record_cluster(clients.openbao(), cc.record_name, record, kv_mount, cfg.state_path, check_mode)
        result = cluster_result(cc.name, auth, True, reloaded=reloaded, servers=servers, host=cc.host, min_success=cc.min_success,
                                server_count=len(cc.targets) or len(servers),
                                changed=delivered or reloaded or bool(repaired), timings=timings.as_dict())
        result.renewed = repaired
        result.leaf_look = look or None
        return result
    except Exception as err:  # pylint: disable=broad-except
        where = 'Reload every server and prove it trusts the new bundle' if isinstance(err, ClusterFailure) else 'Deliver the bundle'
        error = '%s: %s' % (where, err)
        failed_servers = [dict(s) for s in (getattr(err, 'servers', []) or servers)]
        for server in failed_servers:  # what each server loaded in this run's reload
            server['loaded'] = 'new bundle' if server.get('changed') else 'unchanged (the reload did not happen)'
        rollback = None
        if cc.rollback and previous_pem is not None and not check_mode:
            with timings.step('rollback'):
                rollback = restore_previous(cc, previous_pem, clients, steps)
            reloaded_back = set(rollback['reloaded'])
            for server in failed_servers:
                if server['target'] in reloaded_back:
                    server['loaded'] = 'previous bundle (rolled back)'
            error += '. ' + rollback_summary(rollback, auth)
        elif previous_pem is None and delivered:
            error += '. No previous bundle was found to put back'
        return cluster_result(cc.name, auth, False, servers=failed_servers, error=error, host=cc.host, min_success=cc.min_success,
                              server_count=len(cc.targets) or len(failed_servers),
                              rolled_back=bool(rollback and rollback['complete']), rollback=rollback,
                              changed=delivered, timings=timings.as_dict())


def restore_previous(cc, previous_pem, clients, steps):
    """Automatic rollback: put back the bundle that was live before this run and reload every server.

    Returns what was done, server by server: ``{sha256, restored, reloaded: [names], not_reloaded: [{name, error}],
    complete, error}`` (``complete``: every server reloaded the previous bundle and proved it).
    """
    bundle = _bundle(previous_pem)
    out = {'sha256': bundle['sha256'], 'restored': False, 'reloaded': [], 'not_reloaded': [], 'complete': False, 'error': None}
    try:
        if uses_host_steps(cc):
            res = steps.deliver_reload(pem=previous_pem, targets=cc.targets, transport=cc.transport, file_mode=cc.file_mode,
                                       reload='always', expect_sha256=bundle['sha256'],
                                       propagation_timeout=cc.propagation_timeout, reload_timeout=cc.reload_timeout,
                                       min_success=None, probes=None, check_mode=False)
            out['restored'] = all(d['after_sha256'] == bundle['sha256'] for d in res['destinations'])
            summary = res['reload']
        else:
            deliver(_destinations(cc), bundle, None, None, clients, False)
            out['restored'] = True
            summary = _reload(cc, bundle['sha256'], None, False)
    except Exception as err:  # pylint: disable=broad-except  # the run fails loudly either way
        out['error'] = str(err) or type(err).__name__
        return out
    out['reloaded'] = [t['target'] for t in summary['targets'] if t['ok']]
    out['not_reloaded'] = [{'name': t['target'], 'error': t['error']} for t in summary['targets'] if not t['ok']]
    if summary['failed'] and not summary['targets']:
        out['error'] = summary['msg']
    out['complete'] = out['restored'] and not summary['failed']
    return out


def rollback_summary(rollback, auth):
    """What the automatic rollback did, in one sentence for the run's failure message."""
    prev = rollback['sha256'][:16]
    if rollback['error'] and not rollback['restored']:
        return 'Putting the previous bundle %s back failed: %s; the servers may hold bundle %s' % (
            prev, rollback['error'], (auth.get('sha256') or '')[:16])
    parts = ['The previous bundle %s was put back%s' % (prev, '' if rollback['restored'] else ' (not everywhere)')]
    if rollback['reloaded']:
        parts.append('reloaded with it: %s' % ', '.join(rollback['reloaded']))
    if rollback['not_reloaded']:
        parts.append('NOT reloaded: %s' % '; '.join('%s (%s)' % (n['name'], n['error']) for n in rollback['not_reloaded']))
    if rollback['error']:
        parts.append(rollback['error'])
    return '; '.join(parts)


def leaf_names(target):
    """``(alt_names, ip_sans)`` of a server's leaf: the target's own ``alt_names`` / ``ip_sans`` when given,
    else the host of its client ``url`` (an IP goes to ip_sans, a name to alt_names)."""
    if target.get('alt_names') is not None or target.get('ip_sans') is not None:
        return list(target.get('alt_names') or []), list(target.get('ip_sans') or [])
    if not target.get('url'):
        return [], []
    host = host_port(target['url'])[0]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return [host], []
    return [], [host]


def _leaf_targets(cc):
    """The servers whose leaf the inventory names (cert_file and key_file), with the names their leaf carries."""
    wanted = []
    for target in cc.targets:
        if target.get('cert_file') and target.get('key_file'):
            alt_names, ip_sans = leaf_names(target)
            wanted.append(dict(target, alt_names=alt_names, ip_sans=ip_sans))
    return wanted


def leaf_managed_names(cc):
    """The servers whose leaf the leaf phase renews (the others' certificates come from elsewhere, e.g. cert-manager)."""
    return {t['name'] for t in _leaf_targets(cc)} if cc.renew_leaves else set()


def leaf_chain(cfg, cc):
    """The family (a ``family_mounts`` entry) whose leaves the servers of ``cc`` present and the leaf phase issues:
    classical by default, the ML-DSA family with ``ca_rotation_nats_reload_leaf_family: mldsa`` (dual mode)."""
    return next(s for s in family_mounts(cfg) if s['family'] == cc.leaf_family)


def _sign_and_install(cfg, cc, client, targets, requests, issuer_ref, check_mode, steps):
    """Sign the CSRs of ``targets`` (only the CSR goes to OpenBao: the key stays where the server runs), install the
    leaves and reload those servers."""
    certificates = {}
    chain = leaf_chain(cfg, cc)
    if not check_mode:
        for target in targets:
            leaf = issue_leaf(client, int_mount=chain['int_mount'], role=chain['role'], common_name=target['name'],
                              alt_names=target['alt_names'], ip_sans=target['ip_sans'], csr=requests[target['name']]['csr'],
                              issuer_ref=issuer_ref)
            certificates[target['name']] = leaf['certificate'] + leaf['issuing_ca']
    out = steps.install_and_reload(targets=targets, certificates=certificates, transport=cc.transport,
                                   reload_timeout=cc.reload_timeout, check_mode=check_mode)
    if out['failed']:
        raise ClusterFailure(out['msg'], out['targets'])


def issuers_digest(issuers):
    """A digest of the intermediate mount's issuers (ids, names, default, certificates): equal digests, equal answers
    to a leaf look."""
    text = json.dumps(sorted((k, v.get('issuer_name'), bool(v.get('is_default')), v.get('certificate'))
                             for k, v in issuers.items()))
    return sha256_hex(text)


def repair_dead_leaves(cfg, cc, clients, check_mode, steps, look=None):
    """Before the bundle is delivered: server leaves nothing can connect with any more (expired, from an expired or
    deleted issuer, unreadable) are re-issued first - from the default issuer, or from the current epoch's when that
    has expired too (an outage longer than the validity) - and their servers reloaded, so that the reload with the
    new bundle can be proven. Returns the names of the servers whose leaf was re-issued.

    Leaves this collection does not issue (``ca_rotation_nats_reload_renew_leaves`` false) are not touched: the
    cluster stops before anything is delivered, with the one instruction that gets it going again.
    """
    wanted = _leaf_targets(cc) if uses_host_steps(cc) else []
    if not wanted:
        return []
    client = clients.openbao()
    chain = leaf_chain(cfg, cc)
    issuers = issuer_certificates(client, chain['int_mount'])
    issuer_ref = leaf_issuer_ref(cfg, issuers)

    def requests_for(targets, look_only):
        return steps.leaf_requests(targets=targets, issuers=issuers, renew_before=cc.leaf_renew_before,
                                   now=isoformat(cfg.now), schedule=cfg.schedule.to_params(), key_type=chain['key_type'],
                                   key_bits=chain['key_bits'], check_mode=look_only)
    # a look first (no key is made; on a VM the module runs in the task's check mode, and may keep a pending key)
    looked = requests_for(wanted, True)
    dead = {r['name']: r for r in looked if decisions.leaf_unusable(r['reasons'])}
    if not dead:
        if look is not None:  # what the leaf phase would find, while the issuers stay as they are (renew_leaves)
            look.update(issuers=issuers_digest(issuers), due=sorted(r['name'] for r in looked if r['reasons']))
        return []
    if not cc.renew_leaves:
        issuer = issuer_ref or next((i['issuer_name'] for i in issuers.values() if i.get('is_default')), 'default')
        why = '; '.join('%s: %s' % (n, ', '.join(r['reasons'])) for n, r in sorted(dead.items()))
        raise ClusterFailure(
            'the leaf of %s cannot be used any more (%s) and this collection does not issue it '
            '(ca_rotation_nats_reload_renew_leaves is false), so nothing was delivered. Issue each of these servers a new '
            'leaf from issuer %s, whose intermediate is in the bundle of this run (bao write %s/issuer/%s/issue/%s '
            'common_name=<server> with its alt_names/ip_sans), install certificate + issuing CA as its cert_file and the '
            'key as its key_file, then run rotate.yml again (or set ca_rotation_nats_reload_renew_leaves: true and '
            'rotate.yml does it)' % (', '.join(sorted(dead)), why, issuer, chain['int_mount'], issuer, chain['role']))
    targets = [t for t in wanted if t['name'] in dead]
    requests = {r['name']: r for r in requests_for(targets, check_mode)}
    _sign_and_install(cfg, cc, client, targets, requests, issuer_ref, check_mode, steps)
    return [t['name'] for t in targets]


def renew_leaves(cfg, cc, auth, previous, clients, timings, check_mode=False, steps=None):
    """The leaf phase: renew each server's certificate from the default issuer when due, then reload those servers.

    The key is made where the server runs and only its CSR is signed by OpenBao. ``previous``: this cluster's
    deliver-phase result (a failed cluster is left alone). Returns the updated result.
    """
    steps = steps or LocalSteps()
    result = dict(previous or {'ok': True, 'cluster': cc.name, 'reloaded': False, 'servers': [], 'holder': auth.get('holder')})
    if not (cc.renew_leaves and result.get('ok', True)):
        return result
    wanted = _leaf_targets(cc)
    if not wanted:
        return result
    renewed = []
    try:
        with timings.step('renew'):
            client = clients.openbao()
            chain = leaf_chain(cfg, cc)
            issuers = issuer_certificates(client, chain['int_mount'])
            look = result.get('leaf_look') or {}
            if look.get('issuers') == issuers_digest(issuers) and not look.get('due') and not steps.local:
                # the deliver phase looked at these leaves against these very issuers (activation changed nothing)
                # and none was due: no second module call on the host (a leaf that falls due in the seconds between
                # is renewed by the next run)
                requests = []
            else:
                requests = steps.leaf_requests(targets=wanted, issuers=issuers, renew_before=cc.leaf_renew_before,
                                               now=isoformat(cfg.now), schedule=cfg.schedule.to_params(),
                                               key_type=chain['key_type'], key_bits=chain['key_bits'],
                                               check_mode=check_mode)
            due = {r['name']: r for r in requests if r['csr']}
            renewed = [t for t in wanted if t['name'] in due]
        if renewed:
            with timings.step('renew_reload'):
                # never from an expired default issuer (activation did not happen): OpenBao refuses that leaf
                _sign_and_install(cfg, cc, client, renewed, due, leaf_issuer_ref(cfg, issuers), check_mode, steps)
    except Exception as err:  # pylint: disable=broad-except
        result.update(ok=False, error='leaf renewal: %s' % err)
    result['renewed'] = sorted(set(result.get('renewed') or []) | {t['name'] for t in renewed})
    result['changed'] = bool(result.get('changed')) or bool(renewed)
    timing = dict(result.get('timings') or {})
    timing.update(timings.as_dict())
    result['timings'] = timing
    return result

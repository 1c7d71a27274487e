# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""After the clusters: activation ("trust first, then issue") or the rollback's announcement and hold;
then the end of every run: release the lock, build and write the run report, fail loudly."""

from __future__ import annotations

import json
import os

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import atomic_write
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.intermediate import set_default_issuer
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import list_issuers, live_issuer_name
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import decisions
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.authority import (
    act_family,
    announce_bundle,
    announcement_fields,
    announcer_leaf,
    retry_announcement,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import family_mounts
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import (
    Timings,
    failure_message,
    run_report,
    summary_line,
)


def record_spread_clusters(cfg, auth, clusters, clients, check_mode=False):
    """The proof record of each cluster spread over several hosts that proved the bundle (its hosts keep their own
    parts, ``<cluster>/hosts/<host>``); clusters of one host wrote theirs in their own step."""
    for cluster in clusters:
        if cluster.get('hosts') is None or not cluster.get('ok'):
            continue
        _state.record_cluster(clients.openbao(), cluster['cluster'], {
            'generation': auth['generation'], 'sha256': auth['sha256'], 'cluster': cluster['cluster'],
            'proven_at': isoformat(utcnow()), 'epoch': auth['epoch'],
            'hosts': sorted(h for h, part in cluster['hosts'].items() if part.get('ok'))},
            cfg.pki['kv_mount'], cfg.state_path, check_mode)


def activate(cfg, auth, clusters, expected_clusters, clients, timings, check_mode=False):
    """Make the proven epoch OpenBao's default issuer once every cluster trusts it; renew the announcer's leaf.

    An announcement the authority step could not make (the servers' leaves had expired in an outage) is made here
    first, once every cluster proved the bundle: activation needs it.

    Returns ``{changed, epoch, activated, msg, announcer, announced, timings}`` (``announced``: the generation of
    that late announcement, None when there was none).
    """
    out = {'changed': False, 'epoch': None, 'activated': False, 'msg': None, 'announcer': None, 'announced': None}
    if not auth.get('go'):
        out['timings'] = timings.as_dict()
        return out
    epoch = decisions.activation_epoch(auth)
    out['epoch'] = epoch
    with timings.step('record'):
        record_spread_clusters(cfg, auth, clusters, clients, check_mode)
    proven = decisions.all_clusters_proven(clusters, expected_clusters, auth['sha256'])
    if proven and auth.get('announce_error') and cfg.announce:
        with timings.step('announce'):
            try:
                generation, notes = retry_announcement(cfg, clients, auth, check_mode)
            except Exception as err:  # pylint: disable=broad-except  # activation waits; the run fails and says why
                out['msg'] = 'The announcement failed again after every cluster proved the bundle: %s' % err
            else:
                auth = dict(auth, announce_error=None, generation=generation)
                out.update(announced=generation, changed=True, msg='; '.join(notes) or None)
    ok, reason = decisions.may_activate(auth, proven, cfg.activate_enabled)
    with timings.step('activate'):
        if ok:
            name = live_issuer_name(clients.openbao(), cfg.pki['int_mount'], epoch)
            act = set_default_issuer(clients.openbao(), cfg.pki['int_mount'], name, check_mode=check_mode, now=cfg.now)
            out['activated'] = act['changed']
            out['changed'] = out['changed'] or act['changed']
            for spec in family_mounts(cfg)[1:]:  # dual mode: each family's intermediate of the epoch, trust-first too
                fam = act_family(cfg, clients, spec, epoch, check_mode, auth.get('certificates'))
                out.setdefault('families', {})[spec['family']] = {'activated': fam['changed'], 'issuer': fam['issuer']}
                out['changed'] = out['changed'] or fam['changed']
        elif out['msg'] and auth.get('announce_error'):
            pass  # the second failure of the announcement says it
        elif not proven:
            out['msg'] = ('Not activating epoch %d: %d of %d cluster(s) have not proven trust of bundle %s'
                          % (epoch, decisions.unproven_count(clusters, expected_clusters), expected_clusters,
                             auth['sha256'][:16]))
        else:
            out['msg'] = 'Not activating epoch %d: %s' % (epoch, reason)
    if cfg.renew_client_leaf and cfg.announce:
        with timings.step('renew'):
            res = announcer_leaf(cfg, clients, check_mode, cfg.authority_client_leaf_renew_before)
            out['announcer'] = {'changed': res['changed'], 'reasons': res['reasons'], 'epoch': res.get('epoch')}
            out['changed'] = out['changed'] or res['changed']
    out['timings'] = timings.as_dict()
    return out


def activate_replacement(cfg, auth, clusters, expected_clusters, clients, timings, check_mode=False):
    """Distrust, stage ``replacing``: once every cluster proved the bundle that still holds the distrusted intermediate,
    make its replacement the default issuer (only when the distrusted one is, or was, the default: ``activate``), then
    renew the announcer's leaf when the distrusted intermediate signed it (the servers' leaves follow in the leaf
    phase)."""
    out = {'changed': False, 'epoch': None, 'activated': False, 'msg': None, 'announcer': None, 'announced': None}
    dis = auth.get('distrust') or {}
    if not auth.get('go') or dis.get('stage') != 'replacing':
        out['timings'] = timings.as_dict()
        return out
    out['epoch'] = dis['epoch']
    activate = dis.get('activate')
    what = 'making %s the default issuer' % activate if activate else 're-issuing the leaves of %s' % dis.get('issuer_name')
    with timings.step('record'):
        record_spread_clusters(cfg, auth, clusters, clients, check_mode)
    ready = False
    if not decisions.all_clusters_proven(clusters, expected_clusters, auth['sha256']):
        out['msg'] = ('Not %s: %d of %d cluster(s) have not proven trust of bundle %s'
                      % (what, decisions.unproven_count(clusters, expected_clusters), expected_clusters, auth['sha256'][:16]))
    elif auth.get('announce_error'):
        out['msg'] = 'Not %s: the bundle that holds it was not announced' % what
    elif activate:
        with timings.step('activate'):
            names = {i.get('issuer_name') for i in list_issuers(clients.openbao(), cfg.pki['int_mount']).values()}
            if check_mode and activate not in names:
                # the authority step only predicted issuing it: so is its activation
                act = {'changed': True}
            else:
                act = set_default_issuer(clients.openbao(), cfg.pki['int_mount'], activate, check_mode=check_mode,
                                         now=cfg.now)
        out.update(activated=act['changed'], changed=act['changed'])
        ready = True
    else:
        ready = True  # the default issuer stays: the leaves the distrusted intermediate signed are re-issued from it
    if ready and cfg.renew_client_leaf and cfg.announce:
        with timings.step('renew'):
            # from the default issuer: a leaf of the distrusted intermediate (or of any other issuer) is re-issued
            res = announcer_leaf(cfg, clients, check_mode, None)
            out['announcer'] = {'changed': res['changed'], 'reasons': res['reasons'], 'epoch': res.get('epoch')}
            out['changed'] = out['changed'] or res['changed']
    out['timings'] = timings.as_dict()
    return out


def complete_rollback(cfg, auth, clusters, expected_clusters, clients, timings, check_mode=False):
    """When every cluster is back on the restored bundle: announce ``kind: rollback``, record it, set the hold."""
    out = {'changed': False, 'epoch': None, 'activated': False, 'msg': None, 'announcer': None}
    if not auth.get('go'):
        out['timings'] = timings.as_dict()
        return out
    with timings.step('record'):
        record_spread_clusters(cfg, auth, clusters, clients, check_mode)
    if not decisions.all_clusters_proven(clusters, expected_clusters, auth['sha256']):
        out['msg'] = 'The rollback is not complete: not every cluster is back on bundle %s' % auth['sha256'][:16]
        out['timings'] = timings.as_dict()
        return out
    pki = cfg.pki
    if cfg.announce:
        with timings.step('announce'):
            fields = announcement_fields(cfg, auth, 'rollback', cfg.live_secret_locations)
            announce_bundle(cfg, clients, fields, check_mode)
    with timings.step('state'):
        _state.record(clients.openbao(), auth['holder'], epoch=auth['epoch'], sha256=auth['sha256'],
                      generation=int(auth['generation']), kind='rollback', now=utcnow(), mount=pki['kv_mount'],
                      path=cfg.state_path, check_mode=check_mode)
        hold = {'epoch': auth['epoch'], 'sha256': auth['sha256'], 'since': isoformat(utcnow()),
                'reason': cfg.rollback_reason or 'rollback', 'pem': auth['pem'], 'generation': int(auth['generation'])}
        _state.set_hold(clients.openbao(), auth['holder'], hold, pki['kv_mount'], cfg.state_path, check_mode)
    out['changed'] = True
    out['timings'] = timings.as_dict()
    return out


def finish(cfg, auth, clusters, activation, clients, check_mode=False):
    """Release the lock, build the run report and write it (``ca_rotation_report_file``). Returns the report."""
    auth = auth or {}
    timings = Timings()
    if auth.get('go') and auth.get('holder') and not check_mode:
        with timings.step('release'):
            try:
                _state.release_lock(clients.openbao(), auth['holder'], cfg.pki['kv_mount'], cfg.state_path)
            except Exception as err:  # pylint: disable=broad-except
                auth = dict(auth, error=((auth.get('error') or '') + ' Releasing the rotation lock failed: %s' % err).strip())
    report = run_report(auth, clusters, activation or {}, isoformat(utcnow()))
    report['msg'] = failure_message(report) if not report['ok'] else (
        auth.get('msg') if report['locked_out'] else summary_line(report))
    report['timings']['finish'] = timings.as_dict()
    if cfg.report_file:
        with timings.step('report'):
            write_report(cfg.report_file, report)
    return report


def write_report(path, report):
    """The JSON run report, written atomically (also in check mode: it describes the run, it changes nothing)."""
    path = os.path.expanduser(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=4, sort_keys=True, default=str) + '\n', 0o644)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tier 1, once per run: plan -> lock -> hold -> issue -> bundle -> KV / per-epoch Secret / probe file ->
sign + announce -> state -> probe leaf -> prune. Rollback is a mode of the same step.

Nothing here fails the run on its own: a refusal or an error releases the lock and comes back as a
result with ``go: false`` and ``error`` set, so that the finish step still writes the report and fails
the run loudly.
"""

from __future__ import annotations

import os

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import bundle_from_pem
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.families import family_bundle_from_pem
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import (
    DEFAULT_EPOCH_SECRET_KEY,
    DEFAULT_EPOCH_SECRET_NAME,
    DEFAULT_KV_PATH,
    kv_record,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.source import (
    bundle_from_openbao,
    families_from_openbao,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import cert_not_after, load_cert
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.intermediate import (
    ensure_epoch_intermediate,
    prune_epoch_issuers,
    set_default_issuer,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import ensure_leaf, parse_renew_before
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import (
    epoch_issuer_name,
    epoch_of,
    issuer_certificates,
    live_epoch_names,
    root_certificate,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import decisions, distrust
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.announce import announce, last_announcement
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import dual, family_mounts
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import (
    authority_stopped,
    authority_went_ahead,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.store import deliver, prune_copies

PROBE_CN = 'ca-rotation-probe'
PROBE_RENEW_BEFORE = '33%'


def probe_paths(probe_dir, mldsa=False):
    """The probe's files; with ``mldsa`` (dual mode) also those of the ML-DSA probe (``mldsa``: cert_file, key_file)."""
    out = {'cert_file': os.path.join(probe_dir, 'probe-cert.pem'), 'key_file': os.path.join(probe_dir, 'probe-key.pem'),
           'bundle_file': os.path.join(probe_dir, 'ca-bundle.pem')}
    if mldsa:
        out['mldsa'] = {'cert_file': os.path.join(probe_dir, 'probe-mldsa-cert.pem'),
                        'key_file': os.path.join(probe_dir, 'probe-mldsa-key.pem')}
    return out


def bundle_probe(cfg, bundle, check_mode):
    """The probe files for ``bundle``: the ML-DSA probe's too in dual mode when the bundle holds that family (not a
    held or stored bundle from before it was switched on: nothing of it to prove)."""
    return probe_paths(_probe_dir(cfg, check_mode),
                       mldsa=dual(cfg) and decisions.holds_intermediate(bundle['certificates'], 'mldsa'))


def _probe_dir(cfg, check_mode):
    path = os.path.expanduser(cfg.probe_dir)
    if not check_mode:
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def announcement_fields(cfg, auth_like, kind, live_secrets):
    """The announcement of a bundle, with the Secret and KV locations as configured (never hard-coded)."""
    certs = auth_like['certificates']
    epoch = auth_like['epoch']
    locations = list(live_secrets)
    if cfg.epoch_secret:
        locations.append('%s/%s' % (cfg.authority_epoch_secret_namespace, DEFAULT_EPOCH_SECRET_NAME.format(epoch=epoch)))
    return {
        'epoch': epoch, 'generation': int(auth_like['generation']), 'kind': kind, 'certificates': certs,
        'valid_from': max(c['not_before'] for c in certs), 'valid_until': min(c['not_after'] for c in certs),
        'bundle_pem': auth_like['pem'],
        'kv_location': '%s/%s' % (cfg.pki['kv_mount'], DEFAULT_KV_PATH.format(epoch=epoch)),
        'secret_locations': locations,
    }


def _continue_count(cfg, clients, state, sha256, notes):
    """``(new_bundle, generation, resync)``: the next generation, continued from the last signed announcement on the
    stream when the state document is behind it (lost or restored from an old copy); ``resync`` is that announcement."""
    last = last_announcement(clients.openbao(), cfg.authority_nats, cfg.stream, cfg.authority_subject,
                             cfg.pki['transit_mount'], cfg.pki['transit_key'])
    if last is not None and last.get('invalid'):
        notes.append('The last message on %s (seq %s) does not verify and was not counted: %s'
                     % (cfg.authority_subject, last['seq'], last['invalid']))
        last = None
    new_bundle, generation, behind = decisions.reconcile_generation(state, sha256, last)
    if not behind:
        return new_bundle, generation, None
    notes.append('The rotation state (generation %d, %s) is behind the last signed announcement (generation %d, seq %s): '
                 'the count continues from the announcement, so clients keep applying new bundles'
                 % (int(state.get('generation') or 0), 'lost' if not state.get('bundle_sha256') else 'an older copy',
                    last['generation'], last['seq']))
    return new_bundle, generation, last


def retry_announcement(cfg, clients, auth, check_mode):
    """The announcement the authority step could not make - after an outage longer than the validity the servers'
    leaves had expired, so no client could connect - made once every cluster proved the bundle (and the servers hold
    renewed leaves), then recorded in the state like the authority step records it. Returns ``(generation, notes)``;
    raises when the announcement fails again."""
    notes = []
    refresh_announcer_leaf(cfg, clients, check_mode)
    state, _version = _state.read_state(clients.openbao(), cfg.pki['kv_mount'], cfg.state_path)
    new_bundle, generation, resync = _continue_count(cfg, clients, state, auth['sha256'], notes)
    if new_bundle:
        fields = announcement_fields(cfg, dict(auth, generation=generation), auth.get('kind') or 'rotation',
                                     cfg.live_secret_locations)
        announce_bundle(cfg, clients, fields, check_mode)
    if new_bundle or resync:
        _state.record(clients.openbao(), auth['holder'], epoch=auth['epoch'], sha256=auth['sha256'], generation=generation,
                      kind=auth.get('kind') or 'rotation', now=utcnow(), mount=cfg.pki['kv_mount'], path=cfg.state_path,
                      check_mode=check_mode, resync=resync)
    return generation, notes


def announce_bundle(cfg, clients, fields, check_mode):
    return announce(clients.openbao(), cfg.authority_nats, cfg.stream, cfg.authority_subject, fields,
                    cfg.pki['transit_mount'], cfg.pki['transit_key'], check_mode=check_mode)


def _probe_leaf(cfg, clients, epoch, probe, check_mode, issuers=None, issuer_ref=None, spec=None):
    """A client certificate of ``epoch`` (of its newest replacement, if it has one; ``issuer_ref``: of that issuer)
    for the trust probe (kept until it is due). ``spec``: another family's ``family_mounts`` entry (dual mode: the
    ML-DSA probe, ``probe['mldsa']``, from that family's mount)."""
    int_mount, role = (spec['int_mount'], spec['role']) if spec else (cfg.pki['int_mount'], cfg.pki['role'])
    files = probe[spec['family']] if spec else probe
    key = {'key_type': spec['key_type'], 'key_bits': spec['key_bits']} if spec else {}
    try:
        if issuers is None:
            issuers = issuer_certificates(clients.openbao(), int_mount)
        ref = issuer_ref or live_epoch_names(issuers).get(epoch) or epoch_issuer_name(epoch)
        return ensure_leaf(clients.openbao(), int_mount=int_mount, role=role, common_name=PROBE_CN,
                           cert_file=files['cert_file'], key_file=files['key_file'], schedule=cfg.schedule, now=cfg.now,
                           renew_before=parse_renew_before(PROBE_RENEW_BEFORE), issuer_ref=ref,
                           renew_if_not_default=False, check_mode=check_mode, issuers=issuers, **key)
    except Exception:
        if check_mode:  # the issuer may exist only as a prediction
            return {'changed': True, 'predicted': True}
        raise


def probe_leaves(cfg, clients, epoch, probe, check_mode, issuers=None):
    """Every probe certificate of ``epoch`` (the classical one; in dual mode the ML-DSA one too: every server must
    accept both before anything is activated); whether one changed."""
    changed = _probe_leaf(cfg, clients, epoch, probe, check_mode, issuers=issuers)['changed']
    for spec in family_mounts(cfg)[1:]:
        if probe.get(spec['family']):
            changed = _probe_leaf(cfg, clients, epoch, probe, check_mode, spec=spec)['changed'] or changed
    return changed


def family_roots(cfg, clients, root_pem):
    """The root of every configured family (switched off ones too: a held bundle may still hold their part), the
    classical one (``root_pem``) first. A switched-off family whose root cannot be read (its mounts never set up, or
    removed) is left out: a bundle that still holds its intermediates is then refused as holding certificates no root
    signed."""
    enabled = {spec['family'] for spec in family_mounts(cfg)}
    roots = [root_pem]
    for spec in family_mounts(cfg, enabled_only=False)[1:]:
        try:
            roots.append(root_certificate(clients.openbao(), spec['root_mount']))
        except OpenBaoError:
            if spec['family'] in enabled:
                raise
    return roots


def rebuild_bundle(cfg, clients, pem, root_pem, include_root, distrusted, what):
    """A stored or held bundle rebuilt for now: expired intermediates and distrusted ones left out; with the ML-DSA
    family configured, each family verified against its own root and a family switched off dropped."""
    if cfg.mldsa is None:
        return bundle_from_pem(pem, cfg.schedule, cfg.now, root_pem=root_pem, include_root=include_root,
                               max_certificates=cfg.max_certificates, drop_expired=True, distrusted=distrusted)
    return family_bundle_from_pem(pem, cfg.schedule, cfg.now, enabled=[f['family'] for f in family_mounts(cfg)],
                                  root_pems=family_roots(cfg, clients, root_pem), include_root=include_root,
                                  max_certificates=cfg.max_certificates, drop_expired=True, distrusted=distrusted,
                                  what=what)


def fresh_bundle(cfg, clients, include_root, distrusted):
    """The bundle built fresh from OpenBao: every enabled family's epoch intermediates."""
    pki = cfg.pki
    if not dual(cfg):
        return bundle_from_openbao(clients.openbao(), cfg.schedule, cfg.now, int_mount=pki['int_mount'],
                                   root_mount=pki['root_mount'], include_root=include_root,
                                   max_certificates=cfg.max_certificates, distrusted=distrusted)
    return families_from_openbao(clients.openbao(), cfg.schedule, cfg.now, family_mounts(cfg), include_root=include_root,
                                 max_certificates=cfg.max_certificates, distrusted=distrusted)


def act_family(cfg, clients, spec, epoch, check_mode, certificates=None):
    """Dual mode: make ``epoch``'s intermediate of another family (``spec``: a ``family_mounts`` entry) that family's
    default issuer, as the classical one is made; ``{changed, issuer}`` (``issuer`` None and nothing changed when that
    family has no intermediate of the epoch: it is issued by the next rotate.yml; ``certificates``: those of the bundle
    every server proved - a family's intermediate they do not hold is not made the default)."""
    if certificates is not None and not decisions.holds_intermediate(certificates, spec['family'], epoch):
        return {'changed': False, 'issuer': None}  # trust first: never a default the proven bundle does not hold
    names = live_epoch_names(issuer_certificates(clients.openbao(), spec['int_mount']))
    name = names.get(epoch)
    if name is None:  # in check mode: issued by this run (a prediction), else by the next rotate.yml
        return {'changed': bool(check_mode), 'issuer': epoch_issuer_name(epoch) if check_mode else None}
    return dict(set_default_issuer(clients.openbao(), spec['int_mount'], name, check_mode=check_mode, now=cfg.now),
                issuer=name)


def _probe_file_dest(probe, check_mode):
    """The probe directory's copy of the bundle (in check mode, a directory not created yet is a predicted change)."""
    if check_mode and not os.path.isdir(os.path.dirname(probe['bundle_file'])):
        return []
    return [('file', {'path': probe['bundle_file'], 'mode': '0644'})]


def _epoch_secret_dest(cfg):
    return {'namespace': cfg.authority_epoch_secret_namespace, 'name': DEFAULT_EPOCH_SECRET_NAME,
            'key': DEFAULT_EPOCH_SECRET_KEY, 'kubernetes': cfg.authority_kubernetes}


def _plan_and_lock(cfg, clients, holder, started_at, kind, timings, check_mode):
    """``(plan, lock, stopped)``: the epoch plan for now and the single-flight lock (``acquired`` false while another
    run holds it); ``stopped`` is the result to return when OpenBao could not be reached (nothing was changed)."""
    try:
        return _plan_and_lock_once(cfg, clients, holder, timings, check_mode) + (None,)
    except Exception as err:  # pylint: disable=broad-except  # OpenBao unreachable, login refused
        msg = 'The %s could not start: %s. Nothing was changed.' % (kind, err)
        return None, None, authority_stopped(started_at, kind, msg, error=msg, timings=timings.as_dict())


def _plan_and_state(cfg, clients, holder, started_at, kind, timings, check_mode):
    """``(plan, state, stopped)`` for a run that must hold the lock (a rollback, a distrust): ``stopped`` is the
    result to return when OpenBao could not be reached or another run holds the lock (nothing was changed)."""
    plan, lock, stopped = _plan_and_lock(cfg, clients, holder, started_at, kind, timings, check_mode)
    if stopped is None and not lock['acquired']:
        msg = '%s. Re-run the %s when it is released.' % (lock['msg'], kind)
        stopped = authority_stopped(started_at, kind, msg, locked_out=True, plan=plan, error=msg, timings=timings.as_dict())
    return plan, (lock or {}).get('state'), stopped


def _plan_and_lock_once(cfg, clients, holder, timings, check_mode):
    with timings.step('plan'):
        plan = cfg.schedule.plan(cfg.now)
    with timings.step('lock'):
        # the lock and the state's timestamps follow the real clock, also when the plan is pinned (ca_rotation_now)
        lock = _state.acquire_lock(clients.openbao(), holder, cfg.lock_ttl, utcnow(), cfg.pki['kv_mount'], cfg.state_path,
                                   check_mode)
        stale = lock.get('lock') or {}
        if not lock['acquired'] and decisions.lock_outlived(stale, utcnow(), cfg.schedule):
            # taken longer ago than any run of this schedule may hold it (a run killed while holding a lock of a longer
            # TTL): released by its holder's name (check-and-set: of two runs doing this, one gets the lock)
            if not check_mode:
                _state.release_lock(clients.openbao(), stale['holder'], cfg.pki['kv_mount'], cfg.state_path)
            lock = _state.acquire_lock(clients.openbao(), holder, cfg.lock_ttl, utcnow(), cfg.pki['kv_mount'],
                                       cfg.state_path, check_mode)
            if lock['acquired']:
                lock['outlived'] = ('The lock of %s (taken at %s, "until %s") was taken over: it is older than one epoch, '
                                    'the longest a run may hold it' % (stale['holder'], stale.get('acquired_at'),
                                                                       stale.get('expires_at')))
    return plan, lock


def leaf_issuer_ref(cfg, issuers):
    """None (leaves from the default issuer) while it is valid, else ``epoch-<current>`` (see decisions.leaf_issuer).

    ``issuers``: ``_openbao.pki.issuer_certificates`` of the intermediate mount."""
    default = next((i for i in issuers.values() if i.get('is_default') and i.get('certificate')), None)
    not_after = cert_not_after(load_cert(default['certificate'])) if default else None
    existing = []
    live = live_epoch_names(issuers)
    for issuer in issuers.values():
        name = issuer.get('issuer_name')
        if name in live.values() and issuer.get('certificate'):
            if cert_not_after(load_cert(issuer['certificate'])) > cfg.now:
                existing.append(epoch_of(name))
    ref = decisions.leaf_issuer(not_after, cfg.now, cfg.schedule.epoch(cfg.now), existing=existing)
    return live.get(epoch_of(ref), ref) if ref else None


def refresh_announcer_leaf(cfg, clients, check_mode):
    """After an outage longer than the validity (the default issuer expired): the announcer's leaf from the current
    epoch's issuer, so that the announcement can be made once the servers hold leaves that have not expired either.
    None when there is nothing to do (renewal off, or the default issuer is valid: activation renews it)."""
    if not (cfg.renew_client_leaf and cfg.announce):
        return None
    issuers = issuer_certificates(clients.openbao(), cfg.pki['int_mount'])
    ref = leaf_issuer_ref(cfg, issuers)
    if ref is None or not any(i.get('issuer_name') == ref for i in issuers.values()):
        return None
    return announcer_leaf(cfg, clients, check_mode, renew_before=None, issuer_ref=ref, issuers=issuers)


def _stop(cfg, clients, holder, check_mode, err, failed_msg):
    """Release the lock after a refusal or a failure; the message (the refusal's own, or ``failed_msg``)."""
    if not check_mode:
        _release(clients, cfg, holder)
    return str(err) if isinstance(err, decisions.Refusal) else failed_msg


def _release(clients, cfg, holder):
    try:
        _state.release_lock(clients.openbao(), holder, cfg.pki['kv_mount'], cfg.state_path)
    except Exception:  # pylint: disable=broad-except  # the original error matters more; the lock expires by itself
        pass


def store_bundle(cfg, clients, bundle, probe, timings, check_mode):
    """The bundle to OpenBao KV, the per-epoch Secret (when enabled) and the probe file; older copies pruned.
    Returns whether anything was written."""
    epoch = bundle['epoch']
    with timings.step('store'):
        kv = {'mount': cfg.pki['kv_mount'], 'path': DEFAULT_KV_PATH}
        dests = [('kv', kv)]
        if cfg.epoch_secret:
            dests.append(('epoch_secret', _epoch_secret_dest(cfg)))
        probe_file = _probe_file_dest(probe, check_mode)
        dests.extend(probe_file)
        stored = deliver(dests, bundle, epoch, kv_record(bundle, epoch, cfg.schedule, created_at=cfg.now), clients, check_mode)
        changed = any(r['changed'] for r in stored) or not probe_file
        if cfg.prune:
            pruned = prune_copies(cfg.schedule, cfg.now, cfg.keep_epochs, [epoch], clients, check_mode, kv=kv,
                                  epoch_secret=_epoch_secret_dest(cfg) if cfg.epoch_secret else None)
            changed = changed or pruned['changed']
    return changed


def announce_and_record(cfg, clients, holder, state, bundle, kind, notes, timings, check_mode):
    """Announce a bundle that is new to the state (signed, the next generation) and record it.

    A failed announcement must not keep the servers from the new bundle: it is returned, the generation is not
    recorded, activation waits, and the run fails at the end; the next run announces again.
    Returns ``(new_bundle, generation, announce_error, resynced)``."""
    epoch = bundle['epoch']
    current = cfg.schedule.epoch(cfg.now)
    new_bundle, generation = decisions.generation(state, bundle['sha256'])
    announce_error = resync = None
    if cfg.announce and new_bundle:
        with timings.step('announce'):
            try:  # after an outage: the announcer's expired leaf from this epoch's issuer (the servers' follow)
                renewed = refresh_announcer_leaf(cfg, clients, check_mode)
                if renewed and renewed.get('changed'):
                    notes.append('The announcer leaf was re-issued by epoch-%d: %s' % (current, '; '.join(renewed['reasons'])))
            except Exception as err:  # pylint: disable=broad-except  # the announcement fails and says why
                notes.append('Renewing the announcer leaf from epoch-%d failed: %s' % (current, err))
            try:
                new_bundle, generation, resync = _continue_count(cfg, clients, state, bundle['sha256'], notes)
                auth_like = {'epoch': epoch, 'generation': generation, 'certificates': bundle['certificates'],
                             'pem': bundle['pem']}
                if new_bundle:
                    announce_bundle(cfg, clients, announcement_fields(cfg, auth_like, kind, cfg.live_secret_locations),
                                    check_mode)
            except Exception as err:  # pylint: disable=broad-except
                announce_error = str(err) or type(err).__name__
    with timings.step('state'):
        if (new_bundle or resync) and announce_error is None:
            _state.record(clients.openbao(), holder, epoch=epoch, sha256=bundle['sha256'], generation=generation,
                          kind=kind, now=utcnow(), mount=cfg.pki['kv_mount'], path=cfg.state_path, check_mode=check_mode,
                          resync=resync)
    return new_bundle, generation, announce_error, bool(resync)


def rotate(cfg, clients, holder, started_at, timings, check_mode=False):
    """The authority step of ``rotate.yml``; returns an AuthorityResult."""
    pki, kind = cfg.pki, 'rotation'
    plan, lock, stopped = _plan_and_lock(cfg, clients, holder, started_at, kind, timings, check_mode)
    if stopped is not None:
        return stopped
    if not lock['acquired']:
        return authority_stopped(started_at, kind, lock['msg'], locked_out=True, plan=plan, timings=timings.as_dict())
    state = lock['state']
    step, changed = 'plan', False
    try:
        decisions.check_clock(plan, state)
        distrust.refuse_while_pending(state)
        distrusted = distrust.distrusted_shas(state)
        include_root = distrust.bundle_includes_root(cfg.include_root, state, cfg.now)
        hold, hold_expired = decisions.hold_decision(state.get('hold'), cfg.release_hold, plan['current_epoch'], cfg.schedule,
                                                     now=cfg.now, min_validity=cfg.rollback_min_validity)
        notes = [n for n in (cfg.lock_ttl_note, lock.get('outlived')) if n]
        if hold:
            notes.append('Rollback hold since %s keeps the bundle of epoch %s; run with -e ca_rotation_release_hold=true to '
                         'resume rotation' % (hold.get('since'), hold['epoch']))
        elif hold_expired:
            notes.append('Rollback hold released; rotation resumes')
        step = 'issue'
        with timings.step('issue'):
            issued = []
            for spec in family_mounts(cfg):
                for epoch in decisions.epochs_to_issue(plan):
                    res = ensure_epoch_intermediate(
                        clients.openbao(), cfg.schedule, epoch, root_mount=spec['root_mount'], int_mount=spec['int_mount'],
                        cn_prefix=spec['cn_prefix'], key_type=spec['key_type'], key_bits=spec['key_bits'],
                        check_mode=check_mode, now=cfg.now, distrusted=distrusted)
                    notes.extend(res.get('warnings') or [])
                    changed = changed or res['changed']
                    issued.append(res)
        step = 'bundle'
        with timings.step('bundle'):
            if hold:
                bundle = rebuild_bundle(cfg, clients, hold['pem'], issued[0]['root_certificate'], include_root,
                                        distrusted, 'the held bundle')
            else:
                bundle = fresh_bundle(cfg, clients, include_root, distrusted)
        probe = bundle_probe(cfg, bundle, check_mode)
        if bundle.get('dropped_families'):
            notes.append('The %s family is switched off: its certificates left the bundle'
                         % ', '.join(bundle['dropped_families']))
        if include_root != cfg.include_root:
            notes.append('The root stays out of the bundle while a distrusted intermediate is valid (epochs %s, until %s)'
                         % (', '.join(str(d['epoch']) for d in distrust.valid_distrusted(state, cfg.now)),
                            max(d['not_after'] for d in distrust.valid_distrusted(state, cfg.now))))
        epoch = bundle['epoch']
        step = 'store'
        changed = store_bundle(cfg, clients, bundle, probe, timings, check_mode) or changed
        step = 'announce'
        new_bundle, generation, announce_error, resynced = announce_and_record(cfg, clients, holder, state, bundle, kind,
                                                                               notes, timings, check_mode)
        changed = changed or resynced
        step = 'state'
        with timings.step('state'):
            if hold_expired:
                _state.set_hold(clients.openbao(), holder, None, pki['kv_mount'], cfg.state_path, check_mode)
        step = 'probe leaf'
        with timings.step('probe_leaf'):
            changed = probe_leaves(cfg, clients, epoch, probe, check_mode) or changed
        if cfg.prune:
            step = 'prune'
            with timings.step('prune'):
                for spec in family_mounts(cfg):
                    pr = prune_epoch_issuers(clients.openbao(), cfg.schedule, spec['int_mount'], cfg.prune_grace,
                                             now=cfg.now, check_mode=check_mode)
                    changed = changed or pr['changed']
    except Exception as err:  # pylint: disable=broad-except
        msg = _stop(cfg, clients, holder, check_mode, err, "The authority step failed at '%s': %s. The lock was released; "
                    "nothing after that step was changed and the next run converges." % (step, err))
        return authority_stopped(started_at, kind, msg, plan=plan, error=msg, timings=timings.as_dict(), changed=changed)
    result = authority_went_ahead(
        started_at=started_at, kind=kind, holder=holder, plan=plan, bundle=bundle, generation=generation,
        new_bundle=new_bundle, hold=hold, include_root=include_root, announce_error=announce_error, probe=probe,
        pki=pki, changed=changed or new_bundle, timings=timings.as_dict(), logins=clients.logins)
    result.msg = '; '.join(notes) or None
    return result


def prepare_rollback(cfg, clients, holder, started_at, timings, check_mode=False):
    """The authority step of ``rollback.yml``: choose, verify and hand the restored bundle to the clusters.

    The restored epoch is trusted everywhere already (every bundle holds all valid epochs), so the
    default issuer points back at it and the announcer's leaf is re-issued from it before newer epochs
    lose trust.
    """
    pki, kind = cfg.pki, 'rollback'
    plan, state, stopped = _plan_and_state(cfg, clients, holder, started_at, kind, timings, check_mode)
    if stopped is not None:
        return stopped
    step = 'choose'
    try:
        distrust.refuse_while_pending(state)
        include_root = distrust.bundle_includes_root(cfg.include_root, state, cfg.now)
        target = decisions.rollback_target(cfg.rollback_epoch, state.get('history'))
        step = 'check the safety margin'
        # first on the epoch asked for (a bundle whose intermediates have all expired is refused by this, not by the
        # bundle check below), then on the newest epoch the stored bundle really holds
        decisions.check_rollback_margin(cfg.schedule, decisions.rollback_default_epoch(target, plan['current_epoch']),
                                        cfg.now, cfg.rollback_min_validity)
        step = 'read the stored bundle'
        with timings.step('bundle'):
            stored, _version = _state.read_doc(clients.openbao(), pki['kv_mount'], DEFAULT_KV_PATH.format(epoch=target))
            if not (stored.get('ca-bundle.pem') or ''):
                raise decisions.Refusal('No bundle is stored at %s/%s (pruned, or never issued). Choose another epoch with '
                                        '-e ca_rotation_rollback_epoch=<n>.' % (pki['kv_mount'], DEFAULT_KV_PATH.format(epoch=target)))
            root_pem = root_certificate(clients.openbao(), pki['root_mount'])
            # intermediates that expired since the bundle was stored are left out (they could not be trusted anyway)
            # with the root in or out as configured, so that rotation under the hold rebuilds the very same bytes
            # and so are distrusted ones: a rollback never puts one back
            bundle = rebuild_bundle(cfg, clients, stored['ca-bundle.pem'], root_pem, include_root,
                                    distrust.distrusted_shas(state), 'the bundle stored for epoch %d' % target)
        step = 'check the safety margin'
        default_epoch = decisions.rollback_default_epoch(bundle['epoch'], plan['current_epoch'])
        # before anything is written: the leaves the rollback issues come from this epoch and cannot outlive it
        left = decisions.check_rollback_margin(cfg.schedule, default_epoch, cfg.now, cfg.rollback_min_validity)
        probe = bundle_probe(cfg, bundle, check_mode)
        step = 'store'
        with timings.step('store'):
            probe_file = _probe_file_dest(probe, check_mode)
            stored_probe = deliver(probe_file, bundle, bundle['epoch'], None, clients, check_mode) or [{'changed': True}]
        step = 'probe leaf'
        with timings.step('probe_leaf'):
            issuers = issuer_certificates(clients.openbao(), pki['int_mount'])
            probe_leaves(cfg, clients, bundle['epoch'], probe, check_mode, issuers=issuers)
        step = 'point the default issuer back'
        with timings.step('activate'):
            act = set_default_issuer(clients.openbao(), pki['int_mount'],
                                     live_epoch_names(issuers).get(default_epoch) or epoch_issuer_name(default_epoch),
                                     check_mode=check_mode, now=cfg.now)
            for spec in family_mounts(cfg)[1:]:
                if act_family(cfg, clients, spec, default_epoch, check_mode, bundle['certificates'])['changed']:
                    act = dict(act, changed=True)
        if cfg.renew_client_leaf and cfg.announce:
            step = 'renew the announcer leaf'
            with timings.step('renew'):
                announcer_leaf(cfg, clients, check_mode, renew_before=None)
    except Exception as err:  # pylint: disable=broad-except
        msg = _stop(cfg, clients, holder, check_mode, err, "Rollback failed at '%s': %s. Nothing was changed on the NATS "
                    "servers; the lock was released." % (step, err))
        return authority_stopped(started_at, kind, msg, plan=plan, error=msg, timings=timings.as_dict())
    new_bundle = bundle['sha256'] != state.get('bundle_sha256')
    result = authority_went_ahead(
        started_at=started_at, kind=kind, holder=holder, plan=plan, bundle=bundle,
        generation=int(state.get('generation') or 0) + 1, new_bundle=new_bundle, hold={'epoch': bundle['epoch']},
        include_root=include_root, announce_error=None, probe=probe, pki=pki,
        changed=new_bundle or act['changed'] or any(r['changed'] for r in stored_probe), timings=timings.as_dict(),
        logins=clients.logins)
    result.activated_epoch = default_epoch if act['changed'] else None
    result.msg = ('Leaves come from epoch-%d, valid until %s (%s left; the margin is %s)'
                  % (default_epoch, isoformat(cfg.schedule.expiry(default_epoch)), decisions.span(left),
                     decisions.span(cfg.rollback_min_validity)))
    return result


def announcer_leaf(cfg, clients, check_mode, renew_before, issuer_ref=None, issuers=None):
    """Keep the announcing client's certificate current, from the default issuer (``issuer_ref``: from that one;
    None and the default issuer expired: from the current epoch's, see :func:`leaf_issuer_ref`)."""
    nats = cfg.authority_nats or {}
    if not nats.get('cert_file') or not nats.get('key_file'):
        raise decisions.Refusal('ca_rotation_authority_renew_client_leaf needs ca_rotation_authority_nats.cert_file and '
                                '.key_file (the announcer certificate to keep current)')
    if issuers is None:
        issuers = issuer_certificates(clients.openbao(), cfg.pki['int_mount'])
    if issuer_ref is None:
        issuer_ref = leaf_issuer_ref(cfg, issuers)  # never from an expired default issuer (OpenBao refuses that leaf)
    return ensure_leaf(clients.openbao(), int_mount=cfg.pki['int_mount'], role=cfg.pki['role'],
                       common_name=cfg.authority_client_leaf_cn, cert_file=nats['cert_file'], key_file=nats['key_file'],
                       schedule=cfg.schedule, now=cfg.now,
                       renew_before=parse_renew_before(renew_before if renew_before is not None else PROBE_RENEW_BEFORE),
                       issuer_ref=issuer_ref, renew_if_not_default=issuer_ref is None, check_mode=check_mode,
                       issuers=issuers)

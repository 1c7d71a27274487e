# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The authority step of ``playbooks/distrust.yml`` (the decisions are in ``distrust``).

It runs twice in a run: before the clusters (revoke, replace, deliver) and after the leaf phase (the bundle without
the distrusted intermediate, once its replacement is the default and the leaves it signed are re-issued). Each call
looks at what is true now and does what is missing, so a re-run after any failure converges.
"""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import build_bundle, split_pem
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.source import bundle_from_openbao
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.intermediate import ensure_epoch_intermediate
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import (
    list_epoch_issuers,
    root_certificate,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import decisions, distrust
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import PREFIX
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.authority import (
    _plan_and_state,
    _probe_dir,
    _probe_leaf,
    _stop,
    announce_and_record,
    probe_paths,
    store_bundle,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import (
    authority_stopped,
    authority_went_ahead,
)


def _bundle(cfg, clients, state, issuers, keep, distrusted, include_root, replacement):
    """The bundle of this stage: from OpenBao, or under a rollback hold from the held bundle (plus the replacement)."""
    hold = state.get('hold')
    keep_shas = {i['sha256'] for i in issuers if i['issuer_id'] in keep}
    if not hold:
        return bundle_from_openbao(clients.openbao(), cfg.schedule, cfg.now, int_mount=cfg.pki['int_mount'],
                                   root_mount=cfg.pki['root_mount'], include_root=include_root,
                                   max_certificates=cfg.max_certificates, keep=keep, distrusted=distrusted - keep_shas,
                                   issuers=issuers)
    root_pem = root_certificate(clients.openbao(), cfg.pki['root_mount'])
    held = [text for text, cert in split_pem(hold['pem'], 'the held bundle') if cert.subject != cert.issuer]
    if replacement and replacement.get('certificate'):
        held.append({'certificate': replacement['certificate'], 'epoch': replacement['epoch']})
    return build_bundle(held, root_pem, cfg.schedule, cfg.now, include_root=include_root,
                        max_certificates=cfg.max_certificates, drop_expired=True, distrusted=distrusted - keep_shas)


def run(cfg, clients, holder, started_at, timings, check_mode=False, first_pass=None):
    """One pass of the distrust; returns an AuthorityResult whose ``distrust`` says the stage:

    ``replacing``: the distrusted intermediate stays in the bundle while the leaf phase re-issues the leaves it signed;
    when it is the default issuer, a replacement was issued and is delivered next to it (``activate``: activation
    makes it the default once every cluster proved it); ``complete``: the bundle without it (announced
    ``kind: distrust``); the next pass changes nothing.

    ``first_pass`` is the ``distrust`` result of this run's first pass when this is the second: in check mode nothing
    was activated, so the second pass predicts what it does once the replacement is the default.
    """
    first_pass = first_pass or {}
    pki, kind = cfg.pki, distrust.KIND
    plan, state, stopped = _plan_and_state(cfg, clients, holder, started_at, kind, timings, check_mode)
    if stopped is not None:
        return stopped
    step, changed, notes = 'choose', False, []
    try:
        decisions.check_clock(plan, state)
        if cfg.mldsa is not None:
            raise decisions.Refusal(
                'distrust.yml does not handle a bundle of two key families yet (%spki.mldsa is set): it would revoke '
                'and replace the classical intermediate of epoch %s only, and the ML-DSA one signed by the same epoch '
                'would stay trusted. Nothing was changed. Until it does: for an epoch that is neither current nor '
                'prepared, revoke its issuer on both families\' intermediate mounts (bao write '
                '<int_mount>/issuer/epoch-%s/revoke) and run rotate.yml, which leaves revoked issuers out of the '
                'bundle; for the current or prepared epoch (it needs a replacement, which only distrust.yml issues), '
                'remove %spki.mldsa, run rotate.yml (the bundle becomes classical only), run distrust.yml, revoke '
                'the ML-DSA issuer epoch-%s by hand, and put %spki.mldsa back once epoch %s is neither current nor '
                'prepared' % (PREFIX, cfg.distrust_epoch, cfg.distrust_epoch, PREFIX, cfg.distrust_epoch, PREFIX,
                              cfg.distrust_epoch))
        client = clients.openbao()
        with timings.step('choose'):
            issuers = list_epoch_issuers(client, pki['int_mount'])
            target, entry = distrust.choose_target(cfg.distrust_epoch, issuers, state, cfg.now, cfg.include_root,
                                                   cfg.distrust_force_intermediates_only)
        step = 'issue the witness leaf'
        with timings.step('witness'):
            witness = distrust.witness_leaf(client, target, pki['int_mount'], pki['role'], cfg.probe_dir, check_mode)
        record = entry or distrust.distrust_entry(target, holder, utcnow(), cfg.distrust_reason)
        distrusted = distrust.distrusted_shas(state) | {record['sha256']}
        replacing = distrust.replacing(target, state, first_pass, check_mode, now=cfg.now)
        if first_pass.get('stage') == distrust.STAGE_REPLACING and not replacing:
            # the pass that takes the intermediate out of the bundle must not lock the announcer (and the audit
            # record) out: its leaf was to be re-issued by this run's activation, between the passes
            blocked = distrust.announcer_leaf_blocks((cfg.authority_nats or {}).get('cert_file'), target, issuers,
                                                     cfg.renew_client_leaf, cfg.announce, check_mode, now=cfg.now)
            if blocked:
                raise decisions.Refusal(blocked)
        previous = distrust.pending(state) or {}
        since = previous.get('since') or isoformat(utcnow())
        if entry is None and not check_mode:
            step = 'record'
            with timings.step('record'):
                # recorded before the revoke: a run that stops in between converges on its re-run (a revoked issuer
                # that the state does not know is refused as revoked by hand)
                changed = _state.record_distrust(client, holder, record, distrust.pending_record(
                    target, record, None, None, since), pki['kv_mount'], cfg.state_path)['changed']
        step = 'revoke'
        with timings.step('revoke'):
            if not target.get('missing'):
                changed = distrust.revoke(client, target, pki['int_mount'], pki['root_mount'], check_mode)['changed'] or changed
        step = 'issue'
        with timings.step('issue'):
            # the default issuer gets its replacement now; another epoch's only when it is due (prepared or current)
            epochs = set(decisions.epochs_to_issue(plan)) | ({target['epoch']} if replacing and target.get('is_default')
                                                             else set())
            replacement = None
            for epoch in sorted(epochs):
                res = ensure_epoch_intermediate(
                    client, cfg.schedule, epoch, root_mount=pki['root_mount'], int_mount=pki['int_mount'],
                    cn_prefix=pki['cn_prefix'], key_type=pki['key_type'], key_bits=pki['key_bits'], check_mode=check_mode,
                    now=cfg.now, distrusted=distrusted)
                notes.extend(res.get('warnings') or [])
                changed = changed or res['changed']
                if epoch == target['epoch']:
                    replacement = res
            if changed and not check_mode:
                issuers = list_epoch_issuers(client, pki['int_mount'])
            if replacement is None:
                # not issued in this pass (a re-run after the activation, a pass under a rollback hold whose epochs
                # are older): the replacement that stands for the epoch still belongs in the bundle
                replacement = distrust.live_replacement(issuers, target, distrusted)
        # the issuer that now stands for the epoch (also when the epoch is due but not the default: prepared)
        replaced_by = (replacement or {}).get('issuer_name')
        if replaced_by == target['issuer_name']:
            replaced_by = None
        if entry is None and replaced_by:
            record['replacement'] = replaced_by
        activate = distrust.to_activate(target, state, (replacement or {}).get('issuer_name')) if replacing else None
        pending = None
        if replacing:
            pending = distrust.pending_record(target, record, (replacement or {}).get('issuer_name') or previous.get(
                'replacement'), activate, since)
        step = 'state'
        with timings.step('state'):
            rec = _state.record_distrust(client, holder, record, pending, pki['kv_mount'], cfg.state_path, check_mode)
            changed = changed or rec['changed']
            state = rec['state']
        include_root = distrust.bundle_includes_root(cfg.include_root, state, cfg.now)
        step = 'bundle'
        with timings.step('bundle'):
            keep = [target['issuer_id']] if replacing and target.get('issuer_id') else []
            bundle = _bundle(cfg, clients, state, issuers, keep, distrusted, include_root, replacement)
        probe = probe_paths(_probe_dir(cfg, check_mode))
        step = 'store'
        changed = store_bundle(cfg, clients, bundle, probe, timings, check_mode) or changed
        step = 'announce'
        # the bundle with the replacement added is a rotation to the clients; the one without the distrusted
        # intermediate is the distrust (applied even though its epoch is not newer: ca-bundle-sync's policy)
        new_bundle, generation, announce_error, resynced = announce_and_record(
            cfg, clients, holder, state, bundle, 'rotation' if replacing else kind, notes, timings, check_mode)
        changed = changed or resynced
        if state.get('hold') and not replacing and state['hold'].get('sha256') != bundle['sha256']:
            step = 'hold'
            hold = dict(state['hold'], pem=bundle['pem'], sha256=bundle['sha256'], epoch=bundle['epoch'])
            _state.set_hold(client, holder, hold, pki['kv_mount'], cfg.state_path, check_mode)
            changed = True
            notes.append('The rollback hold now keeps the bundle without the distrusted intermediate')
        step = 'probe leaf'
        with timings.step('probe_leaf'):
            ref = activate if activate and not check_mode else None
            changed = _probe_leaf(cfg, clients, bundle['epoch'] if not ref else target['epoch'], probe, check_mode,
                                  issuer_ref=ref)['changed'] or changed
    except Exception as err:  # pylint: disable=broad-except
        msg = _stop(cfg, clients, holder, check_mode, err, "The distrust failed at '%s': %s. The lock was released; nothing "
                    "after that step was changed and a re-run converges." % (step, err))
        return authority_stopped(started_at, kind, msg, plan=plan, error=msg, timings=timings.as_dict(), changed=changed)
    result = authority_went_ahead(
        started_at=started_at, kind=kind, holder=holder, plan=plan, bundle=bundle, generation=generation,
        new_bundle=new_bundle, hold=state.get('hold'), include_root=include_root, announce_error=announce_error,
        probe=probe, pki=pki, changed=changed or new_bundle, timings=timings.as_dict(), logins=clients.logins)
    result.distrust = {
        'epoch': target['epoch'], 'issuer_name': target['issuer_name'], 'sha256': record['sha256'],
        'serial': record['serial'], 'not_after': record['not_after'],
        'stage': distrust.STAGE_REPLACING if replacing else distrust.STAGE_COMPLETE,
        'replacement': replaced_by or record.get('replacement') or first_pass.get('replacement'),
        'activate': activate,
        'witness': {k: witness[k] for k in ('chain_file', 'leaf_file', 'key_file', 'exists')},
        'recorded_at': record['at'],
    }
    result.msg = '; '.join(notes) or None
    return result

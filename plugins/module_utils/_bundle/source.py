# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CA bundle built fresh from OpenBao: the ``epoch-<n>`` issuers of the intermediate mount,
never by appending to a previous copy (private)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import (
    DEFAULT_MAX_CERTIFICATES,
    BundleError,
    build_bundle,
    select_epochs,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.families import build_family_bundle
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import list_epoch_issuers, root_certificate


def bundle_from_openbao(client, schedule, now, int_mount='pki_int', root_mount='pki', include_root=True,
                        max_certificates=DEFAULT_MAX_CERTIFICATES, root_issuer='default', keep=(), distrusted=(),
                        issuers=None):
    """Build the bundle fresh from OpenBao: the ``epoch-<n>`` issuers of ``int_mount`` for every
    valid epoch plus the prepared one, verified against the root of ``root_mount``.

    Adds ``skipped`` (revoked and distrusted issuers of wanted epochs) and ``missing`` (wanted epochs with no
    issuer) to the :func:`build_bundle` result. ``keep``, ``distrusted``: see :func:`select_epochs`;
    ``issuers``: :func:`list_epoch_issuers` when the caller has it. Raises OpenBaoError / BundleError.
    """
    chain = family_chain(client, schedule, now, int_mount=int_mount, root_mount=root_mount, root_issuer=root_issuer,
                         keep=keep, distrusted=distrusted, issuers=issuers)
    bundle = build_bundle(chain['intermediates'], chain['root_pem'], schedule, now, include_root=include_root,
                          max_certificates=max_certificates)
    bundle.update(skipped=chain['skipped'], missing=chain['missing'], issuers=chain['issuers'])
    return bundle


def family_chain(client, schedule, now, int_mount='pki_int', root_mount='pki', root_issuer='default', keep=(),
                 distrusted=(), issuers=None):
    """One chain of trust as OpenBao holds it: ``{intermediates, root_pem, skipped, missing, issuers}`` - the epoch
    issuers of ``int_mount`` :func:`bundle_from_openbao` bundles, not yet verified. Raises OpenBaoError / BundleError
    (no usable intermediate)."""
    issuers = list_epoch_issuers(client, int_mount) if issuers is None else issuers
    wanted = schedule.desired_epochs(now)
    selected = select_epochs(issuers, schedule, now, keep=keep, distrusted=distrusted)
    skipped = [{'epoch': i['epoch'], 'issuer_name': i['issuer_name'],
                'reason': 'distrusted' if i.get('sha256') in set(distrusted or ()) else 'revoked'}
               for i in issuers if i.get('epoch') in set(wanted) and (i.get('revoked') or i.get('sha256') in set(distrusted or ()))
               and i.get('issuer_id') not in set(keep or ())]
    have = {i['epoch'] for i in issuers}
    missing = [n for n in sorted(wanted, reverse=True) if n not in have]
    if not selected:
        raise BundleError(
            'No usable intermediate on %r for the epochs wanted at %s (%s): %s. Issue the current epoch first '
            '(module openbao_intermediate); nothing was written'
            % (int_mount, isoformat(now), ', '.join(str(n) for n in wanted),
               'every one is revoked' if skipped else 'no issuer named epoch-<n> exists for them'))
    return {'intermediates': selected, 'root_pem': root_certificate(client, root_mount, root_issuer), 'skipped': skipped,
            'missing': missing,
            'issuers': {i['epoch']: i['issuer_id'] for i in reversed(selected) if i.get('issuer_id') not in set(keep or ())}}


def families_from_openbao(client, schedule, now, families, include_root=True, max_certificates=DEFAULT_MAX_CERTIFICATES,
                          distrusted=()):
    """The bundle of several key families built fresh from OpenBao (dual mode): ``families`` lists
    ``{family, int_mount, root_mount}`` (``_rotation.config.family_mounts``); each family's epoch issuers are verified
    against its own root (:func:`build_family_bundle`). The result adds ``skipped`` and ``missing`` (each entry with
    its family) and ``issuers`` of the classical family."""
    chains, skipped, missing = {}, [], []
    for spec in families:
        chain = family_chain(client, schedule, now, int_mount=spec['int_mount'], root_mount=spec['root_mount'],
                             distrusted=distrusted)
        chains[spec['family']] = chain
        skipped.extend(dict(s, family=spec['family']) for s in chain['skipped'])
        missing.extend({'family': spec['family'], 'epoch': n} for n in chain['missing'])
    bundle = build_family_bundle(chains, schedule, now, include_root=include_root, max_certificates=max_certificates)
    bundle.update(skipped=skipped, missing=missing, issuers=chains[families[0]['family']]['issuers'])
    return bundle

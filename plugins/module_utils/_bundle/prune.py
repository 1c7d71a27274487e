# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pruning the per-epoch copies of the bundle (Kubernetes Secrets, KV entries) of expired epochs (private)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import (
    DEFAULT_KV_MOUNT,
    DEFAULT_KV_PATH,
    _kv_error,
    kv_epochs,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.secrets import delete_secret, epoch_secrets

DEFAULT_KEEP_EPOCHS = 2


def _prune_plan(epochs, schedule, now, keep_epochs, protect):
    """Epochs (of ``epochs``) to delete: expired and not among the ``keep_epochs`` newest copies, never
    ``protect``. The ``protect`` epochs (being delivered) count as existing copies, so a check-mode
    prediction made before delivering matches the real run."""
    pool = set(epochs) | set(protect)
    newest = set(sorted(pool, reverse=True)[:max(int(keep_epochs), 0)])
    doomed = []
    for n in sorted(epochs):
        if n in newest or n in protect:
            continue
        if schedule.expiry(n) <= now:
            doomed.append(n)
    return doomed


def prune(schedule, now, keep_epochs=DEFAULT_KEEP_EPOCHS, check_mode=False, core_api=None, secret_namespace=None,
          kv_client=None, kv_mount=DEFAULT_KV_MOUNT, kv_path=DEFAULT_KV_PATH, protect=()):
    """Delete the per-epoch copies of expired epochs, keeping the ``keep_epochs`` newest copies.

    Secrets: those in ``secret_namespace`` matching :data:`EPOCH_SECRET_SELECTOR` (deleted with a
    resourceVersion precondition). KV: entries next to ``kv_path`` (template with ``{epoch}``),
    deleted with all their versions. ``protect``: epochs never deleted (the one just delivered).
    Returns ``{changed, secrets: [...], kv: [...]}`` (what was, or in check mode would be, deleted).
    """
    protect = set(protect or ())
    out = {'changed': False, 'secrets': [], 'kv': []}
    if core_api is not None and secret_namespace:
        found = epoch_secrets(core_api, secret_namespace)
        for n in _prune_plan(found, schedule, now, keep_epochs, protect):
            for name, version in found[n]:
                entry = {'epoch': n, 'namespace': secret_namespace, 'name': name, 'expired_at': isoformat(schedule.expiry(n))}
                if not check_mode:
                    delete_secret(core_api, secret_namespace, name, version)
                out['secrets'].append(entry)
    if kv_client is not None and kv_mount:
        found = kv_epochs(kv_client, kv_mount, kv_path)
        for n in _prune_plan(found, schedule, now, keep_epochs, protect):
            entry = {'epoch': n, 'mount': kv_mount, 'path': found[n], 'expired_at': isoformat(schedule.expiry(n))}
            if not check_mode:
                try:
                    kv_client.secrets.kv.v2.delete_metadata_and_all_versions(path=found[n], mount_point=kv_mount)
                except Exception as exc:  # pylint: disable=broad-except
                    raise _kv_error(exc, 'deleting', '%s/metadata/%s' % (kv_mount, found[n]), 'delete') from None
            out['kv'].append(entry)
    out['changed'] = bool(out['secrets'] or out['kv'])
    return out

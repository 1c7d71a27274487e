# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delivering a built CA bundle: read every destination first, then write only what differs.

One function for the authority's stores (KV, per-epoch Secret, probe file), the cluster's live CA
(each server's file or the live Secret) and the module ``ca_bundle``.
"""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import deliver_file, deliver_kv, expand
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.prune import prune
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import K8sError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.secrets import (
    ANNOTATION_TS,
    deliver_secret,
    epoch_secret_labels,
    live_secret_annotations,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError

#: the order destinations are read and written in: the authority's copies before the live ones
ORDER = ('kv', 'epoch_secret', 'file', 'live_secret')


class DeliveryError(BundleError):
    """A destination could not be written; ``results`` holds what was (or was not) written before it."""

    def __init__(self, msg, destination, results):
        super().__init__(msg)
        self.destination = destination
        self.results = results


def deliver_one(name, dest, bundle, epoch, kv_data, ts, clients, check_mode, attempts=5):
    """Deliver to one destination (``file``, ``kv``, ``epoch_secret``, ``live_secret``)."""
    if name == 'file':
        return deliver_file(dest['path'], bundle['pem'], mode=dest.get('mode'), owner=dest.get('owner'),
                            group=dest.get('group'), backup=bool(dest.get('backup')), check_mode=check_mode)
    if name == 'kv':
        return deliver_kv(clients.openbao(), dest['mount'], expand(dest['path'], epoch), kv_data, check_mode=check_mode)
    annotations = live_secret_annotations(epoch, bundle['sha256'])
    labels = epoch_secret_labels(epoch) if name == 'epoch_secret' else {}
    return deliver_secret(clients.core(dest.get('kubernetes')), dest['namespace'], expand(dest['name'], epoch), dest['key'],
                          bundle['pem'], labels=labels, annotations=annotations, check_mode=check_mode,
                          ts_annotation=ANNOTATION_TS, ts=ts, attempts=attempts)


def deliver(destinations, bundle, epoch, kv_data, clients, check_mode, attempts=5, ts=None):
    """Deliver ``bundle`` to every destination: ``[(name, dest), ...]`` in the order given.

    Every destination is read (a check-mode pass) before the first write; only those that differ are
    written. Returns the per-destination results in the same order. Raises DeliveryError naming what
    was already written when a write fails.
    """
    ts = ts or isoformat(utcnow())
    return write_planned(plan_delivery(destinations, bundle, epoch, kv_data, clients, attempts, ts), bundle, epoch, kv_data,
                         clients, check_mode, attempts, ts)


def plan_delivery(destinations, bundle, epoch, kv_data, clients, attempts=5, ts=None):
    """Read every destination (a check-mode delivery): ``[(name, dest, predicted result)]``."""
    ts = ts or isoformat(utcnow())
    return [(name, dest, deliver_one(name, dest, bundle, epoch, kv_data, ts, clients, True, attempts))
            for name, dest in destinations]


def write_planned(plan, bundle, epoch, kv_data, clients, check_mode, attempts=5, ts=None):
    """Write the destinations of :func:`plan_delivery` that differ (none in check mode: the plan is the prediction)."""
    if check_mode:
        return [result for _name, _dest, result in plan]
    ts = ts or isoformat(utcnow())
    results = []
    for name, dest, planned in plan:
        if not planned['changed']:
            results.append(planned)
            continue
        try:
            results.append(deliver_one(name, dest, bundle, epoch, kv_data, ts, clients, False, attempts))
        except (BundleError, OpenBaoError, K8sError) as err:
            done = [n for (n, _d, _p), r in zip(plan, results) if r['changed']]
            raise DeliveryError('Delivering the CA bundle to %s failed: %s. %s' % (
                name, err, ('Already written: %s; re-run to converge.' % ', '.join(done)) if done
                else 'No destination was changed.'), name, results) from None
    return results


def where(name, dest, epoch=None):
    """A short human name of a destination."""
    if name == 'file':
        return dest['path']
    if name == 'kv':
        return 'kv %s/%s' % (dest['mount'], expand(dest['path'], epoch) if epoch is not None else dest['path'])
    return 'secret %s/%s[%s]' % (dest['namespace'], expand(dest['name'], epoch) if epoch is not None else dest['name'], dest['key'])


def prune_copies(schedule, now, keep_epochs, protect, clients, check_mode, kv=None, epoch_secret=None):
    """Delete the per-epoch copies (KV entries, Secrets) of expired epochs; see ``_bundle.prune``."""
    return prune(schedule, now, keep_epochs=keep_epochs, check_mode=check_mode, protect=protect,
                 core_api=clients.core(epoch_secret.get('kubernetes')) if epoch_secret else None,
                 secret_namespace=epoch_secret['namespace'] if epoch_secret else None,
                 kv_client=clients.openbao() if kv else None,
                 kv_mount=kv['mount'] if kv else None, kv_path=kv['path'] if kv else None)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CA bundle in Kubernetes Secrets: read, deliver (compare first, honest ``changed``), list, delete (private).

The live Secret (``nats-ca-tls``) carries ``rotation.watcher.io/{ts,epoch,sha256}`` annotations; the
per-epoch copies carry the labels selected by :data:`EPOCH_SECRET_SELECTOR` (what pruning may delete).
"""

from __future__ import annotations

import base64
import re

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import (
    K8sError,
    api_error,
    is_api_exception,
    load,
)

DEFAULT_SECRET_ATTEMPTS = 5

ANNOTATION_PREFIX = 'rotation.watcher.io/'
ANNOTATION_TS = ANNOTATION_PREFIX + 'ts'
ANNOTATION_EPOCH = ANNOTATION_PREFIX + 'epoch'
ANNOTATION_SHA256 = ANNOTATION_PREFIX + 'sha256'
EPOCH_LABEL = 'epoch'
MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by'
MANAGED_BY = 'securetransport.ca_rotation'
#: Selects the per-epoch bundle Secrets this collection created (and may prune).
EPOCH_SECRET_SELECTOR = '%s,%s=%s' % (EPOCH_LABEL, MANAGED_BY_LABEL, MANAGED_BY)

_SECRET_KEY_RE = re.compile(r'^[-._a-zA-Z0-9]+$')
_SECRET_NAME_RE = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')


def _api_status(exc):
    """HTTP status of a kubernetes ApiException; None for anything else (connection errors and the like)."""
    if is_api_exception(exc):
        return getattr(exc, 'status', None) or 0
    return None


def _b64(value):
    return base64.b64encode(value.encode('utf-8') if isinstance(value, str) else value).decode('ascii')


def secret_key_bytes(secret, key):
    data = getattr(secret, 'data', None) or {}
    if key not in data or data[key] is None:
        return None
    try:
        return base64.b64decode(data[key])
    except (ValueError, TypeError):
        return b''


def read_secret(core_api, namespace, name):
    try:
        return core_api.read_namespaced_secret(name, namespace)
    except Exception as exc:  # pylint: disable=broad-except
        status = _api_status(exc)
        if status is None:
            raise K8sError('reading Secret %s/%s failed: cannot reach the Kubernetes API (%s)' % (namespace, name, exc)) from None
        if status == 404:
            return None
        raise api_error(exc, 'reading Secret', '%s/%s' % (namespace, name), 'get', 'secrets', namespace) from None


def _secret_up_to_date(secret, key, data, labels, annotations):
    if secret is None:
        return False
    if secret_key_bytes(secret, key) != data:
        return False
    have_labels = secret.metadata.labels or {}
    have_annotations = secret.metadata.annotations or {}
    return all(have_labels.get(k) == v for k, v in labels.items()) and \
        all(have_annotations.get(k) == v if v is not None else k not in have_annotations for k, v in annotations.items())


def _secret_body(secret, namespace, name, key, data, labels, annotations, ts_annotation, ts):
    new_annotations = {k: v for k, v in annotations.items() if v is not None}
    if ts_annotation:
        new_annotations[ts_annotation] = ts
    if secret is None:
        return {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
                'metadata': {'name': name, 'namespace': namespace, 'labels': dict(labels) or None,
                             'annotations': new_annotations or None},
                'data': {key: _b64(data)}}
    meta = secret.metadata
    merged_labels = dict(meta.labels or {})
    merged_labels.update(labels)
    merged_annotations = {k: v for k, v in (meta.annotations or {}).items() if annotations.get(k, '') is not None}
    merged_annotations.update(new_annotations)
    body_data = dict(secret.data or {})
    body_data[key] = _b64(data)
    return {'apiVersion': 'v1', 'kind': 'Secret', 'type': secret.type or 'Opaque',
            'metadata': {'name': name, 'namespace': namespace, 'resourceVersion': meta.resource_version,
                         'labels': merged_labels or None, 'annotations': merged_annotations or None},
            'data': body_data}


def deliver_secret(core_api, namespace, name, key, pem, labels=None, annotations=None, check_mode=False,
                   ts_annotation=None, ts=None, attempts=DEFAULT_SECRET_ATTEMPTS):
    """Put ``pem`` under ``key`` of Secret ``namespace``/``name``, with ``labels`` and ``annotations``.

    Unchanged when the key's bytes AND every given label/annotation (the sha256 annotation among
    them) are already there (an annotation given as None must be absent, and is removed); ``ts_annotation`` (e.g. ``rotation.watcher.io/ts``) is set to ``ts``
    only when something else changes. Other keys, labels and annotations of an existing Secret are
    kept. Created, or replaced with its resourceVersion; on a 409 conflict the Secret is re-read and
    compared again (``attempts`` in all) before a clear error. Returns changed, created, namespace,
    name, key, before_sha256, after_sha256, resource_version, attempts.
    """
    labels = {k: str(v) for k, v in (labels or {}).items()}
    annotations = {k: (None if v is None else str(v)) for k, v in (annotations or {}).items()}
    data = pem.encode('utf-8')
    target = '%s/%s' % (namespace, name)
    result = {'changed': False, 'created': False, 'namespace': namespace, 'name': name, 'key': key,
              'before_sha256': None, 'after_sha256': sha256_hex(data), 'resource_version': None, 'attempts': 0,
              'previous_pem': None}
    for attempt in range(1, max(int(attempts), 1) + 1):
        result['attempts'] = attempt
        secret = read_secret(core_api, namespace, name)
        if attempt == 1 and secret is not None:
            before = secret_key_bytes(secret, key)
            result['before_sha256'] = sha256_hex(before) if before is not None else None
            result['previous_pem'] = before.decode('utf-8', 'replace') if before is not None else None
        if _secret_up_to_date(secret, key, data, labels, annotations):
            result['resource_version'] = secret.metadata.resource_version
            return result
        result['changed'] = True
        result['created'] = secret is None
        if check_mode:
            result['resource_version'] = secret.metadata.resource_version if secret is not None else None
            return result
        if secret is not None and getattr(secret, 'immutable', None):
            raise K8sError('Secret %s is immutable (immutable: true); delete it or use another name, then re-run' % target)
        body = _secret_body(secret, namespace, name, key, data, labels, annotations, ts_annotation,
                            ts or isoformat(utcnow()))
        try:
            if secret is None:
                written = core_api.create_namespaced_secret(namespace, body)
            else:
                written = core_api.replace_namespaced_secret(name, namespace, body)
        except Exception as exc:  # pylint: disable=broad-except
            status = _api_status(exc)
            if status is None:
                raise K8sError('Writing Secret %s failed: cannot reach the Kubernetes API (%s)' % (target, exc)) from None
            if status == 409 and attempt < attempts:
                continue  # changed (or created) underneath: re-read, compare again
            if status == 409:
                raise K8sError('Writing Secret %s failed: it kept changing underneath (HTTP 409 conflict on each of %d '
                               'attempts); another writer is updating it, re-run when it is done' % (target, attempts),
                               status=409) from None
            if status == 404 and secret is None:
                raise K8sError('Creating Secret %s failed: namespace %r does not exist (create it, or set the namespace '
                               'of this destination)' % (target, namespace), status=404) from None
            verb = 'create' if secret is None else 'update'
            raise api_error(exc, 'creating Secret' if secret is None else 'replacing Secret', target, verb, 'secrets',
                            namespace) from None
        result['resource_version'] = written.metadata.resource_version
        return result
    return result  # pragma: no cover - the loop always returns


def live_secret_annotations(epoch, sha256):
    """Annotations of the live ``nats-ca-tls`` Secret (``ts`` is added on write). With ``epoch`` None
    (an unverified bundle without a recognisable epoch) the epoch annotation is removed."""
    return {ANNOTATION_SHA256: sha256, ANNOTATION_EPOCH: str(int(epoch)) if epoch is not None else None}


def epoch_secret_labels(epoch):
    """Labels of a per-epoch bundle Secret (selected by :data:`EPOCH_SECRET_SELECTOR` for pruning)."""
    return {EPOCH_LABEL: str(int(epoch)), MANAGED_BY_LABEL: MANAGED_BY}


def epoch_secrets(core_api, namespace):
    """``{epoch: (name, resourceVersion)}`` of the per-epoch bundle Secrets in ``namespace``."""
    try:
        items = core_api.list_namespaced_secret(namespace, label_selector=EPOCH_SECRET_SELECTOR).items or []
    except Exception as exc:  # pylint: disable=broad-except
        if _api_status(exc) is None:
            raise K8sError('listing Secrets in namespace %s failed: cannot reach the Kubernetes API (%s)'
                           % (namespace, exc)) from None
        raise api_error(exc, 'listing Secrets', 'in namespace %s (selector %s)' % (namespace, EPOCH_SECRET_SELECTOR),
                        'list', 'secrets', namespace) from None
    out = {}
    for item in items:
        value = (item.metadata.labels or {}).get(EPOCH_LABEL, '')
        if value.isdigit():
            out.setdefault(int(value), []).append((item.metadata.name, item.metadata.resource_version))
    return out


def delete_secret(core_api, namespace, name, resource_version):
    # the resourceVersion precondition: a copy rewritten since it was listed is not deleted blindly
    lib = load()
    options = lib.client.V1DeleteOptions(
        preconditions=lib.client.V1Preconditions(resource_version=resource_version))
    try:
        core_api.delete_namespaced_secret(name, namespace, body=options)
    except Exception as exc:  # pylint: disable=broad-except
        status = _api_status(exc)
        if status is None:
            raise K8sError('deleting Secret %s/%s failed: cannot reach the Kubernetes API (%s)' % (namespace, name, exc)) from None
        if status == 404:
            return
        raise api_error(exc, 'deleting Secret', '%s/%s' % (namespace, name), 'delete', 'secrets', namespace) from None


def valid_secret_key(key):
    return bool(key) and bool(_SECRET_KEY_RE.match(key))


def valid_secret_name(name):
    return bool(name) and len(name) <= 253 and bool(_SECRET_NAME_RE.match(name))

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delivering the CA bundle: a file, and OpenBao KV v2 records (private: may change without notice).

Each ``deliver_*`` puts the bundle in one destination, compares first so that ``changed`` is honest,
honours ``check_mode`` and returns ``{changed, before_sha256, after_sha256, ...}``. The Kubernetes
Secrets are delivered by ``_k8s.secrets.deliver_secret``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import (
    atomic_write,
    attributes_differ,
    parse_mode,
    read_current,
    resolve_owner,
    set_attributes,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError, hvac, requests

DEFAULT_FILE_MODE = 0o644
DEFAULT_KV_MOUNT = 'secret'
DEFAULT_KV_PATH = 'ca-bundles/epoch-{epoch}'
DEFAULT_EPOCH_SECRET_NAMESPACE = 'openbao'
DEFAULT_EPOCH_SECRET_NAME = 'nats-ca-bundle-epoch-{epoch}'
DEFAULT_EPOCH_SECRET_KEY = 'ca-bundle.pem'
DEFAULT_LIVE_SECRET_NAMESPACE = 'nats'
DEFAULT_LIVE_SECRET_NAME = 'nats-ca-tls'
DEFAULT_LIVE_SECRET_KEY = 'ca.crt'
DEFAULT_KV_ATTEMPTS = 3
#: KV fields that are not part of the comparison (kept from the stored version when nothing else changed).
KV_VOLATILE_FIELDS = ('created_at',)


def kv_record(bundle, epoch, schedule, created_at=None):
    """The KV v2 data stored for a bundle: ``ca-bundle.pem``, epoch, sha256, created_at,
    expires_at (expiry of ``epoch``), issuers (one entry per intermediate)."""
    issuers = [{k: c[k] for k in ('epoch', 'subject', 'serial', 'sha256', 'not_before', 'not_after')}
               for c in bundle['certificates'] if c['kind'] == 'intermediate']
    for entry in issuers:
        entry['issuer_name'] = 'epoch-%d' % entry['epoch'] if entry['epoch'] is not None else None
    return {
        'ca-bundle.pem': bundle['pem'],
        'epoch': int(epoch),
        'sha256': bundle['sha256'],
        'created_at': isoformat(created_at or utcnow()),
        'expires_at': isoformat(schedule.expiry(int(epoch))),
        'issuers': issuers,
    }


def expand(template, epoch):
    """``template`` with ``{epoch}`` replaced by the epoch number."""
    if '{epoch}' not in template:
        return template
    if epoch is None:
        raise BundleError('%r names the epoch, but the bundle has none: give epoch' % template, option='epoch')
    return template.replace('{epoch}', str(int(epoch)))


# --------------------------------------------------------------------------- file
def _unset(value):
    return None if value in (None, '') else value


def _backup_name(path):
    return '%s.%d.%s~' % (path, os.getpid(), time.strftime('%Y-%m-%d@%H:%M:%S', time.localtime()))


def deliver_file(path, pem, mode=None, owner=None, group=None, backup=False, check_mode=False):
    """Write the bundle to ``path`` atomically (``_common.files.atomic_write``: temp file in the same
    directory, fsync, rename).

    ``mode`` (octal string or int) defaults to the existing file's mode, else 0644; ``owner`` /
    ``group`` default to the existing file's when running as root. ``backup`` copies the old file
    to ``<path>.<pid>.<time>~`` before replacing it. Returns changed, before_sha256, after_sha256,
    path, backup_file, mode and ``diff`` (before/after text).
    """
    if not path:
        raise BundleError('destinations.file.path is required', option='destinations.file.path')
    path = os.path.abspath(os.path.expanduser(path))
    try:
        want_mode = parse_mode(mode, 'destinations.file.mode')
    except FileError as exc:
        raise BundleError(str(exc), option='destinations.file.mode') from None
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise BundleError('Cannot write the bundle to %s: directory %s does not exist (create it first)'
                          % (path, directory), option='destinations.file.path')
    if os.path.isdir(path):
        raise BundleError('Cannot write the bundle to %s: it is a directory' % path, option='destinations.file.path')
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BundleError('Cannot write the bundle to %s: directory %s is not writable by this user'
                          % (path, directory), option='destinations.file.path')
    try:
        uid, gid = resolve_owner(_unset(owner), _unset(group))
    except FileError as exc:
        raise BundleError('%s for the bundle file' % exc, option='destinations.file') from None
    data = pem.encode('utf-8')
    try:
        before, st = read_current(path)
    except OSError as exc:
        raise BundleError('Cannot read the current bundle file %s: %s' % (path, exc.strerror or exc),
                          option='destinations.file.path') from None
    if want_mode is None:
        want_mode = (st.st_mode & 0o7777) if st else DEFAULT_FILE_MODE
    if st is not None and os.geteuid() == 0:
        uid = st.st_uid if uid == -1 else uid
        gid = st.st_gid if gid == -1 else gid
    content_changed = before != data
    attrs_changed = st is not None and attributes_differ(st, want_mode, uid, gid)
    result = {
        'changed': bool(content_changed or attrs_changed),
        'content_changed': bool(content_changed),
        'path': path,
        'mode': '%04o' % want_mode,
        'before_sha256': sha256_hex(before) if before is not None else None,
        'previous_pem': before.decode('utf-8', 'replace') if before is not None else None,
        'after_sha256': sha256_hex(data),
        'backup_file': None,
        'diff': {'before_header': path, 'after_header': path,
                 'before': before.decode('utf-8', 'replace') if before is not None else '',
                 'after': pem},
    }
    if check_mode or not result['changed']:
        return result
    try:
        if content_changed:
            if backup and before is not None:
                result['backup_file'] = _backup_name(path)
                shutil.copy2(path, result['backup_file'])
            atomic_write(path, pem, want_mode, None if uid == -1 else uid, None if gid == -1 else gid)
        else:
            set_attributes(path, want_mode, None if uid == -1 else uid, None if gid == -1 else gid)
    except FileError as exc:
        raise BundleError(str(exc), option='destinations.file') from None
    except OSError as exc:
        raise BundleError('Cannot back up %s: %s' % (path, exc.strerror or exc), option='destinations.file') from None
    return result


# --------------------------------------------------------------------------- OpenBao KV v2
_CAS_RE = re.compile(r'check-and-set|cas', re.IGNORECASE)


def _kv_error(exc, operation, location, capability):
    if isinstance(exc, OpenBaoError):
        return exc
    if requests is not None and isinstance(exc, requests.exceptions.RequestException):
        return OpenBaoError('Cannot reach OpenBao while %s %r: %s. Check openbao.url and that OpenBao is running and unsealed'
                            % (operation, location, exc), operation=operation, path=location)
    errors = '; '.join(getattr(exc, 'errors', None) or []) or str(exc)
    if hvac is not None and isinstance(exc, hvac.exceptions.Forbidden):
        return OpenBaoError("Permission denied %s %r: the token needs '%s' on that path (or it is invalid or expired). "
                            "OpenBao said: %s" % (operation, location, capability, errors),
                            operation=operation, path=location, status=403)
    if hvac is not None and isinstance(exc, hvac.exceptions.InvalidPath) and 'no handler for route' in errors:
        mount = location.split('/', 1)[0]
        return OpenBaoError("%s %r failed: no secrets engine is mounted at %r; enable a KV version 2 engine there "
                            "('bao secrets enable -path=%s kv-v2') or set destinations.kv.mount"
                            % (operation.capitalize(), location, mount + '/', mount), operation=operation, path=location,
                            status=404)
    if hvac is not None and isinstance(exc, hvac.exceptions.VaultError):
        return OpenBaoError('OpenBao refused %s %r: %s' % (operation, location, errors), operation=operation, path=location)
    return OpenBaoError('%s %r failed: %s' % (operation.capitalize(), location, exc), operation=operation, path=location)


def read_kv(client, mount, path):
    """``(version, data)`` of the latest version of a KV v2 entry; ``(0, None)`` when it does not
    exist and ``(n, None)`` when its latest version is deleted or destroyed."""
    location = '%s/data/%s' % (mount, path)
    try:
        resp = client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
    except Exception as exc:  # pylint: disable=broad-except
        if hvac is not None and isinstance(exc, hvac.exceptions.InvalidPath) and 'no handler for route' not in str(exc):
            meta = (((getattr(exc, 'json', None) or {}).get('data') or {}).get('metadata') or {})
            return int(meta.get('version') or 0), None
        raise _kv_error(exc, 'reading', location, 'read') from None
    data = (resp or {}).get('data') or {}
    return int((data.get('metadata') or {}).get('version') or 0), data.get('data')


def _kv_equal(current, desired, volatile):
    if current is None:
        return False

    def strip(data):
        return json.loads(json.dumps({k: v for k, v in data.items() if k not in volatile}, sort_keys=True))

    return strip(current) == strip(desired)


def deliver_kv(client, mount, path, data, check_mode=False, volatile=KV_VOLATILE_FIELDS, attempts=DEFAULT_KV_ATTEMPTS):
    """Store ``data`` at KV v2 ``mount``/``path`` unless it is already there.

    Reads first; equal data (ignoring ``volatile`` fields, which keep their stored value) means no
    write. Writes with check-and-set ``cas`` = the version read (0: only if absent); when another
    writer got in between, re-reads and retries (``attempts`` in all). Returns changed, mount, path,
    before_version, version, before_sha256 / after_sha256 (of the ``ca-bundle.pem`` field stored
    before / after; None when there is none), attempts.
    """
    location = '%s/data/%s' % (mount, path)
    desired = dict(data)
    after = desired.get('ca-bundle.pem')
    result = {'changed': False, 'mount': mount, 'path': path, 'before_version': None, 'version': None,
              'before_sha256': None, 'after_sha256': sha256_hex(after) if isinstance(after, str) else None, 'attempts': 0,
              'previous_pem': None}
    for attempt in range(1, max(int(attempts), 1) + 1):
        result['attempts'] = attempt
        version, current = read_kv(client, mount, path)
        if attempt == 1:
            result['before_version'] = version
            stored = (current or {}).get('ca-bundle.pem')
            result['before_sha256'] = sha256_hex(stored) if isinstance(stored, str) else None
            result['previous_pem'] = stored if isinstance(stored, str) else None
        if _kv_equal(current, desired, volatile):
            result['version'] = version
            return result
        result['changed'] = True
        if check_mode:
            result['version'] = version + 1
            return result
        try:
            resp = client.secrets.kv.v2.create_or_update_secret(path=path, secret=desired, cas=version, mount_point=mount)
        except Exception as exc:  # pylint: disable=broad-except
            if hvac is not None and isinstance(exc, hvac.exceptions.InvalidRequest) and _CAS_RE.search(str(exc)) \
                    and attempt < attempts:
                continue  # someone wrote in between: re-read and compare again
            if hvac is not None and isinstance(exc, hvac.exceptions.InvalidRequest) and _CAS_RE.search(str(exc)):
                raise OpenBaoError('Writing %r failed: the entry kept changing underneath (check-and-set version mismatch '
                                   '%d times); another writer is active, re-run when it is done' % (location, attempts),
                                   operation='writing', path=location) from None
            raise _kv_error(exc, 'writing', location, 'create+update') from None
        result['version'] = int(((resp or {}).get('data') or {}).get('version') or version + 1)
        return result
    return result  # pragma: no cover - the loop always returns


def kv_epochs(client, mount, path_template):
    """``{epoch: path}`` of the per-epoch KV entries next to ``path_template`` (``.../epoch-{epoch}``)."""
    template = path_template if '{epoch}' in path_template else DEFAULT_KV_PATH
    parent, _sep, leaf = template.rpartition('/')
    if '{epoch}' not in leaf:
        raise BundleError('destinations.kv.path %r: {epoch} must be in the last path segment for pruning' % path_template,
                          option='destinations.kv.path')
    pattern = re.compile('^%s$' % re.escape(leaf).replace(re.escape('{epoch}'), r'(\d+)'))
    location = '%s/metadata/%s' % (mount, parent)
    try:
        resp = client.secrets.kv.v2.list_secrets(path=parent, mount_point=mount)
    except Exception as exc:  # pylint: disable=broad-except
        if hvac is not None and isinstance(exc, hvac.exceptions.InvalidPath) and 'no handler for route' not in str(exc):
            return {}
        raise _kv_error(exc, 'listing', location, 'list') from None
    out = {}
    for key in ((resp or {}).get('data') or {}).get('keys') or []:
        match = pattern.match(key)
        if match:
            out[int(match.group(1))] = ('%s/%s' % (parent, key)) if parent else key
    return out


def copy_result(result, with_content=False):
    """A deep copy without the ``diff`` entry, and without ``previous_pem`` unless ``with_content``
    (for returning to the user)."""
    out = copy.deepcopy(result)
    out.pop('diff', None)
    if not with_content:
        out.pop('previous_pem', None)
    return out

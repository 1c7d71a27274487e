# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CA bundle: build, verify and deliver it (private: may change without notice).

Shared by the ``ca_bundle`` module and the scripts (DESIGN sections 4 and 5):

* :func:`build_bundle` verifies every intermediate (signed by the root, CA:true, keyCertSign,
  NotAfter exactly ``expiry(epoch)``, not expired) BEFORE anything is written, and renders
  deterministic bytes: the same certificates always give the same PEM and the same SHA-256
  (each certificate re-encoded from DER, newest epoch first, then the root, one trailing newline).
* :func:`bundle_from_openbao` builds it fresh from the ``epoch-<n>`` issuers of the intermediate
  mount (never by appending to a previous copy).
* ``deliver_*`` put it in one destination each (file, OpenBao KV v2, a Kubernetes Secret), compare
  first so that ``changed`` is honest, honour ``check_mode`` and return
  ``{changed, before_sha256, after_sha256, ...}``.
* :func:`prune` removes the per-epoch copies (Secrets, KV entries) of expired epochs.

Nothing here depends on ansible-core; third-party imports are guarded.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import os
import re
import shutil
import time
import traceback

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
except ImportError:  # pragma: no cover - reported by the module with missing_required_lib
    x509 = None
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

HVAC_IMPORT_ERROR = None
try:
    import hvac
    import hvac.exceptions
    import requests
except ImportError:  # pragma: no cover - reported by the module with missing_required_lib
    hvac = None
    requests = None
    HVAC_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    isoformat,
    utcnow,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _k8s
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s import (
    K8sError,
    api_error,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import (
    OpenBaoError,
    atomic_write,
    list_epoch_issuers,
    parse_mode,
    root_certificate,
    set_attributes,
    verify_intermediate,
)

UTC = datetime.timezone.utc

DEFAULT_MAX_CERTIFICATES = 6
DEFAULT_FILE_MODE = 0o644
DEFAULT_KV_MOUNT = 'secret'
DEFAULT_KV_PATH = 'ca-bundles/epoch-{epoch}'
DEFAULT_EPOCH_SECRET_NAMESPACE = 'openbao'
DEFAULT_EPOCH_SECRET_NAME = 'nats-ca-bundle-epoch-{epoch}'
DEFAULT_EPOCH_SECRET_KEY = 'ca-bundle.pem'
DEFAULT_LIVE_SECRET_NAMESPACE = 'nats'
DEFAULT_LIVE_SECRET_NAME = 'nats-ca-tls'
DEFAULT_LIVE_SECRET_KEY = 'ca.crt'
DEFAULT_KEEP_EPOCHS = 2
DEFAULT_SECRET_ATTEMPTS = 5
DEFAULT_KV_ATTEMPTS = 3

ANNOTATION_PREFIX = 'rotation.watcher.io/'
ANNOTATION_TS = ANNOTATION_PREFIX + 'ts'
ANNOTATION_EPOCH = ANNOTATION_PREFIX + 'epoch'
ANNOTATION_SHA256 = ANNOTATION_PREFIX + 'sha256'
EPOCH_LABEL = 'epoch'
MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by'
MANAGED_BY = 'securetransport.ca_rotation'
#: Selects the per-epoch bundle Secrets this collection created (and may prune).
EPOCH_SECRET_SELECTOR = '%s,%s=%s' % (EPOCH_LABEL, MANAGED_BY_LABEL, MANAGED_BY)
#: KV fields that are not part of the comparison (kept from the stored version when nothing else changed).
KV_VOLATILE_FIELDS = ('created_at',)

_PEM_BLOCK_RE = re.compile(r'-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----', re.DOTALL)
_PEM_BEGIN_RE = re.compile(r'-----BEGIN ([A-Z0-9 ]+)-----')
_CN_EPOCH_RE = re.compile(r'\bEpoch (\d+)$')
_SECRET_KEY_RE = re.compile(r'^[-._a-zA-Z0-9]+$')
_SECRET_NAME_RE = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')


class BundleError(Exception):
    """A bundle that cannot be built or delivered, with a message meant for the operator.

    ``option`` names the offending module option when there is one; ``results`` carries the
    per-destination results gathered before the failure (what was already written).
    """

    def __init__(self, message, option=None, results=None):
        super().__init__(message)
        self.option = option
        self.results = results


def check_imports():
    """Raise BundleError when cryptography is missing (for scripts)."""
    if x509 is None:
        raise BundleError('The Python library cryptography is required: %s' % CRYPTOGRAPHY_IMPORT_ERROR)


def sha256_hex(data):
    """SHA-256 (lower-case hex) of ``data`` (str is UTF-8 encoded)."""
    return hashlib.sha256(data.encode('utf-8') if isinstance(data, str) else data).hexdigest()


# --------------------------------------------------------------------------- parsing
def _load(pem, what, option=None):
    try:
        return x509.load_pem_x509_certificate(pem.encode('ascii') if isinstance(pem, str) else pem)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise BundleError('%s is not a valid PEM certificate: %s' % (what, exc), option=option) from None


def _pem_of(cert):
    """Canonical PEM of a certificate (re-encoded from DER: 64-column lines, '\\n' endings)."""
    return cert.public_bytes(serialization.Encoding.PEM).decode('ascii')


def _self_signed(cert):
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def _is_ca(cert):
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _cn(cert):
    attrs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def _serial_hex(serial):
    text = '%x' % serial
    if len(text) % 2:
        text = '0' + text
    return ':'.join(text[i:i + 2] for i in range(0, len(text), 2))


def _facts(cert, epoch=None, kind='intermediate'):
    """JSON-safe facts about one certificate of a bundle."""
    return {
        'epoch': epoch,
        'kind': kind,
        'subject': cert.subject.rfc4514_string(),
        'sha256': cert.fingerprint(hashes.SHA256()).hex(),
        'serial': _serial_hex(cert.serial_number),
        'not_before': isoformat(cert.not_valid_before_utc),
        'not_after': isoformat(cert.not_valid_after_utc),
    }


def split_pem(text, what='pem', option=None):
    """Every certificate in ``text`` as ``(canonical_pem, x509.Certificate)``, in order.

    Text outside PEM blocks (comments) is ignored. Raises BundleError when there is no certificate,
    when a block is not a parsable certificate, or when the text holds anything but certificates
    (a private key in a CA bundle is refused outright).
    """
    check_imports()
    if isinstance(text, bytes):
        try:
            text = text.decode('ascii')
        except UnicodeDecodeError:
            raise BundleError('%s is not PEM text (it holds non-ASCII bytes)' % what, option=option) from None
    if not isinstance(text, str) or not text.strip():
        raise BundleError('%s is empty: expected one or more PEM certificates (-----BEGIN CERTIFICATE-----)' % what, option=option)
    begins = _PEM_BEGIN_RE.findall(text)
    blocks = _PEM_BLOCK_RE.findall(text)
    if len(begins) != len(blocks):
        raise BundleError('%s holds a PEM block without its matching END line (truncated or garbled PEM)' % what, option=option)
    out = []
    for index, (label, _body) in enumerate(blocks, 1):
        if label != 'CERTIFICATE':
            raise BundleError('%s block %d is a %s, not a CERTIFICATE: a CA bundle holds certificates only%s'
                              % (what, index, label, ' (never put a private key in it)' if 'PRIVATE' in label else ''), option=option)
    for index, match in enumerate(_PEM_BLOCK_RE.finditer(text), 1):
        cert = _load(match.group(0), '%s certificate %d' % (what, index), option)
        out.append((_pem_of(cert), cert))
    if not out:
        raise BundleError('%s holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)' % what, option=option)
    return out


def parse_bundle(pem, what='pem'):
    """Facts about every certificate of a bundle, in order.

    Each entry: subject, sha256, serial, not_before, not_after, common_name, is_ca, self_signed,
    certificate (canonical PEM).
    """
    out = []
    for text, cert in split_pem(pem, what):
        entry = _facts(cert, kind='root' if _self_signed(cert) else 'intermediate')
        entry.pop('epoch')
        entry.update({'common_name': _cn(cert), 'is_ca': _is_ca(cert), 'self_signed': entry['kind'] == 'root',
                      'certificate': text})
        out.append(entry)
    return out


# --------------------------------------------------------------------------- selection & building
def select_epochs(issuers, schedule, now):
    """The issuers that belong in the bundle at ``now``: every valid epoch plus the prepared next
    epoch, newest first. Revoked issuers are left out (revoking distrusts the epoch)."""
    wanted = set(schedule.desired_epochs(now))
    chosen = [i for i in issuers if i.get('epoch') in wanted and not i.get('revoked')]
    return sorted(chosen, key=lambda i: i['epoch'], reverse=True)


def epoch_from_not_after(schedule, not_after):
    """The epoch whose expiry is exactly ``not_after``, else None."""
    seconds = (not_after - schedule.epoch_zero).total_seconds() - schedule.validity
    if seconds < 0 or seconds % schedule.duration:
        return None
    return int(seconds // schedule.duration)


def _intermediate_epoch(cert, schedule, what):
    """Epoch of an intermediate given without one: from a CN ending in ``Epoch <n>``, else from its NotAfter."""
    cn = _cn(cert) or ''
    match = _CN_EPOCH_RE.search(cn)
    if match:
        return int(match.group(1))
    epoch = epoch_from_not_after(schedule, cert.not_valid_after_utc)
    if epoch is None:
        raise BundleError(
            '%s (%s): NotAfter %s is not the expiry of any epoch under this schedule (expiry(n) = epoch_zero + n * '
            'epoch_duration + validity, exactly), and its common name does not end in "Epoch <n>"; check the epoch '
            'options, or that the certificate was issued for an epoch' % (what, cert.subject.rfc4514_string(),
                                                                          isoformat(cert.not_valid_after_utc)))
    return epoch


def _normalise_inputs(intermediates):
    """``[(pem_text, epoch_or_None, label)]`` from PEM strings or dicts with ``certificate`` / ``epoch``."""
    out = []
    for index, item in enumerate(intermediates or [], 1):
        if isinstance(item, dict):
            pem = item.get('certificate') or item.get('pem')
            epoch = item.get('epoch')
            label = ('issuer %s' % item['issuer_name']) if item.get('issuer_name') else 'intermediate %d' % index
        else:
            pem, epoch, label = item, None, 'intermediate %d' % index
        if not pem:
            raise BundleError('%s has no certificate' % label)
        certs = split_pem(pem, label)
        if len(certs) != 1 and epoch is not None:
            raise BundleError('%s holds %d certificates; give one certificate per epoch' % (label, len(certs)))
        for text, _cert in certs:
            out.append((text, epoch, label if len(certs) == 1 else '%s (certificate %d)' % (label, len(out) + 1)))
    return out


def build_bundle(intermediates, root_pem, schedule, now, include_root=True, max_certificates=DEFAULT_MAX_CERTIFICATES,
                 drop_expired=False):
    """Verify the intermediates and render the bundle.

    ``intermediates``: PEM strings, or dicts with ``certificate`` and optionally ``epoch`` (issuers
    from :func:`list_epoch_issuers` work as they are). An intermediate without an epoch gets it from
    its common name (``... Epoch <n>``) or, failing that, from its NotAfter.

    Every intermediate must be signed by the root, have CA:true and keyCertSign, NotAfter exactly
    ``schedule.expiry(epoch)`` and not be expired at ``now`` (``drop_expired`` leaves expired ones
    out instead of failing). At most ``max_certificates`` intermediates, at least one. Raises
    BundleError listing every problem; nothing is returned half-verified.

    Returns ``{pem, sha256, epoch (newest), epochs (newest first), certificates, include_root,
    dropped}``; ``certificates`` lists ``{epoch, kind, subject, sha256, serial, not_before,
    not_after}`` in bundle order (the root last, epoch None).
    """
    check_imports()
    if isinstance(max_certificates, bool) or not isinstance(max_certificates, int) or max_certificates < 1:
        raise BundleError('max_certificates must be a positive integer, got %r' % (max_certificates,), option='max_certificates')
    if not root_pem:
        raise BundleError('No root certificate to verify the intermediates against: give root_pem (or put the '
                          'self-signed root in the bundle)', option='root_pem')
    roots = split_pem(root_pem, 'root_pem', 'root_pem')
    if len(roots) != 1:
        raise BundleError('root_pem holds %d certificates; give exactly the root certificate' % len(roots), option='root_pem')
    root_text, root = roots[0]
    if not _is_ca(root):
        raise BundleError('root_pem (%s) is not a CA certificate (BasicConstraints CA:true missing)'
                          % root.subject.rfc4514_string(), option='root_pem')
    if now >= root.not_valid_after_utc:
        raise BundleError('The root certificate (%s) expired at %s'
                          % (root.subject.rfc4514_string(), isoformat(root.not_valid_after_utc)), option='root_pem')

    problems, dropped, by_epoch = [], [], {}
    for text, epoch, label in _normalise_inputs(intermediates):
        cert = _load(text, label)
        subject = cert.subject.rfc4514_string()
        if cert.fingerprint(hashes.SHA256()) == root.fingerprint(hashes.SHA256()):
            continue  # the root given among the intermediates: it is added (or not) by include_root
        try:
            if epoch is None:
                epoch = _intermediate_epoch(cert, schedule, label)
            expiry = schedule.expiry(int(epoch))
        except BundleError as exc:
            problems.append(str(exc))
            continue
        except (EpochError, ValueError, TypeError) as exc:
            problems.append('%s (%s): bad epoch %r: %s' % (label, subject, epoch, exc))
            continue
        epoch = int(epoch)
        found = verify_intermediate(text, root_text, expiry)
        if found:
            problems.append('%s (%s, epoch %d): %s' % (label, subject, epoch, '; '.join(found)))
            continue
        not_after = cert.not_valid_after_utc
        if now >= not_after:
            if drop_expired:
                dropped.append({'epoch': epoch, 'subject': subject, 'not_after': isoformat(not_after), 'reason': 'expired'})
                continue
            problems.append('%s (%s, epoch %d) expired at %s (now %s); an expired intermediate never goes into the bundle'
                            % (label, subject, epoch, isoformat(not_after), isoformat(now)))
            continue
        sha = cert.fingerprint(hashes.SHA256())
        if epoch in by_epoch:
            if by_epoch[epoch][1].fingerprint(hashes.SHA256()) != sha:
                problems.append('%s (%s): a different certificate for epoch %d is already in the bundle (%s); give one '
                                'intermediate per epoch' % (label, subject, epoch, by_epoch[epoch][1].subject.rfc4514_string()))
            continue
        by_epoch[epoch] = (text, cert)
    if problems:
        raise BundleError('The CA bundle was not built and nothing was written: %s' % ' | '.join(problems))
    if not by_epoch:
        raise BundleError('No intermediate to put in the CA bundle (an empty set of epochs)%s; nothing was written'
                          % (' - every one given has expired' if dropped else ''))
    if len(by_epoch) > max_certificates:
        raise BundleError('The CA bundle would hold %d intermediates (epochs %s), more than max_certificates=%d; raise '
                          'max_certificates or shorten validity. Nothing was written'
                          % (len(by_epoch), ', '.join(str(n) for n in sorted(by_epoch, reverse=True)), max_certificates),
                          option='max_certificates')

    epochs = sorted(by_epoch, reverse=True)
    parts = [by_epoch[n][0] for n in epochs]
    certificates = [_facts(by_epoch[n][1], n) for n in epochs]
    if include_root:
        parts.append(root_text)
        certificates.append(_facts(root, None, 'root'))
    pem = ''.join(part.strip() + '\n' for part in parts)
    return {
        'pem': pem,
        'sha256': sha256_hex(pem),
        'epoch': epochs[0],
        'epochs': epochs,
        'certificates': certificates,
        'include_root': bool(include_root),
        'root_sha256': root.fingerprint(hashes.SHA256()).hex(),
        'dropped': dropped,
        'verified': True,
    }


def bundle_from_pem(pem, schedule, now, root_pem=None, include_root=True, max_certificates=DEFAULT_MAX_CERTIFICATES,
                    drop_expired=False, what='pem'):
    """Rebuild (and re-verify) a bundle given as PEM text, e.g. an earlier bundle put back for rollback.

    The self-signed certificate in ``pem`` is the root unless ``root_pem`` is given (then any
    self-signed certificate in ``pem`` must be that root).
    """
    certs = split_pem(pem, what, what)
    selfsigned = [(text, cert) for text, cert in certs if _self_signed(cert)]
    if root_pem:
        root_text, root = split_pem(root_pem, 'root_pem', 'root_pem')[0]
        for text, cert in selfsigned:
            if cert.fingerprint(hashes.SHA256()) != root.fingerprint(hashes.SHA256()):
                raise BundleError('%s holds a self-signed certificate (%s) that is not root_pem (%s)'
                                  % (what, cert.subject.rfc4514_string(), root.subject.rfc4514_string()), option=what)
    elif len(selfsigned) > 1:
        raise BundleError('%s holds %d self-signed certificates; it can have one root at most'
                          % (what, len(selfsigned)), option=what)
    elif selfsigned:
        root_text = selfsigned[0][0]
    else:
        raise BundleError('%s holds no root certificate to verify the intermediates against: give root_pem' % what,
                          option='root_pem')
    intermediates = [text for text, cert in certs if not _self_signed(cert)]
    return build_bundle(intermediates, root_text, schedule, now, include_root=include_root,
                        max_certificates=max_certificates, drop_expired=drop_expired)


def bundle_unverified(pem, schedule=None, what='pem'):
    """The bundle exactly as given, byte for byte, WITHOUT the trust checks of :func:`build_bundle`.

    For putting back what was live before (automatic rollback), whose bytes must match a recorded
    SHA-256. Still refused: empty text, anything but certificates (private keys), unparsable
    certificates. Epochs are recognised best effort (common name ``... Epoch <n>``, else NotAfter
    with ``schedule``); ``epoch`` is the newest recognised, or None.
    """
    certs = split_pem(pem, what, what)
    certificates, epochs = [], []
    for _text, cert in certs:
        if _self_signed(cert):
            certificates.append(_facts(cert, None, 'root'))
            continue
        match = _CN_EPOCH_RE.search(_cn(cert) or '')
        epoch = int(match.group(1)) if match else (
            epoch_from_not_after(schedule, cert.not_valid_after_utc) if schedule is not None else None)
        certificates.append(_facts(cert, epoch))
        if epoch is not None:
            epochs.append(epoch)
    text = pem.decode('ascii') if isinstance(pem, bytes) else pem
    epochs = sorted(set(epochs), reverse=True)
    return {
        'pem': text,
        'sha256': sha256_hex(text),
        'epoch': epochs[0] if epochs else None,
        'epochs': epochs,
        'certificates': certificates,
        'include_root': any(c['kind'] == 'root' for c in certificates),
        'dropped': [],
        'verified': False,
    }


def bundle_from_openbao(client, schedule, now, int_mount='pki_int', root_mount='pki', include_root=True,
                        max_certificates=DEFAULT_MAX_CERTIFICATES, root_issuer='default'):
    """Build the bundle fresh from OpenBao: the ``epoch-<n>`` issuers of ``int_mount`` for every
    valid epoch plus the prepared one, verified against the root of ``root_mount``.

    Adds ``skipped`` (revoked issuers of wanted epochs) and ``missing`` (wanted epochs with no
    issuer) to the :func:`build_bundle` result. Raises OpenBaoError / BundleError.
    """
    issuers = list_epoch_issuers(client, int_mount)
    wanted = schedule.desired_epochs(now)
    selected = select_epochs(issuers, schedule, now)
    skipped = [{'epoch': i['epoch'], 'issuer_name': i['issuer_name'], 'reason': 'revoked'}
               for i in issuers if i.get('epoch') in set(wanted) and i.get('revoked')]
    have = {i['epoch'] for i in issuers}
    missing = [n for n in sorted(wanted, reverse=True) if n not in have]
    if not selected:
        raise BundleError(
            'No usable intermediate on %r for the epochs wanted at %s (%s): %s. Issue the current epoch first '
            '(module openbao_intermediate); nothing was written'
            % (int_mount, isoformat(now), ', '.join(str(n) for n in wanted),
               'every one is revoked' if skipped else 'no issuer named epoch-<n> exists for them'))
    root_pem = root_certificate(client, root_mount, root_issuer)
    bundle = build_bundle(selected, root_pem, schedule, now, include_root=include_root, max_certificates=max_certificates)
    bundle['skipped'] = skipped
    bundle['missing'] = missing
    bundle['issuers'] = {i['epoch']: i['issuer_id'] for i in selected}
    return bundle


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
def _owner_ids(owner, group):
    import grp  # pylint: disable=import-outside-toplevel
    import pwd  # pylint: disable=import-outside-toplevel
    uid = gid = -1
    try:
        if owner not in (None, ''):
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(str(owner)).pw_uid
        if group not in (None, ''):
            gid = int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid
    except KeyError as exc:
        raise BundleError('Unknown owner or group %s for the bundle file' % exc, option='destinations.file') from None
    return uid, gid


def _backup_name(path):
    return '%s.%d.%s~' % (path, os.getpid(), time.strftime('%Y-%m-%d@%H:%M:%S', time.localtime()))


def deliver_file(path, pem, mode=None, owner=None, group=None, backup=False, check_mode=False):
    """Write the bundle to ``path`` atomically (temp file in the same directory, fsync, rename).

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
    except OpenBaoError as exc:
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
    uid, gid = _owner_ids(owner, group)
    data = pem.encode('utf-8')
    try:
        with open(path, 'rb') as handle:
            before = handle.read()
        st = os.stat(path)
    except FileNotFoundError:
        before, st = None, None
    except OSError as exc:
        raise BundleError('Cannot read the current bundle file %s: %s' % (path, exc.strerror or exc),
                          option='destinations.file.path') from None
    if want_mode is None:
        want_mode = (st.st_mode & 0o7777) if st else DEFAULT_FILE_MODE
    if st is not None and os.geteuid() == 0:
        uid = st.st_uid if uid == -1 else uid
        gid = st.st_gid if gid == -1 else gid
    content_changed = before != data
    attrs_changed = st is not None and ((st.st_mode & 0o7777) != want_mode or (uid != -1 and st.st_uid != uid)
                                        or (gid != -1 and st.st_gid != gid))
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
    except OpenBaoError as exc:
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


# --------------------------------------------------------------------------- Kubernetes Secrets
def _api_status(exc):
    """HTTP status of a kubernetes ApiException; None for anything else (connection errors and the like)."""
    if _k8s.is_api_exception(exc):
        return getattr(exc, 'status', None) or 0
    return None


def _b64(value):
    return base64.b64encode(value.encode('utf-8') if isinstance(value, str) else value).decode('ascii')


def _secret_key_bytes(secret, key):
    data = getattr(secret, 'data', None) or {}
    if key not in data or data[key] is None:
        return None
    try:
        return base64.b64decode(data[key])
    except (ValueError, TypeError):
        return b''


def _read_secret(core_api, namespace, name):
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
    if _secret_key_bytes(secret, key) != data:
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
        secret = _read_secret(core_api, namespace, name)
        if attempt == 1 and secret is not None:
            before = _secret_key_bytes(secret, key)
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


# --------------------------------------------------------------------------- pruning
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
                    _delete_secret(core_api, secret_namespace, name, version)
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


def _delete_secret(core_api, namespace, name, resource_version):
    # the resourceVersion precondition: a copy rewritten since it was listed is not deleted blindly
    lib = _k8s.load()
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


def copy_result(result, with_content=False):
    """A deep copy without the ``diff`` entry, and without ``previous_pem`` unless ``with_content``
    (for returning to the user)."""
    out = copy.deepcopy(result)
    out.pop('diff', None)
    if not with_content:
        out.pop('previous_pem', None)
    return out


def valid_secret_key(key):
    return bool(key) and bool(_SECRET_KEY_RE.match(key))


def valid_secret_name(name):
    return bool(name) and len(name) <= 253 and bool(_SECRET_NAME_RE.match(name))

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CA bundle: build, verify and parse it (private: may change without notice).

Shared by the ``ca_bundle`` module, the scripts and client hosts (DESIGN sections 4 and 5):
:func:`build_bundle` verifies every intermediate (signed by the root, CA:true, keyCertSign,
NotAfter exactly ``expiry(epoch)``, not expired) BEFORE anything is written, and renders
deterministic bytes: the same certificates always give the same PEM and the same SHA-256
(each certificate re-encoded from DER, newest epoch first, then the root, one trailing newline).

Nothing here depends on ansible-core or on OpenBao; cryptography is guarded.
"""

from __future__ import annotations

import re

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    canonical_pem,
    cert_not_after,
    cert_not_before,
    cert_sha256,
    common_name,
    load_cert,
    replacement_number,
    serial_hex,
    verify_intermediate,
    verify_issued_by,
    x509,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError, PemError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, isoformat

DEFAULT_MAX_CERTIFICATES = 6

_CN_EPOCH_RE = re.compile(r'\bEpoch (\d+)$')


class BundleError(CaRotationError):
    """A bundle that cannot be built or delivered, with a message meant for the operator.

    ``option`` names the offending module option when there is one; ``results`` carries the
    per-destination results gathered before the failure (what was already written).
    """

    def __init__(self, message, option=None, results=None):
        super().__init__(message, option=option)
        self.results = results


def check_imports():
    """Raise BundleError when cryptography is missing (for scripts)."""
    if x509 is None:
        raise BundleError('The Python library cryptography is required: %s' % CRYPTOGRAPHY_IMPORT_ERROR)


# --------------------------------------------------------------------------- parsing
def _load(pem, what, option=None):
    try:
        return load_cert(pem)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise BundleError('%s is not a valid PEM certificate: %s' % (what, exc), option=option) from None


def self_signed(cert):
    if cert.subject != cert.issuer:
        return False
    try:
        verify_issued_by(cert, cert)
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def _is_ca(cert):
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _cn(cert):
    return common_name(cert.subject)


def _facts(cert, epoch=None, kind='intermediate'):
    """JSON-safe facts about one certificate of a bundle (``replacement`` only on a replacement intermediate)."""
    out = {
        'epoch': epoch,
        'kind': kind,
        'subject': cert.subject.rfc4514_string(),
        'sha256': cert_sha256(cert),
        'serial': serial_hex(cert.serial_number),
        'not_before': isoformat(cert_not_before(cert)),
        'not_after': isoformat(cert_not_after(cert)),
    }
    if kind == 'intermediate' and replacement_number(cert):
        out['replacement'] = replacement_number(cert)
    return out


def split_pem(text, what='pem', option=None):
    """Every certificate in ``text`` as ``(canonical_pem, x509.Certificate)``, in order.

    Text outside PEM blocks (comments) is ignored. Raises BundleError when there is no certificate,
    when a block is not a parsable certificate, or when the text holds anything but certificates
    (a private key in a CA bundle is refused outright): see :func:`_common.pem.pem_certificates`.
    """
    check_imports()
    try:
        blocks = pem_certificates(text, what, strict=True)
    except PemError as exc:
        raise BundleError(str(exc), option=option) from None
    out = []
    for index, block in enumerate(blocks, 1):
        cert = _load(block, '%s certificate %d' % (what, index), option)
        out.append((canonical_pem(cert), cert))
    return out


def parse_bundle(pem, what='pem'):
    """Facts about every certificate of a bundle, in order.

    Each entry: subject, sha256, serial, not_before, not_after, common_name, is_ca, self_signed,
    certificate (canonical PEM).
    """
    out = []
    for text, cert in split_pem(pem, what):
        entry = _facts(cert, kind='root' if self_signed(cert) else 'intermediate')
        entry.pop('epoch')
        entry.update({'common_name': _cn(cert), 'is_ca': _is_ca(cert), 'self_signed': entry['kind'] == 'root',
                      'certificate': text})
        out.append(entry)
    return out


# --------------------------------------------------------------------------- selection & building
def select_epochs(issuers, schedule, now, keep=(), distrusted=()):
    """The issuers that belong in the bundle at ``now``: every valid epoch plus the prepared next
    epoch, newest first; of an epoch with replacements, the newest replacement. Revoked issuers are
    left out (revoking distrusts the epoch), and so is any certificate whose SHA-256 is in
    ``distrusted``, except the issuer ids in ``keep``: a distrusted intermediate kept while its
    replacement is proven and its leaves are re-issued (the servers still present them)."""
    wanted = set(schedule.desired_epochs(now))
    keep, distrusted = set(keep or ()), set(distrusted or ())
    chosen = {}
    for issuer in issuers:
        if issuer.get('epoch') not in wanted or issuer.get('revoked') or issuer.get('sha256') in distrusted:
            continue
        best = chosen.get(issuer['epoch'])
        if best is None or int(issuer.get('replacement') or 0) > int(best.get('replacement') or 0):
            chosen[issuer['epoch']] = issuer
    out = list(chosen.values()) + [i for i in issuers if i.get('issuer_id') in keep and i.get('epoch') in wanted]
    return sorted(out, key=lambda i: (i['epoch'], int(i.get('replacement') or 0)), reverse=True)


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
    epoch = epoch_from_not_after(schedule, cert_not_after(cert))
    if epoch is None:
        raise BundleError(
            '%s (%s): NotAfter %s is not the expiry of any epoch under this schedule (expiry(n) = epoch_zero + n * '
            'epoch_duration + validity, exactly), and its common name does not end in "Epoch <n>"; check the epoch '
            'options, or that the certificate was issued for an epoch' % (what, cert.subject.rfc4514_string(),
                                                                          isoformat(cert_not_after(cert))))
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
                 drop_expired=False, distrusted=()):
    """Verify the intermediates and render the bundle.

    ``intermediates``: PEM strings, or dicts with ``certificate`` and optionally ``epoch`` (issuers
    from :func:`list_epoch_issuers` work as they are). An intermediate without an epoch gets it from
    its common name (``... Epoch <n>``) or, failing that, from its NotAfter.

    Every intermediate must be signed by the root, have CA:true and keyCertSign, NotAfter exactly
    ``schedule.expiry(epoch)`` and not be expired at ``now`` (``drop_expired`` leaves expired ones
    out instead of failing); an intermediate whose SHA-256 is in ``distrusted`` is left out (``dropped``, reason
    ``distrusted``). At most ``max_certificates`` intermediates, at least one. Raises
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
    if now >= cert_not_after(root):
        raise BundleError('The root certificate (%s) expired at %s'
                          % (root.subject.rfc4514_string(), isoformat(cert_not_after(root))), option='root_pem')

    problems, dropped, by_epoch = [], [], {}
    distrusted = set(distrusted or ())
    for text, epoch, label in _normalise_inputs(intermediates):
        cert = _load(text, label)
        subject = cert.subject.rfc4514_string()
        if cert_sha256(cert) == cert_sha256(root):
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
        not_after = cert_not_after(cert)
        if now >= not_after:
            if drop_expired:
                dropped.append({'epoch': epoch, 'subject': subject, 'not_after': isoformat(not_after), 'reason': 'expired'})
                continue
            problems.append('%s (%s, epoch %d) expired at %s (now %s); an expired intermediate never goes into the bundle'
                            % (label, subject, epoch, isoformat(not_after), isoformat(now)))
            continue
        sha = cert_sha256(cert)
        if sha in distrusted:
            dropped.append({'epoch': epoch, 'subject': subject, 'not_after': isoformat(not_after), 'reason': 'distrusted',
                            'sha256': sha})
            continue
        # one intermediate per epoch, and its replacements (a distrusted one kept while its replacement takes over)
        slot = (epoch, replacement_number(cert))
        if slot in by_epoch:
            if cert_sha256(by_epoch[slot][1]) != sha:
                problems.append('%s (%s): a different certificate for epoch %d is already in the bundle (%s); give one '
                                'intermediate per epoch' % (label, subject, epoch, by_epoch[slot][1].subject.rfc4514_string()))
            continue
        by_epoch[slot] = (text, cert)
    if problems:
        raise BundleError('The CA bundle was not built and nothing was written: %s' % ' | '.join(problems))
    if not by_epoch:
        raise BundleError('No intermediate to put in the CA bundle (an empty set of epochs)%s; nothing was written'
                          % (' - every one given has expired' if dropped else ''))
    slots = sorted(by_epoch, reverse=True)
    epochs = sorted({n for n, _k in slots}, reverse=True)
    if len(by_epoch) > max_certificates:
        raise BundleError('The CA bundle would hold %d intermediates (epochs %s), more than max_certificates=%d; raise '
                          'max_certificates or shorten validity. Nothing was written'
                          % (len(by_epoch), ', '.join(str(n) for n, _k in slots), max_certificates),
                          option='max_certificates')

    parts = [by_epoch[slot][0] for slot in slots]
    certificates = [_facts(by_epoch[slot][1], slot[0]) for slot in slots]
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
        'root_sha256': cert_sha256(root),
        'dropped': dropped,
        'verified': True,
    }


def bundle_from_pem(pem, schedule, now, root_pem=None, include_root=True, max_certificates=DEFAULT_MAX_CERTIFICATES,
                    drop_expired=False, what='pem', distrusted=()):
    """Rebuild (and re-verify) a bundle given as PEM text, e.g. an earlier bundle put back for rollback.

    The self-signed certificate in ``pem`` is the root unless ``root_pem`` is given (then any
    self-signed certificate in ``pem`` must be that root).
    """
    certs = split_pem(pem, what, what)
    selfsigned = [(text, cert) for text, cert in certs if self_signed(cert)]
    if root_pem:
        root_text, root = split_pem(root_pem, 'root_pem', 'root_pem')[0]
        for text, cert in selfsigned:
            if cert_sha256(cert) != cert_sha256(root):
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
    intermediates = [text for text, cert in certs if not self_signed(cert)]
    return build_bundle(intermediates, root_text, schedule, now, include_root=include_root,
                        max_certificates=max_certificates, drop_expired=drop_expired, distrusted=distrusted)


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
        if self_signed(cert):
            certificates.append(_facts(cert, None, 'root'))
            continue
        match = _CN_EPOCH_RE.search(_cn(cert) or '')
        epoch = int(match.group(1)) if match else (
            epoch_from_not_after(schedule, cert_not_after(cert)) if schedule is not None else None)
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

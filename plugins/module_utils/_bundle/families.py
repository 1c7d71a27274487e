# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bundle of several key families (DESIGN section 12, dual mode): each family is its own chain of trust - a root
and that root's epoch intermediates - verified on its own by :func:`build_bundle` (signature by the family's root,
exact NotAfter, not expired, bounded count per family), and the families' parts are joined in one PEM, classical
first.

Every certificate of a family's part must have that family's key: a classical client (Python's ``ssl`` on OpenSSL
3.0) skips the ML-DSA entries of a mixed CA file, but fails on a classical chain that an ML-DSA key signed (DESIGN
section 10), so an ML-DSA intermediate under the EC root - or an EC one under the ML-DSA root - is refused, not
bundled.
"""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import (
    DEFAULT_MAX_CERTIFICATES,
    BundleError,
    build_bundle,
    self_signed,
    split_pem,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    cert_sha256,
    certificate_family,
    verify_issued_by,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex

#: the families, in the order their parts appear in a bundle
FAMILIES = ('classical', 'mldsa')


def _check_families(names, what):
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise BundleError('%s names the key famil%s %s; the families are %s'
                          % (what, 'y' if len(unknown) == 1 else 'ies', ', '.join(repr(n) for n in unknown),
                             ', '.join(FAMILIES)), option=what)


def build_family_bundle(families, schedule, now, include_root=True, max_certificates=DEFAULT_MAX_CERTIFICATES,
                        drop_expired=False, distrusted=()):
    """Verify every family's chain and render one bundle.

    ``families``: ``{family: {'intermediates': [...], 'root_pem': str}}`` (the intermediates as :func:`build_bundle`
    takes them). ``max_certificates`` bounds each family's intermediates. Raises BundleError listing the problems of
    every family (nothing is returned half-verified).

    Returns ``{pem, sha256, epoch (the newest of all), families: {family: {epoch, epochs, sha256 (of its part),
    root_sha256, certificates, dropped}}, counts: {family: certificates in the PEM}, certificates (each with its
    family), include_root, dropped, verified}``.
    """
    if not families:
        raise BundleError('No key family to build the CA bundle from: enable at least one of %s' % ', '.join(FAMILIES),
                          option='families')
    _check_families(families, 'families')
    problems, parts, roots = [], {}, {}
    for family in [f for f in FAMILIES if f in families]:
        spec = families[family] or {}
        try:
            part = build_bundle(spec.get('intermediates') or [], spec.get('root_pem'), schedule, now,
                                include_root=include_root, max_certificates=max_certificates, drop_expired=drop_expired,
                                distrusted=distrusted)
        except BundleError as exc:
            problems.append('family %s: %s' % (family, exc))
            continue
        wrong = [c for c in split_pem(part['pem'], 'family %s' % family) if certificate_family(c[1]) != family]
        root = split_pem(spec['root_pem'], 'root_pem')[0][1]
        if certificate_family(root) != family:
            problems.append('family %s: its root (%s) has a %s key' % (family, root.subject.rfc4514_string(),
                                                                       certificate_family(root)))
            continue
        if wrong:
            problems.append('family %s: %s %s a %s key; every certificate of a family has that family\'s key (a '
                            'classical client cannot use a chain an ML-DSA key signed)'
                            % (family, ', '.join(c[1].subject.rfc4514_string() for c in wrong),
                               'has' if len(wrong) == 1 else 'have', certificate_family(wrong[0][1])))
            continue
        if part['root_sha256'] in roots.values():
            problems.append('family %s: its root is the root of family %s; each family has its own root'
                            % (family, next(f for f, sha in roots.items() if sha == part['root_sha256'])))
            continue
        roots[family] = part['root_sha256']
        parts[family] = part
    if problems:
        raise BundleError('The CA bundle was not built and nothing was written: %s' % ' || '.join(problems))
    pem = ''.join(parts[family]['pem'] for family in parts)
    certificates, dropped = [], []
    for family, part in parts.items():
        certificates.extend(dict(c, family=family) for c in part['certificates'])
        dropped.extend(dict(d, family=family) for d in part['dropped'])
    return {
        'pem': pem,
        'sha256': sha256_hex(pem),
        'epoch': max(part['epoch'] for part in parts.values()),
        'families': {family: {'epoch': part['epoch'], 'epochs': part['epochs'], 'sha256': part['sha256'],
                              'root_sha256': part['root_sha256'], 'certificates': part['certificates'],
                              'dropped': part['dropped']} for family, part in parts.items()},
        'counts': {family: len(part['certificates']) for family, part in parts.items()},
        'certificates': certificates,
        'include_root': bool(include_root),
        'dropped': dropped,
        'verified': True,
    }


def split_families(pem, what='pem', root_pems=()):
    """``{family: {'intermediates': [PEM], 'root_pem': PEM}}`` of a bundle of several families (an earlier bundle put
    back, a held one): each intermediate goes to the root that signed it. The roots are the self-signed certificates
    in ``pem`` and ``root_pems`` (a bundle built without its roots needs them given; a family of ``root_pems`` with
    nothing in ``pem`` is left out). Raises BundleError for an intermediate no root signed, or two roots of one
    family."""
    certs = split_pem(pem, what, what)
    selfsigned = [c for c in certs if self_signed(c[1])]
    roots = {}
    for text, cert in selfsigned + [split_pem(r, 'root_pem', 'root_pem')[0] for r in root_pems]:
        family = certificate_family(cert)
        if family in roots and cert_sha256(roots[family][1]) != cert_sha256(cert):
            raise BundleError('%s holds two roots of the %s family (%s, %s); a family has one root'
                              % (what, family, roots[family][1].subject.rfc4514_string(), cert.subject.rfc4514_string()),
                              option=what)
        roots[family] = (text, cert)
    _check_families(roots, what)
    in_pem = {certificate_family(cert) for _text, cert in selfsigned}
    out = {family: {'intermediates': [], 'root_pem': text} for family, (text, _cert) in roots.items()}
    for text, cert in [c for c in certs if c not in selfsigned]:
        for family, (_text, root) in roots.items():
            try:
                verify_issued_by(cert, root)
            except Exception:  # pylint: disable=broad-except
                continue
            out[family]['intermediates'].append(text)
            break
        else:
            raise BundleError('%s holds %s, which none of its roots (%s) signed'
                              % (what, cert.subject.rfc4514_string(),
                                 ', '.join(r.subject.rfc4514_string() for _t, r in roots.values()) or 'none'), option=what)
    # a root given in root_pems whose family has nothing in the bundle is not a part of it
    return {family: spec for family, spec in out.items() if spec['intermediates'] or family in in_pem}


def family_bundle_from_pem(pem, schedule, now, enabled=FAMILIES, root_pems=(), include_root=True,
                           max_certificates=DEFAULT_MAX_CERTIFICATES, drop_expired=False, distrusted=(), what='pem'):
    """Rebuild (and re-verify) a bundle of several families given as PEM text, keeping the families in ``enabled``:
    a family switched off since leaves the bundle (``dropped_families``), the others keep every certificate."""
    _check_families(enabled, 'enabled')
    found = split_families(pem, what, root_pems)
    kept = {family: spec for family, spec in found.items() if family in enabled}
    if not kept:
        raise BundleError('%s holds the famil%s %s, none of which is enabled (%s); nothing was written'
                          % (what, 'y' if len(found) == 1 else 'ies', ', '.join(sorted(found)), ', '.join(enabled)),
                          option=what)
    bundle = build_family_bundle(kept, schedule, now, include_root=include_root, max_certificates=max_certificates,
                                 drop_expired=drop_expired, distrusted=distrusted)
    bundle['dropped_families'] = sorted(set(found) - set(kept))
    return bundle

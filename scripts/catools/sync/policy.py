"""What an announcement must be for ca-bundle-sync to apply it: verification and acceptance rules (no I/O but the keys).

A signature proves who announced a bundle, not that the bundle is still good for this host. On top of
:func:`_message.verify_announcement` (signature, schema, hashes, certificate list), an announcement is applied
only when:

- its generation is newer than the applied one (else ``stale``: acknowledged and skipped), and not more than
  ``--max-generation-jump`` ahead of it (a signed generation far in the future would make the host skip every
  later real one);
- ``valid_until`` has not passed (``--clock-skew``, default 0, may tolerate a late clock) and is not later than
  the NotAfter of any certificate in the bundle (an announcement cannot outlive what it carries);
- ``bundle_pem`` is PEM certificates and nothing else (whitespace between blocks only), all CA certificates,
  at least one of them not expired;
- it does not trust fewer still-valid certificates than the bundle in place, unless it is a signed
  ``rollback`` (or ``distrust``) announcement: a replayed older bundle cannot quietly drop the newer epochs.
"""

from __future__ import annotations

import datetime

from catools.sync.common import Invalid, Outcome, Transient

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError, parse_bundle  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import digest as common_digest  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow  # noqa: E402

#: Kinds of announcement that may lower the trust in place (fewer valid certificates) on purpose.
DOWNGRADE_KINDS = ('rollback', 'distrust')
#: Characters of whitespace tolerated outside the certificate blocks of bundle_pem (line ends between blocks).
MAX_BETWEEN_BLOCKS = 4


async def verified(data, keys, cfg):
    """The announcement in ``data`` once its signature and structure verify; raises Invalid or Transient."""
    try:
        public_keys = await keys.keys_for(data)
    except CaRotationError as exc:  # OpenBao (connect) or transit key problems
        raise Transient('keys', 'Cannot read the public keys of transit key %s/%s: %s'
                        % (cfg.transit_mount, cfg.transit_key, exc)) from None
    except Exception as exc:  # e.g. connection errors from hvac/requests  # pylint: disable=broad-except
        raise Transient('keys', 'Cannot get the verification keys: %s: %s' % (type(exc).__name__, exc)) from None
    try:
        return _message.verify_announcement(data, public_keys)
    except _message.MessageVerificationError as exc:
        raise Invalid(exc.reason, str(exc)) from None


def certificates_only(pem):
    """The certificates of ``pem`` (parse_bundle facts); Invalid when it holds anything else than PEM certificates."""
    try:
        certs = parse_bundle(pem, 'bundle_pem')
    except BundleError as exc:
        raise Invalid('certificates', 'The bundle is not usable: %s' % exc) from None
    rest = pem
    for block in pem_certificates(pem):
        rest = rest.replace(block.strip(), '', 1)
    if rest.strip() or len(rest) > MAX_BETWEEN_BLOCKS * (len(certs) + 1):
        junk = rest.strip()[:40]
        raise Invalid('certificates', 'bundle_pem holds %d characters besides its %d PEM certificates%s: a CA bundle is PEM '
                      'certificates only' % (len(rest), len(certs), (' (starting %r)' % junk) if junk else ''))
    return certs


def valid_count(certs, now):
    """How many of ``certs`` (parse_bundle facts) have not expired at ``now``."""
    stamp = isoformat(now)
    return sum(1 for c in certs if _iso(c['not_after']) > stamp)


def _iso(value):
    return isoformat(value) if isinstance(value, datetime.datetime) else str(value)


def current_certificates(pem):
    """parse_bundle facts of the bundle in place (text), or None when there is none or it does not parse."""
    if not pem:
        return None
    try:
        return parse_bundle(pem, 'the bundle file')
    except (BundleError, ValueError):
        return None


def decide(message, state, cfg, now=None, current_pem=None, floor=0):
    """Outcome ``apply`` or ``stale`` for a verified ``message`` given the applied ``state``; raises Invalid.

    ``current_pem``: the text of the bundle in place (the bundle file), compared with the new one. ``floor``: a
    generation known to be newer (kept by the stream): anything older is superseded (``stale``).
    """
    generation = message['generation']
    if generation <= state.generation or generation < floor:
        return Outcome('stale', 'stale-generation', message=message)
    jump = getattr(cfg, 'max_generation_jump', 0)
    if jump and state.generation and generation - state.generation > jump:
        raise Invalid('generation-jump', 'The announcement has generation %d, %d ahead of the applied generation %d; more than '
                      '--max-generation-jump %d allows (a generation far ahead would make this host skip every real one). If '
                      'the authority really advanced that far, run once with a larger --max-generation-jump (0: no limit)'
                      % (generation, generation - state.generation, state.generation, jump))
    now = now or utcnow()
    limit = now - datetime.timedelta(seconds=cfg.clock_skew)
    if isoformat(limit) >= message['valid_until']:
        raise Invalid('expired', 'The announcement (generation %d) expired at %s (now %s); its bundle is no longer usable'
                      % (generation, message['valid_until'], isoformat(now)))
    if common_digest.sha256_hex(message['bundle_pem']) != message['bundle_sha256']:  # verify_announcement checks it too
        raise Invalid('bundle-sha256', 'bundle_sha256 does not match the bundle')
    certs = certificates_only(message['bundle_pem'])
    not_ca = [c['subject'] for c in certs if not c['is_ca']]
    if not_ca:
        raise Invalid('certificates', 'The bundle holds certificates that are not CAs: %s' % '; '.join(not_ca))
    earliest = min(_iso(c['not_after']) for c in certs)
    if message['valid_until'] > earliest:
        raise Invalid('valid-until', 'The announcement is valid until %s, later than the NotAfter %s of a certificate it carries; '
                      'an announcement cannot outlive its certificates' % (message['valid_until'], earliest))
    fresh = valid_count(certs, now)
    if not fresh:
        raise Invalid('certificates-expired', 'Every certificate of the bundle (generation %d) has expired' % generation)
    current = current_certificates(current_pem)
    if current is not None and message['kind'] not in DOWNGRADE_KINDS:
        before = valid_count(current, now)
        if fresh < before:
            raise Invalid('fewer-epochs', 'The announcement (generation %d, kind %s) trusts %d still-valid certificate(s), fewer than '
                          'the %d of the bundle in place; only a signed %s announcement may lower the trust'
                          % (generation, message['kind'], fresh, before, ' or '.join(DOWNGRADE_KINDS)))
    return Outcome('apply', message=message)


async def evaluate(data, keys, state, cfg, now=None, current_pem=None, floor=0):
    """Verify ``data`` and decide: Outcome ``apply`` (with the message) or ``stale``; raises Invalid or Transient."""
    return decide(await verified(data, keys, cfg), state, cfg, now, current_pem, floor)

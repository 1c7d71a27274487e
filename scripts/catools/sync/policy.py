"""What an announcement must be for ca-bundle-sync to apply it: verification and acceptance rules (no I/O but the keys)."""

from __future__ import annotations

import datetime

from catools.sync.common import Invalid, Outcome, Transient

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError, parse_bundle  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import digest as common_digest  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow  # noqa: E402


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


def decide(message, state, cfg, now=None):
    """Outcome ``apply`` or ``stale`` for a verified ``message`` given the applied ``state``; raises Invalid."""
    if message['generation'] <= state.generation:
        return Outcome('stale', 'stale-generation', message=message)
    now = now or utcnow()
    limit = now - datetime.timedelta(seconds=cfg.clock_skew)
    if isoformat(limit) >= message['valid_until']:
        raise Invalid('expired', 'The announcement (generation %d) expired at %s; its bundle is no longer usable'
                      % (message['generation'], message['valid_until']))
    if common_digest.sha256_hex(message['bundle_pem']) != message['bundle_sha256']:  # verify_announcement checks it too
        raise Invalid('bundle-sha256', 'bundle_sha256 does not match the bundle')
    try:
        certs = parse_bundle(message['bundle_pem'], 'bundle_pem')
    except BundleError as exc:
        raise Invalid('certificates', 'The bundle is not usable: %s' % exc) from None
    not_ca = [c['subject'] for c in certs if not c['is_ca']]
    if not_ca:
        raise Invalid('certificates', 'The bundle holds certificates that are not CAs: %s' % '; '.join(not_ca))
    return Outcome('apply', message=message)


async def evaluate(data, keys, state, cfg, now=None):
    """Verify ``data`` and decide: Outcome ``apply`` (with the message) or ``stale``; raises Invalid or Transient."""
    return decide(await verified(data, keys, cfg), state, cfg, now)

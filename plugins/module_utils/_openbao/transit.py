# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The announcement signing key in OpenBao transit (ed25519): sign, and publish its public keys (private).

Errors are ``_message.MessageError`` (a key that cannot sign or verify announcements).
"""

from __future__ import annotations

import base64

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import (
    DEFAULT_TRANSIT_KEY,
    DEFAULT_TRANSIT_MOUNT,
    MessageError,
    public_key_pem,
    verify_announcement,
)


def _transit_key(client, mount, key):
    try:
        data = client.secrets.transit.read_key(name=key, mount_point=mount)['data']
    except Exception as exc:  # hvac raises many types; name the key and what to check
        raise MessageError('Cannot read transit key %r on mount %r: %s: %s (the token needs read on %s/keys/%s)'
                           % (key, mount, type(exc).__name__, exc, mount, key)) from None
    if data.get('type') != 'ed25519':
        raise MessageError('Transit key %s/%s is of type %r; announcements are signed with an ed25519 key'
                           % (mount, key, data.get('type')))
    return data


def transit_public_keys(client, mount=DEFAULT_TRANSIT_MOUNT, key=DEFAULT_TRANSIT_KEY):
    """``{version: PEM}`` of the (ed25519) transit key's public keys that may still verify."""
    data = _transit_key(client, mount, key)
    out = {}
    for version, info in (data.get('keys') or {}).items():
        public = info.get('public_key') if isinstance(info, dict) else None
        if public:
            out[int(version)] = public_key_pem(public)
    if not out:
        raise MessageError('Transit key %s/%s exposes no public key' % (mount, key))
    return out


def transit_signer(client, mount=DEFAULT_TRANSIT_MOUNT, key=DEFAULT_TRANSIT_KEY, key_version=None):
    """A signer ``bytes -> 'vault:v<n>:<base64>'`` using OpenBao transit ``<mount>/sign/<key>`` (ed25519)."""
    _transit_key(client, mount, key)

    def sign(data):
        kwargs = {'name': key, 'hash_input': base64.b64encode(data).decode('ascii'), 'mount_point': mount}
        if key_version is not None:
            kwargs['key_version'] = int(key_version)
        try:
            resp = client.secrets.transit.sign_data(**kwargs)
        except Exception as exc:  # hvac raises many types
            raise MessageError('Signing with transit key %s/%s failed: %s: %s (the token needs update on %s/sign/%s)'
                               % (mount, key, type(exc).__name__, exc, mount, key)) from None
        return resp['data']['signature']

    return sign


def verify_with_transit(client, mount, key, message, now=None, newer_than=None):
    """verify_announcement() against the public keys currently published by the transit key."""
    return verify_announcement(message, transit_public_keys(client, mount, key), now=now, newer_than=newer_than)

"""The public keys announcements are verified with: pinned in a file, or read from OpenBao transit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from catools.sync.common import ConfigError

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message  # noqa: E402


class PinnedKeys:
    """Public keys pinned in a file: one PEM key (any key version label), or JSON {version: key}."""

    def __init__(self, path):
        self.path = path
        self.single, self.versions = self._load()

    def _load(self):
        try:
            text = Path(self.path).read_text(encoding='utf-8').strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError('Cannot read --public-key-file %s: %s' % (self.path, getattr(exc, 'strerror', None) or exc)) from None
        if not text:
            raise ConfigError('--public-key-file %s is empty' % self.path)
        try:
            if text.startswith('{'):
                data = json.loads(text)
                if not isinstance(data, dict) or not data:
                    raise ValueError('expected a non-empty JSON object {"<key version>": "<public key>"}')
                versions = {}
                for version, key in data.items():
                    if not str(version).isdigit() or int(version) < 1:
                        raise ValueError('key version %r is not a positive integer' % (version,))
                    versions[int(version)] = _message.load_public_key(key)
                return None, versions
            return _message.load_public_key(text), None
        except (ValueError, TypeError) as exc:
            raise ConfigError('--public-key-file %s does not hold an ed25519 public key (PEM, or JSON {"<version>": "<PEM>"}): %s'
                              % (self.path, exc)) from None

    async def keys_for(self, data):
        if self.versions is not None:
            return self.versions
        version = 1
        with contextlib.suppress(Exception):
            version, _raw = _message.parse_signature(_message.parse_message(data).get('signature'))
        return {version: self.single}


class TransitKeys:
    """The public keys OpenBao transit publishes for the signing key (read for every message)."""

    def __init__(self, params, mount, key):
        self.params = params
        self.mount = mount
        self.key = key
        self.client = None

    def _fetch(self):
        # only transit mode talks to OpenBao: the rest of ca-bundle-sync never imports _openbao (hvac)
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import connect
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_public_keys
        if self.client is None:
            self.client = connect(self.params)
        return transit_public_keys(self.client, self.mount, self.key)

    async def keys_for(self, data):  # pylint: disable=unused-argument
        return await asyncio.to_thread(self._fetch)

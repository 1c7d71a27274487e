# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NATS message headers and sizes: validate user headers, refuse a message the server would refuse (private).

The server counts headers and payload together against its ``max_payload`` (and a stream's
``max_msg_size``).
"""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError


def header_block_size(headers):
    """Bytes the headers take on the wire (``NATS/1.0\\r\\n`` + ``key: value\\r\\n``... + ``\\r\\n``); 0 without headers."""
    if not headers:
        return 0
    return len(b'NATS/1.0\r\n\r\n') + sum(len(('%s: %s\r\n' % (k, v)).encode('utf-8')) for k, v in headers.items())


def check_headers(headers):
    """Validate user headers (names without spaces or colons, values on one line); return them as str->str."""
    out = {}
    for key, value in (headers or {}).items():
        key = str(key).strip()
        value = '' if value is None else str(value)
        if not key or any(c in key for c in ': \t\r\n'):
            raise NatsError('Header name %r is not valid (no spaces, colons or line breaks)' % key, 'config', option='headers')
        if '\r' in value or '\n' in value:
            raise NatsError('Header %s: the value must be on one line' % key, 'config', option='headers')
        out[key] = value
    return out


def check_size(payload, headers, max_payload, max_msg_size=None, server=None):
    """Refuse (NatsError kind ``payload``) a message larger than the server's max_payload or the stream's max_msg_size."""
    size = len(payload) + header_block_size(headers)
    if max_payload and size > max_payload:
        raise NatsError('The message is %d bytes (payload %d + headers %d), more than the max_payload of %d bytes of NATS server %s; '
                        'nothing was published. Make the payload smaller or raise max_payload in the server configuration'
                        % (size, len(payload), size - len(payload), max_payload, server or '(connected)'), 'payload')
    if max_msg_size and max_msg_size > 0 and size > max_msg_size:
        raise NatsError('The message is %d bytes, more than the stream\'s max_msg_size of %d bytes; nothing was published'
                        % (size, max_msg_size), 'payload')
    return size

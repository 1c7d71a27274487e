# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one PEM splitter (private; standard library only).

Every place that takes certificates out of PEM text (the CA bundle, leaf files, the announcement's
``bundle_pem``, a client's trust) goes through :func:`pem_certificates`.
"""

from __future__ import annotations

import re

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import PemError

_PEM_BLOCK_RE = re.compile(r'-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----', re.DOTALL)
_PEM_BEGIN_RE = re.compile(r'-----BEGIN ([A-Z0-9 ]+)-----')


def _glued(text, match):
    """``(line, excerpt)`` when the BEGIN or END line of the block ``match`` goes on after its closing dashes with
    anything but white space (``-----END CERTIFICATE----------BEGIN ...``: two blocks glued together); else None.
    Go's ``encoding/pem`` (nats-server) skips such a block without an error; OpenSSL refuses the file."""
    begin_end = text.index('-----', match.start() + 5) + 5  # the dashes closing "-----BEGIN <label>"
    for line, start in (('BEGIN', begin_end), ('END', match.end())):
        rest = text[start:].split('\n', 1)[0]
        if rest.strip():
            return line, rest.strip()[:30]
    return None


def pem_certificates(text, what='pem', strict=False):
    """The PEM certificate blocks of ``text`` in order, each as ``-----BEGIN CERTIFICATE-----`` ...
    ``-----END CERTIFICATE-----\\n``. Text outside PEM blocks (comments) is ignored.

    Lenient (default): other blocks (keys, CRLs) are skipped and bytes are read as ASCII with
    replacement; the result may be empty. ``strict``: raises :class:`PemError` (the message names
    ``what``) for non-ASCII bytes, empty text, a BEGIN line without its END line (a truncated block,
    or two blocks glued into one), a BEGIN or END line with more text after its dashes (Go's decoder, and so
    nats-server, silently skips that block), any block that is not a CERTIFICATE (a private key in a CA bundle
    is refused outright) and text without a certificate. Parsing the certificates is up to the caller.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode('ascii')
        except UnicodeDecodeError:
            if strict:
                raise PemError('%s is not PEM text (it holds non-ASCII bytes)' % what) from None
            text = bytes(text).decode('ascii', 'replace')
    if not isinstance(text, str) or not text.strip():
        if strict:
            raise PemError('%s is empty: expected one or more PEM certificates (-----BEGIN CERTIFICATE-----)' % what)
        return []
    blocks = list(_PEM_BLOCK_RE.finditer(text))
    if strict:
        if len(_PEM_BEGIN_RE.findall(text)) != len(blocks):
            raise PemError('%s holds a PEM block without its matching END line (truncated or garbled PEM)' % what)
        for index, match in enumerate(blocks, 1):
            label = match.group(1)
            glued = _glued(text, match)
            if glued:
                raise PemError('%s block %d has text on its %s line after the dashes (%s): nats-server (Go\'s PEM '
                               'decoder) silently skips such a block, so it would not be trusted; put every BEGIN and '
                               'END line on a line of its own' % (what, index, glued[0], glued[1]))
            if label != 'CERTIFICATE':
                raise PemError('%s block %d is a %s, not a CERTIFICATE: a CA bundle holds certificates only%s'
                               % (what, index, label, ' (never put a private key in it)' if 'PRIVATE' in label else ''))
    out = [match.group(0) + '\n' for match in blocks if match.group(1) == 'CERTIFICATE']
    if strict and not out:
        raise PemError('%s holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)' % what)
    return out

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SHA-256 of text, bytes and files, as the collection compares and records them (private)."""

from __future__ import annotations

import hashlib


def sha256_hex(data):
    """SHA-256 (lower-case hex) of ``data`` (str is UTF-8 encoded; bytes-like as they are)."""
    return hashlib.sha256(data.encode('utf-8') if isinstance(data, str) else bytes(data)).hexdigest()


def sha256_of_file(path):
    """SHA-256 (lower-case hex) of the file at ``path``, read in chunks. Raises OSError."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b''):
            digest.update(chunk)
    return digest.hexdigest()

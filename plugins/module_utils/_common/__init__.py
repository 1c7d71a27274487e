# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every part of the collection shares: errors, files, PEM, digests, certificates, TLS (private).

Standard library only, except :mod:`.certs` (cryptography) and :mod:`.argspec` (ansible-core), both guarded:
client hosts import it too.
"""

from __future__ import annotations

# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenBao: connection and login, PKI issuers and epoch intermediates, leaf certificates, transit (private).

``errors`` (OpenBaoError, the guarded hvac import), ``auth`` (token / AppRole / Kubernetes login),
``client`` (options, connect, requests), ``pki`` (reading issuers), ``intermediate`` (issuing,
activating, pruning epoch intermediates), ``leaf`` (leaf certificates and their renewal),
``transit`` (the announcement signing key).
"""

from __future__ import annotations

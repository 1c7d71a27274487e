# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CA bundle: build, verify and parse it (``build``; client hosts use it too), build it fresh
from OpenBao (``source``), deliver it (``deliver``: file, OpenBao KV v2) and prune the per-epoch
copies (``prune``). The Kubernetes Secrets are in ``_k8s.secrets`` (private)."""

from __future__ import annotations

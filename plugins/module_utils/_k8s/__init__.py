# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes: the API client (``client``) and the bundle Secrets (``secrets``) (private)."""

from __future__ import annotations

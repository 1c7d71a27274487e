# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NATS: the ``nats`` option and its validation (``options``), a fail-fast connect (``client``),
JetStream API, streams and publishing (``jetstream``), message headers and sizes (``headers``) (private)."""

from __future__ import annotations

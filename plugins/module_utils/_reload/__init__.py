# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reload NATS servers without restarting them, and prove that each one did (private: may change).

One orchestration (``engine.reload_servers``) over four transports:

``signal``      SIGHUP to a local pid (or the pid in a pid file), load time from the monitoring ``/varz``.
``command``     ``nats-server --signal reload=<pid>`` on the local host, same proof (both ``local``).
``kubernetes``  exec ``kill -HUP 1`` (or ``nats-server --signal reload``) in every pod matching a label
                selector, all pods in parallel; load time from ``/varz`` on the pod IP (``kubernetes``).
``system``      ``$SYS.REQ.SERVER.<id>.RELOAD`` requests as a system-account user; servers discovered with
                ``$SYS.REQ.SERVER.PING``; load time from ``$SYS.REQ.SERVER.<id>.VARZ`` (``system``).

``base`` holds the targets, the transport interface and the pure helpers; ``probe`` the TLS probe
with a client certificate that every reloaded server must accept.
"""

from __future__ import annotations

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a cluster's host-local steps run: in the controller (servers it reaches) or on the VM, through one
call of the module ``nats_host_step`` per host and step. Both offer the same three operations."""

from __future__ import annotations

import shutil

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, parse_time
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import parse_renew_before
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import host

MODULE = 'securetransport.ca_rotation.nats_host_step'


class LocalSteps:
    """The host-local steps in this process."""

    local = True

    @staticmethod
    def deliver_reload(**kw):
        path = shutil.which('nats-server') if kw.get('transport') == 'command' else None
        return host.deliver_reload(nats_server_path=path, **kw)

    @staticmethod
    def leaf_requests(targets, issuers, renew_before, now, schedule, key_type='ec', key_bits=0, check_mode=False):
        return host.leaf_requests(targets, issuers, parse_renew_before(renew_before, 'ca_rotation_nats_reload_leaf_renew_before'),
                                  parse_time(now, 'now'), EpochSchedule.from_params(schedule), key_type=key_type,
                                  key_bits=key_bits, check_mode=check_mode)

    @staticmethod
    def install_and_reload(targets, certificates, transport, reload_timeout, check_mode=False):
        if not check_mode:
            host.install_leaves(targets, certificates)
        path = shutil.which('nats-server') if transport == 'command' else None
        return host.reload_local(targets, transport, reload_timeout=reload_timeout, check_mode=check_mode,
                                 nats_server_path=path)


class RemoteSteps:
    """The host-local steps on the inventory host, one module call each (``execute(args) -> result``)."""

    local = False

    def __init__(self, execute, probe_host=None):
        self._execute = execute
        self.calls = 0
        #: the machine's address, for probing servers whose url names a loopback address
        self.probe_host = probe_host

    def _call(self, step, **args):
        self.calls += 1
        res = self._execute(dict(args, step=step))
        if res.get('failed') or res.get('unreachable'):
            raise host.HostStepError('%s on the host failed: %s' % (step, res.get('msg') or 'no message'))
        return res

    def deliver_reload(self, **kw):
        kw.pop('probes', None)  # the controller probes after the reload
        kw.pop('check_mode', None)  # the module runs in the task's check mode
        return self._call('deliver_reload', **kw)

    def leaf_requests(self, targets, issuers, renew_before, now, schedule, key_type='ec', key_bits=0, check_mode=False):
        return self._call('leaf_requests', targets=targets, issuers=issuers, renew_before=str(renew_before), now=now,
                          schedule=schedule, key_type=key_type, key_bits=int(key_bits or 0))['leaves']

    def install_and_reload(self, targets, certificates, transport, reload_timeout, check_mode=False):
        return self._call('install_leaves', targets=targets, certificates=certificates, transport=transport,
                          reload_timeout=reload_timeout)['reload']

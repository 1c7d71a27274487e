# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of securetransport.ca_rotation.rotation_authority (documented in plugins/modules)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import authority
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import authority_stopped
from ansible_collections.securetransport.ca_rotation.plugins.plugin_utils._engine_action import AUTHORITY_FACT, EngineAction


class ActionModule(EngineAction):

    ARGUMENT_SPEC = {'mode': {'type': 'str', 'default': 'rotate', 'choices': ['rotate', 'rollback']}}

    def on_config_error(self, err, args):
        # refused before the lock: the finish step writes the report and fails the run with this message
        return self._stopped('%s. Nothing was changed.' % err, args, option=err.option)

    def on_error(self, err, args, trace):
        # before the lock too (the engine's own failures after it are results): the finish step reports it
        kind = 'rollback' if args.get('mode') == 'rollback' else 'rotation'
        return self._stopped('The %s could not start: %s. Nothing was changed.' % (kind, err), args)

    def _stopped(self, msg, args, option=None):
        res = authority_stopped(self.started_at(), 'rollback' if args.get('mode') == 'rollback' else 'rotation', msg,
                                error=msg)
        self.say(msg)
        out = {'changed': False, 'msg': msg, 'ansible_facts': {AUTHORITY_FACT: res.to_fact()}}
        if option:
            out['option'] = option
        return out

    def run_step(self, args, cfg, task_vars):
        kind = 'rollback' if args['mode'] == 'rollback' else 'rotation'
        host = task_vars.get('inventory_hostname')
        self.check_connection_options(cfg)
        cfg.live_secret_locations = self.live_secret_locations(task_vars, cfg)
        clients = self.new_clients(cfg)
        timings = self.new_timings()
        step = authority.prepare_rollback if kind == 'rollback' else authority.rotate
        try:
            res = step(cfg, clients, self.holder(host, kind), self.started_at(), timings, check_mode=self._task.check_mode)
        finally:
            clients.close()
        self.say(res.msg)
        done = 'bundle %s of epoch %s, generation %s' % ((res.sha256 or '')[:16], res.epoch, res.generation)
        return {'changed': bool(res.changed), 'msg': res.msg or (done if res.go else 'did not go ahead'),
                'ansible_facts': {AUTHORITY_FACT: res.to_fact()}}

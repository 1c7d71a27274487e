# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of securetransport.ca_rotation.rotation_authority (documented in plugins/modules)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import authority, decisions, distrust_steps
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import ConfigError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import authority_stopped
from ansible_collections.securetransport.ca_rotation.plugins.plugin_utils._engine_action import AUTHORITY_FACT, EngineAction


class ActionModule(EngineAction):

    ARGUMENT_SPEC = {'mode': {'type': 'str', 'default': 'rotate', 'choices': ['rotate', 'rollback', 'distrust', 'distrust_complete']}}

    def on_config_error(self, err, args):
        # refused before the lock: the finish step writes the report and fails the run with this message
        return self._stopped('%s. Nothing was changed.' % err, args, option=err.option)

    def on_error(self, err, args, trace):
        # before the lock too (the engine's own failures after it are results): the finish step reports it
        return self._stopped('The %s could not start: %s. Nothing was changed.' % (self._kind(args), err), args)

    @staticmethod
    def _kind(args):
        return {'rollback': 'rollback', 'distrust': 'distrust', 'distrust_complete': 'distrust'}.get(args.get('mode'), 'rotation')

    def _stopped(self, msg, args, option=None):
        if args.get('mode') == 'distrust_complete' and self.authority_went_ahead():
            # the first pass took the lock: its result stays, so that the finish step releases it and reports
            return {'changed': False, 'msg': msg}
        res = authority_stopped(self.started_at(), self._kind(args), msg, error=msg)
        self.say(msg)
        out = {'changed': False, 'msg': msg, 'ansible_facts': {AUTHORITY_FACT: res.to_fact()}}
        if option:
            out['option'] = option
        return out

    def _second_pass(self, task_vars, cfg):
        """``(holder, None)`` when the distrust may take its second pass (after the leaf phase), else ``(None, why)``."""
        first = self.template_var(task_vars, AUTHORITY_FACT) or {}
        if not first.get('go') or not first.get('holder'):
            return None, 'the first pass of the distrust did not go ahead'
        stage = (first.get('distrust') or {}).get('stage')
        if stage != 'replacing':
            return None, None  # already complete: nothing more to do in this run
        members = self.cluster_members(task_vars, cfg)
        clusters = self.cluster_facts(task_vars, members, first)
        if not decisions.all_clusters_proven(clusters, len(members), first['sha256']):
            return None, ('The distrusted intermediate stays in the bundle: not every cluster proved its replacement and '
                          're-issued its leaves (%d of %d did not). Re-run playbooks/distrust.yml'
                          % (decisions.unproven_count(clusters, len(members)), len(members)))
        return first['holder'], None

    def run_step(self, args, cfg, task_vars):
        kind = self._kind(args)
        host = task_vars.get('inventory_hostname')
        self.check_connection_options(cfg)
        holder = self.holder(host, kind)
        if args['mode'] == 'distrust_complete':
            holder, why = self._second_pass(task_vars, cfg)
            if holder is None:
                self.say(why)
                return {'changed': False, 'msg': why or 'the distrust is complete'}
        elif kind == 'distrust' and not cfg.distrust_epoch:
            raise ConfigError('ca_rotation_distrust_epoch is not set: give the epoch to distrust, e.g. '
                              '-e ca_rotation_distrust_epoch=<n> (status.yml lists the epochs)', 'ca_rotation_distrust_epoch')
        cfg.live_secret_locations = self.live_secret_locations(task_vars, cfg)
        clients = self.new_clients(cfg)
        timings = self.new_timings()
        step = {'rollback': authority.prepare_rollback, 'distrust': distrust_steps.run}.get(kind, authority.rotate)
        extra = {}
        if args['mode'] == 'distrust_complete':
            extra['first_pass'] = (self.template_var(task_vars, AUTHORITY_FACT) or {}).get('distrust')
        try:
            res = step(cfg, clients, holder, self.started_at(), timings, check_mode=self._task.check_mode, **extra)
        finally:
            clients.close()
        self.say(res.msg)
        done = 'bundle %s of epoch %s, generation %s' % ((res.sha256 or '')[:16], res.epoch, res.generation)
        return {'changed': bool(res.changed), 'msg': res.msg or (done if res.go else 'did not go ahead'),
                'ansible_facts': {AUTHORITY_FACT: res.to_fact()}}

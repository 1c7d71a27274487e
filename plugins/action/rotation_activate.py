# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of securetransport.ca_rotation.rotation_activate (documented in plugins/modules)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import finish
from ansible_collections.securetransport.ca_rotation.plugins.plugin_utils._engine_action import (
    AUTHORITY_FACT,
    EngineAction,
)

ACTIVATION_FACT = 'ca_rotation_activation_result'


class ActionModule(EngineAction):

    ARGUMENT_SPEC = {'mode': {'type': 'str', 'default': 'rotate', 'choices': ['rotate', 'rollback', 'distrust']}}

    def on_config_error(self, err, args):
        return self._failed('%s. Nothing was activated.' % err, err.option)

    def on_error(self, err, args, trace):
        return self._failed('%s failed: %s. Nothing was activated.' % (
            'Completing the rollback' if args.get('mode') == 'rollback' else 'Activation', err))

    def _failed(self, msg, option=None):
        """Recorded in the activation result, never a failed task: the finish step must still release the lock, write
        the report and fail the run with it."""
        if not self.authority_went_ahead():
            return {'changed': False, 'skipped': True, 'msg': 'the authority step did not go ahead',
                    'ansible_facts': {ACTIVATION_FACT: {'changed': False, 'epoch': None}}}
        self.say(msg)
        out = {'changed': False, 'msg': msg, 'ansible_facts': {
            ACTIVATION_FACT: {'changed': False, 'epoch': None, 'activated': False, 'error': msg, 'timings': {}}}}
        if option:
            out['option'] = option
        return out

    def run_step(self, args, cfg, task_vars):
        auth = self.template_var(task_vars, AUTHORITY_FACT) or {'go': False}
        members = self.cluster_members(task_vars, cfg)
        clusters = self.cluster_facts(task_vars, members, auth)
        if not auth.get('go'):
            return {'changed': False, 'skipped': True, 'msg': 'the authority step did not go ahead',
                    'ansible_facts': {ACTIVATION_FACT: {'changed': False, 'epoch': None}}}
        cfg.live_secret_locations = self.live_secret_locations(task_vars, cfg)
        clients = self.new_clients(cfg)
        timings = self.new_timings()
        step = {'rollback': finish.complete_rollback, 'distrust': finish.activate_replacement}.get(args['mode'], finish.activate)
        try:
            res = step(cfg, auth, clusters, len(members), clients, timings, check_mode=self._task.check_mode)
        except Exception as err:  # pylint: disable=broad-except  # the finish step reports it and fails the run
            res = {'changed': False, 'epoch': None, 'activated': False, 'timings': timings.as_dict(),
                   'error': '%s failed: %s' % ('Completing the rollback' if args['mode'] == 'rollback' else 'Activation', err)}
            res['msg'] = res['error']
        finally:
            clients.close()
        self.say(res.get('msg'))
        done = 'epoch %s activated' % res['epoch'] if res.get('activated') else 'nothing to activate'
        return {'changed': bool(res['changed']), 'msg': res.get('msg') or done, 'ansible_facts': {ACTIVATION_FACT: res}}

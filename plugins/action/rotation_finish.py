# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of securetransport.ca_rotation.rotation_finish (documented in plugins/modules)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import finish
from ansible_collections.securetransport.ca_rotation.plugins.plugin_utils._engine_action import (
    AUTHORITY_FACT,
    REPORT_FACT,
    EngineAction,
)
from ansible_collections.securetransport.ca_rotation.plugins.action.rotation_activate import ACTIVATION_FACT


class ActionModule(EngineAction):

    ARGUMENT_SPEC = {'mode': {'type': 'str', 'default': 'rotate', 'choices': ['rotate', 'rollback']}}

    def on_config_error(self, err, args):
        """Still write the report (the authority step refused the same input before changing anything)."""
        task_vars = self._task_vars
        auth = self.template_var(task_vars, AUTHORITY_FACT) or {'go': False}
        msg = '%s. Nothing was changed.' % err
        report = finish.run_report(dict(auth, error=auth.get('error') or msg), [], {}, finish.isoformat(finish.utcnow()))
        report['msg'] = finish.failure_message(report)
        path = self.template_var(task_vars, 'ca_rotation_report_file')
        if path:
            finish.write_report(path, report)
        return {'failed': True, 'changed': False, 'msg': report['msg'], 'option': err.option}

    def complete_rollback(self, cfg, auth, clusters, expected, clients):
        timings = self.new_timings()
        try:
            res = finish.complete_rollback(cfg, auth, clusters, expected, clients, timings, check_mode=self._task.check_mode)
        except Exception as err:  # pylint: disable=broad-except  # reported, and the run fails, after the lock is released
            res = {'changed': False, 'epoch': None, 'timings': timings.as_dict(), 'error': 'Completing the rollback failed: %s' % err}
        self.say(res.get('msg'))
        return res

    def run_step(self, args, cfg, task_vars):
        auth = self.template_var(task_vars, AUTHORITY_FACT) or {'go': False, 'error': 'the authority step did not run'}
        clusters = self.cluster_facts(task_vars, cfg, auth)
        clients = self.new_clients(cfg)
        try:
            if args['mode'] == 'rollback':
                # announce kind: rollback, record it and set the hold - once every cluster is back on the restored bundle
                cfg.live_secret_locations = self.live_secret_locations(task_vars, cfg)
                activation = self.complete_rollback(cfg, auth, clusters, len(self.cluster_hosts(task_vars, cfg)), clients)
            else:
                activation = self.template_var(task_vars, ACTIVATION_FACT) or {}
            report = finish.finish(cfg, auth, clusters, activation, clients, check_mode=self._task.check_mode)
        finally:
            clients.close()
        if not report['ok']:
            # the report is in ca_rotation_report_file; the failure says only what failed
            return {'changed': False, 'failed': True, 'msg': report['msg']}
        self.say(report['msg'])
        return {'changed': False, 'msg': report['msg'], 'ansible_facts': {REPORT_FACT: report}}

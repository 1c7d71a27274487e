# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of securetransport.ca_rotation.rotation_finish (documented in plugins/modules)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import finish
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.clients import Clients
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import DEFAULTS, PKI_DEFAULTS
from ansible_collections.securetransport.ca_rotation.plugins.plugin_utils._engine_action import (
    AUTHORITY_FACT,
    CLUSTER_FACT,
    REPORT_FACT,
    EngineAction,
)
from ansible_collections.securetransport.ca_rotation.plugins.action.rotation_activate import ACTIVATION_FACT


class ActionModule(EngineAction):

    ARGUMENT_SPEC = {'mode': {'type': 'str', 'default': 'rotate', 'choices': ['rotate', 'rollback', 'distrust']}}

    def on_config_error(self, err, args):
        """Still release the lock and write the report (usually the authority step refused the same input before it
        changed anything)."""
        out = self._fail_without_config('%s. Nothing was changed.' % err)
        out['option'] = err.option
        return out

    def on_error(self, err, args, trace):
        out = self._fail_without_config('The finish step failed: %s.' % err)
        out['exception'] = trace
        return out

    def _var(self, name, default=None):
        try:
            value = self.template_var(self._task_vars, name)
        except Exception:  # pylint: disable=broad-except  # the error may be in that very variable
            return default
        return default if value is None else value

    def _fail_without_config(self, msg):
        """Release this run's lock and write the report with what can still be read; fail the run with ``msg``."""
        auth = self._var(AUTHORITY_FACT) or {'go': False}
        if not auth.get('error'):
            auth = dict(auth, error=msg)
        released = self._release_lock(auth)
        if released:
            auth = dict(auth, error='%s %s' % (auth['error'], released))
        report = finish.run_report(auth, [], self._var(ACTIVATION_FACT) or {}, finish.isoformat(finish.utcnow()))
        report['msg'] = finish.failure_message(report) or msg
        path = self._var('ca_rotation_report_file')
        if path:
            try:
                finish.write_report(path, report)
            except Exception as err:  # pylint: disable=broad-except  # the run fails with its own message anyway
                report['msg'] += ' Writing the report %s failed: %s.' % (path, err)
        return {'failed': True, 'changed': False, 'msg': report['msg']}

    def _release_lock(self, auth):
        """Release the lock of this run without a full configuration; None when done or not held, else why not."""
        if not (auth.get('go') and auth.get('holder')) or self._task.check_mode:
            return None
        pki = self._var('ca_rotation_pki') or {}
        mount = (pki.get('kv_mount') if isinstance(pki, dict) else None) or PKI_DEFAULTS['kv_mount']
        clients = Clients(self._var('ca_rotation_openbao') or {}, {})
        try:
            _state.release_lock(clients.openbao(), auth['holder'], mount, self._var('ca_rotation_state_path', DEFAULTS['state_path']))
        except Exception as err:  # pylint: disable=broad-except
            return 'Releasing the rotation lock failed: %s; it expires by itself within one epoch.' % err
        finally:
            clients.close()
        return None

    def missing_clusters(self, task_vars, members, auth):
        """A failed result for every cluster host without a result of this run (its step failed as a task, or the
        host was unreachable): a cluster that did not report is a cluster that did not prove anything."""
        if not auth.get('go'):
            return []
        out = []
        for hosts in members.values():
            if len(hosts) > 1:
                continue  # judged from its hosts' results, a missing host included (cluster_facts)
            host = hosts[0]
            fact = self.fact_of(task_vars, host, CLUSTER_FACT)
            if fact and fact.get('holder') == auth.get('holder'):
                continue
            out.append({'ok': False, 'cluster': host, 'holder': auth.get('holder'), 'reloaded': False, 'servers': [],
                        'error': 'no result of this run from cluster host %s: its step did not complete (the host failed '
                                 'or was unreachable; see its task above)' % host})
        return out

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
        members = self.cluster_members(task_vars, cfg)
        clusters = self.cluster_facts(task_vars, members, auth)
        clients = self.new_clients(cfg)
        try:
            if args['mode'] == 'rollback':
                # announce kind: rollback, record it and set the hold - once every cluster is back on the restored bundle
                cfg.live_secret_locations = self.live_secret_locations(task_vars, cfg)
                activation = self.complete_rollback(cfg, auth, clusters, len(members), clients)
            else:
                activation = self.template_var(task_vars, ACTIVATION_FACT) or {}
            clusters = clusters + self.missing_clusters(task_vars, members, auth)
            report = finish.finish(cfg, auth, clusters, activation, clients, check_mode=self._task.check_mode)
        finally:
            clients.close()
        if not report['ok']:
            # the report is in ca_rotation_report_file; the failure says only what failed
            return {'changed': False, 'failed': True, 'msg': report['msg']}
        self.say(report['msg'])
        return {'changed': False, 'msg': report['msg'], 'ansible_facts': {REPORT_FACT: report}}

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Base class of the rotation engine's controller-side action plugins.

Each tier step is one task: the action reads the ``ca_rotation_*`` variables of its host once, runs the
engine in the controller (one OpenBao login, no module process), and returns the step's typed result
as a fact. The matching ``plugins/modules/<name>.py`` only documents it.
"""

from __future__ import annotations

import datetime
import secrets
import traceback

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import config as _config
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.clients import Clients
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import (
    Timings,
    group_clusters,
    this_runs_clusters,
)

display = Display()

AUTHORITY_FACT = 'ca_rotation_authority_result'
CLUSTER_FACT = 'ca_rotation_cluster_result'
REPORT_FACT = 'ca_rotation_run_report'


class EngineAction(ActionBase):
    """Reads the host's configuration, validates the task options, maps engine errors to a failed result once."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    #: the task's own options: ``{name: argument spec}``
    ARGUMENT_SPEC = {}

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        self._task_vars = task_vars
        result = super().run(tmp, task_vars)
        validation, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        if validation.error_messages:
            result.update(failed=True, msg='; '.join(validation.error_messages))
            return result
        try:
            cfg = self.host_config(task_vars)
            result.update(self.run_step(args, cfg, task_vars))
        except _config.ConfigError as err:
            result.update(self.on_config_error(err, args))
        except Exception as err:  # pylint: disable=broad-except  # AnsibleError too: an undefined variable, a bad template
            result.update(self.on_error(err, args, traceback.format_exc()))
        return result

    # ------------------------------------------------------------------ configuration
    def template_var(self, task_vars, name, default=None):
        if name not in task_vars:
            return default
        return self._templar.template(task_vars[name])

    def host_config(self, task_vars):
        """The :class:`Config` of this host, from its ``ca_rotation_*`` variables (templated once)."""
        def lookup(name):
            if name not in task_vars:
                raise KeyError(name)
            return self._templar.template(task_vars[name])
        return _config.from_vars(lookup, host=task_vars.get('inventory_hostname'))

    @staticmethod
    def check_connection_options(cfg):
        """Unknown keys in the connection dicts are typos: refuse them before anything is contacted."""
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NATS_ARG_SPEC
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC
        checks = [('openbao', cfg.openbao, OPENBAO_ARG_SPEC['openbao']['options'])]
        if (cfg.announce or cfg.renew_client_leaf) and cfg.authority_nats:
            checks.append(('authority_nats', cfg.authority_nats, NATS_ARG_SPEC['nats']['options']))
        for name, value, spec in checks:
            validator = ArgumentSpecValidator(spec)
            res = validator.validate(dict(value))
            unsupported = [m for m in res.error_messages if 'Unsupported parameters' in m]
            if unsupported:
                raise _config.ConfigError('%s%s: %s' % (_config.PREFIX, name, unsupported[0]), _config.PREFIX + name)

    def other_host_config(self, task_vars, host):
        """The :class:`Config` of another inventory host (its hostvars, with this collection's defaults)."""
        hostvars = task_vars['hostvars'][host]

        def lookup(name):
            if name not in hostvars:
                raise KeyError(name)
            return self._templar.template(hostvars[name])
        return _config.from_vars(lookup, host=host)

    def authority_host(self, task_vars, cfg):
        hosts = (task_vars.get('groups') or {}).get(cfg.authority_group) or []
        return hosts[0] if hosts else None

    def cluster_hosts(self, task_vars, cfg):
        return list((task_vars.get('groups') or {}).get(cfg.nats_group) or [])

    def fact_of(self, task_vars, host, name):
        """A fact another step set on ``host`` in this run (None when it did not run)."""
        if host is None:
            return None
        hostvars = task_vars['hostvars'][host]
        if name not in hostvars:
            return None
        return self._templar.template(hostvars[name])

    def live_secret_locations(self, task_vars, cfg):
        """``namespace/name`` of the live CA Secret of every cluster that is delivered by Secret.

        Reading every cluster's configuration here also refuses bad input before the lock is taken."""
        out = []
        for host in self.cluster_hosts(task_vars, cfg):
            try:
                cc = _config.ClusterConfig(self.other_host_config(task_vars, host), host)
            except _config.ConfigError as err:
                raise _config.ConfigError('cluster host %s: %s' % (host, err), err.option) from None
            if cc.delivery == 'secret':
                location = '%s/%s' % (cc.namespace, cc.live_secret)
                if location not in out:
                    out.append(location)
        return out

    # ------------------------------------------------------------------ helpers for the steps
    @staticmethod
    def new_clients(cfg, kubernetes=None):
        return Clients(cfg.openbao, kubernetes if kubernetes is not None else cfg.authority_kubernetes)

    @staticmethod
    def new_timings():
        return Timings()

    @staticmethod
    def started_at():
        return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')

    @staticmethod
    def holder(host, kind):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S')
        nonce = ''.join(secrets.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _i in range(8))
        return '%s-%s%s-%s' % (host, 'rollback-' if kind == 'rollback' else '', stamp, nonce)

    @staticmethod
    def say(msg):
        if msg:
            display.display(msg)

    def authority_fact(self):
        """This run's authority result (read from its fact, without this host's configuration), or ``{}``."""
        task_vars = self._task_vars
        hosts = (task_vars.get('groups') or {}).get(self.template_var(task_vars, 'ca_rotation_authority_group',
                                                                      _config.DEFAULTS['authority_group'])) or []
        return (self.fact_of(task_vars, hosts[0], AUTHORITY_FACT) if hosts else None) or {}

    def authority_went_ahead(self):
        return bool(self.authority_fact().get('go'))

    def cluster_members(self, task_vars, cfg):
        """``{cluster name: [inventory hosts]}`` of the cluster group, in inventory order: a host's
        ``ca_rotation_cluster_name`` (default: its own name); hosts sharing one form a cluster spread over hosts."""
        members = {}
        for host in self.cluster_hosts(task_vars, cfg):
            name = self.fact_of(task_vars, host, 'ca_rotation_cluster_name') or host
            members.setdefault(str(name), []).append(host)
        return members

    def cluster_facts(self, task_vars, members, auth):
        """The cluster results of this run: one per cluster host that reported, and one per cluster spread over
        several hosts, judged from its hosts' results (``results.group_clusters``). ``members``: from
        :meth:`cluster_members`."""
        hosts = [h for names in members.values() for h in names]
        return group_clusters(this_runs_clusters([self.fact_of(task_vars, h, CLUSTER_FACT) for h in hosts], auth), members, auth)

    def on_config_error(self, err, args):
        """The result for a configuration error found before anything was changed."""
        return {'failed': True, 'changed': False, 'msg': '%s. Nothing was changed.' % err, 'option': err.option}

    def on_error(self, err, args, trace):
        """The result for any other error of the step (AnsibleError included: an undefined variable, a bad template).

        The steps before the finish step override this: a failed task would drop its host from the later plays and
        the finish step (release the lock, write the report, fail the run) would not run, so their failure is their
        result, recorded in their fact."""
        return {'failed': True, 'changed': False, 'msg': '%s failed: %s' % (self._task.action, err), 'exception': trace}

    def run_step(self, args, cfg, task_vars):
        raise NotImplementedError

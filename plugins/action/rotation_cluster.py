# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of securetransport.ca_rotation.rotation_cluster (documented in plugins/modules)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import cert_sha256, load_cert
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import issuer_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import cluster, distrust, refusal
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import ClusterConfig, ConfigError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.hoststeps import (
    MODULE,
    LocalSteps,
    RemoteSteps,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import cluster_result
from ansible_collections.securetransport.ca_rotation.plugins.plugin_utils._engine_action import (
    AUTHORITY_FACT,
    CLUSTER_FACT,
    EngineAction,
)


class ActionModule(EngineAction):

    ARGUMENT_SPEC = {'phase': {'type': 'str', 'default': 'deliver', 'choices': ['deliver', 'renew', 'restore', 'distrust']}}

    def _steps(self, cc, task_vars):
        """In the controller, or on the inventory host (one module call per step) for servers on other machines."""
        local = self._connection.transport in ('local', 'ansible.builtin.local')
        run_on = cc.run_on if cc.run_on != 'auto' else ('controller' if local else 'host')
        if run_on == 'controller':
            return LocalSteps()
        if not cluster.uses_host_steps(cc):
            if cc.delivery == 'file':
                raise ConfigError('cluster %s: file delivery with transport %s would write the CA files on the controller, '
                                  'not on the host; use transport signal or command (the files are written where the servers '
                                  'run) or delivery secret' % (cc.name, cc.transport), 'ca_rotation_nats_reload_transport')
            return LocalSteps()  # Kubernetes and $SYS are reached from the controller

        def execute(args):
            return self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        # a loopback url names the machine itself: reach it at its own address (on this machine, loopback is right)
        probe_host = None if local else (self.template_var(task_vars, 'ansible_host') or task_vars.get('inventory_hostname'))
        return RemoteSteps(execute, probe_host=probe_host)

    def on_config_error(self, err, args):
        return self._failed('%s. Nothing was changed on this cluster.' % err, err.option)

    def on_error(self, err, args, trace):
        return self._failed('The %s phase failed: %s' % (args.get('phase') or 'deliver', err))

    def _failed(self, msg, option=None):
        if not self.authority_went_ahead():
            return {'changed': False, 'skipped': True, 'msg': 'the authority step did not go ahead',
                    'ansible_facts': {CLUSTER_FACT: None}}
        # recorded as this cluster's failure: activation waits, and the finish step releases the lock and fails the run
        try:
            name = self.template_var(self._task_vars, 'ca_rotation_cluster_name')
        except Exception:  # pylint: disable=broad-except  # the error may be in that very variable
            name = None
        host = self._task_vars.get('inventory_hostname')
        name = name or host
        self.say('Cluster %s FAILED: %s' % (name if name == host else '%s (host %s)' % (name, host), msg))
        out = {'changed': False, 'msg': msg,
               'ansible_facts': {CLUSTER_FACT: cluster_result(name, self.authority_fact(), False, error=msg, host=host).to_fact()}}
        if option:
            out['option'] = option
        return out

    def _prove_distrust(self, res, cc, auth, steps, timings):
        """Once the bundle without the distrusted intermediate is in place: every server must refuse its witness leaf,
        alone and with the intermediate, on the client and route ports (nothing is proven in check mode)."""
        dis = auth.get('distrust') or {}
        if dis.get('stage') != 'complete' or self._task.check_mode:
            return
        witness = dis.get('witness') or {}
        if not witness.get('exists'):
            res['distrust_proof'] = {'ok': False, 'servers': [], 'accepted': [], 'errors': [
                'no witness leaf of the distrusted intermediate (it was revoked before one was issued): the refusal is '
                'not proven']}
        else:
            with timings.step('prove_distrust'):
                probe = cluster.probe_options(auth)
                try:
                    targets = refusal.server_addresses(cc)
                except ReloadError as exc:
                    res['distrust_proof'] = {'ok': False, 'servers': [], 'accepted': [], 'errors': ['cannot list the servers: %s' % exc]}
                else:
                    res['distrust_proof'] = refusal.prove_refused(targets, witness, getattr(steps, 'probe_host', None),
                                                                  ca_file=probe['ca_file'], partial_chain=probe['partial_chain'])
        res.setdefault('timings', {}).update(timings.as_dict())
        proof = res['distrust_proof']
        if not proof['ok']:
            what = ['still accepted by %s' % ', '.join(proof['accepted'])] if proof['accepted'] else []
            what += proof['errors'] or ([] if proof['servers'] else ['no server has a url to try'])
            res.update(ok=False, error='the refusal of distrusted epoch %s is not proven: %s' % (dis.get('epoch'), '; '.join(what)))

    @staticmethod
    def _unmanaged_why(cc):
        """Why this collection does not issue the certificates of some of a cluster's servers."""
        if not cc.renew_leaves:
            return 'ca_rotation_nats_reload_renew_leaves is off'
        if cc.transport == 'kubernetes' and not cc.targets:
            return 'transport kubernetes: the pods\' certificates come from their Secret (e.g. cert-manager)'
        return 'the inventory gives them no cert_file and key_file'

    def _distrusted_leaves(self, cc, cfg, auth, clients, steps):
        """None, or why this cluster must keep the distrusted intermediate: servers whose certificate this collection
        does not issue still present one it signed (a bundle without it would leave them untrusted)."""
        dis = auth.get('distrust') or {}
        if distrust.expired(dis, cfg.now):
            return None  # nothing it signed verifies any more, with or without it in the bundle
        # through the unauthenticated issuer endpoints, as leaf renewal reads them (the cluster's token may only sign)
        issuers = issuer_certificates(clients.openbao(), cfg.pki['int_mount']).values()
        pem = next((i['certificate'] for i in issuers
                    if i.get('certificate') and cert_sha256(load_cert(i['certificate'])) == dis.get('sha256')), None)
        if pem is None:
            return None  # deleted: nothing it signed verifies any more either way
        default = next((i.get('issuer_name') for i in issuers if i.get('is_default')), None)
        found = refusal.still_served(cc, pem, cluster.probe_options(auth), getattr(steps, 'probe_host', None))
        why = []
        if found['signed']:
            if default == dis.get('issuer_name') or default is None:
                # the replacement was not activated (a cluster did not prove it): it becomes the default first
                source = ('its replacement %s once that is the default (after every cluster proved the bundle that holds '
                          'it)' % dis['activate'] if dis.get('activate') else 'the default issuer, once one is set')
            else:
                source = 'the default issuer %s' % default
            why.append('%s still present%s a certificate signed by the distrusted intermediate %s, and this collection does '
                       'not issue %s certificates (%s): re-issue them from %s (with cert-manager: cmctl renew the '
                       'Certificate), let the servers load them, then re-run playbooks/distrust.yml -e '
                       'ca_rotation_distrust_epoch=%s. The distrusted intermediate stays in the bundle until then, so that '
                       'they stay trusted' % (', '.join(found['signed']), 's' if len(found['signed']) == 1 else '',
                                              dis.get('issuer_name'), 'its' if len(found['signed']) == 1 else 'their',
                                              self._unmanaged_why(cc), source, dis.get('epoch')))
        why.extend(found['errors'])
        return '; '.join(why) or None

    def _distrusted_leaves_safe(self, cc, cfg, auth, clients, steps, timings):
        """:meth:`_distrusted_leaves`, its own failure a reason too (not known to be safe)."""
        with timings.step('distrusted_leaves'):
            try:
                return self._distrusted_leaves(cc, cfg, auth, clients, steps)
            except Exception as exc:  # pylint: disable=broad-except
                return 'the certificates the servers present could not be checked: %s' % exc

    def _distrust_blocked(self, cc, cfg, auth, clients, steps, timings):
        """A failed cluster result when the bundle without the distrusted intermediate must not be delivered yet."""
        why = self._distrusted_leaves_safe(cc, cfg, auth, clients, steps, timings)
        if why is None:
            return None
        return cluster_result(cc.name, auth, False, error='Not delivering the bundle without the distrusted intermediate: '
                              + why, host=cc.host, min_success=cc.min_success, timings=timings.as_dict()).to_fact()

    def run_step(self, args, cfg, task_vars):
        host = task_vars.get('inventory_hostname')
        cc = ClusterConfig(cfg, host)
        cc.hosts = self.cluster_members(task_vars, cfg).get(cc.name) or [host]
        auth = self.fact_of(task_vars, self.authority_host(task_vars, cfg), AUTHORITY_FACT) or {'go': False}
        if not auth.get('go'):
            # no result of an earlier run may stand in for this one (persistent fact caches)
            return {'changed': False, 'skipped': True, 'msg': 'the authority step did not go ahead',
                    'ansible_facts': {CLUSTER_FACT: None}}
        stage = (auth.get('distrust') or {}).get('stage')
        previous = self.template_var(task_vars, CLUSTER_FACT)
        if (previous or {}).get('holder') != auth.get('holder'):
            previous = None  # an earlier run's result, from a fact cache
        if args['phase'] == 'distrust' and stage != 'complete':
            # the distrust's second pass did not go ahead: no new bundle to deliver; the earlier phases' result stands
            return {'changed': False, 'msg': 'the distrusted intermediate stays in the bundle', 'ansible_facts': {CLUSTER_FACT: previous}}
        steps = self._steps(cc, task_vars)
        clients = self.new_clients(cfg, kubernetes=cc.kubernetes)
        timings = self.new_timings()
        try:
            blocked = None
            if args['phase'] in ('deliver', 'distrust') and stage == 'complete':
                blocked = self._distrust_blocked(cc, cfg, auth, clients, steps, timings)
            if blocked is not None:
                res, changed = blocked, False
            elif args['phase'] == 'renew':
                res = cluster.renew_leaves(cfg, cc, auth, previous, clients, timings, check_mode=self._task.check_mode,
                                           steps=steps)
                changed = bool(res.get('renewed'))
                if stage == 'replacing' and res.get('ok', True):
                    # the second pass takes the distrusted intermediate out only once no server presents a leaf of it
                    why = self._distrusted_leaves_safe(cc, cfg, auth, clients, steps, timings)
                    if why is not None:
                        res.update(ok=False, error='The distrusted intermediate stays in the bundle: ' + why)
            elif args['phase'] == 'restore':
                # rollback: server leaves from the restored epoch first (trusted by the bundle still in place), then the
                # restored bundle
                renewed = cluster.renew_leaves(cfg, cc, auth, None, clients, timings, check_mode=self._task.check_mode,
                                               steps=steps)
                obj = cluster.deliver_and_prove(cfg, cc, auth, clients, timings, check_mode=self._task.check_mode,
                                                steps=steps)
                res = obj.to_fact()
                res['renewed'] = renewed.get('renewed', [])
                if not renewed.get('ok', True):
                    res.update(ok=False, error='; '.join(e for e in (renewed.get('error'), res.get('error')) if e))
                changed = obj.changed or bool(res['renewed'])
            else:
                obj = cluster.deliver_and_prove(cfg, cc, auth, clients, timings, check_mode=self._task.check_mode,
                                                steps=steps)
                res = obj.to_fact()
                changed = obj.changed
                if args['phase'] == 'distrust' and res.get('ok'):
                    self._prove_distrust(res, cc, auth, steps, timings)
        finally:
            clients.close()
        res['module_calls'] = int(res.get('module_calls') or 0) + getattr(steps, 'calls', 0)
        label = '%s (host %s)' % (cc.name, host) if cc.spread else cc.name
        if not res.get('ok'):
            self.say('Cluster %s FAILED: %s.%s' % (label, res.get('error'), '' if res.get('rollback') else ' No rollback was done.'))
        return {'changed': changed, 'msg': 'cluster %s %s' % (label, 'ok' if res.get('ok') else 'FAILED'),
                'ansible_facts': {CLUSTER_FACT: res}}

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rotation engine's configuration: the ``ca_rotation_*`` inventory variables, read once.

The names and defaults are those of the roles (``roles/*/defaults/main.yml``, documented in their
``meta/argument_specs.yml``); a unit test keeps them in step. The schedule is parsed here, once per
engine call, and handed to every step.
"""

from __future__ import annotations

import copy

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    EpochSchedule,
    now_from_params,
    parse_duration,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import key_spec
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import reload_specs
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.decisions import capped_lock_ttl

PREFIX = 'ca_rotation_'

PKI_DEFAULTS = {
    'root_mount': 'pki',
    'int_mount': 'pki_int',
    'kv_mount': 'secret',
    'transit_mount': 'transit',
    'transit_key': 'ca-bundle-signer',
    'cn_prefix': 'NATS Intermediate CA',
    'key_type': 'ec',
    'key_bits': 0,
    'role': 'nats-leaf',
    #: the ML-DSA family of dual mode (DESIGN section 12): empty = classical only; see MLDSA_DEFAULTS
    'mldsa': {},
}

#: ``ca_rotation_pki.mldsa``: a second chain of trust - its own root mount and intermediate mount - whose epoch
#: intermediates are issued beside the classical ones and carried in the same bundle (``key_bits`` has no default:
#: 44, 65 or 87 must be chosen)
MLDSA_DEFAULTS = {
    'enabled': True,
    'root_mount': 'pki_mldsa',
    'int_mount': 'pki_int_mldsa',
    'cn_prefix': 'NATS ML-DSA Intermediate CA',
    'key_bits': 0,
    'role': None,  # the classical role's name
}

STREAM_DEFAULTS = {
    'name': 'METADATA_CA_CLIENT',
    'subjects': ['metadata.client.ca-cert'],
    'storage': 'file',
    'replicas': 3,
    'max_msgs_per_subject': 10,
    'duplicate_window': '2m',
}

#: variable (without the ``ca_rotation_`` prefix) -> default
DEFAULTS = {
    # shared by every role
    'openbao': {},
    'schedule': {},
    'pki': {},
    'state_path': 'ca-rotation/state',
    'release_hold': False,
    'now': None,
    'authority_group': 'ca_authority',
    'nats_group': 'nats_clusters',
    'report_file': '',
    # authority
    'authority_lock_ttl': '15m',
    'authority_include_root': True,
    'authority_max_certificates': 6,
    'authority_kubernetes': {},
    'authority_epoch_secret': False,
    'authority_epoch_secret_namespace': 'openbao',
    'authority_announce': True,
    'authority_nats': {},
    'authority_renew_client_leaf': False,
    'authority_client_leaf_cn': 'ca-rotation-announcer',
    'authority_client_leaf_renew_before': '50%',
    'authority_stream': STREAM_DEFAULTS,
    'authority_subject': 'metadata.client.ca-cert',
    'authority_probe_dir': '~/.cache/securetransport-ca-rotation/probe',
    'authority_prune': True,
    'authority_prune_grace': '1h',
    'authority_keep_epochs': 8,
    # activation
    'activate_enabled': True,
    # rollback
    'rollback_epoch': 0,
    'rollback_reason': 'rollback',
    #: the validity a rollback must leave (None: two epoch durations); also when a rollback hold ends
    'rollback_min_validity': None,
    # distrust (playbooks/distrust.yml)
    'distrust_epoch': 0,
    'distrust_force_intermediates_only': False,
    'distrust_reason': 'key compromise',
    # one NATS cluster (or VM group) per inventory host
    'cluster_name': None,  # the role default: inventory_hostname
    'nats_reload_transport': 'signal',
    'nats_reload_delivery': None,  # the role default: secret with transport=kubernetes, else file
    'nats_reload_targets': [],
    'nats_reload_kubernetes': {},
    'nats_reload_namespace': 'nats',
    'nats_reload_label_selector': 'app=nats',
    'nats_reload_container': 'nats',
    'nats_reload_live_secret': 'nats-ca-tls',
    'nats_reload_secret_key': 'ca.crt',
    'nats_reload_pod_ca_file': '/etc/nats/ca/ca.crt',
    'nats_reload_command': ['kill', '-HUP', '1'],
    'nats_reload_system': {},
    'nats_reload_file_mode': '0644',
    'nats_reload_probe': True,
    'nats_reload_min_success': 0,
    'nats_reload_propagation_timeout': 180,
    'nats_reload_reload_timeout': 30,
    'nats_reload_rollback': True,
    'nats_reload_renew_leaves': False,
    'nats_reload_leaf_renew_before': '50%',
    'nats_reload_leaf_family': 'classical',  # dual mode: the key family of the leaves the servers present
    'nats_reload_run_on': 'auto',  # where the host-local steps run: controller | host | auto (by the host's connection)
}

SCHEDULE_KEYS = ('epoch_zero', 'epoch_duration', 'validity', 'lead_time', 'skew_allowance')
TRANSPORTS = ('signal', 'command', 'kubernetes', 'system')
DELIVERIES = ('file', 'secret')


class ConfigError(ValueError):
    """A variable has a value the engine cannot use; ``option`` names it."""

    def __init__(self, msg, option=None):
        super().__init__(msg)
        self.option = option


def _bool(value, name):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ('true', 'yes', 'on', '1', 'false', 'no', 'off', '0'):
        return value.strip().lower() in ('true', 'yes', 'on', '1')
    raise ConfigError('%s%s must be true or false, got %r' % (PREFIX, name, value), PREFIX + name)


def _int(value, name, minimum=None):
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError('%s%s must be an integer, got %r' % (PREFIX, name, value), PREFIX + name) from None
    if minimum is not None and number < minimum:
        raise ConfigError('%s%s must be at least %d, got %d' % (PREFIX, name, minimum, number), PREFIX + name)
    return number


def _dict(value, name):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError('%s%s must be a mapping, got %s' % (PREFIX, name, type(value).__name__), PREFIX + name)
    return dict(value)


def _mldsa_family(pki):
    """``ca_rotation_pki.mldsa`` checked: None when absent, else the family's settings (``enabled`` false: configured
    but switched off - its certificates leave the bundle on the next run)."""
    given = pki.get('mldsa')
    if given in (None, {}):
        return None
    option = PREFIX + 'pki.mldsa'
    if not isinstance(given, dict):
        raise ConfigError('%s must be a mapping (enabled, root_mount, int_mount, key_bits, cn_prefix, role), got %s'
                          % (option, type(given).__name__), option)
    unknown = sorted(set(given) - set(MLDSA_DEFAULTS))
    if unknown:
        raise ConfigError('%s has unknown key(s) %s; the keys are %s' % (option, ', '.join(unknown),
                                                                         ', '.join(sorted(MLDSA_DEFAULTS))),
                          option + '.' + unknown[0])
    spec = dict(MLDSA_DEFAULTS, **{k: v for k, v in given.items() if v is not None})
    spec['enabled'] = _bool(spec['enabled'], 'pki.mldsa.enabled')
    spec['role'] = spec['role'] or pki['role']
    try:
        spec['key_type'], spec['key_bits'] = key_spec('mldsa', spec['key_bits'], option + '.key_type')
    except ValueError:
        raise ConfigError('%s.key_bits must be 44, 65 or 87 (the ML-DSA parameter set, always chosen: OpenBao would '
                          'take 44; 65 is the one nats-server is known to serve and verify), got %r. Nothing was changed'
                          % (option, given.get('key_bits')), option + '.key_bits') from None
    for key in ('root_mount', 'int_mount'):
        clash = [k for k in ('root_mount', 'int_mount') if pki[k] == spec[key]]
        if clash:
            raise ConfigError('%s.%s is %r, the classical %spki.%s: each family has its own mounts (its own root and '
                              'intermediates); give the ML-DSA family other mounts' % (option, key, spec[key], PREFIX, clash[0]),
                              '%s.%s' % (option, key))
    if spec['root_mount'] == spec['int_mount']:
        raise ConfigError('%s.root_mount and .int_mount are both %r: the root and the epoch intermediates live on '
                          'different mounts' % (option, spec['root_mount']), option + '.int_mount')
    return spec


def family_mounts(cfg, enabled_only=True):
    """``[{family, root_mount, int_mount, role, key_type, key_bits, cn_prefix}]``: the classical family first, then
    the ML-DSA one when it is configured (and, with ``enabled_only``, switched on)."""
    pki = cfg.pki
    out = [{'family': 'classical', 'root_mount': pki['root_mount'], 'int_mount': pki['int_mount'], 'role': pki['role'],
            'key_type': pki['key_type'], 'key_bits': pki['key_bits'], 'cn_prefix': pki['cn_prefix']}]
    mldsa = cfg.mldsa
    if mldsa and (mldsa['enabled'] or not enabled_only):
        out.append({'family': 'mldsa', 'root_mount': mldsa['root_mount'], 'int_mount': mldsa['int_mount'],
                    'role': mldsa['role'], 'key_type': 'mldsa', 'key_bits': mldsa['key_bits'],
                    'cn_prefix': mldsa['cn_prefix']})
    return out


def dual(cfg):
    """True when the ML-DSA family is configured and switched on."""
    return bool(cfg.mldsa and cfg.mldsa['enabled'])


class _LazyVars:
    """Variables without their prefix: given ``values``, else ``lookup`` (read once, when first used), else the default."""

    def __init__(self, values=None, lookup=None):
        self._values = {k: v for k, v in (values or {}).items() if k in DEFAULTS and v is not None}
        self._lookup = lookup

    def __contains__(self, key):
        return key in DEFAULTS

    def __getitem__(self, key):
        if key not in self._values:
            value = None
            if self._lookup is not None:
                try:
                    value = self._lookup(PREFIX + key)
                except KeyError:
                    value = None
            self._values[key] = copy.deepcopy(DEFAULTS[key]) if value is None else value
        return self._values[key]


class Config:
    """Every ``ca_rotation_*`` value of one host, typed, with the schedule parsed once.

    ``values``: the variables without their prefix (missing ones take :data:`DEFAULTS`).
    Attribute access returns the raw (already templated) value: ``cfg.authority_lock_ttl``. With ``lookup``
    (``ca_rotation_<name> -> value``, KeyError when unset) a variable is read, and templated, only when used.
    """

    def __init__(self, values=None, host=None, lookup=None):
        merged = _LazyVars(values, lookup)
        self._v = merged
        self.host = host
        self.openbao = _dict(merged['openbao'], 'openbao')
        schedule_vars = _dict(merged['schedule'], 'schedule')
        unknown = sorted(set(schedule_vars) - set(SCHEDULE_KEYS))
        if unknown:
            raise ConfigError('%sschedule has unknown key(s) %s; the keys are %s' % (
                PREFIX, ', '.join(unknown), ', '.join(SCHEDULE_KEYS)), PREFIX + 'schedule.' + unknown[0])
        params = {k: schedule_vars.get(k) for k in SCHEDULE_KEYS}
        params['now'] = merged['now']
        try:
            self.schedule = EpochSchedule.from_params(params)
            self.now = now_from_params(params)
        except EpochError as err:
            option = err.option or 'schedule'
            raise ConfigError('%s (%s%s)' % (err, PREFIX, 'now' if option == 'now' else 'schedule.' + option),
                              PREFIX + ('now' if option == 'now' else 'schedule.' + option)) from None
        pki = _dict(merged['pki'], 'pki')
        unknown = sorted(set(pki) - set(PKI_DEFAULTS))
        if unknown:
            raise ConfigError('%spki has unknown key(s) %s; the keys are %s' % (
                PREFIX, ', '.join(unknown), ', '.join(sorted(PKI_DEFAULTS))), PREFIX + 'pki.' + unknown[0])
        self.pki = dict(PKI_DEFAULTS, **{k: v for k, v in pki.items() if v is not None})
        try:
            self.pki['key_type'], self.pki['key_bits'] = key_spec(self.pki['key_type'], self.pki['key_bits'],
                                                                  PREFIX + 'pki.key_type')
        except ValueError as exc:
            raise ConfigError(str(exc), PREFIX + 'pki.key_type') from None
        if self.pki['key_type'] == 'mldsa':
            raise ConfigError('%spki.key_type mldsa (ML-DSA-%d) cannot be the only family of the rotation: the announcer '
                              '(nats-py over Python\'s ssl) cannot verify or present ML-DSA certificates, so no bundle '
                              'could be announced or proven. Keep a classical key_type (ec, rsa, ed25519) here and add the '
                              'ML-DSA family with %spki.mldsa (dual mode: key_bits 44, 65 or 87). Nothing was changed'
                              % (PREFIX, self.pki['key_bits'], PREFIX), PREFIX + 'pki.key_type')
        self.pki['mldsa'] = self.mldsa = _mldsa_family(self.pki)
        self.release_hold = _bool(merged['release_hold'], 'release_hold')
        self.state_path = str(merged['state_path'])
        #: capped at one epoch duration (decisions.max_lock_ttl); ``lock_ttl_note`` says when it was
        self.lock_ttl, self.lock_ttl_note = capped_lock_ttl(self._duration('authority_lock_ttl'), self.schedule)
        if self.lock_ttl_note and str(merged['authority_lock_ttl']) == DEFAULTS['authority_lock_ttl']:
            self.lock_ttl_note = None  # the default on a schedule of short epochs: capped as documented, no news
        self.prune_grace = self._duration('authority_prune_grace', allow_zero=True)
        self.include_root = _bool(merged['authority_include_root'], 'authority_include_root')
        self.max_certificates = _int(merged['authority_max_certificates'], 'authority_max_certificates', 1)
        self.keep_epochs = _int(merged['authority_keep_epochs'], 'authority_keep_epochs', 0)
        self.epoch_secret = _bool(merged['authority_epoch_secret'], 'authority_epoch_secret')
        self.announce = _bool(merged['authority_announce'], 'authority_announce')
        self.prune = _bool(merged['authority_prune'], 'authority_prune')
        self.renew_client_leaf = _bool(merged['authority_renew_client_leaf'], 'authority_renew_client_leaf')
        self.activate_enabled = _bool(merged['activate_enabled'], 'activate_enabled')
        self.rollback_epoch = _int(merged['rollback_epoch'], 'rollback_epoch', 0)
        if merged['rollback_min_validity'] in (None, ''):
            self.rollback_min_validity = min(2 * self.schedule.duration, self.schedule.validity // 2)
        else:
            self.rollback_min_validity = self._duration('rollback_min_validity')
        if self.rollback_min_validity >= self.schedule.validity:
            raise ConfigError('%srollback_min_validity is %ds, not less than the validity of an epoch (%ds): no rollback could '
                              'ever be made. Set it below schedule.validity (default: two epoch durations)'
                              % (PREFIX, self.rollback_min_validity, self.schedule.validity), PREFIX + 'rollback_min_validity')
        self.distrust_epoch = _int(merged['distrust_epoch'], 'distrust_epoch', 0)
        self.distrust_force_intermediates_only = _bool(merged['distrust_force_intermediates_only'],
                                                       'distrust_force_intermediates_only')
        self.distrust_reason = str(merged['distrust_reason'] or 'key compromise')
        self.stream = _dict(merged['authority_stream'], 'authority_stream')
        #: ``namespace/name`` of every cluster's live CA Secret, for the announcement (set by the caller)
        self.live_secret_locations = []

    def __getattr__(self, name):
        values = self.__dict__.get('_v')
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def _duration(self, name, allow_zero=False):
        try:
            return parse_duration(self._v[name], PREFIX + name, allow_zero=allow_zero)
        except EpochError as err:
            raise ConfigError(str(err), PREFIX + name) from None

    @property
    def probe_dir(self):
        return self._v['authority_probe_dir']


class ClusterConfig:
    """The ``ca_rotation_nats_reload_*`` values of one cluster host, checked."""

    def __init__(self, cfg, host):
        v = cfg._v  # pylint: disable=protected-access
        self.name = str(v['cluster_name'] or host)
        self.host = host
        #: every inventory host of this cluster (set by the step from the inventory): a cluster spread over several
        #: hosts (VMs sharing ca_rotation_cluster_name) proves per host, and is judged as one cluster after them
        self.hosts = [host]
        self.transport = v['nats_reload_transport']
        if self.transport not in TRANSPORTS:
            raise ConfigError('%snats_reload_transport must be one of %s, got %r' % (PREFIX, ', '.join(TRANSPORTS), self.transport),
                              PREFIX + 'nats_reload_transport')
        self.delivery = v['nats_reload_delivery'] or ('secret' if self.transport == 'kubernetes' else 'file')
        if self.delivery not in DELIVERIES:
            raise ConfigError('%snats_reload_delivery must be file or secret, got %r' % (PREFIX, self.delivery),
                              PREFIX + 'nats_reload_delivery')
        targets = v['nats_reload_targets'] or []
        if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
            raise ConfigError('%snats_reload_targets must be a list of mappings (name, pid_file, ca_file, monitor_url, ...)'
                              % PREFIX, PREFIX + 'nats_reload_targets')
        for index, target in enumerate(targets):
            if not target.get('name'):
                raise ConfigError('%snats_reload_targets[%d] has no name' % (PREFIX, index), PREFIX + 'nats_reload_targets')
            if self.delivery == 'file' and not target.get('ca_file'):
                raise ConfigError('%snats_reload_targets[%d] (%s) has no ca_file, which delivery=file writes'
                                  % (PREFIX, index, target['name']), PREFIX + 'nats_reload_targets')
        if self.transport in ('signal', 'command') and not targets:
            raise ConfigError('%snats_reload_targets is empty: transport=%s needs the servers (name, pid_file or pid, ca_file, '
                              'monitor_url)' % (PREFIX, self.transport), PREFIX + 'nats_reload_targets')
        self.targets = [dict(t) for t in targets]
        self.kubernetes = _dict(v['nats_reload_kubernetes'], 'nats_reload_kubernetes')
        self.system = _dict(v['nats_reload_system'], 'nats_reload_system')
        self.namespace = v['nats_reload_namespace']
        self.label_selector = v['nats_reload_label_selector']
        self.container = v['nats_reload_container']
        self.live_secret = v['nats_reload_live_secret']
        self.secret_key = v['nats_reload_secret_key']
        self.pod_ca_file = v['nats_reload_pod_ca_file']
        command = v['nats_reload_command'] or []
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            raise ConfigError('%snats_reload_command must be a list of strings (argv), for example [kill, -HUP, "1"]; got %r'
                              % (PREFIX, command), PREFIX + 'nats_reload_command')
        self.command = list(command)
        self.file_mode = v['nats_reload_file_mode']
        self.probe = _bool(v['nats_reload_probe'], 'nats_reload_probe')
        self.min_success = _int(v['nats_reload_min_success'], 'nats_reload_min_success', 0)
        self.propagation_timeout = _int(v['nats_reload_propagation_timeout'], 'nats_reload_propagation_timeout', 1)
        self.reload_timeout = _int(v['nats_reload_reload_timeout'], 'nats_reload_reload_timeout', 1)
        self.rollback = _bool(v['nats_reload_rollback'], 'nats_reload_rollback')
        self.renew_leaves = _bool(v['nats_reload_renew_leaves'], 'nats_reload_renew_leaves')
        self.leaf_renew_before = v['nats_reload_leaf_renew_before']
        self.leaf_family = v['nats_reload_leaf_family'] or 'classical'
        if self.leaf_family not in ('classical', 'mldsa'):
            raise ConfigError('%snats_reload_leaf_family must be classical or mldsa, got %r' % (PREFIX, self.leaf_family),
                              PREFIX + 'nats_reload_leaf_family')
        if self.leaf_family == 'mldsa' and not dual(cfg):
            raise ConfigError('%snats_reload_leaf_family is mldsa, but the ML-DSA family is not %s (%spki.mldsa): its '
                              'servers\' leaves would come from a chain the bundle does not hold. Switch the family on or '
                              'keep classical leaves' % (PREFIX, 'switched on' if cfg.mldsa else 'configured', PREFIX),
                              PREFIX + 'nats_reload_leaf_family')
        self.run_on = v['nats_reload_run_on']
        if self.run_on not in ('auto', 'controller', 'host'):
            raise ConfigError('%snats_reload_run_on must be auto, controller or host, got %r' % (PREFIX, self.run_on),
                              PREFIX + 'nats_reload_run_on')

    @property
    def spread(self):
        """True when the cluster's servers are on several inventory hosts."""
        return len(self.hosts) > 1

    @property
    def record_name(self):
        """The proof record this host step keeps: the cluster's own, or for a spread cluster this host's part of it
        (``<cluster>/hosts/<host>``; the cluster's record is written once every host is judged)."""
        return '%s/hosts/%s' % (self.name, self.host) if self.spread else self.name

    @property
    def own_min_success(self):
        """The min_success of this host step: on a spread cluster every server of the host (min_success counts the
        servers of the hosts that proved, across the cluster), else the cluster's."""
        return None if self.spread else (self.min_success or None)

    def reload_targets(self, targets=None):
        """Targets as the reload engine takes them (only the keys it knows)."""
        return reload_specs(self.targets if targets is None else targets)


def from_vars(lookup, host=None):
    """A :class:`Config` from a ``name -> value`` callable (``ca_rotation_<name>``; KeyError when unset)."""
    return Config(host=host, lookup=lookup)

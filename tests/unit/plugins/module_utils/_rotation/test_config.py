# -*- coding: utf-8 -*-
"""The engine's configuration: the same names and defaults as the roles, and clear refusals of bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import config as c

ROLES = Path(__file__).resolve().parents[5] / 'roles'
# role defaults that are templates evaluated by Ansible (the engine gets their value from the task vars)
TEMPLATED = {'cluster_name', 'nats_reload_delivery'}


def role_defaults():
    out = {}
    for path in sorted(ROLES.glob('*/defaults/main.yml')):
        if path.parts[-3] == 'client_bundle':
            continue
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            out.setdefault(key, (value, path.parts[-3]))
    return out


def test_every_role_default_is_an_engine_default_with_the_same_value():
    for key, (value, role) in role_defaults().items():
        assert key.startswith(c.PREFIX), key
        name = key[len(c.PREFIX):]
        assert name in c.DEFAULTS, f'{key} (role {role}) is unknown to the engine'
        if name not in TEMPLATED:
            assert c.DEFAULTS[name] == value, f'{key}: role {role} says {value!r}, the engine {c.DEFAULTS[name]!r}'


def test_defaults_parse_the_schedule_once():
    cfg = c.Config({'schedule': {'epoch_duration': '20s', 'validity': '80s'}, 'now': 1000})
    assert cfg.schedule.duration == 20 and cfg.schedule.validity == 80
    assert cfg.schedule.epoch(cfg.now) == 50
    assert cfg.pki['int_mount'] == 'pki_int' and cfg.lock_ttl == 20  # 15m, capped to one epoch


@pytest.mark.parametrize('values, option', [
    ({'schedule': {'epoch_duration': '20s', 'validty': '80s'}}, 'ca_rotation_schedule.validty'),
    ({'schedule': {'epoch_duration': '20s', 'validity': '10s'}}, 'ca_rotation_schedule.validity'),
    ({'pki': {'int_mnt': 'x'}}, 'ca_rotation_pki.int_mnt'),
    ({'authority_lock_ttl': 'soon'}, 'ca_rotation_authority_lock_ttl'),
    ({'authority_max_certificates': 0}, 'ca_rotation_authority_max_certificates'),
    ({'release_hold': 'maybe'}, 'ca_rotation_release_hold'),
    ({'rollback_min_validity': 'soon'}, 'ca_rotation_rollback_min_validity'),
    ({'schedule': {'epoch_duration': '20s', 'validity': '80s'}, 'rollback_min_validity': '80s'}, 'ca_rotation_rollback_min_validity'),
    ({'openbao': 'http://x'}, 'ca_rotation_openbao'),
])
def test_bad_values_name_the_variable(values, option):
    with pytest.raises(c.ConfigError) as err:
        c.Config(values)
    assert err.value.option == option
    assert option.split('.')[-1] in str(err.value)


@pytest.mark.parametrize('values, option', [
    ({'nats_reload_transport': 'ssh'}, 'ca_rotation_nats_reload_transport'),
    ({'nats_reload_targets': []}, 'ca_rotation_nats_reload_targets'),
    ({'nats_reload_targets': [{'name': 'a', 'pid_file': '/p'}]}, 'ca_rotation_nats_reload_targets'),
    ({'nats_reload_targets': 'a'}, 'ca_rotation_nats_reload_targets'),
    ({'nats_reload_transport': 'kubernetes', 'nats_reload_delivery': 'scp'}, 'ca_rotation_nats_reload_delivery'),
    ({'nats_reload_transport': 'kubernetes', 'nats_reload_reload_timeout': 0}, 'ca_rotation_nats_reload_reload_timeout'),
    ({'nats_reload_transport': 'kubernetes', 'nats_reload_command': 'kill -HUP 1'}, 'ca_rotation_nats_reload_command'),
    ({'nats_reload_transport': 'kubernetes', 'nats_reload_run_on': 'vm'}, 'ca_rotation_nats_reload_run_on'),
])
def test_bad_cluster_values_name_the_variable(values, option):
    with pytest.raises(c.ConfigError) as err:
        c.ClusterConfig(c.Config(values), 'edge')
    assert err.value.option == option


def test_cluster_defaults():
    cc = c.ClusterConfig(c.Config({'nats_reload_transport': 'kubernetes'}), 'prod-east')
    assert cc.name == 'prod-east' and cc.delivery == 'secret' and cc.live_secret == 'nats-ca-tls'
    cc = c.ClusterConfig(c.Config({'cluster_name': 'edge', 'nats_reload_targets': [
        {'name': 'n1', 'pid_file': '/p', 'ca_file': '/ca', 'monitor_url': 'http://x', 'cert_file': '/c', 'key_file': '/k'}]}), 'h')
    assert cc.name == 'edge' and cc.delivery == 'file'
    assert cc.reload_targets() == [{'name': 'n1', 'pid_file': '/p', 'ca_file': '/ca', 'monitor_url': 'http://x'}]


def test_lock_ttl_longer_than_one_epoch_is_capped_and_said():
    cfg = c.Config({'schedule': {'epoch_duration': '10m'}, 'authority_lock_ttl': '1h', 'now': 1000})
    assert cfg.lock_ttl == 600
    assert 'ca_rotation_authority_lock_ttl' in cfg.lock_ttl_note and 'capped to 600s' in cfg.lock_ttl_note
    default = c.Config({'schedule': {'epoch_duration': '10m'}, 'now': 1000})
    assert default.lock_ttl == 600 and default.lock_ttl_note is None  # the default, capped as documented
    fits = c.Config({'schedule': {'epoch_duration': '6h'}, 'now': 1000})
    assert fits.lock_ttl == 900 and fits.lock_ttl_note is None


def test_the_rollback_margin_defaults_to_two_epochs_at_most_half_the_validity():
    assert c.Config({'schedule': {'epoch_duration': '20s', 'validity': '80s'}}).rollback_min_validity == 40
    assert c.Config({'schedule': {'epoch_duration': '20s', 'validity': '40s'}}).rollback_min_validity == 20
    assert c.Config({'schedule': {'epoch_duration': '20s', 'validity': '80s'}, 'rollback_min_validity': '30s'}).rollback_min_validity == 30

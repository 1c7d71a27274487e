# -*- coding: utf-8 -*-
"""The announcement names the configured KV and Secret locations (the YAML version hard-coded nats/nats-ca-tls
and openbao/...), and the authority result has one shape for rotation and rollback."""

from __future__ import annotations

import dataclasses

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import authority, results
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import Config

CERTS = [{'epoch': 8, 'sha256': 'a' * 64, 'not_before': '2026-01-01T00:00:00Z', 'not_after': '2026-01-03T00:00:00Z'},
         {'epoch': None, 'sha256': 'b' * 64, 'not_before': '2025-01-01T00:00:00Z', 'not_after': '2036-01-01T00:00:00Z'}]
BUNDLE = {'epoch': 8, 'generation': 3, 'certificates': CERTS, 'pem': 'PEM'}


def test_announcement_locations_follow_the_configuration():
    cfg = Config({'pki': {'kv_mount': 'kv-prod'}, 'authority_epoch_secret': True,
                  'authority_epoch_secret_namespace': 'pki-copies'})
    fields = authority.announcement_fields(cfg, BUNDLE, 'rotation', ['messaging/nats-trust', 'edge/nats-ca'])
    assert fields['kv_location'] == 'kv-prod/ca-bundles/epoch-8'
    assert fields['secret_locations'] == ['messaging/nats-trust', 'edge/nats-ca', 'pki-copies/nats-ca-bundle-epoch-8']
    assert fields['valid_from'] == '2026-01-01T00:00:00Z' and fields['valid_until'] == '2026-01-03T00:00:00Z'


def test_no_secret_is_named_when_there_is_none():
    fields = authority.announcement_fields(Config({}), BUNDLE, 'rotation', [])
    assert fields['secret_locations'] == []


def test_one_result_shape_for_rotation_rollback_and_stopped_runs():
    bundle = {'epoch': 8, 'sha256': 's', 'pem': 'PEM', 'certificates': CERTS}
    common = dict(started_at='t', holder='h', plan={'current_epoch': 8}, bundle=bundle, generation=3, new_bundle=True,
                  include_root=True, announce_error=None, probe={}, pki={}, changed=True, timings={}, logins=1)
    rot = results.authority_went_ahead(kind='rotation', hold=None, **common).to_fact()
    rb = results.authority_went_ahead(kind='rollback', hold={'epoch': 8}, **common).to_fact()
    stopped = results.authority_stopped('t', 'rotation', 'locked', locked_out=True).to_fact()
    assert set(rot) == set(rb) == set(stopped) == {f.name for f in dataclasses.fields(results.AuthorityResult)}
    assert rb['kind'] == 'rollback' and rb['hold'] == {'epoch': 8} and stopped['go'] is False

# -*- coding: utf-8 -*-
"""The announcement names the configured KV and Secret locations (the YAML version hard-coded nats/nats-ca-tls
and openbao/...), and the authority result has one shape for rotation and rollback."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import authority, decisions, results
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


class _NoOpenBao:
    """Clients whose OpenBao must not be asked (the decision is made before)."""

    def openbao(self):
        raise AssertionError('OpenBao was asked')


def test_dual_mode_a_familys_default_is_never_an_intermediate_the_proven_bundle_lacks():
    cfg = Config({'pki': {'mldsa': {'key_bits': 65}}})
    spec = authority.family_mounts(cfg)[1]
    classical_only = [dict(c, kind='intermediate' if c['epoch'] else 'root') for c in CERTS]
    assert authority.act_family(cfg, _NoOpenBao(), spec, 8, False, classical_only) == {'changed': False, 'issuer': None}
    other_epoch = classical_only + [{'epoch': 7, 'kind': 'intermediate', 'family': 'mldsa', 'sha256': 'c' * 64}]
    assert authority.act_family(cfg, _NoOpenBao(), spec, 8, False, other_epoch)['changed'] is False
    assert not decisions.holds_intermediate(other_epoch[:2], 'mldsa')
    assert decisions.holds_intermediate(other_epoch, 'mldsa')
    assert decisions.holds_intermediate(classical_only, 'classical')


def test_dual_mode_probe_files_per_family_and_one_probe_per_family_for_the_proof():
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import cluster  # pylint: disable=import-outside-toplevel
    assert 'mldsa' not in authority.probe_paths('/p')
    paths = authority.probe_paths('/p', mldsa=True)
    assert paths['mldsa'] == {'cert_file': '/p/probe-mldsa-cert.pem', 'key_file': '/p/probe-mldsa-key.pem'}
    auth = {'probe': paths, 'include_root': False}
    probes = cluster.probe_set(auth)
    assert [(p['name'], p['cert_file'], p['ca_file'], p['partial_chain']) for p in probes] == [
        ('classical', '/p/probe-cert.pem', '/p/ca-bundle.pem', True),
        ('mldsa', '/p/probe-mldsa-cert.pem', '/p/ca-bundle.pem', True)]
    assert cluster.probe_set({'probe': authority.probe_paths('/p')}) == [cluster.probe_options({'probe': authority.probe_paths('/p')})]
    # servers presenting ML-DSA leaves need the family in the bundle: without it the cluster is refused, naming the option
    pq_cluster = dataclasses.make_dataclass('Cluster', ['leaf_family'])('mldsa')
    with pytest.raises(decisions.Refusal, match='ca_rotation_nats_reload_leaf_family: mldsa'):
        cluster.check_leaf_family(pq_cluster, {'sha256': 'ab' * 32, 'certificates': [{'epoch': 7}, {'epoch': None}]})
    cluster.check_leaf_family(pq_cluster, {'certificates': [{'epoch': 7}, {'epoch': 7, 'family': 'mldsa'}]})
    assert [p.get('pyopenssl') for p in cluster.probe_set(auth, 'mldsa')] == [True, None]


def test_a_switched_off_familys_unreadable_root_is_left_out_an_enabled_ones_is_an_error(monkeypatch):
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError  # pylint: disable=import-outside-toplevel

    def root(_client, mount):
        if mount == 'pki_mldsa':
            raise OpenBaoError('no mount pki_mldsa')
        return 'ROOT ' + mount

    class Clients:
        def openbao(self):
            return None

    monkeypatch.setattr(authority, 'root_certificate', root)
    off = Config({'pki': {'mldsa': {'key_bits': 65, 'enabled': False}}})
    assert authority.family_roots(off, Clients(), 'ROOT pki') == ['ROOT pki']
    on = Config({'pki': {'mldsa': {'key_bits': 65}}})
    with pytest.raises(OpenBaoError, match='pki_mldsa'):
        authority.family_roots(on, Clients(), 'ROOT pki')

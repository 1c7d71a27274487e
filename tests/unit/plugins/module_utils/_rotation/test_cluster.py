# -*- coding: utf-8 -*-
"""The cluster step's leaf phase: the SANs come from the inventory, and the reload honours reload_timeout
(both were lost in the YAML version: SANs hard-coded to localhost/127.0.0.1, reload_timeout under vars:)."""

from __future__ import annotations

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import cluster
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import ClusterConfig, Config
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import Timings


class FakeClients:
    def openbao(self):
        return object()


TARGETS = [
    {'name': 'edge-1', 'pid_file': '/run/n1.pid', 'ca_file': '/etc/nats/ca.crt', 'monitor_url': 'http://10.0.0.5:8222',
     'url': 'tls://edge-1.example.com:4222', 'cert_file': '/etc/nats/n1.pem', 'key_file': '/etc/nats/n1-key.pem'},
    {'name': 'edge-2', 'pid_file': '/run/n2.pid', 'ca_file': '/etc/nats/ca2.crt', 'monitor_url': 'http://10.0.0.6:8222',
     'url': 'tls://10.0.0.6:4222', 'cert_file': '/etc/nats/n2.pem', 'key_file': '/etc/nats/n2-key.pem',
     'alt_names': ['edge-2.example.com', 'nats.example.com'], 'ip_sans': ['10.0.0.6']},
]


@pytest.fixture
def cc():
    cfg = Config({'nats_reload_targets': TARGETS, 'nats_reload_renew_leaves': True, 'nats_reload_reload_timeout': 7})
    return cfg, ClusterConfig(cfg, 'edge')


def test_leaf_names_from_the_target_or_its_url():
    assert cluster.leaf_names(TARGETS[0]) == (['edge-1.example.com'], [])
    assert cluster.leaf_names(TARGETS[1]) == (['edge-2.example.com', 'nats.example.com'], ['10.0.0.6'])
    assert cluster.leaf_names({'url': 'tls://127.0.0.1:4222'}) == ([], ['127.0.0.1'])
    assert cluster.leaf_names({}) == ([], [])


class FakeSteps:
    local = True

    def __init__(self, fail_reload=False):
        self.requests, self.installs, self.fail_reload = [], [], fail_reload

    def leaf_requests(self, targets, issuers, renew_before, now, schedule, key_type='ec', key_bits=0, check_mode=False):
        self.requests.append([(t['name'], t['alt_names'], t['ip_sans']) for t in targets])
        return [{'name': t['name'], 'reasons': ['due'], 'csr': 'CSR-' + t['name']} for t in targets]

    def install_and_reload(self, targets, certificates, transport, reload_timeout, check_mode=False):
        self.installs.append((sorted(certificates), [t['name'] for t in targets], reload_timeout))
        return {'failed': self.fail_reload, 'targets': [], 'msg': 'edge-2: no' if self.fail_reload else 'ok'}


@pytest.fixture
def signed(monkeypatch):
    calls = []
    monkeypatch.setattr(cluster, 'issuer_certificates', lambda client, mount: {})

    def fake_sign(client, **kw):
        calls.append((kw['csr'], kw['common_name'], kw['alt_names'], kw['ip_sans']))
        return {'certificate': 'CERT-' + kw['common_name'], 'issuing_ca': 'CA'}
    monkeypatch.setattr(cluster, 'issue_leaf', fake_sign)
    return calls


def test_renewal_uses_each_servers_names_and_the_reload_timeout(cc, signed):
    cfg, ccfg = cc
    steps = FakeSteps()
    out = cluster.renew_leaves(cfg, ccfg, {'go': True}, {'ok': True, 'cluster': 'edge'}, FakeClients(), Timings(), steps=steps)
    assert out['ok'] and out['renewed'] == ['edge-1', 'edge-2']
    names = [('edge-1', ['edge-1.example.com'], []), ('edge-2', ['edge-2.example.com', 'nats.example.com'], ['10.0.0.6'])]
    assert steps.requests == [names]
    assert signed == [('CSR-' + n, n, a, i) for n, a, i in names], 'only the CSR goes to OpenBao, with the same names'
    assert steps.installs == [(['edge-1', 'edge-2'], ['edge-1', 'edge-2'], 7)]


def test_a_failed_cluster_is_not_renewed(cc, signed):
    cfg, ccfg = cc
    steps = FakeSteps()
    out = cluster.renew_leaves(cfg, ccfg, {'go': True}, {'ok': False, 'cluster': 'edge', 'error': 'x'}, FakeClients(), Timings(),
                               steps=steps)
    assert out['ok'] is False and out['error'] == 'x' and steps.requests == []


def test_a_failed_renewal_fails_the_cluster_with_its_reason(cc, signed):
    cfg, ccfg = cc
    out = cluster.renew_leaves(cfg, ccfg, {'go': True}, {'ok': True, 'cluster': 'edge'}, FakeClients(), Timings(),
                               steps=FakeSteps(fail_reload=True))
    assert out['ok'] is False and out['error'] == 'leaf renewal: edge-2: no'


def test_probe_address_of_a_server_on_another_machine():
    assert cluster.probe_address({'url': 'tls://10.0.0.6:4222'}, 'vm-1') == ('10.0.0.6', 4222)
    assert cluster.probe_address({'url': 'tls://127.0.0.1:4333'}, 'vm-1.example.com') == ('vm-1.example.com', 4333)
    assert cluster.probe_address({'url': 'nats://0.0.0.0:4222'}, '192.0.2.7') == ('192.0.2.7', 4222)
    assert cluster.probe_address({}, 'vm-1') == ('vm-1', 4222)
    assert cluster.probe_address({}, None) == (None, 4222)

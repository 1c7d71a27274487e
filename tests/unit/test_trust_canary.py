"""Pure logic of ca-trust-canary: the invariants, the configuration errors, the verdict, the timeline, the metrics,
and ca-rotate-cron's link to the verdict."""

from __future__ import annotations

import datetime
import json
import types

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from catools import cron
from catools.canary import checks
from catools.canary.config import ConfigError, build_config
from catools.canary.metrics import CanaryMetrics

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.html import model_from_report, render_timeline

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def iso(dt):
    return dt.strftime('%Y-%m-%dT%H:%M:%SZ')


def issuer(epoch, state, hours_left, sha=None):
    return {'epoch': epoch, 'issuer_name': 'epoch-%d' % epoch, 'state': state, 'sha256': sha or 'sha-%d' % epoch,
            'not_before': iso(NOW - datetime.timedelta(hours=24 - hours_left)), 'not_after': iso(NOW + datetime.timedelta(hours=hours_left))}


def server(name='nats-0', accepted=None, served_hours=20.0, members=None, reachable=True, **extra):
    entry = {'cluster': 'east', 'name': name, 'reachable': reachable, 'error': None, 'accepted': accepted or {},
             'served': {'issuer_epoch': 10, 'not_after': iso(NOW + datetime.timedelta(hours=served_hours))},
             'ca_file': '/etc/nats/ca/ca.crt', 'ca_members': members, 'ca_error': None, 'details': {}}
    entry.update(extra)
    return entry


def observation(servers, default=10, issuers=None, proven=(9, 10, 11), bao_ok=True):
    return {'now': NOW, 'openbao': {'ok': bao_ok, 'error': None if bao_ok else 'connection refused'},
            'issuers': issuers if issuers is not None else [issuer(8, 'expired', -1), issuer(9, 'valid', 6), issuer(10, 'active', 12),
                                                            issuer(11, 'prepared', 18)],
            'default_epoch': default, 'proven': {'east': {'epochs': list(proven), 'note': None}}, 'leaf_errors': {},
            'servers': servers}


HEALTHY = {8: False, 9: True, 10: True, 11: True}


def invariants(result):
    return sorted((v['invariant'], v['server'], v['epoch']) for v in result['violations'])


def test_healthy_fabric_has_no_violation():
    result = checks.evaluate(observation([server(accepted=HEALTHY), server('nats-1', accepted=HEALTHY)]), 600, 3600)
    assert result == {'ok': True, 'violations': [], 'errors': []}


def test_default_issuer_ahead_of_a_server():
    accepted = {**HEALTHY, 12: False}
    obs = observation([server(accepted=accepted), server('nats-1', accepted={**HEALTHY, 12: True})], default=12,
                      issuers=[issuer(9, 'valid', 6), issuer(10, 'valid', 12), issuer(12, 'active', 24)])
    assert invariants(checks.evaluate(obs, 600, 3600)) == [('default_not_trusted', 'nats-0', 12)]


def test_valid_epoch_of_the_proven_bundle_refused_but_not_one_outside_it():
    obs = observation([server(accepted={**HEALTHY, 9: False, 11: False})], proven=(9, 10))
    assert invariants(checks.evaluate(obs, 600, 3600)) == [('valid_refused', 'nats-0', 9)]


def test_expired_and_revoked_epochs_must_be_refused():
    issuers = [issuer(8, 'expired', -1), issuer(9, 'revoked', 6), issuer(10, 'active', 12)]
    obs = observation([server(accepted={8: True, 9: True, 10: True})], issuers=issuers)
    assert invariants(checks.evaluate(obs, 600, 3600)) == [('distrusted_accepted', 'nats-0', 9), ('expired_accepted', 'nats-0', 8)]


def test_expired_member_after_the_grace_and_revoked_member_in_a_ca_file():
    members = [{'epoch': 7, 'kind': 'intermediate', 'not_after': iso(NOW - datetime.timedelta(minutes=11)), 'sha256': 'sha-7'},
               {'epoch': 8, 'kind': 'intermediate', 'not_after': iso(NOW - datetime.timedelta(minutes=5)), 'sha256': 'sha-8'},
               {'epoch': 9, 'kind': 'intermediate', 'not_after': iso(NOW + datetime.timedelta(hours=6)), 'sha256': 'sha-9'}]
    issuers = [issuer(9, 'revoked', 6), issuer(10, 'active', 12)]
    obs = observation([server(accepted={9: False, 10: True}, members=members)], issuers=issuers)
    assert invariants(checks.evaluate(obs, 600, 3600)) == [('distrusted_in_bundle', 'nats-0', 9), ('expired_in_bundle', 'nats-0', 7)]


@pytest.mark.parametrize('hours, violated', [(0.5, True), (-0.1, True), (1.5, False)])
def test_served_certificate_close_to_its_end(hours, violated):
    result = checks.evaluate(observation([server(accepted=HEALTHY, served_hours=hours)]), 600, 3600)
    assert bool(result['violations']) is violated
    if violated:
        assert result['violations'][0]['invariant'] == 'served_expiring'


def test_unreachable_server_and_openbao_are_errors_never_violations():
    obs = observation([server(reachable=False, error='cannot connect', accepted={}, served=None)], bao_ok=False, default=None,
                      issuers=[], proven=())
    result = checks.evaluate(obs, 600, 3600)
    assert result['ok'] and not result['violations']
    assert sorted(e['source'] for e in result['errors']) == ['openbao', 'server']


def test_inconclusive_handshake_is_not_a_refusal():
    result = checks.evaluate(observation([server(accepted={9: True, 10: None, 11: True}, problems=['epoch-10: timeout'])]), 600, 3600)
    assert result['ok'] and [e['source'] for e in result['errors']] == ['tls']


def test_verdict_document_and_timeline():
    obs = observation([server(accepted={**HEALTHY, 10: False})])
    result = checks.evaluate(obs, 600, 3600)
    doc = checks.verdict_document(obs, result, 30, 0.2)
    assert doc['schema'] == checks.SCHEMA and doc['ok'] is False and doc['violation_count'] == 1
    assert json.loads(json.dumps(doc))['servers'][0]['accepted']['10'] is False
    page = render_timeline(checks.timeline_model(obs, result, ['east']))
    for epoch in (8, 9, 10, 11):
        assert 'data-epoch="%d"' % epoch in page
    assert 'data-state="prepared"' in page and 'data-state="expired"' in page and 'data-status="mismatch"' in page
    assert '<script' not in page and 'id="now"' in page and 'data-ok="false"' in page


def test_metrics_parse_and_carry_every_invariant():
    obs = observation([server(accepted={**HEALTHY, 10: False},
                              members=[{'epoch': 9, 'kind': 'intermediate', 'not_after': iso(NOW), 'sha256': 'x'},
                                       {'epoch': None, 'kind': 'root', 'not_after': iso(NOW), 'sha256': 'r'}])])
    result = checks.evaluate(obs, 600, 3600)
    metrics = CanaryMetrics()
    metrics.update(obs, result, [(('east', 'nats-0', 'client'), 0.012)], 30, 0.3)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[('ca_trust_canary_epoch_accepted', (('cluster', 'east'), ('epoch', '10'), ('port', 'client'), ('server', 'nats-0')))] == 0
    assert samples[('ca_trust_canary_invariant_violations_total', (('invariant', 'default_not_trusted'),))] == 1
    assert samples[('ca_trust_canary_invariant_violations_total', (('invariant', 'expired_in_bundle'),))] == 0
    assert samples[('ca_trust_canary_violation', (('cluster', 'east'), ('invariant', 'default_not_trusted'), ('port', 'client'),
                                                  ('server', 'nats-0')))] == 1
    assert ('ca_trust_canary_bundle_member_expiry_seconds', (('cluster', 'east'), ('epoch', 'root'), ('server', 'nats-0'))) in samples
    assert samples[('ca_trust_canary_handshake_seconds_count', (('cluster', 'east'), ('port', 'client'), ('server', 'nats-0')))] == 1
    assert not [k for k in samples if dict(k[1]).get('port') == 'route']  # no route port probed: no route series
    # the next round clears what is no longer true
    metrics.update(observation([server(accepted=HEALTHY)]), {'ok': True, 'violations': [], 'errors': []}, [], 30, 0.3)
    assert b'ca_trust_canary_violation{' not in generate_latest(metrics.registry)


def route(accepted=None, reachable=True, served_hours=20.0, port=6222, **extra):
    entry = {'host': '127.0.0.1', 'port': port, 'reachable': reachable, 'error': None if reachable else 'cannot connect',
             'accepted': accepted or {}, 'details': {}, 'problems': [],
             'served': {'issuer_epoch': 10, 'not_after': iso(NOW + datetime.timedelta(hours=served_hours))} if reachable else None}
    entry.update(extra)
    return entry


def at_ports(result):
    return sorted((v['invariant'], v['server'], v['port'], v['epoch']) for v in result['violations'])


def test_route_port_is_checked_like_the_client_port():
    """A refusal, an acceptance of an expired epoch or an expiring certificate on the route port is a violation that
    names the port; the client port's answers are unchanged."""
    obs = observation([server(accepted=HEALTHY, route=route(accepted={**HEALTHY, 8: True, 9: False}, served_hours=0.5)),
                       server('nats-1', accepted=HEALTHY, route=route(accepted=HEALTHY))])
    assert at_ports(checks.evaluate(obs, 600, 3600)) == [('expired_accepted', 'nats-0', 'route', 8),
                                                         ('served_expiring', 'nats-0', 'route', 10),
                                                         ('valid_refused', 'nats-0', 'route', 9)]
    obs = observation([server(accepted={**HEALTHY, 10: False}, route=route(accepted={**HEALTHY, 10: False}))])
    assert at_ports(checks.evaluate(obs, 600, 3600)) == [('default_not_trusted', 'nats-0', 'client', 10),
                                                         ('default_not_trusted', 'nats-0', 'route', 10)]


def test_unreachable_route_port_is_an_error_and_a_server_without_one_is_not_probed():
    obs = observation([server(accepted=HEALTHY, route=route(reachable=False, port=7222)), server('nats-1', accepted=HEALTHY)])
    result = checks.evaluate(obs, 600, 3600)
    assert result['ok'] and result['errors'] == [{'source': 'route', 'where': 'east/nats-0 route port 127.0.0.1:7222',
                                                  'msg': 'cannot connect'}]
    doc = checks.verdict_document(obs, result, 30)
    assert doc['complete'] is False and doc['servers'][0]['route']['reachable'] is False and doc['servers'][1]['route'] is None
    metrics = CanaryMetrics()
    metrics.update(obs, result, [(('east', 'nats-0', 'client'), 0.01)], 30, 0.3)
    text = generate_latest(metrics.registry).decode()
    assert 'ca_trust_canary_server_up{cluster="east",port="route",server="nats-0"} 0.0' in text
    assert 'ca_trust_canary_check_errors_last{source="route"} 1.0' in text
    assert 'port="route",server="nats-1"' not in text and 'ca_trust_canary_epoch_accepted{cluster="east",epoch="9",port="route"' not in text
    # an inconclusive route handshake is a tls error, not a refusal
    obs = observation([server(accepted=HEALTHY, route=route(accepted={**HEALTHY, 10: None}, problems=['epoch-10: timed out']))])
    result = checks.evaluate(obs, 600, 3600)
    assert result['ok'] and [(e['source'], e['where']) for e in result['errors']] == [('tls', 'east/nats-0 route port 127.0.0.1:6222')]


def test_route_port_in_verdict_timeline_and_metrics():
    expired = [{'epoch': 7, 'kind': 'intermediate', 'not_after': iso(NOW - datetime.timedelta(hours=1)), 'sha256': 'sha-7'}]
    obs = observation([server(accepted=HEALTHY, members=expired, route=route(accepted={**HEALTHY, 9: False}))])
    result = checks.evaluate(obs, 600, 3600)
    assert at_ports(result) == [('expired_in_bundle', 'nats-0', None, 7), ('valid_refused', 'nats-0', 'route', 9)]
    doc = json.loads(json.dumps(checks.verdict_document(obs, result, 30)))
    assert doc['servers'][0]['route']['accepted']['9'] is False
    assert doc['servers'][0]['route']['port'] == 6222 and doc['servers'][0]['accepted']['9'] is True
    model = checks.timeline_model(obs, result, ['east'])
    rows = {r['name']: r for r in model['clusters'][0]['servers']}
    assert rows['nats-0']['status'] == 'mismatch' and rows['nats-0']['note'] == 'expired_in_bundle'  # the CA file: its own row
    assert rows['nats-0 route']['status'] == 'mismatch'
    assert rows['nats-0 route']['note'] == 'route port 127.0.0.1:6222: valid_refused' and rows['nats-0 route']['loaded'] is None
    page = render_timeline(model)
    assert 'data-server="nats-0 route"' in page and 'data-status="mismatch"' in page
    metrics = CanaryMetrics()
    metrics.update(obs, result, [(('east', 'nats-0', 'client'), 0.01), (('east', 'nats-0', 'route'), 0.02)], 30, 0.3)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(metrics.registry).decode()) for s in f.samples}
    key = (('cluster', 'east'), ('epoch', '9'), ('port', '%s'), ('server', 'nats-0'))
    assert samples[('ca_trust_canary_epoch_accepted', tuple((k, v % 'route' if k == 'port' else v) for k, v in key))] == 0
    assert samples[('ca_trust_canary_epoch_accepted', tuple((k, v % 'client' if k == 'port' else v) for k, v in key))] == 1
    assert samples[('ca_trust_canary_violation', (('cluster', 'east'), ('invariant', 'valid_refused'), ('port', 'route'),
                                                  ('server', 'nats-0')))] == 1
    assert samples[('ca_trust_canary_handshake_seconds_count', (('cluster', 'east'), ('port', 'route'), ('server', 'nats-0')))] == 1
    assert samples[('ca_trust_canary_violation', (('cluster', 'east'), ('invariant', 'expired_in_bundle'), ('port', ''),
                                                  ('server', 'nats-0')))] == 1
    assert ('ca_trust_canary_bundle_member_expiry_seconds', (('cluster', 'east'), ('epoch', '7'), ('server', 'nats-0'))) in samples


def test_tls_errors_are_classified_without_calling_a_plaintext_peer_a_refusal():
    import ssl  # pylint: disable=import-outside-toplevel
    from catools.canary.probe import classify_tls_error  # pylint: disable=import-outside-toplevel
    plain = ssl.SSLError(1, '[SSL: WRONG_VERSION_NUMBER] wrong version number')
    plain.reason = 'WRONG_VERSION_NUMBER'
    assert classify_tls_error(plain, 'h:1')[0] == 'unreachable'
    alert = ssl.SSLError(1, '[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca')
    alert.reason = 'TLSV1_ALERT_UNKNOWN_CA'
    assert classify_tls_error(alert, 'h:1')[0] == 'refused'
    assert classify_tls_error(ssl.SSLCertVerificationError(1, 'certificate has expired'), 'h:1')[0] == 'untrusted_server'


def base_config(**extra):
    cfg = {'openbao': {'url': 'http://127.0.0.1:8200'}, 'clusters': [{'name': 'east', 'servers': ['tls://127.0.0.1:4222']}]}
    cfg.update(extra)
    return cfg


@pytest.mark.parametrize('extra, option', [
    ({'interval': 'soon'}, 'interval'),
    ({'clusters': []}, 'clusters'),
    ({'clusters': [{'name': 'a', 'servers': [{'name': 'x'}]}]}, 'clusters[0].servers[0].url'),
    ({'openbao': {'url': 'http://h', 'token': 'x'}}, 'openbao.token'),
    ({'openbao': {'url': 'http://h', 'tokenfile': '/x'}}, 'openbao.tokenfile'),
    ({'schedule': {'epoch_duration': '1h', 'validity': '10m'}}, 'schedule.validity'),
    ({'leaf': {'ttl': '10s'}}, 'leaf.ttl'),
    ({'listen': 'host:port'}, 'listen'),
    ({'surprise': 1}, 'config.surprise'),
    ({'tls': {'ca_file': '/does/not/exist'}}, 'tls.ca_file'),
    ({'clusters': [{'name': 'a', 'servers': [{'url': 'tls://h:4222', 'route': 'h:six'}]}]}, 'clusters[0].servers[0].route'),
    ({'clusters': [{'name': 'a', 'servers': [{'url': 'tls://h:4222', 'route': 70000}]}]}, 'clusters[0].servers[0].route'),
    ({'clusters': [{'name': 'a', 'servers': [{'url': 'tls://h:4222', 'route': 'nats-route://h:4222'}]}]},
     'clusters[0].servers[0].route'),
    ({'clusters': [{'name': 'a', 'route_port': 0, 'servers': ['tls://h:4222']}]}, 'clusters[0].route_port'),
    ({'clusters': [{'name': 'a', 'route_port': 4222, 'servers': ['tls://h:4222']}]}, 'clusters[0].route_port'),
    ({'probe_routes': 'sometimes'}, 'probe_routes'),
])
def test_bad_configuration_names_the_option(extra, option, monkeypatch):
    monkeypatch.delenv('BAO_ADDR', raising=False)
    with pytest.raises(ConfigError) as err:
        build_config(base_config(**extra))
    assert err.value.option == option, str(err.value)


def test_configuration_defaults_and_overrides():
    args = types.SimpleNamespace(interval='5s', listen='127.0.0.1:9464', metrics_file=None, verdict_file=None, html_file=None)
    cfg = build_config(base_config(schedule={'epoch_duration': '6h'}), args)
    assert cfg.interval == 5 and cfg.listen == ('127.0.0.1', 9464) and cfg.served_min_validity == 6 * 3600
    assert cfg.servers[0].where == 'east/127.0.0.1:4222' and cfg.role == 'ca-trust-canary'


def test_route_port_configuration():
    cfg = build_config(base_config(clusters=[
        {'name': 'east', 'route_port': 6222, 'servers': [
            'tls://n0:4222',
            {'url': 'tls://n1:4222', 'route': 7222},
            {'url': 'tls://n2:4222', 'route': 'nats-route://n2-cluster'},
            {'url': 'tls://n3:4222', 'route': 'n3-cluster:7000'},
            {'url': 'tls://n4:4222', 'route': False},
        ]},
        {'name': 'west', 'servers': ['tls://w0:4222']}]))
    assert [s.route for s in cfg.servers] == [('n0', 6222), ('n1', 7222), ('n2-cluster', 6222), ('n3-cluster', 7000), None, None]
    assert cfg.probe_routes is True and cfg.servers[0].endpoint('client') == ('n0', 4222)
    args = types.SimpleNamespace(interval=None, listen=None, metrics_file=None, verdict_file=None, html_file=None,
                                 no_route_probes=True)
    assert build_config(base_config(), args).probe_routes is False
    assert build_config(base_config(probe_routes=False)).probe_routes is False


def test_cron_links_the_canary_verdict(tmp_path):
    path = tmp_path / 'verdict.json'
    assert cron.canary_link(path, NOW.timestamp(), 900)['status'] == 'missing'
    obs = observation([server(accepted={**HEALTHY, 10: False})])
    doc = checks.verdict_document(obs, checks.evaluate(obs, 600, 3600), 30)
    path.write_text(json.dumps(doc))
    link = cron.canary_link(path, NOW.timestamp() + 10, 900)
    assert link['status'] == 'violation' and link['ok'] is False and link['invariants'] == ['default_not_trusted']
    assert cron.canary_link(path, NOW.timestamp() + 1000, 900)['status'] == 'stale'
    obs = observation([server(accepted=HEALTHY)])
    path.write_text(json.dumps(checks.verdict_document(obs, checks.evaluate(obs, 600, 3600), 30)))
    assert cron.canary_link(path, NOW.timestamp(), 900)['status'] == 'ok'
    path.write_text('{"schema": "other"}')
    assert cron.canary_link(path, NOW.timestamp(), 900)['status'] == 'unreadable'


def test_status_report_timeline():
    report = {'ok': False, 'mismatch_count': 1, 'generated_at': iso(NOW),
              'findings': [{'severity': 'mismatch', 'code': 'ca_file_sha256', 'where': 'east/nats-1', 'msg': 'differs'}],
              'authority': {'now': iso(NOW), 'kv_bundle': {'found': True, 'certificates': [{'sha256': 'sha-10'}]},
                            'issuers': [dict(issuer(10, 'active', 12)), dict(issuer(11, 'prepared', 18)), dict(issuer(9, 'revoked', 6))]},
              'clusters': [{'cluster': 'east', 'servers': [
                  {'name': 'nats-0', 'ca_epochs': [10], 'tls': {'issuer_epoch': 10, 'not_after': iso(NOW)}},
                  {'name': 'nats-1', 'ca_epochs': [10, 9], 'tls': {'issuer_epoch': 10, 'not_after': iso(NOW)}},
                  {'name': 'nats-2', 'error': 'gone', 'tls_error': 'cannot connect'}]}]}
    model = model_from_report(report)
    assert [e['state'] for e in model['epochs']] == ['active', 'prepared', 'distrusted']
    assert [e['in_bundle'] for e in model['epochs']] == [True, False, False]
    assert [s['status'] for s in model['clusters'][0]['servers']] == ['ok', 'mismatch', 'unreachable']
    page = render_timeline(model)
    assert 'data-state="distrusted"' in page and 'data-server="nats-2"' in page and 'accepts (leaf-only' not in page
    assert '<script' not in page.lower()

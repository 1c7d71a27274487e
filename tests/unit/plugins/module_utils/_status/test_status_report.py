"""Unit tests of the status report (module_utils/_status/, module rotation_status): the comparison logic on
synthetic facts, the table, the module's main() for scope=report, and reading a served certificate from a local
TLS server speaking the NATS greeting."""

from __future__ import annotations

import copy
import datetime
import json
import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import base as reload_base
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status import checks as status_checks
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status import cluster as status_cluster
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status import gather as status_gather

NOW = '2026-01-10T13:00:00Z'
CURRENT = EpochSchedule.from_params({}).epoch(datetime.datetime(2026, 1, 10, 13, tzinfo=datetime.timezone.utc))  # 6h epochs: 12:00-18:00
SHA = 'a' * 64
ROOT = 'r' * 64
INT = {n: ('%d' % n)[-1] * 64 for n in range(CURRENT - 3, CURRENT + 2)}
LOAD_NS = 1_768_047_600_000_000_000  # 2026-01-10T12:20:00Z
MTIME_NS = LOAD_NS - 5_000_000_000


def _expiry(n):
    return EpochSchedule.from_params({}).expiry(n).strftime('%Y-%m-%dT%H:%M:%SZ')


def consistent():
    """Facts of a converged rotation: 4 epochs valid (24h validity), the current one the default, none prepared yet."""
    epochs = [CURRENT, CURRENT - 1, CURRENT - 2, CURRENT - 3]
    issuers = [{'epoch': n, 'issuer_name': 'epoch-%d' % n, 'issuer_id': 'id-%d' % n, 'is_default': n == CURRENT,
                'revoked': False, 'sha256': INT[n], 'not_after': _expiry(n), 'state': 'active' if n == CURRENT else 'valid',
                'subject': 'CN=NATS Intermediate CA Epoch %d' % n, 'ski': 'k%d' % n} for n in sorted(epochs)]
    certificates = [{'epoch': n, 'kind': 'intermediate', 'sha256': INT[n], 'not_after': _expiry(n),
                     'subject': 'CN=NATS Intermediate CA Epoch %d' % n} for n in epochs]
    certificates.append({'epoch': None, 'kind': 'root', 'sha256': ROOT, 'not_after': '2036-01-01T00:00:00Z', 'subject': 'CN=Root'})
    authority = {
        'schema': status_gather.SCHEMA, 'part': 'authority', 'now': NOW,
        'schedule': EpochSchedule.from_params({}).to_params(),
        'plan': {'current_epoch': CURRENT, 'prepared_epoch': None, 'valid_epochs': sorted(epochs), 'desired_epochs': sorted(epochs)},
        'openbao': {'int_mount': 'pki_int', 'root_mount': 'pki', 'kv_mount': 'secret'},
        'clusters': ['east'], 'errors': [], 'issuers': issuers,
        'default_issuer': {'issuer_id': 'id-%d' % CURRENT, 'issuer_name': 'epoch-%d' % CURRENT, 'epoch': CURRENT},
        'root': {'sha256': ROOT, 'common_name': 'Root', 'not_after': '2036-01-01T00:00:00Z'},
        'state': {'location': 'secret/ca-rotation/state', 'version': 9, 'generation': 7, 'last_epoch': CURRENT,
                  'epoch': CURRENT, 'bundle_sha256': SHA, 'lock': None, 'hold': None, 'history': [], 'updated_at': NOW},
        'cluster_records': {'east': {'sha256': SHA, 'epoch': CURRENT, 'cluster': 'east', 'proven_at': NOW}},
        'kv_epochs': [CURRENT],
        'kv_bundle': {'location': 'secret/ca-bundles/epoch-%d' % CURRENT, 'epoch': CURRENT, 'found': True, 'version': 1,
                      'sha256_field': SHA, 'sha256': SHA, 'epochs': epochs, 'certificates': certificates},
        'epoch_secret': None,
        'announcement': {'stream': 'METADATA_CA_CLIENT', 'subject': 'metadata.client.ca-cert', 'found': True, 'seq': 3,
                         'generation': 7, 'epoch': CURRENT, 'kind': 'rotation', 'bundle_sha256': SHA, 'signature_ok': True,
                         'valid_until': _expiry(CURRENT - 3), 'expired': False},
    }
    servers = [{'name': 'nats-%d' % i, 'error': None, 'ca_file': '/etc/nats/ca/ca.crt', 'ca_sha256': SHA, 'ca_error': None,
                'ca_mtime_ns': MTIME_NS, 'ca_mtime': status_cluster._iso_ns(MTIME_NS), 'mtime_error': None,  # pylint: disable=protected-access
                'config_load_time': status_cluster._iso_ns(LOAD_NS), 'load_time_ns': LOAD_NS, 'varz_error': None,  # pylint: disable=protected-access
                'tls': {'issuer': 'CN=NATS Intermediate CA Epoch %d' % CURRENT, 'issuer_epoch': CURRENT,
                        'authority_key_id': 'k%d' % CURRENT, 'not_after': _expiry(CURRENT), 'subject': 'CN=nats-%d' % i},
                'tls_error': None} for i in range(3)]
    cluster = {'schema': status_gather.SCHEMA, 'part': 'cluster', 'cluster': 'east', 'transport': 'kubernetes', 'error': None,
               'servers': servers,
               'live_secret': {'namespace': 'nats', 'name': 'nats-ca-tls', 'key': 'ca.crt', 'found': True, 'sha256': SHA,
                               'annotations': {'sha256': SHA, 'epoch': str(CURRENT)}}}
    return authority, cluster


def findings(authority, cluster, severity='mismatch'):
    report = status_checks.build_report(authority, [cluster] if cluster is not None else [])
    return {(f['code'], f['where']) for f in report['findings'] if f['severity'] == severity}


def test_consistent_facts_have_no_finding():
    authority, cluster = consistent()
    report = status_checks.build_report(authority, [cluster])
    assert report['ok'] and report['findings'] == [] and report['mismatch_count'] == report['warning_count'] == 0
    json.dumps(report)  # JSON-safe
    assert report['table'][0].endswith(': OK')
    assert report['clusters'][0]['servers'][0]['served_epoch'] == CURRENT


@pytest.mark.parametrize('mutate, expected', [
    (lambda a, c: c['servers'][1].update(ca_sha256='b' * 64), {('ca_file_sha256', 'east/nats-1')}),
    (lambda a, c: c['servers'][2].update(ca_mtime_ns=LOAD_NS + 1), {('not_loaded', 'east/nats-2')}),
    (lambda a, c: a['announcement'].update(generation=6), {('announcement_generation', 'announcement')}),
    (lambda a, c: a['announcement'].update(signature_ok=False, signature_error='bad'), {('announcement_signature', 'announcement')}),
    (lambda a, c: a['announcement'].update(found=False), {('announcement_missing', 'announcement')}),
    (lambda a, c: a['state'].update(lock={'holder': 'run-1', 'expires_at': '2026-01-10T12:59:59Z'}), {('lock_expired', 'state')}),
    (lambda a, c: a['kv_bundle'].update(sha256_field='c' * 64), {('kv_sha256_field', 'kv')}),
    (lambda a, c: a['kv_bundle'].update(found=False), {('kv_bundle_missing', 'kv')}),
    (lambda a, c: a['cluster_records'].update(east={}), {('cluster_record_missing', 'cluster east')}),
    (lambda a, c: a['cluster_records']['east'].update(sha256='d' * 64), {('cluster_record_sha256', 'cluster east')}),
    (lambda a, c: c['live_secret'].update(sha256='e' * 64),
     {('live_secret_sha256', 'cluster east secret nats/nats-ca-tls'), ('live_secret_annotation', 'cluster east secret nats/nats-ca-tls')}),
    (lambda a, c: c['live_secret'].update(found=False), {('live_secret_missing', 'cluster east secret nats/nats-ca-tls')}),
    (lambda a, c: c['servers'][0].update(varz_error='connection refused', load_time_ns=None), {('server_unreachable', 'east/nats-0')}),
    (lambda a, c: c['servers'][0].update(tls=None, tls_error='TLS handshake failed'), {('tls_error', 'east/nats-0')}),
    (lambda a, c: c['servers'][0].update(error='pod nats/nats-0 is not running'), {('server_error', 'east/nats-0')}),
    (lambda a, c: c.update(error='listing the NATS pods failed', servers=[]), {('cluster_error', 'cluster east')}),
    (lambda a, c: a['errors'].append({'source': 'openbao', 'msg': 'down'}), {('authority_error', 'openbao')}),
    (lambda a, c: a.update(default_issuer=None), {('default_issuer_missing', 'openbao')}),
    (lambda a, c: a['default_issuer'].update(issuer_name='legacy', epoch=None), {('default_issuer_not_epoch', 'openbao')}),
    (lambda a, c: a['issuers'][-1].update(revoked=True), {('default_issuer_revoked', 'openbao')}),
    (lambda a, c: a.update(epoch_secret={'namespace': 'openbao', 'name': 'x', 'key': 'ca-bundle.pem', 'found': False}),
     {('epoch_secret_missing', 'kubernetes')}),
    (lambda a, c: a.update(epoch_secret={'namespace': 'openbao', 'name': 'x', 'key': 'k', 'found': True, 'sha256': 'f' * 64}),
     {('epoch_secret_sha256', 'kubernetes')}),
])
def test_each_mismatch_is_flagged_where_it_is(mutate, expected):
    authority, cluster = consistent()
    mutate(authority, cluster)
    assert findings(authority, cluster) == expected


def test_default_issuer_not_in_bundle():
    authority, cluster = consistent()
    authority['kv_bundle']['certificates'] = [c for c in authority['kv_bundle']['certificates'] if c['epoch'] != CURRENT]
    for server in cluster['servers']:  # the servers still serve leaves of the default epoch
        server['tls']['authority_key_id'] = 'k%d' % (CURRENT - 1)
    got = findings(authority, cluster)
    assert ('default_not_in_bundle', 'openbao') in got
    assert ('bundle_missing_epoch', 'kv') in got


def test_expired_intermediate_in_bundle_and_served():
    authority, cluster = consistent()
    authority['now'] = '2026-01-10T19:00:00Z'  # CURRENT - 3 started 2026-01-09T18:00Z and expired 24h later
    got = findings(authority, cluster)
    assert ('bundle_expired_intermediate', 'kv') in got
    assert ('announcement_expired', 'announcement') in got
    cluster['servers'][0]['tls']['authority_key_id'] = 'k%d' % (CURRENT - 3)
    assert ('served_issuer_expired', 'east/nats-0') in findings(authority, cluster)


def test_served_certificate_of_an_epoch_outside_the_bundle():
    authority, cluster = consistent()
    cluster['servers'][1]['tls'].update(authority_key_id='unknown', issuer='CN=NATS Intermediate CA Epoch %d' % (CURRENT + 1),
                                        issuer_epoch=CURRENT + 1)
    assert findings(authority, cluster) == {('served_issuer_not_in_bundle', 'east/nats-1')}
    cluster['servers'][1]['tls'].update(issuer='CN=Someone Else', issuer_epoch=None)
    assert findings(authority, cluster) == {('served_issuer_unknown', 'east/nats-1')}


def test_warnings_do_not_make_the_report_fail():
    authority, cluster = consistent()
    authority['state']['lock'] = {'holder': 'run-2', 'expires_at': '2026-01-10T13:10:00Z'}
    authority['state']['hold'] = {'epoch': CURRENT - 1, 'since': NOW, 'reason': 'rollback'}
    authority['plan']['prepared_epoch'] = CURRENT + 1
    authority['plan']['desired_epochs'].append(CURRENT + 1)
    authority['issuers'].append({'epoch': CURRENT + 1, 'issuer_name': 'epoch-%d' % (CURRENT + 1), 'is_default': False,
                                 'revoked': False, 'sha256': INT[CURRENT + 1], 'not_after': _expiry(CURRENT + 1), 'state': 'prepared'})
    cluster['servers'][0].update(ca_mtime_ns=None, mtime_error='stat: not found')
    report = status_checks.build_report(authority, [cluster])
    assert report['ok'], report['findings']
    warned = {f['code'] for f in report['findings']}
    assert warned == {'lock_held', 'hold_active', 'bundle_missing_epoch', 'load_unknown'}  # missing epoch: held
    assert '4 warning(s)' in report['table'][0]


def test_a_cluster_without_facts_is_a_mismatch():
    authority, _cluster = consistent()
    assert ('cluster_missing', 'cluster east') in findings(authority, None)


def test_not_loaded_needs_both_times():
    assert status_cluster.not_loaded({'ca_mtime_ns': 2, 'load_time_ns': 1}) is True
    assert status_cluster.not_loaded({'ca_mtime_ns': 1, 'load_time_ns': 1}) is False
    assert status_cluster.not_loaded({'ca_mtime_ns': None, 'load_time_ns': 1}) is None


def test_table_names_every_server_and_finding():
    authority, cluster = consistent()
    cluster['servers'][2]['ca_mtime_ns'] = LOAD_NS + 1
    report = status_checks.build_report(authority, [cluster])
    text = '\n'.join(report['table'])
    assert '1 MISMATCH(ES)' in report['table'][0]
    for name in ('nats-0', 'nats-1', 'nats-2', 'epoch-%d' % CURRENT, 'secret/ca-bundles/epoch-%d' % CURRENT):
        assert name in text
    assert 'MISMATCH not_loaded [east/nats-2]' in text


def test_gather_authority_records_an_unreachable_openbao():
    def refuse(_params):
        raise OpenBaoError('Cannot reach OpenBao at http://127.0.0.1:1')
    schedule = EpochSchedule.from_params({})
    now = datetime.datetime(2026, 1, 10, 13, tzinfo=datetime.timezone.utc)
    facts = status_gather.gather_authority({}, schedule, now, clusters=['east'], connect=refuse)
    assert facts['errors'][0]['source'] == 'openbao' and facts['state'] is None
    report = status_checks.build_report(facts, [])
    assert {f['code'] for f in report['findings']} == {'authority_error', 'cluster_missing'}


class FakeTransport(reload_base.Transport):
    """Files on this host, load times and addresses given by the test (pure logic, no server)."""

    name = 'fake'

    def __init__(self, targets, varz):
        self.targets, self.varz = targets, varz

    def discover(self):
        return self.targets

    def read_varz(self, target):
        if target.name not in self.varz:
            raise reload_base.TargetError('connection refused')
        return self.varz[target.name]

    def probe_address(self, target, varz):
        return '127.0.0.1', _closed_port()


def _closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_gather_cluster_reads_files_and_load_times(tmp_path):
    written = tmp_path / 'ca.crt'
    root_key, root_pem, root = _ca('Root')
    written.write_text(_ca('NATS Intermediate CA Epoch 3', (root_key, root))[1] + root_pem)
    os.utime(written, ns=(LOAD_NS + 10, LOAD_NS + 10))
    targets = [reload_base.Target('a', ca_file=str(written)), reload_base.Target('b', ca_file=str(tmp_path / 'missing.crt'))]
    varz = {'a': {'config_load_time': status_cluster._iso_ns(LOAD_NS), 'server_id': 'NA'}}  # pylint: disable=protected-access
    facts = status_cluster.gather_cluster('east', FakeTransport(targets, varz))
    a, b = facts['servers']
    assert a['ca_sha256'] == sha256_hex(written.read_bytes()) and a['ca_epochs'] == [3]
    assert a['load_time_ns'] == LOAD_NS and a['ca_mtime_ns'] == LOAD_NS + 10 and status_cluster.not_loaded(a) is True
    assert a['server_id'] == 'NA' and 'cannot connect' in a['tls_error']
    assert 'missing.crt' in b['ca_error'] and b['varz_error'] == 'connection refused'


# ------------------------------------------------------------------ served certificate over a real TLS socket
def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn, signer=None):
    """A CA certificate; self-signed unless ``signer`` = (key, certificate) of its issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key, issuer_name = (signer[0], signer[1].subject) if signer else (key, _name(cn))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM).decode(), cert


def _leaf(tmp_path, ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name('nats-0')).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=6))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = tmp_path / 'leaf.pem', tmp_path / 'leaf-key.pem'
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_file), str(key_file), cert


@pytest.fixture
def nats_like_tls_server(tmp_path):
    """A server that greets like NATS (INFO line), then handshakes TLS 1.3 and requires a client certificate."""
    ca_key, ca_pem, ca_cert = _ca('NATS Intermediate CA Epoch 42')
    cert_file, key_file, leaf = _leaf(tmp_path, ca_key, ca_cert)
    ca_file = tmp_path / 'ca.pem'
    ca_file.write_text(ca_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(str(ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(4)
    listener.settimeout(10)

    def serve():  # one connection: the test makes one
        try:
            conn, _addr = listener.accept()
        except OSError:
            return
        try:
            conn.sendall(b'INFO {"tls_required":true}\r\n')
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass  # the client sends no certificate: TLS 1.3 fails it after the handshake, as NATS does
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], leaf, ca_cert
    listener.close()
    thread.join(timeout=10)


def test_served_certificate_reads_the_issuer_epoch_without_a_client_certificate(nats_like_tls_server):
    port, leaf, ca_cert = nats_like_tls_server
    facts = status_cluster.served_certificate('127.0.0.1', port, timeout=5)
    assert facts['issuer_epoch'] == 42 and facts['subject'] == 'CN=nats-0' and facts['tls_version'] == 'TLSv1.3'
    assert facts['sha256'] == leaf.fingerprint(hashes.SHA256()).hex()
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    assert facts['authority_key_id'] == ski


def test_served_certificate_refuses_a_non_nats_greeting():
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)

    def greet():
        conn, _addr = listener.accept()
        conn.sendall(b'HTTP/1.1 400 Bad Request\r\n\r\n')
        conn.close()

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    with pytest.raises(status_gather.StatusError, match='did not greet like a NATS server'):
        status_cluster.served_certificate('127.0.0.1', listener.getsockname()[1], timeout=5)
    thread.join(timeout=10)
    listener.close()


# ------------------------------------------------------------------ the module
def test_module_report_scope_never_changes_anything(run_module):
    authority, cluster = consistent()
    cluster['servers'][1]['ca_sha256'] = 'b' * 64
    for check_mode in (False, True):
        result = run_module('rotation_status', {'scope': 'report', 'authority': copy.deepcopy(authority),
                                                'clusters_facts': [copy.deepcopy(cluster)]}, check_mode=check_mode)
        assert result['changed'] is False and result['ok'] is False and result['mismatch_count'] == 1
        assert result['findings'][0]['code'] == 'ca_file_sha256' and result['report']['schema'] == status_gather.SCHEMA
        assert result['table'] == result['report']['table']


def test_module_names_the_missing_option(run_module):
    result = run_module('rotation_status', {'scope': 'report'})
    assert result['failed'] and result['option'] == 'authority'
    result = run_module('rotation_status', {'scope': 'cluster', 'targets': [{'name': 'a', 'pid': 2, 'monitor_url': 'http://x'}]})
    assert result['failed'] and result['option'] == 'cluster'


def test_module_cluster_scope_reports_bad_targets_as_facts(run_module):
    result = run_module('rotation_status', {'scope': 'cluster', 'cluster': 'east', 'transport': 'signal'})
    assert not result.get('failed') and result['changed'] is False
    assert 'targets is required' in result['facts']['error'] and result['facts']['transport'] == 'signal'


def test_a_cluster_spread_over_hosts_is_checked_as_one():
    """VM hosts sharing a cluster name each report their own servers: one cluster, every server, one proof record."""
    authority, cluster = consistent()
    authority['clusters'] = ['east', 'east', 'east']  # one name per host, as status.yml lists them
    cluster.pop('live_secret')
    parts = [dict(copy.deepcopy(cluster), servers=[server]) for server in cluster['servers']]
    report = status_checks.build_report(authority, parts)
    assert report['ok'] and report['findings'] == [], report['findings']
    assert len(report['clusters']) == 1 and [s['name'] for s in report['clusters'][0]['servers']] == ['nats-0', 'nats-1', 'nats-2']
    parts[1]['servers'][0]['ca_sha256'] = 'b' * 64
    parts[2].update(error='host vm-2: unreachable', servers=[])
    found = {(f['code'], f['where']) for f in status_checks.build_report(authority, parts)['findings']}
    assert found == {('ca_file_sha256', 'east/nats-1'), ('cluster_error', 'cluster east')}, found


def distrusted_facts():
    """Epoch CURRENT - 1 distrusted and revoked, left out of the bundle everywhere: converged."""
    authority, cluster = consistent()
    n = CURRENT - 1
    issuer = next(i for i in authority['issuers'] if i['epoch'] == n)
    issuer.update(revoked=True, state='revoked')
    kv = authority['kv_bundle']
    kv['certificates'] = [c for c in kv['certificates'] if c['sha256'] != INT[n]]
    kv['epochs'] = [e for e in kv['epochs'] if e != n]
    authority['state']['distrusted'] = [{'epoch': n, 'issuer_name': 'epoch-%d' % n, 'issuer_id': 'id-%d' % n, 'sha256': INT[n],
                                         'not_after': _expiry(n), 'at': NOW, 'by': 'run-1', 'reason': 'key leaked'}]
    cluster['live_secret']['cert_sha256s'] = [c['sha256'] for c in kv['certificates']]
    return authority, cluster, n


def test_distrusted_epochs_are_listed_and_a_converged_distrust_has_no_finding():
    authority, cluster, n = distrusted_facts()
    report = status_checks.build_report(authority, [cluster])
    assert report['ok'], report['findings']
    assert [(d['epoch'], d['valid'], d['held_by']) for d in report['distrusted']] == [(n, True, [])]
    line = next(x for x in report['table'] if x.startswith('distrusted:'))
    assert 'epoch-%d' % n in line and 'key leaked' in line and 'held nowhere' in line
    json.dumps(report)


@pytest.mark.parametrize('mutate, expected', [
    # the mounted copy in the pods follows the live Secret: each server is flagged with it
    (lambda a, c, n: c['live_secret']['cert_sha256s'].append(INT[n]),
     {('distrusted_held', 'cluster east secret nats/nats-ca-tls')} | {('distrusted_held', 'east/nats-%d' % i) for i in range(3)}),
    (lambda a, c, n: c['servers'][1].update(ca_cert_sha256s=[INT[n], ROOT]), {('distrusted_held', 'east/nats-1')}),
    (lambda a, c, n: c['servers'][2]['tls'].update(authority_key_id='k%d' % n),
     {('distrusted_held', 'east/nats-2'), ('served_issuer_not_in_bundle', 'east/nats-2')}),
    (lambda a, c, n: a['kv_bundle']['certificates'].append({'epoch': n, 'kind': 'intermediate', 'sha256': INT[n]}),
     {('distrusted_held', 'kv')}),
    (lambda a, c, n: a.update(epoch_secret={'namespace': 'openbao', 'name': 'x', 'key': 'k', 'found': True, 'sha256': SHA,
                                            'cert_sha256s': [INT[n]]}), {('distrusted_held', 'kubernetes')}),
    (lambda a, c, n: next(i for i in a['issuers'] if i['epoch'] == n).update(revoked=False),
     {('distrusted_not_revoked', 'openbao')}),
])
def test_every_place_still_holding_a_distrusted_intermediate_is_flagged(mutate, expected):
    authority, cluster, n = distrusted_facts()
    mutate(authority, cluster, n)
    report = status_checks.build_report(authority, [cluster])
    assert {(f['code'], f['where']) for f in report['findings'] if f['severity'] == 'mismatch'} == expected
    assert 'STILL HELD' in next(x for x in report['table'] if x.startswith('distrusted:')) or expected == {
        ('distrusted_not_revoked', 'openbao')}


def test_an_expired_distrusted_intermediate_is_listed_but_flagged_nowhere():
    authority, cluster, n = distrusted_facts()
    authority['state']['distrusted'][0]['not_after'] = '2026-01-01T00:00:00Z'
    cluster['servers'][0].update(ca_cert_sha256s=[INT[n]])
    report = status_checks.build_report(authority, [cluster])
    assert report['ok'], report['findings']
    assert report['distrusted'][0]['valid'] is False and report['distrusted'][0]['held_by'] == ['east/nats-0']


@pytest.mark.parametrize('pending, kept', [
    # as distrust.yml writes it (distrust.pending_record)
    ({'sha256': True, 'replacement': 'epoch-%d-r1', 'activate': 'epoch-%d-r1'}, 'its replacement epoch-'),
    ({'sha256': True, 'replacement': None, 'activate': None}, 'the distrusted intermediate stays in the bundle'),
    # a record written before it carried the SHA-256: matched by epoch and issuer
    ({'replacement': 'epoch-%d-r1'}, 'its replacement epoch-'),
])
def test_a_pending_distrust_is_one_mismatch_and_its_intermediate_may_still_be_held(pending, kept):
    authority, cluster, n = distrusted_facts()
    record = {'epoch': n, 'issuer_name': 'epoch-%d' % n, 'since': NOW}
    for key, value in pending.items():
        record[key] = INT[n] if key == 'sha256' else (value % n if value else value)
    authority['state']['distrust_pending'] = record
    cluster['live_secret']['cert_sha256s'].append(INT[n])
    report = status_checks.build_report(authority, [cluster])
    assert {(f['code'], f['where']) for f in report['findings']} == {('distrust_pending', 'state')}
    finding = next(f for f in report['findings'] if f['code'] == 'distrust_pending')
    assert kept in finding['msg'] and 'None' not in finding['msg'], finding
    assert 'DISTRUST PENDING' in next(x for x in report['table'] if x.startswith('distrusted:'))


def test_an_epoch_with_a_replacement_is_judged_by_the_issuer_standing_for_it():
    authority, cluster = consistent()
    original = next(i for i in authority['issuers'] if i['epoch'] == CURRENT)
    original.update(is_default=False, revoked=True, state='revoked')
    replacement = dict(original, issuer_name='epoch-%d-r1' % CURRENT, issuer_id='id-r1', is_default=True, revoked=False,
                       state='active', sha256='9' * 64, ski='k-r1')
    authority['issuers'].append(replacement)
    authority['default_issuer'] = {'issuer_id': 'id-r1', 'issuer_name': 'epoch-%d-r1' % CURRENT, 'epoch': CURRENT}
    kv = authority['kv_bundle']
    kv['certificates'] = [dict(c, sha256='9' * 64) if c['sha256'] == INT[CURRENT] else c for c in kv['certificates']]
    for server in cluster['servers']:
        server['tls']['authority_key_id'] = 'k-r1'
    assert findings(authority, cluster) == set()
    replacement['revoked'] = True
    assert findings(authority, cluster) == {('default_issuer_revoked', 'openbao')}


def _dual():
    """The converged facts of dual mode: an ML-DSA family with its own root and the same epochs in the bundle."""
    authority, cluster = consistent()
    pq = {n: ('%d' % n)[-1] * 63 + 'm' for n in INT}
    issuers = [dict(i, sha256=pq[i['epoch']], issuer_id='pq-%d' % i['epoch'], subject='CN=NATS ML-DSA Intermediate CA Epoch %d'
                    % i['epoch']) for i in authority['issuers']]
    authority['families'] = {'mldsa': {
        'int_mount': 'pki_int_mldsa', 'root_mount': 'pki_mldsa', 'issuers': issuers,
        'default_issuer': {'issuer_id': 'pq-%d' % CURRENT, 'issuer_name': 'epoch-%d' % CURRENT, 'epoch': CURRENT},
        'root': {'sha256': 'q' * 64, 'common_name': 'ML-DSA Root', 'not_after': '2036-01-01T00:00:00Z'}}}
    authority['kv_bundle']['certificates'] += [
        {'epoch': i['epoch'], 'kind': 'intermediate', 'sha256': i['sha256'], 'not_after': i['not_after'], 'subject': i['subject']}
        for i in issuers] + [{'epoch': None, 'kind': 'root', 'sha256': 'q' * 64, 'not_after': '2036-01-01T00:00:00Z',
                              'subject': 'CN=ML-DSA Root'}]
    return authority, cluster


def test_dual_mode_the_second_familys_chain_belongs_in_the_bundle_and_its_issuers_are_checked():
    authority, cluster = _dual()
    assert findings(authority, cluster) == set() and findings(authority, cluster, 'warning') == set()
    # without the family's facts its root and intermediates are foreign to the bundle
    plain = copy.deepcopy(authority)
    del plain['families']
    assert {code for code, _where in findings(plain, cluster)} == {'bundle_foreign_root', 'bundle_unknown_intermediate'}
    # the family's own issuers are judged like the classical ones, where they are
    for mutate, expected in (
            (lambda fam: fam.update(default_issuer=None), ('default_issuer_missing', 'openbao pki_int_mldsa')),
            (lambda fam: fam['issuers'][-1].update(revoked=True), ('default_issuer_revoked', 'openbao pki_int_mldsa')),
            (lambda fam: fam.update(issuers=fam['issuers'][:-1]), ('issuer_missing', 'openbao pki_int_mldsa'))):
        changed = copy.deepcopy(authority)
        mutate(changed['families']['mldsa'])
        assert expected in findings(changed, cluster), findings(changed, cluster)
    # an ML-DSA issuer the bundle lacks is flagged as missing from it
    short = copy.deepcopy(authority)
    short['kv_bundle']['certificates'] = [c for c in short['kv_bundle']['certificates']
                                          if c['sha256'] != short['families']['mldsa']['issuers'][0]['sha256']]
    assert ('bundle_missing_epoch', 'kv') in findings(short, cluster)


def test_dual_mode_a_family_switched_off_still_vouches_for_its_certificates_but_its_issuers_are_not_judged():
    authority, cluster = _dual()
    off = copy.deepcopy(authority)
    off['families']['mldsa'].update(enabled=False, default_issuer=None)  # its issuers would be flagged if judged
    assert findings(off, cluster) == set()
    on = copy.deepcopy(off)
    on['families']['mldsa']['enabled'] = True
    assert ('default_issuer_missing', 'openbao pki_int_mldsa') in findings(on, cluster)

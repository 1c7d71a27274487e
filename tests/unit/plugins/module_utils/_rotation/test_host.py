# -*- coding: utf-8 -*-
"""The host-local steps (what runs on a VM): CA files written only where they differ, reload only when due, the
leaf key made on the host and installed only with the certificate signed for it."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import host

PEM_A = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'
PEM_B = '-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n'


@pytest.fixture
def targets(tmp_path):
    out = []
    for name in ('n1', 'n2'):
        ca = tmp_path / f'{name}-ca.pem'
        ca.write_text(PEM_A)
        out.append({'name': name, 'pid': 1, 'ca_file': str(ca), 'monitor_url': 'http://127.0.0.1:1',
                    'cert_file': str(tmp_path / f'{name}.pem'), 'key_file': str(tmp_path / f'{name}-key.pem')})
    return out


@pytest.fixture
def reloads(monkeypatch):
    calls = []

    def fake(targets, transport='signal', **kw):
        calls.append(([t['name'] for t in targets], kw.get('expect_sha256'), kw.get('check_mode')))
        return {'failed': False, 'changed': True, 'targets': [], 'msg': 'ok'}
    monkeypatch.setattr(host, 'reload_local', fake)
    return calls


def test_unchanged_files_are_not_written_and_not_reloaded(targets, reloads):
    out = host.deliver_reload(PEM_A, targets)
    assert not out['delivered'] and out['reload'] is None and reloads == []


def test_a_new_bundle_is_written_then_every_server_reloaded(targets, reloads):
    out = host.deliver_reload(PEM_B, targets, expect_sha256=sha256_hex(PEM_B))
    assert out['delivered'] and out['previous_pem'] == PEM_A
    assert all(open(t['ca_file']).read() == PEM_B for t in targets)
    assert reloads == [(['n1', 'n2'], sha256_hex(PEM_B), False)]


def test_check_mode_predicts_and_writes_nothing(targets, reloads):
    out = host.deliver_reload(PEM_B, targets, check_mode=True)
    assert out['delivered'] and all(open(t['ca_file']).read() == PEM_A for t in targets)
    assert reloads == [(['n1', 'n2'], None, True)]


def test_reload_always_and_never(targets, reloads):
    host.deliver_reload(PEM_A, targets, reload='always')
    host.deliver_reload(PEM_B, targets, reload='never')
    assert reloads == [(['n1', 'n2'], None, False)]


def _ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'test CA')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return key, cert


def _sign(ca, csr_pem):
    key, cert = ca
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(cert.subject).public_key(csr.public_key())
            .serial_number(2).not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    return leaf.public_bytes(serialization.Encoding.PEM).decode() + cert.public_bytes(serialization.Encoding.PEM).decode()


def test_missing_leaf_gets_a_pending_key_and_a_csr_that_installs(targets):
    now = datetime.datetime.now(datetime.timezone.utc)
    reqs = host.leaf_requests(targets[:1], {}, ('fraction', 0.5), now)
    assert reqs[0]['reasons'] and reqs[0]['csr'].startswith('-----BEGIN CERTIFICATE REQUEST-----')
    pending = targets[0]['key_file'] + host.PENDING_SUFFIX
    assert oct(os.stat(pending).st_mode & 0o777) == '0o600'
    ca = _ca()
    assert host.install_leaves(targets[:1], {'n1': _sign(ca, reqs[0]['csr'])}) == ['n1']
    assert not os.path.exists(pending)
    disk = host.read_leaf_files(targets[0]['cert_file'], targets[0]['key_file'])
    assert disk['problem'] is None and disk['key_ok']


def test_a_certificate_for_another_key_is_refused_and_nothing_installed(targets):
    now = datetime.datetime.now(datetime.timezone.utc)
    host.leaf_requests(targets[:1], {}, ('fraction', 0.5), now)
    other = host.leaf_requests(targets[1:], {}, ('fraction', 0.5), now)[0]['csr']
    with pytest.raises(host.HostStepError, match='does not match the pending key'):
        host.install_leaves(targets[:1], {'n1': _sign(_ca(), other)})
    assert not os.path.exists(targets[0]['cert_file'])


def test_check_mode_makes_no_key(targets):
    reqs = host.leaf_requests(targets[:1], {}, ('fraction', 0.5), datetime.datetime.now(datetime.timezone.utc), check_mode=True)
    assert reqs[0]['csr'] == 'predicted'
    assert not os.path.exists(targets[0]['key_file'] + host.PENDING_SUFFIX)


def test_a_target_that_cannot_be_reloaded_is_refused_before_any_file_is_written(targets, reloads):
    broken = [dict(targets[0]), dict(targets[1], monitor_url=None)]
    with pytest.raises(host.ReloadError, match='monitor_url'):
        host.deliver_reload(PEM_B, broken)
    assert all(open(t['ca_file']).read() == PEM_A for t in targets) and reloads == []


def test_a_reload_that_cannot_start_after_the_write_still_gives_the_previous_bundle(targets, monkeypatch):
    def refuse(*_a, **_k):
        raise host.ReloadError('the probe files are unreadable')
    monkeypatch.setattr(host, 'reload_local', refuse)
    out = host.deliver_reload(PEM_B, targets)
    assert out['delivered'] and out['previous_pem'] == PEM_A
    assert out['reload']['failed'] and 'unreadable' in out['reload']['msg']

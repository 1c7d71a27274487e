# -*- coding: utf-8 -*-
"""The real ca_bundle main() with patched module args: argument errors, source=pem with a file destination."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest

from helpers import run_module  # tests/helpers.py (tests/ is put on sys.path by tests/conftest.py)
from test_bundle import GOOD, NOW, OTHER_KEY, OTHER_ROOT, ROOT_PEM, SCHED, intermediate

EPOCH = {'epoch_zero': '2025-01-01T00:00:00Z', 'epoch_duration': '1h', 'skew_allowance': '5m',
         'now': NOW.strftime('%Y-%m-%dT%H:%M:%SZ')}
PEM_BUNDLE = ''.join(GOOD[n] for n in (11, 10, 9, 8, 7)) + ROOT_PEM


def run(params, check_mode=False, diff=False):
    return run_module('ca_bundle', dict(EPOCH, **params), check_mode=check_mode, diff=diff)


@pytest.mark.parametrize('params, option, fragment', [
    ({'source': 'pem'}, 'pem', 'source=pem needs pem'),
    ({'source': 'pem', 'intermediates': [GOOD[10]]}, 'root_pem', 'intermediates need root_pem'),
    ({'pem': PEM_BUNDLE}, 'pem', 'pem is only used with source=pem'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'max_certificates': 0}, 'max_certificates', 'max_certificates must be at least 1'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'epoch': -3}, 'epoch', 'epoch must not be negative'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'epoch': 12}, 'epoch', 'epoch 12 is not in the bundle (its epochs are 11, 10, 9, 8, 7)'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'epoch_duration': 'soon'}, 'epoch_duration', "Invalid epoch_duration 'soon'"),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'now': '2025-01-01T10:00:00'}, 'now', 'no timezone'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'prune': {}}, 'prune', 'prune needs destinations.epoch_secret and/or destinations.kv'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'prune': {'keep_epochs': -1}, 'destinations': {'kv': {}}}, 'prune.keep_epochs',
     'must not be negative'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'destinations': {'live_secret': {'key': 'ca/crt'}}}, 'destinations.live_secret.key',
     'is not a valid Secret data key'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'destinations': {'epoch_secret': {'name': 'Bundle_{epoch}'}}},
     'destinations.epoch_secret.name', 'is not a valid Secret name'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'drop_expired': True}, None, None),
    ({'drop_expired': True}, 'drop_expired', 'drop_expired is only used with source=pem'),
    ({'source': 'pem', 'pem': 'garbage'}, 'pem', 'pem holds no PEM certificate'),
])
def test_argument_errors(params, option, fragment):
    result = run(params)
    if fragment is None:
        assert not result.get('failed'), result
        return
    assert result.get('failed') is True, result
    assert fragment in result['msg']
    assert result.get('option') == option


@pytest.mark.parametrize('params, fragment', [
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'intermediates': [GOOD[10]]}, 'mutually exclusive'),
    ({'source': 'git'}, 'value of source must be one of'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'destinations': {'file': {'mode': '0644'}}}, 'missing required arguments: path'),
    ({'source': 'pem', 'pem': PEM_BUNDLE, 'destinations': {'bucket': {}}}, 'bucket'),
])
def test_ansible_argument_validation(params, fragment):
    result = run(params)
    assert result.get('failed') is True
    assert fragment in result['msg']


def test_verify_only_returns_facts_and_content_only_when_asked():
    result = run({'source': 'pem', 'pem': PEM_BUNDLE})
    assert result['changed'] is False
    assert result['epoch'] == 11 and result['epochs'] == [11, 10, 9, 8, 7]
    assert 'pem' not in result
    assert result['destinations'] == {}
    with_pem = run({'source': 'pem', 'pem': PEM_BUNDLE, 'return_content': True})
    assert with_pem['pem'] == PEM_BUNDLE
    assert with_pem['sha256'] == hashlib.sha256(PEM_BUNDLE.encode()).hexdigest() == result['sha256']
    assert [c['epoch'] for c in result['certificates']] == [11, 10, 9, 8, 7, None]


def test_intermediates_and_root_pem_with_explicit_epoch():
    result = run({'source': 'pem', 'intermediates': [GOOD[9], GOOD[10]], 'root_pem': ROOT_PEM, 'epoch': 9,
                  'return_content': True, 'include_root': False})
    assert result['epoch'] == 9
    assert result['pem'] == GOOD[10] + GOOD[9]


def test_file_destination_check_run_rerun_diff(tmp_path):
    path = tmp_path / 'ca' / 'ca.crt'
    path.parent.mkdir()
    params = {'source': 'pem', 'pem': PEM_BUNDLE, 'destinations': {'file': {'path': str(path)}}}
    checked = run(params, check_mode=True, diff=True)
    assert checked['changed'] is True
    assert checked['destinations']['file']['changed'] is True
    assert not path.exists() and os.listdir(path.parent) == []
    assert checked['diff'] == [{'before_header': str(path), 'after_header': str(path), 'before': '', 'after': PEM_BUNDLE}]
    first = run(params, diff=True)
    assert first['changed'] is True
    assert path.read_text() == PEM_BUNDLE
    assert first['destinations']['file']['after_sha256'] == first['sha256']
    second = run(params, diff=True)
    assert second['changed'] is False
    assert second['diff'] == []
    assert second['destinations']['file']['before_sha256'] == first['sha256']


@pytest.mark.parametrize('bad, fragment', [
    ('garbage', 'without its matching END line'),
    ('wrong_not_after', 'expected exactly 2025-01-01T14:00:00Z'),
    ('foreign', 'not signed by the root issuer'),
    ('expired', 'expired at 2025-01-01T10:00:00Z'),
    ('empty', 'No intermediate to put in the CA bundle'),
])
def test_bad_input_writes_nothing(tmp_path, bad, fragment):
    path = tmp_path / 'ca.crt'
    path.write_text('the previous bundle\n')
    pem = {
        'garbage': '-----BEGIN NONSENSE-----\n',
        'wrong_not_after': intermediate(10, not_after=SCHED.expiry(10) + dt.timedelta(hours=1)) + ROOT_PEM,
        'foreign': GOOD[10] + intermediate(9, issuer=(OTHER_KEY, OTHER_ROOT)) + ROOT_PEM,
        'expired': GOOD[10] + GOOD[6] + ROOT_PEM,
        'empty': ROOT_PEM,
    }[bad]
    for check_mode in (True, False):
        result = run({'source': 'pem', 'pem': pem, 'destinations': {'file': {'path': str(path)}}}, check_mode=check_mode)
        assert result.get('failed') is True
        assert fragment in result['msg']
    assert path.read_text() == 'the previous bundle\n'
    assert os.listdir(tmp_path) == ['ca.crt']


def test_missing_directory_fails_before_writing(tmp_path):
    good = tmp_path / 'good.crt'
    result = run({'source': 'pem', 'pem': PEM_BUNDLE,
                  'destinations': {'file': {'path': str(tmp_path / 'nope' / 'ca.crt')}}})
    assert result['failed'] is True
    assert 'does not exist (create it first)' in result['msg']
    assert not good.exists()


def test_drop_expired_with_pem():
    result = run({'source': 'pem', 'pem': GOOD[10] + GOOD[6] + ROOT_PEM, 'drop_expired': True})
    assert result['epochs'] == [10]
    assert [d['epoch'] for d in result['dropped']] == [6]


def test_unreachable_destinations_fail_before_any_write(tmp_path):
    """Every destination is read before the first write: a broken kubeconfig or OpenBao address leaves the file alone."""
    path = tmp_path / 'ca.crt'
    base = {'source': 'pem', 'pem': PEM_BUNDLE}
    broken_k8s = run(dict(base, kubernetes={'kubeconfig': str(tmp_path / 'no-kubeconfig')},
                          destinations={'file': {'path': str(path)}, 'live_secret': {}}))
    assert broken_k8s['failed'] is True
    assert 'cannot load Kubernetes credentials from %s' % (tmp_path / 'no-kubeconfig') in broken_k8s['msg']
    broken_bao = run(dict(base, openbao={'url': 'http://127.0.0.1:1', 'token': 'x', 'retries': 0},
                          destinations={'file': {'path': str(path)}, 'kv': {}}))
    assert broken_bao['failed'] is True
    assert "Cannot reach OpenBao while reading 'secret/data/ca-bundles/epoch-11'" in broken_bao['msg']
    assert not path.exists()


def test_verify_false_delivers_byte_for_byte(tmp_path):
    """Putting back what was live before: no trust checks, exact bytes (the recorded SHA-256 must match)."""
    path = tmp_path / 'ca.crt'
    odd = (GOOD[6] + intermediate(9, issuer=(OTHER_KEY, OTHER_ROOT)) + ROOT_PEM).replace('\n', '\r\n').rstrip()
    recorded = hashlib.sha256(odd.encode()).hexdigest()
    result = run({'source': 'pem', 'pem': odd, 'verify': False, 'expected_sha256': recorded, 'return_content': True,
                  'destinations': {'file': {'path': str(path)}}})
    assert not result.get('failed'), result
    assert result['verified'] is False
    assert path.read_bytes() == odd.encode()
    assert result['sha256'] == hashlib.sha256(odd.encode()).hexdigest() == result['destinations']['file']['after_sha256']
    assert result['pem'] == odd
    assert result['epoch'] == 9 and result['epochs'] == [9, 6]
    assert [c['kind'] for c in result['certificates']] == ['intermediate', 'intermediate', 'root']
    assert run({'source': 'pem', 'pem': odd, 'verify': False, 'expected_sha256': recorded,
                'destinations': {'file': {'path': str(path)}}})['changed'] is False


def test_verify_false_needs_the_recorded_sha256_and_never_writes_an_epoch_record(tmp_path):
    """A "Rogue CA" + root with verify=false: refused without the recorded SHA-256 of what was live, refused for another
    SHA-256, and refused for the per-epoch records (KV, epoch Secret) even with its own SHA-256; nothing is written."""
    path = tmp_path / 'ca.crt'
    rogue = intermediate(9, issuer=(OTHER_KEY, OTHER_ROOT)) + ROOT_PEM
    own = hashlib.sha256(rogue.encode()).hexdigest()
    file_only = {'file': {'path': str(path)}}
    for params, option, fragment in [
        ({}, 'expected_sha256', 'needs expected_sha256'),
        ({'expected_sha256': '0' * 64}, 'expected_sha256', 'not the recorded expected_sha256'),
        ({'expected_sha256': own, 'destinations': {'kv': {}}}, 'destinations.kv', 'hold verified bundles only'),
        ({'expected_sha256': own, 'destinations': dict(file_only, epoch_secret={})}, 'destinations.epoch_secret', 'verified bundles'),
    ]:
        result = run(dict({'source': 'pem', 'pem': rogue, 'verify': False, 'destinations': file_only}, **params))
        assert result.get('failed') is True and fragment in result['msg'] and result.get('option') in (option, None), result
        assert not path.exists()
    assert run({'source': 'openbao', 'expected_sha256': own})['msg'].startswith('expected_sha256 is only used with verify=false')


_KEY_BLOCK = '-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n'


@pytest.mark.parametrize('params, option, fragment', [
    ({'verify': False}, 'verify', 'verify=false only delivers a given bundle as it is'),
    ({'source': 'pem', 'intermediates': [GOOD[10]], 'root_pem': ROOT_PEM, 'verify': False}, 'verify', 'needs source=pem with pem'),
    ({'source': 'pem', 'pem': GOOD[10] + _KEY_BLOCK, 'verify': False, 'expected_sha256': hashlib.sha256((GOOD[10] + _KEY_BLOCK).encode()).hexdigest()},
     'pem', 'is a PRIVATE KEY'),
    ({'source': 'pem', 'pem': ROOT_PEM, 'verify': False, 'expected_sha256': hashlib.sha256(ROOT_PEM.encode()).hexdigest(),
      'destinations': {'kv': {}}}, 'destinations.kv', 'hold verified bundles only'),
])
def test_verify_false_errors(params, option, fragment):
    result = run(params)
    assert result.get('failed') is True, result
    assert fragment in result['msg']
    assert result.get('option') == option


def test_previous_pem_only_with_return_content(tmp_path):
    path = tmp_path / 'ca.crt'
    path.write_text('what was live before\n')
    params = {'source': 'pem', 'pem': PEM_BUNDLE, 'destinations': {'file': {'path': str(path)}}}
    checked = run(dict(params, return_content=True), check_mode=True)
    assert checked['destinations']['file']['previous_pem'] == 'what was live before\n'
    plain = run(params, check_mode=True)
    assert 'previous_pem' not in plain['destinations']['file'] and 'pem' not in plain
    first = run(dict(params, return_content=True))
    assert first['destinations']['file']['previous_pem'] == 'what was live before\n'
    assert run(dict(params, return_content=True))['destinations']['file']['previous_pem'] == PEM_BUNDLE

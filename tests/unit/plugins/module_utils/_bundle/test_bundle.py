# -*- coding: utf-8 -*-
"""Pure logic of module_utils/_bundle/ (build, deliver, prune) and _k8s/secrets.py: building, verifying, parsing,
selecting, the file destination, pruning plans.

Certificates are made locally with ``cryptography`` (EC P-256) so every defect can be produced on purpose.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import random
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import build as bundle_build
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import deliver as bundle_deliver
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import prune as bundle_prune
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s import secrets as k8s_secrets

UTC = dt.timezone.utc
SCHED = EpochSchedule.from_params({'epoch_zero': '2025-01-01T00:00:00Z', 'epoch_duration': '1h', 'skew_allowance': '5m'})
# 10:50 on day 1: current epoch 10, valid 7..10, prepared 11 (lead time 15 min)
NOW = dt.datetime(2025, 1, 1, 10, 50, tzinfo=UTC)


# ----------------------------------------------------------------------------- a small local PKI
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(subject_cn, issuer=None, *, not_before, not_after, ca=True, key_cert_sign=True, key=None,
              basic_constraints=True, key_usage=True):
    """A certificate for ``subject_cn`` signed by ``issuer`` ((key, cert)) or self-signed. Returns (key, cert, pem)."""
    key = key or _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    signer_key, issuer_name = (key, name) if issuer is None else (issuer[0], issuer[1].subject)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=ca, encipher_only=False, decipher_only=False),
            critical=True)
    cert = builder.sign(signer_key, hashes.SHA256())
    return key, cert, cert.public_bytes(serialization.Encoding.PEM).decode()


ROOT_KEY, ROOT, ROOT_PEM = make_cert('Test Root CA', not_before=dt.datetime(2024, 1, 1, tzinfo=UTC),
                                     not_after=dt.datetime(2035, 1, 1, tzinfo=UTC))
OTHER_KEY, OTHER_ROOT, OTHER_ROOT_PEM = make_cert('Other Root CA', not_before=dt.datetime(2024, 1, 1, tzinfo=UTC),
                                                  not_after=dt.datetime(2035, 1, 1, tzinfo=UTC))


def intermediate(epoch, sched=SCHED, issuer=None, cn=None, not_after=None, **kwargs):
    """PEM of the intermediate of ``epoch`` (NotAfter exactly expiry(epoch) unless given)."""
    return make_cert(cn or 'NATS Intermediate CA Epoch %d' % epoch, issuer or (ROOT_KEY, ROOT),
                     not_before=sched.not_before(epoch), not_after=not_after or sched.expiry(epoch), **kwargs)[2]


GOOD = {n: intermediate(n) for n in range(5, 13)}


def pem_certs(text):
    return [x509.load_pem_x509_certificate(b) for b in
            [('-----BEGIN CERTIFICATE-----' + part).encode() for part in text.split('-----BEGIN CERTIFICATE-----')[1:]]]


def build(epochs, **kwargs):
    return bundle_build.build_bundle([GOOD[n] for n in epochs], ROOT_PEM, SCHED, NOW, **kwargs)


# ----------------------------------------------------------------------------- building
def test_order_newest_first_root_last_and_facts():
    bundle = build([7, 9, 11, 8, 10])
    assert bundle['epochs'] == [11, 10, 9, 8, 7]
    assert bundle['epoch'] == 11
    certs = pem_certs(bundle['pem'])
    assert [c.subject.rfc4514_string() for c in certs] == [
        'CN=NATS Intermediate CA Epoch %d' % n for n in (11, 10, 9, 8, 7)] + ['CN=Test Root CA']
    assert bundle['sha256'] == hashlib.sha256(bundle['pem'].encode()).hexdigest()
    assert bundle['pem'].endswith('-----END CERTIFICATE-----\n') and not bundle['pem'].endswith('\n\n')
    assert '\r' not in bundle['pem']
    facts = bundle['certificates']
    assert [f['epoch'] for f in facts] == [11, 10, 9, 8, 7, None]
    assert [f['kind'] for f in facts] == ['intermediate'] * 5 + ['root']
    for fact, cert in zip(facts, certs):
        assert fact['sha256'] == cert.fingerprint(hashes.SHA256()).hex()
        assert fact['subject'] == cert.subject.rfc4514_string()
        assert fact['not_after'] == cert.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ')
        assert int(fact['serial'].replace(':', ''), 16) == cert.serial_number
    assert facts[0]['not_after'] == '2025-01-01T15:00:00Z'  # expiry(11) = start(11) + 4h
    assert bundle['root_sha256'] == facts[-1]['sha256']


def test_deterministic_bytes_whatever_the_input_form():
    reference = build([10, 9, 8, 7])
    messy = [GOOD[n].replace('\n', '\r\n') + '\n\n' for n in (8, 10, 7, 9)]
    messy[0] = '# a comment line\n' + messy[0]
    again = bundle_build.build_bundle(messy + [GOOD[9]], '\n' + ROOT_PEM + '\n\n', SCHED, NOW)
    assert again['pem'] == reference['pem']
    assert again['sha256'] == reference['sha256']
    # issuer dicts as list_epoch_issuers returns them give the same bytes too
    issuers = [{'epoch': n, 'certificate': GOOD[n], 'issuer_name': 'epoch-%d' % n} for n in (7, 8, 9, 10)]
    assert bundle_build.build_bundle(issuers, ROOT_PEM, SCHED, NOW)['pem'] == reference['pem']


def test_root_among_the_intermediates_is_not_duplicated():
    bundle = bundle_build.build_bundle([GOOD[10], ROOT_PEM, GOOD[10]], ROOT_PEM, SCHED, NOW)
    assert bundle['epochs'] == [10]
    assert len(pem_certs(bundle['pem'])) == 2


def test_include_root_false():
    bundle = build([10, 9], include_root=False)
    assert len(pem_certs(bundle['pem'])) == 2
    assert all(c['kind'] == 'intermediate' for c in bundle['certificates'])
    assert bundle['include_root'] is False
    assert bundle['sha256'] != build([10, 9])['sha256']


def test_epoch_from_not_after_when_cn_has_none():
    pem = intermediate(9, cn='Some Intermediate')
    bundle = bundle_build.build_bundle([pem], ROOT_PEM, SCHED, NOW)
    assert bundle['epochs'] == [9]


@pytest.mark.parametrize('inputs, fragment', [
    ([], 'No intermediate to put in the CA bundle'),
    ([ROOT_PEM], 'No intermediate to put in the CA bundle'),
    (['hello world'], 'holds no PEM certificate'),
    (['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'], 'is not a valid PEM certificate'),
    (['-----BEGIN CERTIFICATE-----\nMIIB\n'], 'without its matching END line'),
    ([intermediate(10, issuer=(OTHER_KEY, OTHER_ROOT))], 'not signed by the root issuer'),
    ([intermediate(10, ca=False)], 'BasicConstraints CA is false'),
    ([intermediate(10, key_cert_sign=False)], 'KeyUsage lacks keyCertSign'),
    ([intermediate(10, basic_constraints=False)], 'no BasicConstraints extension'),
    ([intermediate(10, not_after=SCHED.expiry(10) + dt.timedelta(hours=1))],
     'NotAfter is 2025-01-01T15:00:00Z, expected exactly 2025-01-01T14:00:00Z'),
    ([intermediate(10, not_after=SCHED.expiry(10) - dt.timedelta(seconds=1))], 'expected exactly 2025-01-01T14:00:00Z'),
    ([intermediate(10, cn='Unlabelled', not_after=SCHED.expiry(10) + dt.timedelta(minutes=7))],
     'is not the expiry of any epoch'),
    ([GOOD[6]], 'expired at 2025-01-01T10:00:00Z (now 2025-01-01T10:50:00Z)'),
    ([GOOD[10], intermediate(10)], 'a different certificate for epoch 10'),
])
def test_bad_intermediates_are_refused(inputs, fragment):
    with pytest.raises(BundleError) as info:
        bundle_build.build_bundle(inputs, ROOT_PEM, SCHED, NOW)
    assert fragment in str(info.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(BundleError) as info:
        bundle_build.build_bundle([GOOD[10], GOOD[6], intermediate(9, issuer=(OTHER_KEY, OTHER_ROOT))], ROOT_PEM, SCHED, NOW)
    text = str(info.value)
    assert 'nothing was written' in text
    assert 'epoch 6) expired' in text and 'epoch 9): not signed by the root issuer' in text


def test_private_key_block_is_refused():
    key_pem = ROOT_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
    with pytest.raises(BundleError) as info:
        bundle_build.build_bundle([GOOD[10] + key_pem], ROOT_PEM, SCHED, NOW)
    assert 'is a PRIVATE KEY, not a CERTIFICATE' in str(info.value)
    assert 'never put a private key in it' in str(info.value)


@pytest.mark.parametrize('root, fragment', [
    ('', 'No root certificate'),
    ('garbage', 'root_pem holds no PEM certificate'),
    (ROOT_PEM + OTHER_ROOT_PEM, 'root_pem holds 2 certificates'),
    (make_cert('leaf', (ROOT_KEY, ROOT), not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=1),
               ca=False)[2], 'is not a CA certificate'),
])
def test_bad_root(root, fragment):
    with pytest.raises(BundleError) as info:
        bundle_build.build_bundle([GOOD[10]], root, SCHED, NOW)
    assert fragment in str(info.value)
    assert info.value.option == 'root_pem'


def test_expired_root_is_refused():
    key, cert, pem = make_cert('Old Root', not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
                               not_after=dt.datetime(2025, 1, 1, 5, tzinfo=UTC))
    with pytest.raises(BundleError, match='expired at 2025-01-01T05:00:00Z'):
        bundle_build.build_bundle([intermediate(10, issuer=(key, cert))], pem, SCHED, NOW)


def test_bounded_by_max_certificates():
    assert len(build([11, 10, 9, 8, 7, 6], max_certificates=6, drop_expired=True)['epochs']) == 5
    with pytest.raises(BundleError) as info:
        build([11, 10, 9], max_certificates=2)
    assert 'would hold 3 intermediates (epochs 11, 10, 9), more than max_certificates=2' in str(info.value)
    assert info.value.option == 'max_certificates'
    for bad in (0, -1, True, '3'):
        with pytest.raises(BundleError, match='max_certificates must be a positive integer'):
            build([10], max_certificates=bad)


def test_drop_expired():
    bundle = build([10, 6, 5], drop_expired=True)
    assert bundle['epochs'] == [10]
    assert [d['epoch'] for d in bundle['dropped']] == [6, 5]
    with pytest.raises(BundleError, match='every one given has expired'):
        build([6, 5], drop_expired=True)
    # a defect other than expiry is never dropped silently
    with pytest.raises(BundleError, match='not signed by the root'):
        bundle_build.build_bundle([GOOD[10], intermediate(5, issuer=(OTHER_KEY, OTHER_ROOT))], ROOT_PEM, SCHED, NOW,
                                  drop_expired=True)


# ----------------------------------------------------------------------------- bundle_from_pem / parse_bundle
def test_bundle_from_pem_round_trip():
    original = build([11, 10, 9, 8, 7])
    again = bundle_build.bundle_from_pem(original['pem'], SCHED, NOW)
    assert again['pem'] == original['pem']
    no_root = build([10, 9], include_root=False)
    with pytest.raises(BundleError, match='holds no root certificate'):
        bundle_build.bundle_from_pem(no_root['pem'], SCHED, NOW)
    assert bundle_build.bundle_from_pem(no_root['pem'], SCHED, NOW, root_pem=ROOT_PEM, include_root=False)['pem'] == no_root['pem']
    with pytest.raises(BundleError, match='is not root_pem'):
        bundle_build.bundle_from_pem(original['pem'], SCHED, NOW, root_pem=OTHER_ROOT_PEM)
    with pytest.raises(BundleError, match='2 self-signed certificates'):
        bundle_build.bundle_from_pem(original['pem'] + OTHER_ROOT_PEM, SCHED, NOW)


def test_parse_bundle():
    bundle = build([10, 9])
    parsed = bundle_build.parse_bundle(bundle['pem'])
    assert [p['kind'] for p in parsed] == ['intermediate', 'intermediate', 'root']
    names = ['NATS Intermediate CA Epoch 10', 'NATS Intermediate CA Epoch 9', 'Test Root CA']
    assert [p['common_name'] for p in parsed] == names
    assert all(p['is_ca'] for p in parsed)
    assert ''.join(p['certificate'] for p in parsed) == bundle['pem']
    assert [p['sha256'] for p in parsed] == [c['sha256'] for c in bundle['certificates']]
    with pytest.raises(BundleError, match='pem is empty'):
        bundle_build.parse_bundle('  \n')
    with pytest.raises(BundleError, match='non-ASCII'):
        bundle_build.parse_bundle(b'\xff\xfe')


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([7, 8, 9, 10, 11]), min_size=1, max_size=8), st.randoms(use_true_random=False),
       st.booleans())
def test_property_same_set_same_bytes(epochs, rnd, include_root):
    """Any order, duplicates and formatting of the same certificates give the same bytes; parsing and
    rebuilding a bundle is the identity."""
    shuffled = list(epochs)
    rnd.shuffle(shuffled)
    first = bundle_build.build_bundle([GOOD[n] for n in epochs], ROOT_PEM, SCHED, NOW, include_root=include_root)
    second = bundle_build.build_bundle([GOOD[n] + '\n' for n in shuffled], ROOT_PEM, SCHED, NOW, include_root=include_root)
    assert first['pem'] == second['pem'] and first['sha256'] == second['sha256']
    assert first['epochs'] == sorted(set(epochs), reverse=True)
    rebuilt = bundle_build.bundle_from_pem(first['pem'], SCHED, NOW, root_pem=ROOT_PEM, include_root=include_root)
    assert rebuilt['pem'] == first['pem']


# ----------------------------------------------------------------------------- selection
def issuer(n, **extra):
    return dict({'epoch': n, 'issuer_name': 'epoch-%d' % n, 'issuer_id': 'id-%d' % n, 'certificate': GOOD.get(n)}, **extra)


def test_select_epochs_valid_plus_prepared_newest_first():
    issuers = [issuer(n) for n in range(5, 13)]
    assert [i['epoch'] for i in bundle_build.select_epochs(issuers, SCHED, NOW)] == [11, 10, 9, 8, 7]
    before_lead = NOW - dt.timedelta(minutes=10)  # 10:40, not yet prepared
    assert [i['epoch'] for i in bundle_build.select_epochs(issuers, SCHED, before_lead)] == [10, 9, 8, 7]


def test_select_epochs_skips_revoked_and_missing():
    issuers = [issuer(7), issuer(9, revoked=True), issuer(10)]
    assert [i['epoch'] for i in bundle_build.select_epochs(issuers, SCHED, NOW)] == [10, 7]


def test_epoch_from_not_after():
    assert bundle_build.epoch_from_not_after(SCHED, SCHED.expiry(42)) == 42
    assert bundle_build.epoch_from_not_after(SCHED, SCHED.expiry(42) + dt.timedelta(seconds=1)) is None
    assert bundle_build.epoch_from_not_after(SCHED, SCHED.epoch_zero) is None


def test_kv_record():
    bundle = build([11, 10])
    record = bundle_deliver.kv_record(bundle, 11, SCHED, created_at=NOW)
    assert record['ca-bundle.pem'] == bundle['pem']
    assert record['sha256'] == bundle['sha256']
    assert record['epoch'] == 11
    assert record['created_at'] == '2025-01-01T10:50:00Z'
    assert record['expires_at'] == '2025-01-01T15:00:00Z'
    assert [i['issuer_name'] for i in record['issuers']] == ['epoch-11', 'epoch-10']
    assert bundle_deliver.expand('ca-bundles/epoch-{epoch}', 11) == 'ca-bundles/epoch-11'


# ----------------------------------------------------------------------------- file destination
def test_deliver_file_create_unchanged_and_check_mode(tmp_path):
    pem = build([10, 9])['pem']
    path = tmp_path / 'ca.crt'
    predicted = bundle_deliver.deliver_file(str(path), pem, check_mode=True)
    assert predicted['changed'] is True and predicted['before_sha256'] is None
    assert not path.exists()
    assert os.listdir(tmp_path) == []
    first = bundle_deliver.deliver_file(str(path), pem)
    assert first['changed'] is True
    assert path.read_text() == pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert first['after_sha256'] == hashlib.sha256(pem.encode()).hexdigest()
    second = bundle_deliver.deliver_file(str(path), pem)
    assert second['changed'] is False
    assert second['before_sha256'] == second['after_sha256']
    assert os.listdir(tmp_path) == ['ca.crt']  # no temp file left behind


def test_deliver_file_keeps_existing_mode_and_backs_up(tmp_path):
    path = tmp_path / 'ca.crt'
    path.write_text('old bundle\n')
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    pem = build([10])['pem']
    res = bundle_deliver.deliver_file(str(path), pem, backup=True)
    assert res['changed'] and res['backup_file']
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert open(res['backup_file']).read() == 'old bundle\n'
    assert res['diff']['before'] == 'old bundle\n' and res['diff']['after'] == pem
    assert res['before_sha256'] == hashlib.sha256(b'old bundle\n').hexdigest()


def test_deliver_file_mode_only_change(tmp_path):
    path = tmp_path / 'ca.crt'
    pem = build([10])['pem']
    bundle_deliver.deliver_file(str(path), pem, mode='0644')
    res = bundle_deliver.deliver_file(str(path), pem, mode='0600', check_mode=True)
    assert res['changed'] and not res['content_changed']
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    res = bundle_deliver.deliver_file(str(path), pem, mode='0600')
    assert res['changed'] and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bundle_deliver.deliver_file(str(path), pem, mode=0o600)['changed'] is False


@pytest.mark.parametrize('kind, fragment', [
    ('nodir', 'does not exist (create it first)'),
    ('isdir', 'it is a directory'),
    ('mode', 'is not an octal file mode'),
    ('owner', 'Unknown owner or group'),
])
def test_deliver_file_errors(tmp_path, kind, fragment):
    pem = build([10])['pem']
    path, kwargs = tmp_path / 'ca.crt', {}
    if kind == 'nodir':
        path = tmp_path / 'missing' / 'ca.crt'
    elif kind == 'isdir':
        path.mkdir()
    elif kind == 'mode':
        kwargs['mode'] = 'rw-r--r--'
    else:
        kwargs['owner'] = 'no-such-user-%d' % random.randrange(10 ** 6)
    for check_mode in (True, False):
        with pytest.raises(BundleError) as info:
            bundle_deliver.deliver_file(str(path), pem, check_mode=check_mode, **kwargs)
        assert fragment in str(info.value)
    assert not (tmp_path / 'ca.crt').is_file()


# ----------------------------------------------------------------------------- pruning plan
def test_prune_plan():
    # at NOW (epoch 10): epochs <= 6 are expired
    epochs = [3, 4, 5, 6, 7, 8, 10, 11]
    assert bundle_prune._prune_plan(epochs, SCHED, NOW, 2, set()) == [3, 4, 5, 6]
    assert bundle_prune._prune_plan([3, 4, 5], SCHED, NOW, 2, set()) == [3]
    assert bundle_prune._prune_plan([3, 4, 5], SCHED, NOW, 0, {4}) == [3, 5]
    assert bundle_prune._prune_plan([], SCHED, NOW, 2, set()) == []
    # the copy being delivered counts among the newest even before it exists (check mode predicts the real run)
    assert bundle_prune._prune_plan([3, 4, 5, 6], SCHED, NOW, 2, {11}) == [3, 4, 5]


def test_secret_helpers():
    assert k8s_secrets.valid_secret_key('ca.crt') and k8s_secrets.valid_secret_key('ca-bundle.pem')
    assert not k8s_secrets.valid_secret_key('ca/crt') and not k8s_secrets.valid_secret_key('')
    assert k8s_secrets.valid_secret_name('nats-ca-bundle-epoch-7')
    assert not k8s_secrets.valid_secret_name('Nats_CA')
    assert k8s_secrets.epoch_secret_labels(7) == {'epoch': '7', 'app.kubernetes.io/managed-by': 'securetransport.ca_rotation'}
    assert k8s_secrets.live_secret_annotations(7, 'ab') == {'rotation.watcher.io/epoch': '7', 'rotation.watcher.io/sha256': 'ab'}
    assert k8s_secrets.live_secret_annotations(None, 'ab') == {'rotation.watcher.io/epoch': None, 'rotation.watcher.io/sha256': 'ab'}
    assert base64.b64decode(k8s_secrets._b64('x')) == b'x'


def test_a_distrusted_intermediate_is_left_out_and_said_so():
    distrusted = {pem_certs(GOOD[10])[0].fingerprint(hashes.SHA256()).hex()}
    bundle = build([10, 9, 8], distrusted=distrusted)
    assert bundle['epochs'] == [9, 8]
    assert [d['reason'] for d in bundle['dropped']] == ['distrusted'] and bundle['dropped'][0]['epoch'] == 10
    # so is a stored bundle that held it (what a rollback restores)
    stored = build([10, 9, 8])['pem']
    again = bundle_build.bundle_from_pem(stored, SCHED, NOW, root_pem=ROOT_PEM, distrusted=distrusted)
    assert again['epochs'] == [9, 8] and again['pem'] == bundle['pem']
    with pytest.raises(BundleError):
        build([10], distrusted=distrusted)  # nothing left to trust

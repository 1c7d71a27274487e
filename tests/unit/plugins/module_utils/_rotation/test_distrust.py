# -*- coding: utf-8 -*-
"""The decisions of a distrust (playbooks/distrust.yml): which issuer, what is refused, what stays in the bundle,
and the replacement issuer names."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import build as bundle_build
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import pki
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import distrust, refusal
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.decisions import Refusal

UTC = dt.timezone.utc
SCHED = EpochSchedule.from_params({'epoch_zero': '2025-01-01T00:00:00Z', 'epoch_duration': '1h', 'skew_allowance': '5m'})
NOW = dt.datetime(2025, 1, 1, 10, 50, tzinfo=UTC)  # current epoch 10, valid 7..10, prepared 11


def issuer(epoch, replacement=0, default=False, revoked=False, not_after=None):
    name = pki.epoch_issuer_name(epoch, replacement)
    return {'epoch': epoch, 'replacement': replacement, 'issuer_id': 'id-' + name, 'issuer_name': name,
            'sha256': 'sha-' + name, 'serial': 'serial-' + name, 'is_default': default, 'revoked': revoked,
            'not_after': not_after or SCHED.expiry(epoch).strftime('%Y-%m-%dT%H:%M:%SZ')}


ISSUERS = [issuer(9), issuer(10, default=True), issuer(11)]


def test_the_default_issuer_is_chosen_and_its_record_makes_a_rerun_converge():
    target, entry = distrust.choose_target(10, ISSUERS, {}, NOW, include_root=False, force_intermediates_only=False)
    assert target['issuer_name'] == 'epoch-10' and target['is_default'] and entry is None
    record = distrust.distrust_entry(target, 'run-1', NOW, 'key compromise')
    assert record['sha256'] == 'sha-epoch-10' and record['reason'] == 'key compromise' and record['by'] == 'run-1'
    state = {'distrusted': [record]}
    again, entry = distrust.choose_target(10, ISSUERS, state, NOW, include_root=False, force_intermediates_only=False)
    assert entry == record and again['issuer_name'] == 'epoch-10'
    # once its replacement exists the record still names the distrusted one, never the replacement
    again, entry = distrust.choose_target(10, ISSUERS + [issuer(10, 1, default=True)], state, NOW, False, False)
    assert again['issuer_name'] == 'epoch-10' and entry == record


def test_of_an_epoch_with_a_replacement_the_replacement_is_the_target():
    issuers = [issuer(9), issuer(10, revoked=True), issuer(10, 1, default=True)]
    state = {'distrusted': [distrust.distrust_entry(issuers[1], 'run-1', NOW, 'x')]}
    # the record of epoch 10 exists: a re-run converges on it (distrusting the replacement is not implied)
    assert distrust.choose_target(10, issuers, state, NOW, False, False)[1] is not None
    target, entry = distrust.choose_target(10, issuers, {}, NOW, False, False)
    assert target['issuer_name'] == 'epoch-10-r1' and entry is None


@pytest.mark.parametrize('epoch, issuers, include_root, force, words', [
    (8, ISSUERS, False, False, 'Epoch 8 has no intermediate on this mount (issuers: epoch-9, epoch-10, epoch-11)'),
    (5, ISSUERS + [issuer(5)], False, False, 'Epoch 5 expired at 2025-01-01T09:00:00Z'),
    (10, [issuer(9), issuer(10, revoked=True)], False, False, 'revoked by hand'),
    (9, [issuer(9), issuer(10, revoked=True, default=True)], False, False, 'would leave no epoch trusted'),
    (10, ISSUERS, True, False, 'ca_rotation_distrust_force_intermediates_only=true'),
])
def test_refusals_name_the_reason_and_change_nothing(epoch, issuers, include_root, force, words):
    with pytest.raises(Refusal) as info:
        distrust.choose_target(epoch, issuers, {}, NOW, include_root, force)
    assert words in str(info.value)
    assert 'othing was changed' in str(info.value) or 'Nothing was changed' in str(info.value)


def test_the_only_valid_default_issuer_may_be_distrusted_because_it_is_replaced_first():
    target = distrust.choose_target(10, [issuer(10, default=True)], {}, NOW, False, False)[0]
    assert target['issuer_name'] == 'epoch-10'


def test_the_force_option_allows_a_bundle_configured_with_the_root():
    target = distrust.choose_target(10, ISSUERS, {}, NOW, include_root=True, force_intermediates_only=True)[0]
    assert target['issuer_name'] == 'epoch-10'


def test_the_root_stays_out_while_a_distrusted_intermediate_is_valid():
    entry = distrust.distrust_entry(issuer(10), 'run', NOW, 'x')
    state = {'distrusted': [entry]}
    assert distrust.valid_distrusted(state, NOW) == [entry]
    assert distrust.bundle_includes_root(True, state, NOW) is False
    assert distrust.bundle_includes_root(False, {}, NOW) is False
    after = SCHED.expiry(10) + dt.timedelta(seconds=1)
    assert distrust.valid_distrusted(state, after) == []
    assert distrust.bundle_includes_root(True, state, after) is True
    assert distrust.distrusted_shas(state) == {'sha-epoch-10'}
    # an unreadable expiry is treated as valid: the entry keeps the root out rather than trusting anything again
    assert distrust.valid_distrusted({'distrusted': [dict(entry, not_after='soon')]}, after)


def test_rotate_and_rollback_refuse_while_a_replacement_is_pending():
    distrust.refuse_while_pending({})
    with pytest.raises(Refusal, match=r'distrust of epoch 10 .* epoch-10-r1 .*ca_rotation_distrust_epoch=10; nothing was changed'):
        distrust.refuse_while_pending({'distrust_pending': {'epoch': 10, 'issuer_name': 'epoch-10', 'since': 't',
                                                            'replacement': 'epoch-10-r1'}})


@pytest.mark.parametrize('default, pending, first_pass, check_mode, expected', [
    (True, None, None, False, True),  # the default issuer: replaced first
    (False, None, None, False, False),  # not the default: out in one stage
    (False, 10, None, False, True),  # a re-run whose second pass did not happen: still replacing
    (False, 9, None, False, False),  # another epoch's distrust is pending: not this one's
    (False, 10, {'stage': 'replacing'}, False, False),  # the second pass, after activation: complete
    (True, 10, {'stage': 'replacing'}, False, True),  # the second pass while it is still the default: not yet
    (True, 10, {'stage': 'replacing'}, True, False),  # check mode: the activation is predicted
])
def test_stage_replacing_until_the_second_pass_goes_ahead(default, pending, first_pass, check_mode, expected):
    target = issuer(10, default=default)
    state = {'distrust_pending': {'epoch': pending}} if pending else {}
    assert distrust.replacing(target, state, first_pass, check_mode) is expected


def test_replacement_names():
    assert pki.epoch_issuer_name(7) == 'epoch-7' and pki.epoch_issuer_name(7, 2) == 'epoch-7-r2'
    assert [pki.replacement_of(n) for n in ('epoch-7', 'epoch-7-r2', 'epoch-7-r0', 'other', None)] == [0, 2, None, None, None]
    listed = {'a': {'issuer_name': 'epoch-7'}, 'b': {'issuer_name': 'epoch-7-r1'}, 'c': {'issuer_name': 'epoch-8'},
              'd': {'issuer_name': 'root'}, 'e': {'issuer_name': 'epoch-7-r2'}}
    assert pki.live_epoch_names(listed) == {7: 'epoch-7-r2', 8: 'epoch-8'}


def test_select_epochs_takes_the_newest_replacement_and_leaves_distrusted_out_unless_kept():
    issuers = [issuer(9), issuer(10), issuer(10, 1), issuer(11), issuer(3)]
    chosen = bundle_build.select_epochs(issuers, SCHED, NOW)
    assert [i['issuer_name'] for i in chosen] == ['epoch-11', 'epoch-10-r1', 'epoch-9']
    chosen = bundle_build.select_epochs(issuers, SCHED, NOW, distrusted={'sha-epoch-10', 'sha-epoch-11'})
    assert [i['issuer_name'] for i in chosen] == ['epoch-10-r1', 'epoch-9']
    # while the replacement is proven, the distrusted default stays next to it
    chosen = bundle_build.select_epochs(issuers, SCHED, NOW, keep={'id-epoch-10'}, distrusted={'sha-epoch-10'})
    assert [i['issuer_name'] for i in chosen] == ['epoch-11', 'epoch-10-r1', 'epoch-10', 'epoch-9']
    # revoked issuers never come back
    chosen = bundle_build.select_epochs([issuer(9), issuer(10, revoked=True)], SCHED, NOW)
    assert [i['issuer_name'] for i in chosen] == ['epoch-9']


def _witness(tmp_path):
    """A throwaway self-signed certificate and key in the witness's three files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'witness')])
    start = dt.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / 'cert.pem').write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / 'key.pem').write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return {'leaf_file': str(tmp_path / 'cert.pem'), 'chain_file': str(tmp_path / 'cert.pem'), 'key_file': str(tmp_path / 'key.pem')}


def test_a_server_without_an_address_is_not_proven_refused(tmp_path):
    proof = refusal.prove_refused([{'name': 'nats-0', 'problem': 'pod nats/nats-0 is not running (phase Pending)'}],
                                  _witness(tmp_path))
    assert not proof['ok'] and proof['errors'] == ['nats-0: no address to try (pod nats/nats-0 is not running (phase Pending))']


def test_route_ports_are_tried_when_the_target_names_them():
    assert refusal.ports({'url': 'nats://10.0.0.7:4222', 'route_url': 'nats://10.0.0.7:6222'}) == [
        ('client', '10.0.0.7', 4222), ('route', '10.0.0.7', 6222)]
    assert refusal.ports({'url': 'nats://127.0.0.1:4222'}, probe_host='vm-1') == [('client', 'vm-1', 4222)]

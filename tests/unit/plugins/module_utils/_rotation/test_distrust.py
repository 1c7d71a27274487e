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


@pytest.mark.parametrize('default, pending, recorded, first_pass, check_mode, expected', [
    (True, None, False, None, False, True),  # the default issuer: replaced first
    (False, None, False, None, False, True),  # not the default: kept while the leaves it signed are re-issued
    (False, 10, True, None, False, True),  # a re-run whose second pass did not happen: still replacing
    (False, None, True, None, False, False),  # the re-run of a completed distrust: complete
    (False, 10, True, {'stage': 'replacing'}, False, False),  # the second pass, after activation: complete
    (False, None, False, {'stage': 'replacing'}, True, False),  # the second pass of a non-default one: complete
    (True, 10, True, {'stage': 'replacing'}, False, True),  # the second pass while it is still the default: not yet
    (True, 10, False, {'stage': 'replacing'}, True, False),  # check mode: the activation is predicted
])
def test_stage_replacing_until_the_second_pass_goes_ahead(default, pending, recorded, first_pass, check_mode, expected):
    target = issuer(10, default=default)
    state = {'distrust_pending': {'epoch': pending}} if pending else {}
    if recorded:
        state['distrusted'] = [distrust.distrust_entry(target, 'run', NOW, 'x')]
    assert distrust.replacing(target, state, first_pass, check_mode, now=NOW) is expected


def test_an_expired_target_is_complete_at_once_even_while_pending():
    target = issuer(10, default=True)
    state = {'distrust_pending': {'epoch': 10}, 'distrusted': [distrust.distrust_entry(target, 'run', NOW, 'x')]}
    after = SCHED.expiry(10) + dt.timedelta(seconds=1)
    assert distrust.replacing(target, state, None, False, now=NOW) is True
    assert distrust.replacing(target, state, None, False, now=after) is False
    assert distrust.expired(target, after) and not distrust.expired(target, NOW)
    assert not distrust.expired({'not_after': None}, after)  # unreadable: not known to be expired


def test_only_the_replacement_of_a_default_issuer_is_activated():
    assert distrust.to_activate(issuer(10, default=True), {}, 'epoch-10-r1') == 'epoch-10-r1'
    # a prepared epoch's replacement waits for its epoch's rotation
    assert distrust.to_activate(issuer(11), {}, 'epoch-11-r1') is None
    # a re-run after the activation keeps the pending record's choice (and reads an older record's replacement)
    assert distrust.to_activate(issuer(10), {'distrust_pending': {'epoch': 10, 'activate': 'epoch-10-r1'}}, None) == 'epoch-10-r1'
    assert distrust.to_activate(issuer(10), {'distrust_pending': {'epoch': 10, 'activate': None}}, 'epoch-10-r1') is None
    assert distrust.to_activate(issuer(10), {'distrust_pending': {'epoch': 10, 'replacement': 'epoch-10-r1'}}, None) == 'epoch-10-r1'


def test_the_replacement_that_stands_for_the_epoch_is_found_without_issuing():
    issuers = [issuer(9), issuer(10, revoked=True), issuer(10, 1, revoked=True), issuer(10, 2), issuer(11, 1)]
    target = issuer(10)
    assert distrust.live_replacement(issuers, target, set())['issuer_name'] == 'epoch-10-r2'
    assert distrust.live_replacement(issuers, target, {'sha-epoch-10-r2'}) is None
    assert distrust.live_replacement(issuers, issuer(9), set()) is None  # an epoch never replaced


def test_the_pending_record_names_the_intermediate_and_says_what_stays_trusted():
    target = issuer(9)
    record = distrust.distrust_entry(target, 'run', NOW, 'x')
    p = distrust.pending_record(target, record, None, None, 't')
    assert p == {'epoch': 9, 'issuer_name': 'epoch-9', 'sha256': 'sha-epoch-9', 'replacement': None, 'activate': None,
                 'since': 't'}
    assert 'the distrusted intermediate stays in the bundle' in distrust.describe_pending(p)
    with pytest.raises(Refusal) as info:
        distrust.refuse_while_pending({'distrust_pending': p})
    assert 'None' not in str(info.value) and 'ca_rotation_distrust_epoch=9; nothing was changed' in str(info.value)


def test_another_distrust_is_refused_while_one_is_pending():
    state = {'distrust_pending': {'epoch': 10, 'issuer_name': 'epoch-10', 'since': 't', 'activate': 'epoch-10-r1'},
             'distrusted': [distrust.distrust_entry(issuer(10), 'run', NOW, 'x')]}
    with pytest.raises(Refusal, match=r'distrust of epoch 10 .* is not complete: finish it first with playbooks/distrust.yml '
                                      r'-e ca_rotation_distrust_epoch=10, then distrust epoch 9 .*Nothing was changed'):
        distrust.choose_target(9, ISSUERS, state, NOW, False, False)
    # the pending one itself is the re-run that finishes it
    assert distrust.choose_target(10, ISSUERS, state, NOW, False, False)[1] is not None


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


def _ca(name, signer=None):
    """``(cert, key)``: a CA named ``name``, self-signed or signed by ``signer`` ``(cert, key)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = signer or (None, key)
    start = dt.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert is not None else subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(issuer_key, hashes.SHA256()))
    return cert, key


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class _Cluster:
    def __init__(self, targets=(), transport='signal', renew_leaves=True):
        self.targets, self.transport, self.renew_leaves, self.name = list(targets), transport, renew_leaves, 'c1'


class _Pods:
    """A transport whose discover() lists pods as the Kubernetes transport does (pure data: no API behind it)."""

    def __init__(self, pods):
        self.pods, self.closed = pods, False

    def discover(self):
        return self.pods

    def close(self):
        self.closed = True


def _pod(name, host=None, port=4222, route_port=None, problem=None):
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import Target
    target = Target(name, host=host, port=port, problem=problem)
    if route_port:
        target.state['route_port'] = route_port
    return target


def test_server_addresses_of_kubernetes_pods_name_client_and_route_ports_and_keep_problems(monkeypatch):
    pods = _Pods([_pod('nats-0', '10.0.0.5', 4222, 6222), _pod('nats-1', 'fd00::7', 4222),
                  _pod('nats-2', problem='pod nats/nats-2 is not running (phase Pending)')])
    monkeypatch.setattr(refusal, 'build_transport', lambda cc: pods)
    assert refusal.server_addresses(_Cluster(transport='kubernetes')) == [
        {'name': 'nats-0', 'problem': None, 'url': 'nats://10.0.0.5:4222', 'route_url': 'nats://10.0.0.5:6222'},
        {'name': 'nats-1', 'problem': None, 'url': 'nats://[fd00::7]:4222'},
        {'name': 'nats-2', 'problem': 'pod nats/nats-2 is not running (phase Pending)'}]
    assert pods.closed
    # the inventory's targets win, and other transports never discover
    listed = [{'name': 'vm-1', 'url': 'nats://vm-1:4222'}]
    assert refusal.server_addresses(_Cluster(listed, transport='kubernetes')) == listed
    assert refusal.server_addresses(_Cluster(transport='signal')) == []


def test_still_served_names_servers_presenting_a_leaf_of_the_intermediate_on_any_port(monkeypatch, tmp_path):
    root = _ca('root')
    bad, good = _ca('epoch-10', root), _ca('epoch-10-r1', root)
    leaf_bad, leaf_good = _ca('nats-0', bad)[0], _ca('nats-1', good)[0]
    served = {('10.0.0.5', 4222): leaf_good, ('10.0.0.5', 6222): leaf_bad,  # only its route port still has the old one
              ('10.0.0.6', 4222): leaf_good, ('10.0.0.6', 6222): leaf_good,
              ('10.0.0.8', 4222): leaf_bad}

    def fake_served(host, port, ctx, timeout=5.0, **_mine):
        if (host, port) == ('10.0.0.7', 4222):
            raise OSError('connection reset by peer')
        if (host, port) == ('10.0.0.9', 4222):
            raise ValueError('not a DER certificate')
        return served[(host, port)]

    monkeypatch.setattr(refusal, 'served_certificate', fake_served)
    pods = _Pods([_pod('nats-0', '10.0.0.5', 4222, 6222), _pod('nats-1', '10.0.0.6', 4222, 6222), _pod('nats-2', '10.0.0.7'),
                  _pod('nats-3', '10.0.0.8'), _pod('nats-4', problem='no pod IP yet'), _pod('nats-5', '10.0.0.9')])
    monkeypatch.setattr(refusal, 'build_transport', lambda cc: pods)
    probe = {'cert_file': str(tmp_path / 'absent.pem'), 'key_file': str(tmp_path / 'absent.key')}  # check mode: none yet
    found = refusal.still_served(_Cluster(transport='kubernetes'), _pem(bad[0]), probe)
    assert found['signed'] == ['nats-0', 'nats-3']
    assert [e.split(':')[0] for e in found['errors']] == ['nats-2', 'nats-4', 'nats-5'], found['errors']
    assert 'connection reset by peer' in found['errors'][0] and 'no pod IP yet' in found['errors'][1]
    # servers whose leaf the collection renews are not read: the leaf phase re-issues theirs
    vm = [{'name': 'vm-1', 'url': 'nats://10.0.0.8:4222', 'cert_file': '/c', 'key_file': '/k'}]
    assert refusal.still_served(_Cluster(vm), _pem(bad[0]), probe) == {'signed': [], 'errors': []}
    assert refusal.still_served(_Cluster(vm, renew_leaves=False), _pem(bad[0]), probe)['signed'] == ['vm-1']


@pytest.mark.parametrize('reason, refused', [
    ('TLSV1_ALERT_UNKNOWN_CA', True), ('SSLV3_ALERT_BAD_CERTIFICATE', True), ('TLSV13_ALERT_CERTIFICATE_REQUIRED', True),
    ('SSLV3_ALERT_CERTIFICATE_REVOKED', True), ('tlsv1 alert access denied', True),
    ('SSLV3_ALERT_HANDSHAKE_FAILURE', False), ('NO_SHARED_SIGNATURE_ALGORITHMS', False), ('WRONG_VERSION_NUMBER', False),
    ('', False),
])
def test_only_the_servers_alert_about_our_certificate_counts_as_a_refusal(reason, refused):
    assert refusal.rejects_certificate(reason) is refused


def _announcer(tmp_path, name, cert, chain=()):
    """The announcer's cert_file: the leaf, then whatever chain the file also holds."""
    path = tmp_path / name
    path.write_text(''.join(_pem(c) for c in (cert,) + tuple(chain)))
    return str(path)


def test_the_announcers_leaf_of_the_distrusted_intermediate_blocks_the_second_pass_when_it_is_not_reissued(tmp_path):
    root = _ca('root')
    bad, good = _ca('epoch-10', root), _ca('epoch-10-r1', root)
    target = dict(issuer(10), certificate=_pem(bad[0]))
    issuers = [target, dict(issuer(10, 1, default=True), certificate=_pem(good[0]))]
    leaf = _announcer(tmp_path, 'announcer.pem', _ca('announcer', bad)[0], chain=[bad[0]])  # leaf + intermediate
    why = distrust.announcer_leaf_blocks(leaf, target, issuers, renew_client_leaf=False, now=NOW)
    assert why is not None and why.startswith("The announcer's client certificate %s (ca_rotation_authority_nats.cert_file) "
                                              'was signed by the distrusted intermediate epoch-10' % leaf), why
    assert 'ca_rotation_authority_renew_client_leaf is off' in why
    assert 'Re-issue it from the default issuer epoch-10-r1 (or set ca_rotation_authority_renew_client_leaf: true), then ' \
           're-run playbooks/distrust.yml -e ca_rotation_distrust_epoch=10' in why
    assert why.endswith('The distrusted intermediate stays in the bundle until then.')
    # the same leaf alone in the file, and in check mode (no renewal to predict): blocked too
    alone = _announcer(tmp_path, 'alone.pem', _ca('announcer', bad)[0])
    assert distrust.announcer_leaf_blocks(alone, target, issuers, check_mode=True, now=NOW) is not None
    # with the renewal on but no announcement, the engine never re-issues it either: that switch is named
    why = distrust.announcer_leaf_blocks(leaf, target, issuers, renew_client_leaf=True, announce=False, now=NOW)
    assert 'ca_rotation_authority_announce is off' in why and 'or turn ca_rotation_authority_announce on' in why
    # renewal on: a leaf the run should have re-issued and did not still blocks (the safety net), check mode predicts it
    why = distrust.announcer_leaf_blocks(leaf, target, issuers, renew_client_leaf=True, now=NOW)
    assert 'was not re-issued in this run' in why and 'Re-issue it from the default issuer epoch-10-r1, then' in why
    assert distrust.announcer_leaf_blocks(leaf, target, issuers, renew_client_leaf=True, check_mode=True, now=NOW) is None


def test_the_announcers_leaf_blocks_nothing_when_another_issuer_signed_it_or_nothing_can_be_judged(tmp_path):
    root = _ca('root')
    bad, good = _ca('epoch-10', root), _ca('epoch-10-r1', root)
    target = dict(issuer(10), certificate=_pem(bad[0]))
    of_bad = _announcer(tmp_path, 'bad.pem', _ca('announcer', bad)[0])
    assert distrust.announcer_leaf_blocks(of_bad, target, now=NOW) is not None  # the control: this one blocks
    # re-issued from the replacement, even with the distrusted intermediate's name on a look-alike: not signed by it
    assert distrust.announcer_leaf_blocks(_announcer(tmp_path, 'good.pem', _ca('announcer', good)[0]), target, now=NOW) is None
    impostor = _ca('epoch-10', root)  # same subject, other key
    assert distrust.announcer_leaf_blocks(_announcer(tmp_path, 'imp.pem', _ca('announcer', impostor)[0]), target,
                                          now=NOW) is None
    (tmp_path / 'junk.pem').write_text('not a certificate\n')
    for cert_file in (None, '', str(tmp_path / 'absent.pem'), str(tmp_path / 'junk.pem')):
        assert distrust.announcer_leaf_blocks(cert_file, target, now=NOW) is None, cert_file
    # a deleted issuer (the state's record, no certificate) or an expired one: nothing it signed verifies any more
    assert distrust.announcer_leaf_blocks(of_bad, issuer(10), now=NOW) is None
    assert distrust.announcer_leaf_blocks(of_bad, target, now=SCHED.expiry(10) + dt.timedelta(seconds=1)) is None
    assert distrust.announcer_leaf_blocks(of_bad, target, now=None) is not None
    # no default issuer known: the message says where to re-issue it from without a name
    assert 'Re-issue it from the default issuer (or set' in distrust.announcer_leaf_blocks(of_bad, target, [target], now=NOW)


def test_the_announcers_cert_file_is_read_with_the_home_directory_expanded(tmp_path, monkeypatch):
    root = _ca('root')
    bad = _ca('epoch-10', root)
    monkeypatch.setenv('HOME', str(tmp_path))
    _announcer(tmp_path, 'announcer.pem', _ca('announcer', bad)[0])
    why = distrust.announcer_leaf_blocks('~/announcer.pem', dict(issuer(10), certificate=_pem(bad[0])), now=NOW)
    assert why is not None and str(tmp_path / 'announcer.pem') in why

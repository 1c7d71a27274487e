# -*- coding: utf-8 -*-
"""A bundle of two key families (module_utils/_bundle/families.py): an EC and an ML-DSA-65 chain made locally with
``cryptography``, each verified against its own root, joined classical first; a family switched off leaves it."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import build as bundle_build
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import families as fam
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import family_counts
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule

UTC = dt.timezone.utc
SCHED = EpochSchedule.from_params({'epoch_zero': '2025-01-01T00:00:00Z', 'epoch_duration': '1h', 'skew_allowance': '5m'})
NOW = dt.datetime(2025, 1, 1, 10, 50, tzinfo=UTC)  # current epoch 10, valid 7..10, prepared 11
KEYS = {'classical': lambda: ec.generate_private_key(ec.SECP256R1()), 'mldsa': mldsa.MLDSA65PrivateKey.generate}


def _cert(cn, family, issuer=None, not_before=dt.datetime(2024, 1, 1, tzinfo=UTC),
          not_after=dt.datetime(2035, 1, 1, tzinfo=UTC)):
    key = KEYS[family]()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer, issuer_name = (key, name) if issuer is None else (issuer[0], issuer[1].subject)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(signer, None if isinstance(signer, mldsa.MLDSA65PrivateKey) else hashes.SHA256()))
    return key, cert, cert.public_bytes(serialization.Encoding.PEM).decode()


ROOTS = {family: _cert('Root %s' % family, family) for family in fam.FAMILIES}


def _inter(epoch, family, root=None, key_family=None, not_after=None):
    return _cert('NATS Intermediate CA %s Epoch %d' % (family, epoch), key_family or family,
                 issuer=(root or ROOTS[family])[:2], not_before=SCHED.not_before(epoch),
                 not_after=not_after or SCHED.expiry(epoch))[2]


INTER = {family: {n: _inter(n, family) for n in range(6, 12)} for family in fam.FAMILIES}


def _spec(family, epochs=range(8, 12), extra=()):
    return {'intermediates': [INTER[family][n] for n in epochs] + list(extra), 'root_pem': ROOTS[family][2]}


def _subjects(bundle):
    return [(c['family'], c['subject'].split('CA ')[-1] if c['kind'] != 'root' else 'root') for c in bundle['certificates']]


def test_two_families_are_verified_apart_and_joined_classical_first():
    bundle = fam.build_family_bundle({'mldsa': _spec('mldsa'), 'classical': _spec('classical')}, SCHED, NOW)
    assert _subjects(bundle) == ([('classical', 'classical Epoch %d' % n) for n in (11, 10, 9, 8)] + [('classical', 'root')]
                                 + [('mldsa', 'mldsa Epoch %d' % n) for n in (11, 10, 9, 8)] + [('mldsa', 'root')])
    assert bundle['counts'] == {'classical': 5, 'mldsa': 5} and bundle['epoch'] == 11
    assert bundle['families']['mldsa']['epochs'] == [11, 10, 9, 8] == bundle['families']['classical']['epochs']
    # the PEM parses (strictly, as the reload pre-check reads a CA file) into the expected set, per key family
    assert family_counts(pem_certificates(bundle['pem'], 'bundle', strict=True)) == {'ec': 5, 'mldsa': 5}
    # each family's part is the one-family bundle of that chain, byte for byte: deterministic, and one family alone
    # is exactly the bundle of today
    alone = {f: bundle_build.build_bundle(_spec(f)['intermediates'], ROOTS[f][2], SCHED, NOW) for f in fam.FAMILIES}
    assert bundle['pem'] == alone['classical']['pem'] + alone['mldsa']['pem']
    assert fam.build_family_bundle({'classical': _spec('classical')}, SCHED, NOW)['pem'] == alone['classical']['pem']
    assert bundle['sha256'] == fam.build_family_bundle({'classical': _spec('classical'), 'mldsa': _spec('mldsa')},
                                                       SCHED, NOW)['sha256']


def test_every_familys_problems_are_listed_and_nothing_is_returned():
    bad_not_after = _inter(9, 'mldsa', not_after=SCHED.expiry(9) + dt.timedelta(seconds=1))
    with pytest.raises(BundleError) as info:
        fam.build_family_bundle({'classical': _spec('classical', extra=[INTER['mldsa'][9]]),
                                 'mldsa': _spec('mldsa', epochs=(10, 11), extra=[bad_not_after])}, SCHED, NOW)
    text = str(info.value)
    assert 'family classical' in text and 'not signed by the root' in text, text  # an ML-DSA intermediate, EC root
    assert 'family mldsa' in text and 'NotAfter' in text, text


def test_a_certificate_whose_key_is_of_the_other_family_is_refused():
    ec_under_mldsa = _inter(9, 'mldsa', key_family='classical')  # signed by the ML-DSA root, an EC key
    with pytest.raises(BundleError) as info:
        fam.build_family_bundle({'mldsa': _spec('mldsa', epochs=(10, 11), extra=[ec_under_mldsa])}, SCHED, NOW)
    assert 'family mldsa' in str(info.value) and 'has a classical key' in str(info.value), info.value
    with pytest.raises(BundleError) as info:  # the EC root given as the ML-DSA family's
        fam.build_family_bundle({'mldsa': {'intermediates': [INTER['classical'][10]], 'root_pem': ROOTS['classical'][2]}},
                                SCHED, NOW)
    assert 'its root (CN=Root classical) has a classical key' in str(info.value), info.value


def test_the_count_is_bounded_per_family_and_expired_ones_drop_per_family():
    with pytest.raises(BundleError) as info:
        fam.build_family_bundle({'classical': _spec('classical'), 'mldsa': _spec('mldsa', epochs=(10, 11))}, SCHED, NOW,
                                max_certificates=3)
    assert 'family classical' in str(info.value) and 'family mldsa' not in str(info.value), info.value
    assert info.value.option is None or 'max_certificates' in str(info.value)
    bundle = fam.build_family_bundle({'classical': _spec('classical', epochs=range(6, 12)), 'mldsa': _spec('mldsa')},
                                     SCHED, NOW, drop_expired=True)
    assert [(d['family'], d['epoch']) for d in bundle['dropped']] == [('classical', 6)]
    assert bundle['families']['classical']['epochs'] == [11, 10, 9, 8, 7]


def test_a_bundle_splits_back_into_its_families_and_a_family_switched_off_leaves_it():
    bundle = fam.build_family_bundle({'classical': _spec('classical'), 'mldsa': _spec('mldsa')}, SCHED, NOW)
    split = fam.split_families(bundle['pem'])
    assert sorted(split) == ['classical', 'mldsa'] and all(len(s['intermediates']) == 4 for s in split.values())
    again = fam.family_bundle_from_pem(bundle['pem'], SCHED, NOW)
    assert again['sha256'] == bundle['sha256'] and again['dropped_families'] == []
    off = fam.family_bundle_from_pem(bundle['pem'], SCHED, NOW, enabled=('classical',))
    assert off['dropped_families'] == ['mldsa'] and off['counts'] == {'classical': 5}
    assert off['pem'] == bundle_build.build_bundle(_spec('classical')['intermediates'], ROOTS['classical'][2], SCHED, NOW)['pem']
    # without the roots in the PEM they are given; an intermediate no root signed is named
    rootless = fam.build_family_bundle({'classical': _spec('classical'), 'mldsa': _spec('mldsa')}, SCHED, NOW,
                                       include_root=False)
    with pytest.raises(BundleError) as info:
        fam.split_families(rootless['pem'], 'held bundle')
    assert 'held bundle holds CN=NATS Intermediate CA classical Epoch 11' in str(info.value), info.value
    assert fam.family_bundle_from_pem(rootless['pem'], SCHED, NOW, root_pems=[ROOTS['classical'][2], ROOTS['mldsa'][2]],
                                      include_root=False)['sha256'] == rootless['sha256']
    with pytest.raises(BundleError) as info:
        fam.family_bundle_from_pem(bundle['pem'], SCHED, NOW, enabled=())
    assert 'none of which is enabled' in str(info.value)
    # a classical-only bundle stored before the ML-DSA family was switched on rebuilds as it was, though both roots
    # are given (a family with nothing in the bundle is not a part of it)
    classical = bundle_build.build_bundle(_spec('classical')['intermediates'], ROOTS['classical'][2], SCHED, NOW,
                                          include_root=False)
    assert sorted(fam.split_families(classical['pem'], root_pems=[ROOTS['classical'][2], ROOTS['mldsa'][2]])) == ['classical']
    rebuilt = fam.family_bundle_from_pem(classical['pem'], SCHED, NOW, root_pems=[ROOTS['classical'][2], ROOTS['mldsa'][2]],
                                         include_root=False)
    assert rebuilt['pem'] == classical['pem'] and rebuilt['counts'] == {'classical': 4} and rebuilt['dropped_families'] == []


def test_bad_family_names_and_two_roots_of_one_family_are_refused():
    with pytest.raises(BundleError) as info:
        fam.build_family_bundle({'pq': _spec('mldsa')}, SCHED, NOW)
    assert info.value.option == 'families' and "'pq'" in str(info.value) and 'classical, mldsa' in str(info.value)
    with pytest.raises(BundleError) as info:
        fam.build_family_bundle({}, SCHED, NOW)
    assert info.value.option == 'families'
    other_root = _cert('Other mldsa root', 'mldsa')
    with pytest.raises(BundleError) as info:
        fam.split_families(ROOTS['mldsa'][2] + other_root[2])
    assert 'two roots of the mldsa family' in str(info.value), info.value

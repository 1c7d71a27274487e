# -*- coding: utf-8 -*-
"""Key families and sizes: every size is explicit, ML-DSA never falls back to OpenBao's default parameter set, and a
bad combination names the option."""

from __future__ import annotations

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import KEY_TYPES, key_spec
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import Config, ConfigError


@pytest.mark.parametrize('key_type, bits, expected', [
    ('ec', 0, ('ec', 256)), ('ec', 384, ('ec', 384)), ('rsa', None, ('rsa', 2048)), ('rsa', '4096', ('rsa', 4096)),
    ('ed25519', 0, ('ed25519', 0)), ('mldsa', 44, ('mldsa', 44)), ('mldsa', 65, ('mldsa', 65)), ('mldsa', 87, ('mldsa', 87)),
])
def test_sizes_are_made_explicit(key_type, bits, expected):
    assert key_spec(key_type, bits) == expected


@pytest.mark.parametrize('key_type, bits, words', [
    ('mldsa', 0, 'key_type mldsa needs key_bits: 44, 65 or 87'),
    ('mldsa', 66, "key_type 'mldsa' with key_bits 66: mldsa takes 44, 65, 87"),
    ('ec', 224, "ec takes 256, 384, 521"),
    ('rsa', 1024, "rsa takes 2048, 3072, 4096"),
    ('ed25519', 256, 'ed25519 has no key size: leave key_bits out'),
    ('ml-dsa', 65, "key_type must be one of ec, rsa, ed25519, mldsa, got 'ml-dsa'"),
    ('ec', 'big', "key_bits must be a number, got 'big'"),
])
def test_bad_combinations_name_the_option(key_type, bits, words):
    with pytest.raises(ValueError) as info:
        key_spec(key_type, bits)
    assert words in str(info.value)


def test_the_option_name_is_the_callers():
    with pytest.raises(ValueError, match=r'ca_rotation_pki.key_type mldsa needs ca_rotation_pki.key_bits'):
        key_spec('mldsa', 0, 'ca_rotation_pki.key_type')
    assert 'mldsa' in KEY_TYPES


def _config(pki):
    return Config({'schedule': {'epoch_duration': '1h'}, 'now': 1000, 'pki': pki})


def test_the_rotation_config_makes_the_size_explicit_and_refuses_what_it_cannot_prove():
    assert _config({'key_type': 'ec', 'key_bits': 384}).pki['key_bits'] == 384
    assert _config({}).pki['key_bits'] == 256
    with pytest.raises(ConfigError) as info:
        _config({'key_type': 'rsa', 'key_bits': 1000})
    assert info.value.option == 'ca_rotation_pki.key_type' and 'ca_rotation_pki.key_bits 1000' in str(info.value)
    with pytest.raises(ConfigError) as info:
        _config({'key_type': 'mldsa', 'key_bits': 65})
    assert 'cannot be the only family' in str(info.value) and 'ca_rotation_pki.mldsa' in str(info.value)
    assert 'Nothing was changed' in str(info.value)


def test_the_mldsa_family_needs_its_own_mounts_and_an_explicit_parameter_set():
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.config import (  # pylint: disable=import-outside-toplevel
        dual,
        family_mounts,
    )
    cfg = _config({'mldsa': {'key_bits': 65}})
    assert dual(cfg) and cfg.mldsa['role'] == 'nats-leaf' and cfg.mldsa['key_type'] == 'mldsa'
    assert [(f['family'], f['int_mount'], f['key_type'], f['key_bits']) for f in family_mounts(cfg)] == [
        ('classical', 'pki_int', 'ec', 256), ('mldsa', 'pki_int_mldsa', 'mldsa', 65)]
    off = _config({'mldsa': {'key_bits': 87, 'enabled': 'false'}})
    assert not dual(off) and [f['family'] for f in family_mounts(off)] == ['classical']
    assert [f['family'] for f in family_mounts(off, enabled_only=False)] == ['classical', 'mldsa']
    assert not dual(_config({})) and _config({}).mldsa is None
    for pki, option, words in (
            ({'mldsa': {}}, None, None),
            ({'mldsa': {'enabled': True}}, 'ca_rotation_pki.mldsa.key_bits', 'key_bits must be 44, 65 or 87'),
            ({'mldsa': {'key_bits': 66}}, 'ca_rotation_pki.mldsa.key_bits', 'got 66'),
            ({'mldsa': {'key_bits': 65, 'int_mount': 'pki_int'}}, 'ca_rotation_pki.mldsa.int_mount',
             'the classical ca_rotation_pki.int_mount'),
            ({'mldsa': {'key_bits': 65, 'root_mount': 'pki'}}, 'ca_rotation_pki.mldsa.root_mount', 'its own mounts'),
            ({'mldsa': {'key_bits': 65, 'root_mount': 'x', 'int_mount': 'x'}}, 'ca_rotation_pki.mldsa.int_mount',
             'different mounts'),
            ({'mldsa': {'key_bits': 65, 'key_type': 'mldsa'}}, 'ca_rotation_pki.mldsa.key_type', 'unknown key(s) key_type'),
            ({'mldsa': 'yes'}, 'ca_rotation_pki.mldsa', 'must be a mapping'),
            ({'mldsa': {'key_bits': 65, 'enabled': 'maybe'}}, 'ca_rotation_pki.mldsa.enabled', 'true or false')):
        if option is None:
            assert not dual(_config(pki))
            continue
        with pytest.raises(ConfigError) as info:
            _config(pki)
        assert info.value.option == option and words in str(info.value), (pki, info.value.option, str(info.value))


def test_a_leaf_whose_key_is_not_the_configured_one_is_renewed():
    import datetime as dt  # pylint: disable=import-outside-toplevel

    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec, mldsa  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel

    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import leaf  # pylint: disable=import-outside-toplevel
    now = dt.datetime.now(dt.timezone.utc)

    def cert(key, alg):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'nats-0')])
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
                .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=10)).sign(key, alg))
    p256 = cert(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    pq = cert(mldsa.MLDSA65PrivateKey.generate(), None)
    assert leaf.key_of(p256.public_key()) == ('ec', 256) and leaf.key_of(pq.public_key()) == ('mldsa', 65)

    def reasons(c, key_type, bits=0):
        return leaf.leaf_renewal_reasons(c, common_name='nats-0', now=now, key_type=key_type, key_bits=bits)
    assert reasons(p256, 'ec') == [] and reasons(p256, None) == [] and reasons(pq, 'mldsa', 65) == []
    assert reasons(p256, 'ec', 384) == ['its key is ec 256, not ec 384 as configured']
    assert reasons(pq, 'ec') == ['its key is mldsa 65, not ec 256 as configured']
    assert reasons(p256, 'mldsa', 87) == ['its key is ec 256, not mldsa 87 as configured']

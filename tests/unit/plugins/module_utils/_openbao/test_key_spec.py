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
    assert 'not supported by the rotation playbooks yet' in str(info.value) and 'Nothing was changed' in str(info.value)

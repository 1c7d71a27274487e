# -*- coding: utf-8 -*-
"""module_utils/_common/pem.py: the one PEM splitter, lenient (client trust, leaf files, announcements) and strict
(the CA bundle: glued or truncated blocks, keys, non-ASCII, empty text)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError, PemError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates

CERT_A = '-----BEGIN CERTIFICATE-----\nQUFB\n-----END CERTIFICATE-----'
CERT_B = '-----BEGIN CERTIFICATE-----\nQkJC\nQkJC\n-----END CERTIFICATE-----'
KEY = '-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----'
CRL = '-----BEGIN X509 CRL-----\nQ1JM\n-----END X509 CRL-----'
TRUNCATED = '-----BEGIN CERTIFICATE-----\nVFJV\n'
# the certificate-only expression every lenient caller used before there was one splitter
OLD_LENIENT = re.compile(r'-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----', re.DOTALL)


@given(st.lists(st.sampled_from([CERT_A, CERT_B, KEY, CRL, TRUNCATED, '# comment', '', '\n', 'junk']), max_size=8),
       st.sampled_from(['\n', '', '\r\n', ' ']))
def test_lenient_is_what_every_caller_did_before(parts, sep):
    text = sep.join(parts)
    assert pem_certificates(text) == [block + '\n' for block in OLD_LENIENT.findall(text)]


def test_lenient_inputs():
    assert pem_certificates(None) == [] and pem_certificates('') == [] and pem_certificates(b'') == []
    assert pem_certificates((CERT_A + '\n' + KEY).encode('ascii')) == [CERT_A + '\n']
    assert pem_certificates(b'\xff' + CERT_B.encode('ascii')) == [CERT_B + '\n']  # undecodable bytes are replaced


def test_strict_keeps_every_certificate_in_order():
    text = '# bundle\n' + CERT_B + '\n' + CERT_A + '\n'
    assert pem_certificates(text, strict=True) == [CERT_B + '\n', CERT_A + '\n']


@pytest.mark.parametrize('text, fragment', [
    (CERT_A + '\n' + TRUNCATED + CERT_B, 'without its matching END line'),  # two blocks glued into one
    (TRUNCATED, 'without its matching END line'),
    (CERT_A + '\n' + KEY, 'block 2 is a PRIVATE KEY, not a CERTIFICATE: a CA bundle holds certificates only (never put a '
                          'private key in it)'),
    (CRL, 'block 1 is a X509 CRL, not a CERTIFICATE'),
    ('  \n', 'is empty'),
    ('# only a comment', 'holds no PEM certificate'),
    (b'\xff' + CERT_A.encode('ascii'), 'holds non-ASCII bytes'),
])
def test_strict_refusals(text, fragment):
    with pytest.raises(PemError) as info:
        pem_certificates(text, 'the bundle', strict=True)
    assert fragment in str(info.value) and str(info.value).startswith('the bundle ')
    assert isinstance(info.value, CaRotationError)


def test_strict_refuses_what_gos_decoder_would_skip():
    """nats-server (Go's encoding/pem) skips a block whose BEGIN or END line goes on after its dashes, without an
    error; OpenSSL refuses such a file. Strict parsing refuses it, naming the block and the line; white space and
    CRLF line ends are fine."""
    block = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----'
    assert len(pem_certificates(block + '\n' + block + '\n', strict=True)) == 2
    assert len(pem_certificates(block + ' \t\r\n' + block, strict=True)) == 2
    with pytest.raises(PemError, match=r'ca_file block 1 has text on its END line .*-----BEGIN CERTIFICATE'):
        pem_certificates(block + block + '\n', 'ca_file', strict=True)
    with pytest.raises(PemError, match=r'block 2 has text on its BEGIN line'):
        pem_certificates(block + '\n-----BEGIN CERTIFICATE-----AAAA\n-----END CERTIFICATE-----\n', strict=True)
    # lenient parsing (reading what is there) still finds both
    assert len(pem_certificates(block + block)) == 2

# -*- coding: utf-8 -*-
"""module_utils/_client_tls.py: SSL contexts from a CA bundle, partial-chain trust, and a context that follows the bundle.

Real TLS handshakes against a local asyncio TLS server (127.0.0.1) with certificates made by cryptography;
no NATS here (the example-service integration test covers nats-py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._client_tls import (
    ClientTLSError,
    ReloadingTLS,
    bundle_has_root,
    ssl_context_from_bundle,
)

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)


# ----------------------------------------------------------------------------- a tiny PKI
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(cn, key, issuer=None, issuer_key=None, ca=False, server=False, client=False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not ca,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if server or client:
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@pytest.fixture(scope='module')
def pki():
    root_key, int1_key, int2_key = _key(), _key(), _key()
    root = _cert('Test Root', root_key, ca=True)
    int1 = _cert('NATS Intermediate CA Epoch 1', int1_key, root, root_key, ca=True)
    int2 = _cert('NATS Intermediate CA Epoch 2', int2_key, root, root_key, ca=True)
    out = {'root': _pem(root), 'int1': _pem(int1), 'int2': _pem(int2)}
    for name, issuer, issuer_key in (('leaf1', int1, int1_key), ('leaf2', int2, int2_key)):
        key = _key()
        out[name] = _pem(_cert('server-' + name, key, issuer, issuer_key, server=True))
        out[name + '_key'] = _key_pem(key)
        out[name + '_chain'] = out[name] + _pem(issuer)
    client_key = _key()
    out['client'] = _pem(_cert('client', client_key, int1, int1_key, client=True)) + out['int1']
    out['client_key'] = _key_pem(client_key)
    return out


def _write(path, text):
    tmp = str(path) + '.tmp'
    with open(tmp, 'w', encoding='ascii') as handle:
        handle.write(text)
    os.replace(tmp, path)  # atomic, as ca-bundle-sync writes it
    return str(path)


def _server_context(tmp_path, pki, leaf, require_client=False):
    chain = _write(tmp_path / ('%s-chain.pem' % leaf), pki[leaf + '_chain'])
    key = _write(tmp_path / ('%s-key.pem' % leaf), pki[leaf + '_key'])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=pki['root'])
    return context


async def _handshake(server_context, client_context, hostname='localhost'):
    """Connect once; return the peer certificate's subject CN, or raise the client's error."""

    async def handle(reader, writer):
        try:
            await reader.read(1)
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, '127.0.0.1', 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection('127.0.0.1', port, ssl=client_context, server_hostname=hostname), 10)
        cert = writer.get_extra_info('peercert')
        writer.write(b'x')
        await writer.drain()
        writer.close()
        return dict(x[0] for x in cert['subject'])['commonName']
    finally:
        server.close()
        await server.wait_closed()


def handshake(server_context, client_context, hostname='localhost'):
    return asyncio.run(_handshake(server_context, client_context, hostname))


# ----------------------------------------------------------------------------- ssl_context_from_bundle
def test_bundle_has_root(pki):
    assert bundle_has_root(pki['int1'] + pki['root'])
    assert not bundle_has_root(pki['int1'] + pki['int2'])


def test_intermediates_only_bundle_uses_partial_chain(tmp_path, pki):
    bundle = _write(tmp_path / 'ca.pem', pki['int1'])
    context = ssl_context_from_bundle(bundle)
    assert context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert handshake(_server_context(tmp_path, pki, 'leaf1'), context) == 'server-leaf1'
    # the same bundle without partial-chain verification is refused by Python's ssl (DESIGN section 10)
    strict = ssl_context_from_bundle(bundle, partial_chain=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_server_context(tmp_path, pki, 'leaf1'), strict)


def test_bundle_with_root_needs_no_partial_chain(tmp_path, pki):
    bundle = _write(tmp_path / 'ca.pem', pki['int1'] + pki['root'])
    context = ssl_context_from_bundle(bundle)
    assert not context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert handshake(_server_context(tmp_path, pki, 'leaf2'), context) == 'server-leaf2'  # chains to the root


def test_untrusted_epoch_is_refused(tmp_path, pki):
    context = ssl_context_from_bundle(_write(tmp_path / 'ca.pem', pki['int1']))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_server_context(tmp_path, pki, 'leaf2'), context)


def test_host_name_is_checked(tmp_path, pki):
    context = ssl_context_from_bundle(_write(tmp_path / 'ca.pem', pki['int1']))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_server_context(tmp_path, pki, 'leaf1'), context, hostname='other.example')


def test_mutual_tls(tmp_path, pki):
    context = ssl_context_from_bundle(_write(tmp_path / 'ca.pem', pki['int1']), _write(tmp_path / 'client.pem', pki['client']),
                                      _write(tmp_path / 'client-key.pem', pki['client_key']))
    assert handshake(_server_context(tmp_path, pki, 'leaf1', require_client=True), context) == 'server-leaf1'


@pytest.mark.parametrize('content, match', [
    ('', 'holds no PEM certificate'),
    ('garbage\n', 'holds no PEM certificate'),
    ('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', 'does not load'),
])
def test_bad_bundle_is_reported_with_its_path(tmp_path, content, match):
    bundle = _write(tmp_path / 'ca.pem', content)
    with pytest.raises(ClientTLSError, match=match) as err:
        ssl_context_from_bundle(bundle)
    assert bundle in str(err.value)


def test_missing_files_and_mismatched_key(tmp_path, pki):
    with pytest.raises(ClientTLSError, match='Cannot read the CA bundle'):
        ssl_context_from_bundle(str(tmp_path / 'absent.pem'))
    bundle = _write(tmp_path / 'ca.pem', pki['int1'])
    with pytest.raises(ClientTLSError, match='key must match'):
        ssl_context_from_bundle(bundle, _write(tmp_path / 'c.pem', pki['client']), _write(tmp_path / 'k.pem', pki['leaf1_key']))
    with pytest.raises(ClientTLSError, match='without cert_file'):
        ssl_context_from_bundle(bundle, None, _write(tmp_path / 'k2.pem', pki['client_key']))


# ----------------------------------------------------------------------------- ReloadingTLS
def test_reloading_context_follows_the_bundle_at_the_next_handshake(tmp_path, pki):
    bundle = _write(tmp_path / 'ca.pem', pki['int1'])
    seen = []
    tls = ReloadingTLS(bundle, on_reload=seen.append)
    assert isinstance(tls.context, ssl.SSLContext)
    first = tls.bundle_sha256
    assert handshake(_server_context(tmp_path, pki, 'leaf1'), tls.context) == 'server-leaf1'
    with pytest.raises(ssl.SSLCertVerificationError):  # epoch 2 is not trusted yet
        handshake(_server_context(tmp_path, pki, 'leaf2'), tls.context)
    assert tls.reloads == 0

    _write(bundle, pki['int2'] + pki['int1'])  # the rotation: no refresh() call, no new context object
    assert handshake(_server_context(tmp_path, pki, 'leaf2'), tls.context) == 'server-leaf2'
    assert tls.reloads == 1 and tls.bundle_sha256 != first
    assert seen and seen[0]['previous_bundle_sha256'] == first and seen[0]['certificates'] == 2

    _write(bundle, pki['int2'])  # emergency distrust of epoch 1: removing it is enough
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_server_context(tmp_path, pki, 'leaf1'), tls.context)
    assert tls.reloads == 2


def test_a_bad_new_bundle_keeps_the_last_good_context(tmp_path, pki):
    bundle = _write(tmp_path / 'ca.pem', pki['int1'])
    tls = ReloadingTLS(bundle)
    good = tls.current
    _write(bundle, '-----BEGIN CERTIFICATE-----\ntruncated')
    assert tls.refresh() is False
    assert 'holds no PEM certificate' in tls.last_error
    assert tls.current is good and tls.reloads == 0
    assert handshake(_server_context(tmp_path, pki, 'leaf1'), tls.context) == 'server-leaf1'
    _write(bundle, pki['int1'] + pki['int2'])
    assert tls.refresh() is True and tls.last_error is None and tls.reloads == 1
    assert tls.refresh() is False  # unchanged files: nothing to do
    assert tls.refresh(force=True) is True


def test_reloading_client_certificate(tmp_path, pki):
    bundle = _write(tmp_path / 'ca.pem', pki['int1'])
    cert = _write(tmp_path / 'client.pem', pki['client'])
    key = _write(tmp_path / 'client-key.pem', pki['client_key'])
    tls = ReloadingTLS(bundle, cert, key)
    assert handshake(_server_context(tmp_path, pki, 'leaf1', require_client=True), tls.context) == 'server-leaf1'
    _write(cert, pki['leaf1_chain'])  # renewed certificate written before its key: must not break
    assert tls.refresh() is False and 'key must match' in tls.last_error
    assert handshake(_server_context(tmp_path, pki, 'leaf1', require_client=True), tls.context) == 'server-leaf1'


def test_constructor_refuses_unusable_files(tmp_path):
    with pytest.raises(ClientTLSError):
        ReloadingTLS(str(tmp_path / 'absent.pem'))


def test_watch_forces_a_reconnect_only_when_asked(tmp_path, pki):
    bundle = _write(tmp_path / 'ca.pem', pki['int1'])

    class FakeClient:
        is_connected = True
        calls = 0

        async def force_reconnect(self):
            FakeClient.calls += 1

    async def scenario(reconnect):
        tls = ReloadingTLS(bundle)
        stop = asyncio.Event()
        client = FakeClient()
        task = asyncio.create_task(tls.watch(client, interval=0.05, reconnect=reconnect, stop=stop))
        await asyncio.sleep(0.1)
        _write(bundle, pki['int2'] + pki['int1'] if tls.info['certificates'] == 1 else pki['int1'])
        for _i in range(200):
            if tls.reloads:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        return tls.reloads

    FakeClient.calls = 0
    assert asyncio.run(scenario(False)) == 1 and FakeClient.calls == 0
    assert asyncio.run(scenario(True)) == 1 and FakeClient.calls == 1

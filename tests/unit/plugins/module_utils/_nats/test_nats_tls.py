# -*- coding: utf-8 -*-
"""build_ssl_context() against a local TLS server (Python ssl on 127.0.0.1, mutual TLS): trust anchors,
client certificates, and ``partial_chain`` for bundles that hold intermediates but no root."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError, build_ssl_context

pytestmark = pytest.mark.timeout(60)
UTC = dt.timezone.utc


def _issue(cn, issuer=None, issuer_key=None, ca=False, eku=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False).add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def _pem(obj):
    if hasattr(obj, 'private_bytes'):
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return obj.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp('pki')
    root, root_key = _issue('Root', ca=True)
    inter, inter_key = _issue('Epoch 1', root, root_key, ca=True)
    server, server_key = _issue('server', inter, inter_key, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    client, client_key = _issue('client', inter, inter_key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    other = _issue('Other Root', ca=True)[0]
    files = {
        'root': _pem(root), 'inter_only': _pem(inter), 'full': _pem(inter) + _pem(root), 'other': _pem(other),
        'server': _pem(server) + _pem(inter), 'server_key': _pem(server_key),
        'client': _pem(client) + _pem(inter), 'client_key': _pem(client_key), 'garbage': b'not a certificate\n',
    }
    out = {}
    for name, data in files.items():
        (d / name).write_bytes(data)
        out[name] = str(d / name)
    return out


def _handshake(pki, client_ctx):
    """Connect to a mutual-TLS server (trusting the full bundle); return the server's greeting."""
    async def scenario():
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki['full'])
        server_ctx.load_cert_chain(pki['server'], pki['server_key'])
        server_ctx.verify_mode = ssl.CERT_REQUIRED

        async def handle(reader, writer):
            try:
                writer.write(b'hello\n')
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, '127.0.0.1', 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection('127.0.0.1', port, ssl=client_ctx, server_hostname='127.0.0.1'), 10)
            line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            return line
        finally:
            server.close()

    return asyncio.run(scenario())


def test_full_bundle_with_client_certificate(pki):
    assert _handshake(pki, build_ssl_context(pki['full'], pki['client'], pki['client_key'])) == b'hello\n'


def test_root_only_trust_anchor(pki):
    assert _handshake(pki, build_ssl_context(pki['root'], pki['client'], pki['client_key'])) == b'hello\n'


def test_intermediates_only_bundle_needs_partial_chain(pki):
    ctx = build_ssl_context(pki['inter_only'], pki['client'], pki['client_key'])
    assert not ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    with pytest.raises(ssl.SSLCertVerificationError, match='issuer'):
        _handshake(pki, ctx)
    ctx = build_ssl_context(pki['inter_only'], pki['client'], pki['client_key'], partial_chain=True)
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert _handshake(pki, ctx) == b'hello\n'


def test_wrong_ca_is_not_trusted(pki):
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(pki, build_ssl_context(pki['other'], pki['client'], pki['client_key'], partial_chain=True))


def test_context_always_verifies(pki):
    ctx = build_ssl_context(pki['full'])
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


@pytest.mark.parametrize('args, option, text', [
    (('garbage',), 'ca_file', 'no usable CA certificate'),
    (('full', 'client', 'server_key'), 'cert_file', 'must match'),
    (('full', 'garbage', 'client_key'), 'cert_file', 'Cannot load the client certificate'),
    (('full', None, 'client_key'), 'cert_file', 'give both'),
])
def test_bad_files_name_the_option(pki, args, option, text):
    paths = [pki[a] if a else None for a in args]
    with pytest.raises(NatsError) as err:
        build_ssl_context(*paths)
    assert err.value.option == option and text in str(err.value) and err.value.kind == 'config'


def test_missing_file(tmp_path):
    with pytest.raises(NatsError, match="nats.cert_file .* does not exist"):
        build_ssl_context(None, str(tmp_path / 'nope.pem'), None)

# -*- coding: utf-8 -*-
"""module_utils/_common/tls.py: the one TLS client context builder, and the NATS INFO-then-TLS upgrade against
small local servers (a NATS-like greeting, then Python's ssl as the server)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import (
    client_context,
    has_root,
    nats_tls_connect,
    read_line,
)

NOW = dt.datetime.now(dt.timezone.utc)


def _cert(cn, key, issuer=None, issuer_key=None, ca=False, san=None):
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode('ascii')


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tls')
    root_key, int_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()),
                                   ec.generate_private_key(ec.SECP256R1()))
    root = _cert('Test Root', root_key, ca=True)
    inter = _cert('Test Intermediate', int_key, root, root_key, ca=True)
    leaf = _cert('localhost', leaf_key, inter, int_key,
                 san=[x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))])
    files = {'root': _pem(root), 'int': _pem(inter), 'chain': _pem(leaf) + _pem(inter)}
    files['key'] = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode('ascii')
    paths = {}
    for name, text in files.items():
        paths[name] = tmp / ('%s.pem' % name)
        paths[name].write_text(text)
    return {'text': files, 'path': {k: str(v) for k, v in paths.items()}}


def test_client_context_defaults_and_no_verification():
    ctx = client_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert not ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert not client_context(check_hostname=False).check_hostname
    ctx = client_context(verify=False)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


def test_partial_chain(pki):
    assert client_context(pki['path']['int'], partial_chain=True).verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    auto_int = client_context(ca_data=pki['text']['int'], partial_chain=None)
    auto_root = client_context(ca_data=pki['text']['root'] + pki['text']['int'], partial_chain=None)
    assert auto_int.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN and not has_root(auto_int)
    assert not auto_root.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN and has_root(auto_root)


def test_client_context_errors_name_the_input(pki, tmp_path):
    garbage = tmp_path / 'garbage.pem'
    garbage.write_text('not a certificate')
    for kwargs, option in (({'ca_file': str(garbage)}, 'ca_file'), ({'ca_data': 'x'}, 'ca_file'),
                           ({'key_file': pki['path']['key']}, 'key_file'),
                           ({'cert_file': str(tmp_path / 'missing.pem')}, 'cert_file'),
                           ({'cert_file': pki['path']['root'], 'key_file': pki['path']['key']}, 'cert_file')):
        with pytest.raises(TLSError) as info:
            client_context(**kwargs)
        assert info.value.option == option, kwargs
    ctx = client_context(pki['path']['root'], pki['path']['chain'], pki['path']['key'])
    assert ctx.verify_mode == ssl.CERT_REQUIRED


class _Server:
    """One connection: send ``greeting`` (if any), then TLS with the leaf when ``tls``, answer one line."""

    def __init__(self, pki, greeting=b'INFO {"tls_required":true}\r\n', tls=True):
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki['path']['chain'], pki['path']['key'])
        self.greeting, self.tls = greeting, tls
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _addr = self.listener.accept()
        except OSError:
            return
        try:
            if self.greeting:
                conn.sendall(self.greeting)
            if self.tls:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    if tls.recv(64):
                        tls.sendall(b'PONG\r\n')
            else:
                conn.recv(64)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self):
        self.listener.close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize('greeting', [b'INFO {"tls_required":true}\r\n', b'INFO {"tls_available":true}\r\n', b''])
def test_nats_tls_connect_upgrades_after_the_info_line(pki, greeting):
    server = _Server(pki, greeting)
    try:
        tls = nats_tls_connect('127.0.0.1', server.port, client_context(pki['path']['root']), 'localhost', timeout=5,
                               greeting_timeout=0.5)
        try:
            assert tls.version() in ('TLSv1.2', 'TLSv1.3')
            tls.sendall(b'PING\r\n')
            assert read_line(tls) == b'PONG\r\n'
        finally:
            tls.close()
    finally:
        server.close()


def _fails(pki, server, ctx=None, **kwargs):
    try:
        with pytest.raises(TLSError) as info:
            nats_tls_connect('127.0.0.1', server.port, ctx or client_context(verify=False), timeout=5, greeting_timeout=2,
                             **kwargs)
        return info.value
    finally:
        server.close()


def test_nats_tls_connect_failures(pki):
    exc = _fails(pki, _Server(pki, b'HTTP/1.1 400 Bad Request\r\n\r\n', tls=False))
    assert exc.stage == 'greeting' and 'did not greet like a NATS server' in str(exc)
    exc = _fails(pki, _Server(pki, b'INFO {"server_id":"x"}\r\n', tls=False))
    assert exc.stage == 'no-tls' and 'does not offer TLS on its client port' in str(exc)
    exc = _fails(pki, _Server(pki, b'INFO {"server_id":"x"}\r\n', tls=False), require_tls=False)
    assert exc.stage == 'handshake' and str(exc).startswith('TLS handshake with 127.0.0.1:')
    other_root = ec.generate_private_key(ec.SECP256R1())
    untrusted = client_context(ca_data=_pem(_cert('Other Root', other_root, ca=True)), check_hostname=False)
    exc = _fails(pki, _Server(pki), untrusted)
    assert exc.stage == 'verify' and isinstance(exc.error, ssl.SSLCertVerificationError)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    with pytest.raises(TLSError) as info:
        nats_tls_connect('127.0.0.1', port, client_context(verify=False), timeout=2)
    assert info.value.stage == 'connect' and str(info.value).startswith('cannot connect to 127.0.0.1:%d: ' % port)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one TLS client context builder, and the one NATS INFO -> TLS upgrade (private; standard library only).

:func:`client_context` is where every ``ssl.SSLContext`` of the collection is made: NATS clients,
the reload probe, the status report's certificate reader, HTTPS monitoring endpoints and the client
services that follow the CA bundle. Callers turn its :class:`TLSError` (``option`` says which input
failed) into their own messages.

:func:`nats_tls_connect` opens a NATS client port the way NATS expects it: the server sends its
INFO line in plaintext (none with ``handshake_first``), then the client upgrades to TLS.
"""

from __future__ import annotations

import json
import socket
import ssl

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError


def client_context(ca_file=None, cert_file=None, key_file=None, partial_chain=False, *, ca_data=None,
                   verify=True, check_hostname=True):
    """An ``ssl.SSLContext`` for a TLS client (TLS 1.2 or newer).

    ``verify``: check the server certificate against ``ca_data`` (PEM text) or ``ca_file``, else the
    system trust store; ``check_hostname`` then also checks its name. ``verify=False`` accepts any
    server certificate (for reading it, or when only the server's acceptance of ours matters).
    ``partial_chain``: set ``ssl.VERIFY_X509_PARTIAL_CHAIN`` so that an intermediate among the trust
    anchors is one by itself (needed when the bundle holds no root); None sets it exactly when the
    trust anchors hold no self-signed root. ``cert_file`` / ``key_file``: the client certificate
    (chain) and key for mutual TLS (the key may be in ``cert_file``).

    Raises :class:`TLSError` with ``option`` ``ca_file`` (trust does not load), ``key_file`` (a key
    without a certificate) or ``cert_file`` (the client certificate does not load), and ``error``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = bool(check_hostname)
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if ca_file or ca_data:
                context.load_verify_locations(cafile=ca_file, cadata=ca_data)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TLSError('the CA certificates do not load: %s' % exc, option='ca_file', path=ca_file, error=exc) from None
        if partial_chain is None:
            partial_chain = not has_root(context)
        if partial_chain:
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if key_file and not cert_file:
        raise TLSError('key_file %s is given without cert_file: give both for mutual TLS' % key_file, option='key_file',
                       path=key_file)
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file or None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TLSError('the client certificate does not load: %s' % exc, option='cert_file', path=cert_file,
                           error=exc) from None
    return context


def has_root(context):
    """Whether the trust anchors of ``context`` hold a self-signed certificate (a root), by subject == issuer."""
    return any(cert.get('subject') == cert.get('issuer') for cert in context.get_ca_certs())


def read_line(sock, limit=65536):
    """One protocol line (up to ``\\r\\n``) from ``sock``; reads byte by byte until it sees ``INFO``
    so that nothing after a non-NATS greeting is consumed. Empty when the peer closed."""
    data = b''
    while not data.endswith(b'\r\n') and len(data) < limit:
        chunk = sock.recv(4096 if data.startswith(b'INFO') else 1)
        if not chunk:
            break
        data += chunk
    return data


def close_quietly(sock):
    """Close a socket (plain or TLS), ignoring the errors of a peer that is already gone."""
    try:
        sock.close()
    except OSError:
        pass


def nats_tls_connect(host, port, context, server_name=None, timeout=10.0, greeting_timeout=3.0, require_tls=True):
    """Connect to a NATS client port and upgrade to TLS with ``context``; return the TLS socket (the
    caller closes it).

    Reads the plaintext INFO line first (waiting at most ``greeting_timeout``: a server configured with
    ``handshake_first`` sends nothing and waits for the ClientHello). ``require_tls``: refuse a server
    whose INFO offers no TLS before trying. Raises :class:`TLSError` with ``stage`` ``connect``,
    ``greeting``, ``no-tls``, ``verify`` (the server certificate does not verify; ``error`` is the
    ``ssl.SSLCertVerificationError``) or ``handshake``.
    """
    where = '%s:%s' % (host, port)
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        raise TLSError('cannot connect to %s: %s' % (where, exc), stage='connect', error=exc) from None
    try:
        raw.settimeout(greeting_timeout)
        try:
            greeting = read_line(raw)
        except socket.timeout:
            greeting = b''  # handshake_first: the server waits for our ClientHello
        if greeting:
            if not greeting.startswith(b'INFO '):
                raise TLSError('%s did not greet like a NATS server: %r' % (where, greeting[:60]), stage='greeting')
            try:
                info = json.loads(greeting[5:].decode('utf-8', 'replace'))
            except ValueError:
                info = {}
            if require_tls and not (info.get('tls_required') or info.get('tls_available')):
                raise TLSError('%s does not offer TLS on its client port' % where, stage='no-tls')
        raw.settimeout(timeout)
        try:
            return context.wrap_socket(raw, server_hostname=server_name or host)
        except ssl.SSLCertVerificationError as exc:
            raise TLSError('TLS handshake with %s failed: %s' % (where, exc), stage='verify', error=exc) from None
        except (ssl.SSLError, OSError) as exc:
            raise TLSError('TLS handshake with %s failed: %s' % (where, exc), stage='handshake', error=exc) from None
    except BaseException:
        close_quietly(raw)
        raise


def peer_certificate(host, port, context, server_name=None, timeout=10.0, greeting_timeout=3.0, require_tls=True):
    """``(der, tls_version)``: the certificate a NATS server presents on a port, read in a TLS handshake through
    :func:`nats_tls_connect` (verified only as ``context`` says). Raises :class:`TLSError` (also when it presents
    none)."""
    tls = nats_tls_connect(host, port, context, server_name, timeout, greeting_timeout, require_tls=require_tls)
    try:
        der = tls.getpeercert(binary_form=True)
        version = tls.version()
    finally:
        close_quietly(tls)
    if not der:
        raise TLSError('%s:%s presented no certificate' % (host, port), stage='handshake')
    return der, version

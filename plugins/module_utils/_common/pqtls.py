# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A TLS client for ML-DSA certificates (private): pyOpenSSL over the OpenSSL that ``cryptography`` bundles.

Python's ``ssl`` module uses the system OpenSSL (3.0 here), which neither verifies nor presents ML-DSA certificates;
the OpenSSL 4.0 inside ``cryptography`` 50 does both, and pyOpenSSL reaches it (DESIGN section 10). :class:`PQContext`
stands in for an ``ssl.SSLContext`` where :func:`_common.tls.nats_tls_connect` uses one: ``wrap_socket`` returns a
socket-like object (``sendall``, ``recv``, ``version``, ``getpeercert(binary_form=True)``, ``close``) and failures are
raised as ``ssl.SSLCertVerificationError`` / ``ssl.SSLError``, so the callers' verdicts stay the same.

:func:`file_family` tells which one a certificate file needs.
"""

from __future__ import annotations

import ipaddress
import select
import ssl
import time

try:
    import OpenSSL
    from OpenSSL import SSL
except Exception:  # pylint: disable=broad-except  # absent, or too old for this cryptography (AttributeError)
    OpenSSL = SSL = None

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    certificate_family,
    load_cert,
    san_sets,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import peer_certificate

#: the OID of the ML-DSA public keys (NIST CSOR 2.16.840.1.101.3.4.3.17-19: ML-DSA-44/65/87)
MLDSA_OIDS = {'2.16.840.1.101.3.4.3.17': 44, '2.16.840.1.101.3.4.3.18': 65, '2.16.840.1.101.3.4.3.19': 87}


def pyopenssl_missing():
    """None, or why ML-DSA TLS is not available here (pyOpenSSL absent, unusable or older than 24.3)."""
    if SSL is None:
        return ('ML-DSA TLS needs pyOpenSSL 24.3 or later (over cryptography 50 or later, whose OpenSSL speaks ML-DSA): '
                'pip install pyOpenSSL')
    try:
        version = tuple(int(x) for x in OpenSSL.__version__.split('.')[:2])
    except (AttributeError, ValueError):
        version = (0, 0)
    if version < (24, 3):
        return 'ML-DSA TLS needs pyOpenSSL 24.3 or later; this one is %s: pip install -U pyOpenSSL' % OpenSSL.__version__
    return None


def _mldsa_signed(cert):
    try:
        return cert.signature_algorithm_oid.dotted_string in MLDSA_OIDS
    except (AttributeError, ValueError):
        return False


def file_family(cert_file):
    """``mldsa`` when a certificate in a PEM file has an ML-DSA key or signature (an EC leaf that an ML-DSA
    intermediate signed does not load into Python's ssl either), else ``classical`` - also when the file does not
    load: the ``ssl`` path then says what is wrong with it."""
    try:
        with open(cert_file, 'rb') as handle:
            certs = pem_certificates(handle.read().decode('ascii', 'replace'))
        return 'mldsa' if any(certificate_family(c) == 'mldsa' or _mldsa_signed(c) for c in (load_cert(p) for p in certs)) \
            else 'classical'
    except Exception:  # pylint: disable=broad-except
        return 'classical'


#: OpenSSL's X509_V_ERR codes a verify callback sees most, as OpenSSL words them (Python's ssl says the same)
_VERIFY_REASONS = {
    2: 'unable to get issuer certificate', 9: 'certificate is not yet valid', 10: 'certificate has expired',
    18: 'self-signed certificate', 19: 'self-signed certificate in certificate chain',
    20: 'unable to get local issuer certificate', 21: 'unable to verify the first certificate',
    24: 'invalid CA certificate', 26: 'unsupported certificate purpose', 7: 'certificate signature failure',
}


def _remember_failure(conn, cert, errno, depth, ok):
    """pyOpenSSL verify callback: keeps OpenSSL's verdict, and remembers the first failure's reason for the error."""
    if not ok:
        failures = conn.get_app_data()
        if isinstance(failures, list) and not failures:
            subject = cert.to_cryptography().subject.rfc4514_string() if cert is not None else None
            failures.append('%s (depth %d%s)' % (_VERIFY_REASONS.get(errno, 'X509 verify error %d' % errno), depth,
                                                 ', %s' % subject if subject else ''))
    return bool(ok)


def _verify_error(err):
    exc = ssl.SSLCertVerificationError(1, 'certificate verify failed: %s' % err)
    exc.verify_message = str(err)
    exc.reason = 'CERTIFICATE_VERIFY_FAILED'
    return exc


def _ssl_error(err):
    """An ``ssl.SSLError`` for a pyOpenSSL error (whose first argument lists ``(library, function, reason)``)."""
    listed = err.args[0] if err.args and isinstance(err.args[0], list) else []
    reasons = [r[2] for r in listed if isinstance(r, tuple) and len(r) > 2]
    exc = ssl.SSLError(1, '; '.join(r for r in reasons if r) or str(err) or type(err).__name__)
    exc.reason = reasons[-1] if reasons else str(err)
    return exc


def _name_matches(cert, server_name):
    """Whether the certificate's subjectAltName names ``server_name`` (DNS, one leading wildcard label, or an IP)."""
    dns, ips = san_sets(cert)
    try:
        return str(ipaddress.ip_address(server_name)) in ips
    except ValueError:
        pass
    want = server_name.lower().rstrip('.')
    for name in dns:
        name = name.lower().rstrip('.')
        if name == want or (name.startswith('*.') and '.' in want and want.split('.', 1)[1] == name[2:]):
            return True
    return False


class PQSocket:
    """A blocking, socket-like TLS connection over a pyOpenSSL ``Connection`` (timeouts from the raw socket)."""

    def __init__(self, conn, raw, timeout):
        self._conn, self._raw, self._timeout = conn, raw, timeout

    def _io(self, fn, *args, eof=None):
        """``fn(*args)``, waiting on the socket while OpenSSL wants to read or write. A closed connection is
        ``eof`` when given (a read), else ``ssl.SSLEOFError`` (a handshake or a write cut off)."""
        deadline = time.monotonic() + (self._timeout or 30.0)
        while True:
            try:
                return fn(*args)
            except SSL.WantReadError:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([self._raw], [], [], wait)[0]:
                    raise TimeoutError('timed out') from None
            except SSL.WantWriteError:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([], [self._raw], [], wait)[1]:
                    raise TimeoutError('timed out') from None
            except SSL.ZeroReturnError:
                if eof is not None:
                    return eof
                raise ssl.SSLEOFError(8, 'the peer closed the TLS connection') from None
            except SSL.SysCallError as err:
                if err.args and err.args[0] == -1:  # the peer closed the connection
                    if eof is not None:
                        return eof
                    raise ssl.SSLEOFError(8, 'EOF occurred in violation of protocol') from None
                raise OSError(str(err)) from None
            except SSL.Error as err:
                raise _ssl_error(err) from None

    def handshake(self):
        self._io(self._conn.do_handshake)

    def sendall(self, data):
        view = memoryview(data)
        while view:  # send() may write part of it (partial writes are on): never write a byte twice
            sent = self._io(self._conn.send, bytes(view[:16384]))
            view = view[sent:]

    def recv(self, size=4096):
        return self._io(self._conn.recv, size, eof=b'')

    def version(self):
        return self._conn.get_protocol_version_name()

    def getpeercert(self, binary_form=False):
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if not binary_form:
            raise ValueError('only binary_form=True is supported')
        # pylint: disable-next=import-outside-toplevel
        from cryptography.hazmat.primitives import serialization
        return cert.public_bytes(serialization.Encoding.DER) if cert is not None else None

    def settimeout(self, timeout):
        self._timeout = timeout

    def close(self):
        try:
            self._conn.shutdown()
        except Exception:  # pylint: disable=broad-except
            pass
        self._raw.close()


class PQContext:
    """What ``nats_tls_connect`` needs of an ``ssl.SSLContext``, for ML-DSA (and any other) certificates: TLS 1.3,
    the client certificate chain and key, and - with ``verify`` - the server's certificate checked against
    ``ca_file`` (``partial_chain``: an intermediate there is a trust anchor by itself) and, with ``check_hostname``,
    its name. Raises :class:`TLSError` naming the option when a file does not load."""

    def __init__(self, ca_file=None, cert_file=None, key_file=None, partial_chain=False, verify=True, check_hostname=True):
        missing = pyopenssl_missing()
        if missing:
            raise TLSError(missing, option='cert_file')
        self.verify, self.check_hostname = bool(verify), bool(verify and check_hostname)
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)  # ML-DSA signatures exist in TLS 1.3 only
        if self.verify:
            try:
                if ca_file:
                    ctx.load_verify_locations(ca_file)
                else:
                    ctx.set_default_verify_paths()
            except SSL.Error as exc:
                raise TLSError('the CA certificates do not load: %s' % _ssl_error(exc), option='ca_file', path=ca_file,
                               error=exc) from None
            if partial_chain:
                # pylint: disable-next=import-outside-toplevel
                from OpenSSL.crypto import X509StoreFlags
                ctx.get_cert_store().set_flags(X509StoreFlags.PARTIAL_CHAIN)
            ctx.set_verify(SSL.VERIFY_PEER, _remember_failure)
        else:
            ctx.set_verify(SSL.VERIFY_NONE, lambda *args: True)
        if key_file and not cert_file:
            raise TLSError('key_file %s is given without cert_file: give both for mutual TLS' % key_file, option='key_file',
                           path=key_file)
        if cert_file:
            try:
                ctx.use_certificate_chain_file(cert_file)
            except SSL.Error as exc:
                raise TLSError('the client certificate %s does not load: %s' % (cert_file, _ssl_error(exc)), option='cert_file',
                               path=cert_file, error=exc) from None
            key_option, key_path = ('key_file', key_file) if key_file else ('cert_file', cert_file)
            try:
                ctx.use_privatekey_file(key_path)
                ctx.check_privatekey()
            except SSL.Error as exc:
                reason = _ssl_error(exc)
                what = ('the client key %s is not the key of certificate %s' % (key_path, cert_file)
                        if 'mismatch' in str(reason) else 'the client key %s does not load' % key_path)
                raise TLSError('%s: %s' % (what, reason), option=key_option, path=key_path, error=exc) from None
        self._ctx = ctx

    def wrap_socket(self, raw, server_hostname=None):
        """The TLS connection over ``raw`` (connected, blocking with a timeout), handshaken."""
        timeout = raw.gettimeout()
        conn = SSL.Connection(self._ctx, raw)
        failures = []
        conn.set_app_data(failures)
        conn.set_connect_state()
        if server_hostname:
            try:
                ipaddress.ip_address(server_hostname)
            except ValueError:
                conn.set_tlsext_host_name(server_hostname.encode('idna'))
        raw.setblocking(False)
        tls = PQSocket(conn, raw, timeout)
        try:
            tls.handshake()
        except ssl.SSLError as exc:
            if 'certificate verify failed' in str(exc).lower():
                raise _verify_error('; '.join(failures) or exc) from None
            raise
        if self.check_hostname and server_hostname:
            cert = conn.get_peer_certificate(as_cryptography=True)
            if cert is None or not _name_matches(cert, server_hostname):
                tls.close()
                raise _verify_error("hostname mismatch, certificate is not valid for '%s'" % server_hostname)
        return tls


def served_certificate_der(host, port, context, server_name=None, timeout=10.0, greeting_timeout=3.0, require_tls=True,
                           cert_file=None, key_file=None):
    """``(der, tls_version)`` of the certificate a server presents, read with ``context`` (verify off), and - when that
    handshake fails and pyOpenSSL is here - once more through :class:`PQContext`: a server that presents an ML-DSA
    certificate fails every handshake of Python's ssl. Raises the first :class:`TLSError` when both fail."""
    try:
        return peer_certificate(host, port, context, server_name, timeout, greeting_timeout, require_tls=require_tls)
    except TLSError as exc:
        # only a TLS-level failure (not a timeout or a refused connection: no second wait for a dead server)
        if exc.stage != 'handshake' or not isinstance(exc.error, ssl.SSLError) or pyopenssl_missing():
            raise
        first = exc
    try:
        pq = PQContext(cert_file=cert_file, key_file=key_file if cert_file else None, verify=False)
        return peer_certificate(host, port, pq, server_name, timeout, greeting_timeout, require_tls=require_tls)
    except TLSError:
        raise first from None

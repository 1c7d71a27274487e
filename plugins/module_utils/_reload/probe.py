# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The TLS probe: a client certificate (e.g. of the new epoch) that every reloaded server must accept (private)."""

from __future__ import annotations

import ssl

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pqtls import PQContext, file_family
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import close_quietly, nats_tls_connect, read_line
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError, build_ssl_context
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError


def probe_context(probe, option='probe'):
    """An SSL context for the probe (client certificate loaded); raises ReloadError naming the option (``option``:
    the probe's own, e.g. ``probes[1]``). An ML-DSA probe certificate gets a :class:`_common.pqtls.PQContext`
    (pyOpenSSL), which the probe uses the same way; so does any probe with ``pyopenssl`` set (a classical client of a
    server that presents an ML-DSA leaf, which Python's ssl cannot verify).

    Without ``ca_file`` only the server's acceptance of our certificate is tested (the server's own
    certificate is not verified); with it, the host name is checked when ``server_name`` is given.
    """
    probe = dict(probe or {})
    for key in ('cert_file', 'key_file'):
        if not probe.get(key):
            raise ReloadError(f"{option}.{key} is required for the TLS probe", option=f'{option}.{key}')
    if probe.get('pyopenssl') or file_family(probe['cert_file']) == 'mldsa':
        # Python's ssl cannot present (or verify) ML-DSA: the OpenSSL inside cryptography can, through pyOpenSSL
        try:
            return PQContext(probe.get('ca_file'), probe['cert_file'], probe['key_file'], bool(probe.get('partial_chain')),
                             verify=bool(probe.get('ca_file')), check_hostname=bool(probe.get('server_name')))
        except TLSError as exc:
            raise ReloadError('%s.%s: %s' % (option, exc.option, exc), option='%s.%s' % (option, exc.option)) from None
    try:
        return build_ssl_context(probe.get('ca_file'), probe['cert_file'], probe['key_file'], bool(probe.get('partial_chain')),
                                 prefix=f'{option}.', verify=bool(probe.get('ca_file')),
                                 check_hostname=bool(probe.get('server_name')))
    except NatsError as exc:
        raise ReloadError(str(exc), option=f"{option}.{exc.option}" if exc.option else option) from None


def tls_probe(host, port, ctx, server_name=None, timeout=10.0, greeting_timeout=3.0):
    """Connect to a NATS client port, upgrade to TLS with the probe certificate, and see the server accept it.

    NATS sends its INFO line in plaintext and expects the TLS upgrade next (servers configured with
    ``handshake_first`` send nothing: then the handshake starts at once). With TLS 1.3 the server checks the
    client certificate after the client's handshake completes, so the proof is reading a protocol line back
    through TLS (PONG, or ``-ERR 'Authorization Violation'`` when the probe sends no credentials: the TLS
    layer accepted the certificate either way). Returns (ok, detail).
    """
    where = f"{host}:{port}"
    try:
        tls = nats_tls_connect(host, port, ctx, server_name, timeout, greeting_timeout)
    except TLSError as exc:
        if exc.stage == 'verify':
            return False, f"the certificate of {where} does not verify against probe.ca_file: {exc.error.verify_message or exc.error}"
        return False, str(exc)
    version = tls.version() or 'TLS'
    try:
        tls.sendall(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"name":"nats_sighup probe"}\r\n'
                    b'PING\r\n')
        reply = read_line(tls)
    except ssl.SSLError as exc:
        return False, f"{where} rejected the probe certificate: {getattr(exc, 'reason', None) or exc}"
    except OSError as exc:
        return False, f"{where} closed the connection after the TLS handshake: {exc}"
    finally:
        close_quietly(tls)
    if not reply:
        return False, f"{where} closed the connection after the TLS handshake (probe certificate not accepted?)"
    line = reply.decode('utf-8', 'replace').strip()
    return True, f"{version} accepted by {where} ({line[:80]})"

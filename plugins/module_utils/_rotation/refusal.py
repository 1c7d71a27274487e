# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proof of a distrust: every server refuses a leaf of the distrusted intermediate, sent alone and with the
intermediate, on its client port and (when the target names it) on its route port (private)."""

from __future__ import annotations

import ssl

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import close_quietly, nats_tls_connect, read_line
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.probe import probe_context
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.cluster import probe_address

#: what the witness is sent as: its leaf alone, and leaf + distrusted intermediate (a chain that reaches the root)
PRESENTATIONS = (('leaf_only', 'leaf_file'), ('with_intermediate', 'chain_file'))


def attempt(host, port, ctx, timeout=5.0):
    """``(verdict, detail)``: ``refused`` (the server's TLS layer rejected the certificate), ``accepted`` (a protocol
    line came back through TLS) or ``error`` (no answer at all: nothing is proven)."""
    where = '%s:%s' % (host, port)
    try:
        tls = nats_tls_connect(host, port, ctx, None, timeout, 3.0)
    except TLSError as exc:
        if isinstance(exc.error, ssl.SSLCertVerificationError):
            # our side refused the server's certificate: that proves nothing about the server's trust
            return 'error', 'the certificate of %s is not trusted by the proof: %s' % (where, exc.error)
        if exc.stage == 'handshake' and isinstance(exc.error, ssl.SSLError):
            return 'refused', 'TLS handshake refused by %s: %s' % (where, getattr(exc.error, 'reason', None) or exc.error)
        return 'error', str(exc)
    try:
        tls.sendall(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"name":"distrust proof"}\r\nPING\r\n')
        line = read_line(tls)
    except ssl.SSLError as exc:
        return 'refused', '%s refused the certificate: %s' % (where, getattr(exc, 'reason', None) or exc)
    except OSError as exc:
        return 'refused', '%s closed the connection after the TLS handshake: %s' % (where, exc)
    finally:
        close_quietly(tls)
    if not line:
        return 'refused', '%s closed the connection after the TLS handshake without a reply' % where
    return 'accepted', '%s accepted it (%s)' % (where, line.decode('utf-8', 'replace').strip()[:60])


def ports(target, probe_host=None):
    """``[(label, host, port)]``: the client port of ``url`` and the route port of ``route_url``, if given (a
    loopback or wildcard host replaced by the machine's own address, as for the trust proof)."""
    out = []
    for label, key in (('client', 'url'), ('route', 'route_url')):
        if target.get(key):
            host, port = probe_address({'url': target[key]}, probe_host)
            out.append((label, host, port))
    return out


def prove_refused(targets, witness, probe_host=None, ca_file=None, partial_chain=False, timeout=5.0):
    """Try the witness on every port of every target; ``{ok, servers: [{name, port, leaf_only, with_intermediate,
    detail}], accepted: [...], errors: [...]}``. ``ok`` only when every attempt was refused. With ``ca_file`` (the
    bundle the servers now hold) the server's certificate is verified first, so that a refusal is the server's."""
    contexts = {}
    for label, key in PRESENTATIONS:
        contexts[label] = probe_context({'cert_file': witness[key], 'key_file': witness['key_file'], 'ca_file': ca_file,
                                         'partial_chain': partial_chain})
    servers, accepted, errors = [], [], []
    for target in targets:
        for port_label, host, port in ports(target, probe_host):
            entry = {'name': target.get('name'), 'port': port_label, 'address': '%s:%s' % (host, port)}
            for label, _key in PRESENTATIONS:
                verdict, detail = attempt(host, port, contexts[label], timeout)
                entry[label] = verdict
                entry['%s_detail' % label] = detail
                where = '%s %s port (%s)' % (target.get('name'), port_label, label.replace('_', ' '))
                if verdict == 'accepted':
                    accepted.append(where)
                elif verdict == 'error':
                    errors.append('%s: %s' % (where, detail))
            servers.append(entry)
    return {'ok': bool(servers) and not accepted and not errors, 'servers': servers, 'accepted': accepted,
            'errors': errors}

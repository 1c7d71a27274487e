# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proof of a distrust: every server refuses a leaf of the distrusted intermediate, sent alone and with the
intermediate, on its client port and (when the target names it) on its route port (private)."""

from __future__ import annotations

import ssl

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import issued_by, load_cert, load_der_cert
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pqtls import served_certificate_der
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import (
    client_context,
    close_quietly,
    nats_tls_connect,
    read_line,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.probe import probe_context
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.cluster import (
    build_transport,
    leaf_managed_names,
    probe_address,
)

#: what the witness is sent as: its leaf alone, and leaf + distrusted intermediate (a chain that reaches the root)
PRESENTATIONS = (('leaf_only', 'leaf_file'), ('with_intermediate', 'chain_file'))


def rejects_certificate(reason):
    """Whether a handshake failure is the server's alert about the certificate we presented (bad certificate, unknown
    CA, certificate required, revoked, expired, ...), as opposed to a handshake that never got that far."""
    text = str(reason or '').lower().replace('_', ' ')
    return 'alert' in text and any(w in text for w in ('certificate', 'unknown ca', 'access denied'))


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
            reason = str(getattr(exc.error, 'reason', None) or exc.error)
            if rejects_certificate(reason):
                return 'refused', 'TLS handshake refused by %s: %s' % (where, reason)
            # e.g. no signature algorithm in common (an ML-DSA server and a classical TLS stack): not the server's verdict
            return 'error', 'the TLS handshake with %s failed before the server judged the certificate: %s' % (where, reason)
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
        if not ports(target, probe_host):
            errors.append('%s: no address to try (%s)' % (target.get('name'), target.get('problem') or 'no url'))
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


def _url(host, port):
    return 'nats://%s:%s' % ('[%s]' % host if ':' in host else host, port)


def server_addresses(cc):
    """``[{name, url, route_url, problem}]``: where the controller tries a cluster's servers - the inventory's targets,
    or for transport kubernetes the running pods (pod IP; the container ports named client/nats and cluster/route)."""
    if cc.targets or cc.transport != 'kubernetes':
        return [dict(t) for t in cc.targets]
    transport = build_transport(cc)
    try:
        found = transport.discover()
    finally:
        transport.close()
    out = []
    for target in found:
        entry = {'name': target.name, 'problem': target.problem}
        if target.host and not target.problem:
            entry['url'] = _url(target.host, target.port)
            if target.state.get('route_port'):
                entry['route_url'] = _url(target.host, target.state['route_port'])
        out.append(entry)
    return out


def served_certificate(host, port, ctx, timeout=5.0, cert_file=None, key_file=None):
    """The certificate a server presents on a port (read, not verified: ``ctx`` has verify off; an ML-DSA server is
    read through pyOpenSSL, presenting ``cert_file`` / ``key_file``)."""
    return load_der_cert(served_certificate_der(host, port, ctx, None, timeout, 3.0, cert_file=cert_file,
                                                key_file=key_file)[0])


def still_served(cc, intermediate_pem, probe, probe_host=None, timeout=5.0):
    """The servers of a cluster whose leaf this collection does not issue (transport kubernetes, or no cert_file /
    key_file / ca_rotation_nats_reload_renew_leaves off) that still present a certificate ``intermediate_pem`` signed,
    on their client port or their route port.

    Returns ``{'signed': [names], 'errors': [...]}``: a server whose certificate cannot be read is an error (not known
    to be safe)."""
    managed = leaf_managed_names(cc)
    intermediate = load_cert(intermediate_pem)
    signed, errors = [], []
    try:
        targets = [t for t in server_addresses(cc) if t.get('name') not in managed]
    except ReloadError as exc:
        return {'signed': [], 'errors': ['cannot list the servers: %s' % exc]}
    if not targets:
        return {'signed': [], 'errors': []}
    mine = {'cert_file': probe['cert_file'], 'key_file': probe['key_file']}
    try:
        ctx = client_context(verify=False, **mine)
    except TLSError:
        # no probe certificate (check mode predicts it): in TLS 1.3 the server shows its certificate before it checks
        # ours (a server that allows only TLS 1.2 fails that handshake, and the error says so)
        ctx, mine = client_context(verify=False), {}
    for target in targets:
        found = ports(target, probe_host)
        if not found:
            errors.append('%s: no address to read its certificate from (%s)' % (target.get('name'), target.get('problem') or 'no url'))
        for label, host, port in found:
            try:
                cert = served_certificate(host, port, ctx, timeout, **mine)
            except (TLSError, OSError, ValueError) as exc:
                errors.append('%s: cannot read the certificate it presents on its %s port %s:%s: %s'
                              % (target.get('name'), label, host, port, exc))
                continue
            if issued_by(cert, intermediate):
                if target.get('name') not in signed:
                    signed.append(target.get('name'))
    return {'signed': signed, 'errors': errors}

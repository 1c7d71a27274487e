"""The canary's I/O: its client leaves (one per valid epoch, from OpenBao) and the leaf-only handshakes."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import ssl
import tempfile
import time

# the collection is importable: cli.main() called catools.ensure_collection_importable() before importing this
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError, bundle_unverified
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import x509
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import (
    client_context,
    close_quietly,
    nats_tls_connect,
    read_line,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import _data, _request
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import issue_leaf
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.cluster import certificate_facts

UTC = datetime.timezone.utc
#: connection problems that say nothing about trust
UNREACHABLE_STAGES = ('connect', 'greeting', 'no-tls')


def role_settings(common_name, ttl):
    """The canary's own PKI role: client certificates for one name, short-lived, never stored in OpenBao."""
    return {
        'allowed_domains': [common_name], 'allow_bare_domains': True, 'allow_subdomains': False, 'allow_any_name': False,
        'allow_localhost': False, 'allow_ip_sans': False, 'enforce_hostnames': False, 'server_flag': False,
        'client_flag': True, 'key_type': 'ec', 'key_bits': 256, 'ttl': '%ds' % ttl, 'max_ttl': '%ds' % ttl,
        'no_store': True, 'generate_lease': False,
    }


def ensure_role(client, int_mount, role, common_name, ttl):
    """Create or update the role when it differs (read before write); returns whether it was written."""
    path = '%s/roles/%s' % (int_mount, role)
    wanted = role_settings(common_name, ttl)
    current = _data(_request(client, 'GET', path, 'reading the canary role', missing_ok=True))
    compare = dict(wanted, ttl=ttl, max_ttl=ttl)
    if current and all(current.get(k) == v for k, v in compare.items()):
        return False
    _request(client, 'POST', path, 'writing the canary role', data=wanted)
    return True


class LeafStore:
    """Client leaves by epoch, in a private directory (mode 0700, keys 0600; removed by :meth:`close`)."""

    def __init__(self, int_mount, role, common_name, ttl):
        self.int_mount, self.role, self.common_name, self.ttl = int_mount, role, common_name, ttl
        self.dir = tempfile.mkdtemp(prefix='ca-trust-canary.')
        os.chmod(self.dir, 0o700)
        self.leaves = {}

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _due(self, leaf, now):
        total = (leaf['not_after'] - leaf['not_before']).total_seconds()
        return (leaf['not_after'] - now).total_seconds() < total / 3.0

    def refresh(self, client, issuers, now):
        """Issue a leaf for every valid or prepared issuer that has none or whose leaf is a third from its end; keep the
        leaves of expired or revoked issuers while OpenBao still lists them (they must be refused). Returns
        ``{epoch: error message}`` for the leaves that could not be issued."""
        errors = {}
        listed = {i['epoch'] for i in issuers}
        for epoch in [e for e in self.leaves if e not in listed]:
            self._drop(epoch)
        for issuer in issuers:
            epoch = issuer['epoch']
            if issuer.get('state') not in ('active', 'valid', 'prepared'):
                continue
            leaf = self.leaves.get(epoch)
            if leaf is not None and leaf['issuer_sha256'] == issuer.get('sha256') and not self._due(leaf, now):
                continue
            if client is None:
                errors[epoch] = 'no OpenBao connection to issue a leaf of epoch-%s' % epoch
                continue
            try:
                self._issue(client, issuer)
            except OpenBaoError as exc:
                errors[epoch] = 'issuing a canary leaf from %s: %s' % (issuer.get('issuer_name'), exc)
        return errors

    def _issue(self, client, issuer):
        epoch = issuer['epoch']
        res = issue_leaf(client, int_mount=self.int_mount, role=self.role, common_name=self.common_name,
                         ttl='%ds' % self.ttl, issuer_ref=issuer.get('issuer_id') or issuer['issuer_name'])
        cert_file = os.path.join(self.dir, 'epoch-%d.pem' % epoch)
        key_file = os.path.join(self.dir, 'epoch-%d-key.pem' % epoch)
        fd = os.open(key_file + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w', encoding='ascii') as handle:
            handle.write(res['private_key'].strip() + '\n')
        os.replace(key_file + '.tmp', key_file)
        with open(cert_file + '.tmp', 'w', encoding='ascii') as handle:
            handle.write(res['certificate'].strip() + '\n')  # the leaf alone: trust must come from the server's CA file
        os.replace(cert_file + '.tmp', cert_file)
        self.leaves[epoch] = {'cert_file': cert_file, 'key_file': key_file, 'issuer_sha256': issuer.get('sha256'),
                              'not_before': _time(res['not_before']), 'not_after': _time(res['not_after']), 'serial': res['serial']}

    def _drop(self, epoch):
        leaf = self.leaves.pop(epoch)
        for path in (leaf['cert_file'], leaf['key_file']):
            try:
                os.unlink(path)
            except OSError:
                pass


def _time(text):
    return datetime.datetime.fromisoformat(str(text).replace('Z', '+00:00'))


def handshake(server, leaf, ca_file=None, server_name=None, timeout=5.0, kind='client'):
    """A leaf-only TLS handshake with the ``kind`` listener (``client`` or ``route``) of ``server`` (a
    ``config.Server``); proves acceptance by reading a protocol line.

    The client port greets in plaintext (INFO) and upgrades to TLS; the canary then sends CONNECT and PING and reads
    the reply. A route port with TLS starts the handshake at once and sends its INFO over TLS once it accepted the
    client certificate: the canary reads that INFO and closes, sending nothing (no CONNECT: the server never counts
    the connection as a route).

    The server's certificate is verified against ``ca_file`` (with ``server_name``, its name too). When it does not
    verify (expired, say), the handshake is made again without verifying it: whether the server accepts the canary's
    leaf does not depend on the server's own certificate (the canary sends no credentials), and that problem is
    reported on its own (``server_problem``).

    Returns ``{'outcome': 'accepted' | 'refused' | 'unreachable' | 'error', 'detail', 'seconds', 'served',
    'server_problem'}``; ``served`` is the facts of the server's certificate (``_status.cluster.certificate_facts``).
    """
    out = _handshake(server, leaf, ca_file, server_name, timeout, kind)
    if out['outcome'] == 'untrusted_server':
        problem = out['detail']
        out = _handshake(server, leaf, None, None, timeout, kind)
        out['server_problem'] = problem
    return out


#: OpenSSL reasons of a peer that does not speak TLS (a plaintext listener): not a refusal of the leaf
NOT_TLS_REASONS = ('WRONG_VERSION_NUMBER', 'RECORD_LAYER_FAILURE', 'PACKET_LENGTH_TOO_LONG', 'HTTP_REQUEST',
                   'UNKNOWN_PROTOCOL', 'RECORD_TOO_LARGE')


def classify_tls_error(exc, where):
    """``(outcome, detail)`` of a failed TLS handshake: ``untrusted_server`` (the server's certificate does not verify),
    ``unreachable`` (the peer does not speak TLS), else ``refused`` (the server's alert: it refused the leaf)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return 'untrusted_server', 'the certificate of %s does not verify against tls.ca_file: %s' % (
            where, getattr(exc, 'verify_message', None) or exc)
    reason = getattr(exc, 'reason', None) or ''
    if isinstance(exc, ssl.SSLError) and (reason in NOT_TLS_REASONS or any(r.lower() in str(exc).lower() for r in NOT_TLS_REASONS)):
        return 'unreachable', '%s does not speak TLS (%s): a plaintext listener, or not a NATS route port' % (where, reason or exc)
    return 'refused', 'TLS handshake with %s failed: %s' % (where, exc)


def _context(leaf, ca_file, server_name):
    return client_context(ca_file=ca_file, cert_file=leaf['cert_file'], key_file=leaf['key_file'], verify=bool(ca_file),
                          check_hostname=bool(server_name), partial_chain=None)


def _connect_client(server, ctx, server_name, timeout):
    """The client port: plaintext INFO, then TLS (``_common.tls.nats_tls_connect``)."""
    where = '%s:%s' % (server.host, server.port)
    try:
        return nats_tls_connect(server.host, server.port, ctx, server_name, timeout, min(3.0, timeout), require_tls=True), None
    except TLSError as exc:
        if exc.stage in UNREACHABLE_STAGES:
            return None, ('unreachable', str(exc))
        if exc.stage == 'verify':
            return None, ('untrusted_server', 'the certificate of %s does not verify against tls.ca_file: %s'
                          % (where, getattr(exc.error, 'verify_message', None) or exc.error))
        if isinstance(exc.error, ssl.SSLError):
            outcome, _detail = classify_tls_error(exc.error, where)
            if outcome == 'unreachable':
                return None, (outcome, _detail)
        return None, ('refused', str(exc))  # TLS 1.2: the server's alert during the handshake


def _connect_route(host, port, ctx, server_name, timeout):
    """A route port: TLS from the first byte (a NATS route listener with TLS sends nothing before the handshake)."""
    where = '%s:%s' % (host, port)
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        return None, ('unreachable', 'cannot connect to the route port %s: %s' % (where, exc))
    try:
        raw.settimeout(timeout)
        return ctx.wrap_socket(raw, server_hostname=server_name or host), None
    except socket.timeout:
        close_quietly(raw)
        return None, ('error', 'the TLS handshake with the route port %s timed out after %gs' % (where, timeout))
    except ssl.SSLError as exc:
        close_quietly(raw)
        return None, classify_tls_error(exc, 'the route port %s' % where)
    except OSError as exc:
        close_quietly(raw)
        return None, ('refused', 'the route port %s closed the connection during the TLS handshake: %s' % (where, exc))


def _handshake(server, leaf, ca_file, server_name, timeout, kind='client'):
    started = time.perf_counter()
    out = {'outcome': 'error', 'detail': None, 'seconds': None, 'served': None, 'server_problem': None}
    try:
        ctx = _context(leaf, ca_file, server_name)
    except TLSError as exc:
        out['detail'] = 'the canary leaf does not load: %s' % exc
        return out
    host, port = server.endpoint(kind)
    where = '%s:%s' % (host, port) if kind == 'client' else 'the route port %s:%s' % (host, port)
    if kind == 'client':
        tls, failed = _connect_client(server, ctx, server_name, timeout)
    else:
        tls, failed = _connect_route(host, port, ctx, server_name, timeout)
    if failed:
        out.update(outcome=failed[0], detail=failed[1], seconds=time.perf_counter() - started)
        return out
    try:
        der = tls.getpeercert(binary_form=True)
        if der and x509 is not None:
            out['served'] = certificate_facts(x509.load_der_x509_certificate(der), tls.version())
        if kind == 'client':
            tls.sendall(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"name":"ca-trust-canary"}\r\nPING\r\n')
        reply = read_line(tls)
        out['seconds'] = time.perf_counter() - started
        if kind == 'route' and reply and not reply.startswith(b'INFO '):
            out.update(outcome='error', detail='%s answered %r, not a NATS route INFO' % (where, reply[:60]))
        elif reply:
            out.update(outcome='accepted', detail=_reply_detail(reply, kind))
        else:
            out.update(outcome='refused', detail='%s closed the connection after the handshake' % where)
    except socket.timeout:  # a server that neither refuses nor answers: nothing is proven
        out.update(outcome='error', seconds=time.perf_counter() - started,
                   detail='%s sent nothing within %gs after the TLS handshake' % (where, timeout))
    except ssl.SSLError as exc:  # TLS 1.3: the server checks the client certificate after the handshake
        out.update(outcome='refused', seconds=time.perf_counter() - started,
                   detail='%s rejected the leaf: %s' % (where, getattr(exc, 'reason', None) or exc))
    except OSError as exc:
        out.update(outcome='refused', seconds=time.perf_counter() - started,
                   detail='%s closed the connection after the handshake: %s' % (where, exc))
    finally:
        close_quietly(tls)
    return out


def _reply_detail(reply, kind):
    text = reply.decode('utf-8', 'replace').strip()
    if kind == 'route':
        try:
            info = json.loads(text[5:])
        except ValueError:
            info = {}
        if isinstance(info, dict) and (info.get('server_name') or info.get('cluster')):
            return 'route INFO of %s (cluster %s)' % (info.get('server_name') or info.get('server_id'), info.get('cluster'))
    return text[:80]


def read_ca_file(path, schedule):
    """``(members, error)``: the certificates of a server's CA file (epoch, kind, not_after, sha256)."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except OSError as exc:
        return None, 'cannot read CA file %s: %s' % (path, exc.strerror or exc)
    try:
        parsed = bundle_unverified(data, schedule)
    except BundleError as exc:
        return None, 'CA file %s does not parse: %s' % (path, exc)
    return [{k: c.get(k) for k in ('epoch', 'kind', 'not_after', 'sha256', 'subject')} for c in parsed['certificates']], None

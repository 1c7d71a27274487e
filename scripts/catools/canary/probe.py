"""The canary's I/O: its client leaves (one per valid epoch, from OpenBao) and the leaf-only handshakes."""

from __future__ import annotations

import datetime
import os
import shutil
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


def handshake(server, leaf, ca_file=None, server_name=None, timeout=5.0):
    """A leaf-only TLS handshake with ``server`` (a ``config.Server``); proves acceptance by reading a protocol line.

    The server's certificate is verified against ``ca_file`` (with ``server_name``, its name too). When it does not
    verify (expired, say), the handshake is made again without verifying it: whether the server accepts the canary's
    leaf does not depend on the server's own certificate (the canary sends no credentials), and that problem is
    reported on its own (``server_problem``).

    Returns ``{'outcome': 'accepted' | 'refused' | 'unreachable' | 'error', 'detail', 'seconds', 'served',
    'server_problem'}``; ``served`` is the facts of the server's certificate (``_status.cluster.certificate_facts``).
    """
    out = _handshake(server, leaf, ca_file, server_name, timeout)
    if out['outcome'] == 'untrusted_server':
        problem = out['detail']
        out = _handshake(server, leaf, None, None, timeout)
        out['server_problem'] = problem
    return out


def _handshake(server, leaf, ca_file, server_name, timeout):
    started = time.perf_counter()
    out = {'outcome': 'error', 'detail': None, 'seconds': None, 'served': None, 'server_problem': None}
    try:
        ctx = client_context(ca_file=ca_file, cert_file=leaf['cert_file'], key_file=leaf['key_file'], verify=bool(ca_file),
                             check_hostname=bool(server_name), partial_chain=None)
    except TLSError as exc:
        out['detail'] = 'the canary leaf does not load: %s' % exc
        return out
    where = '%s:%s' % (server.host, server.port)
    try:
        tls = nats_tls_connect(server.host, server.port, ctx, server_name, timeout, min(3.0, timeout), require_tls=True)
    except TLSError as exc:
        out['seconds'] = time.perf_counter() - started
        if exc.stage in UNREACHABLE_STAGES:
            out.update(outcome='unreachable', detail=str(exc))
        elif exc.stage == 'verify':
            out.update(outcome='untrusted_server', detail='the certificate of %s does not verify against tls.ca_file: %s'
                       % (where, getattr(exc.error, 'verify_message', None) or exc.error))
        else:  # TLS 1.2: the server's alert during the handshake
            out.update(outcome='refused', detail=str(exc))
        return out
    try:
        der = tls.getpeercert(binary_form=True)
        if der and x509 is not None:
            out['served'] = certificate_facts(x509.load_der_x509_certificate(der), tls.version())
        tls.sendall(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"name":"ca-trust-canary"}\r\nPING\r\n')
        reply = read_line(tls)
        out['seconds'] = time.perf_counter() - started
        if reply:
            out.update(outcome='accepted', detail=reply.decode('utf-8', 'replace').strip()[:80])
        else:
            out.update(outcome='refused', detail='%s closed the connection after the handshake' % where)
    except ssl.SSLError as exc:  # TLS 1.3: the server checks the client certificate after the handshake
        out.update(outcome='refused', seconds=time.perf_counter() - started,
                   detail='%s rejected the leaf: %s' % (where, getattr(exc, 'reason', None) or exc))
    except OSError as exc:
        out.update(outcome='refused', seconds=time.perf_counter() - started,
                   detail='%s closed the connection after the handshake: %s' % (where, exc))
    finally:
        close_quietly(tls)
    return out


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

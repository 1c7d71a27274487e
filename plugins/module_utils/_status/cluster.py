# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts of one NATS cluster for the status report: every server's CA file, load time and served
certificate, and the live CA Secret (private). Never raises for an unreachable server."""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import re

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError, bundle_unverified
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import (
    DEFAULT_LIVE_SECRET_KEY,
    DEFAULT_LIVE_SECRET_NAME,
    DEFAULT_LIVE_SECRET_NAMESPACE,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    cert_not_after,
    cert_not_before,
    cert_sha256,
    common_name,
    x509,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pqtls import served_certificate_der
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError, TargetError, parse_load_time
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.kubernetes import KubernetesTransport
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.gather import (
    SCHEMA,
    StatusError,
    _key_identifier,
    _read_secret_facts,
    _short,
)

DEFAULT_TLS_TIMEOUT = 5.0
MAX_WORKERS = 32
_NS = 1000000000
_CN_EPOCH_RE = re.compile(r'\bEpoch (\d+)$')


def _iso_ns(ns):
    """``YYYY-MM-DDTHH:MM:SS.fffffffffZ`` for integer nanoseconds since the Unix epoch."""
    seconds, frac = divmod(int(ns), _NS)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')
    return '%s.%09dZ' % (stamp, frac)


def served_certificate(host, port, timeout=DEFAULT_TLS_TIMEOUT, cert_file=None, key_file=None, server_name=None):
    """The certificate a NATS server presents on its client port (read in a TLS handshake, not verified).

    Reads the plaintext INFO line first (none with ``handshake_first``), then handshakes. Without a
    client certificate this works with TLS 1.3, where the server checks the client's certificate only
    after the handshake. Returns facts (subject, issuer, issuer_cn, issuer_epoch (from the issuer's
    common name), authority_key_id, not_before, not_after, sha256, tls_version); raises StatusError.
    """
    try:
        # we read the certificate; the rotation's probe proves trust
        ctx = client_context(cert_file=cert_file, key_file=key_file if cert_file else None, verify=False)
    except TLSError as exc:
        raise StatusError('cannot load tls_client.cert_file %r / key_file %r: %s' % (cert_file, key_file, exc.error)) from None
    try:
        der, version = served_certificate_der(host, port, ctx, server_name, timeout, min(3.0, timeout), require_tls=False,
                                              cert_file=cert_file, key_file=key_file)
    except TLSError as exc:
        raise StatusError(str(exc)) from None
    return certificate_facts(x509.load_der_x509_certificate(der), version)


def certificate_facts(cert, tls_version=None):
    """JSON-safe facts about a served (leaf) certificate."""
    issuer_cn = common_name(cert.issuer)
    match = _CN_EPOCH_RE.search(issuer_cn or '')
    return {
        'subject': cert.subject.rfc4514_string(),
        'issuer': cert.issuer.rfc4514_string(),
        'issuer_cn': issuer_cn,
        'issuer_epoch': int(match.group(1)) if match else None,
        'authority_key_id': _key_identifier(cert, x509.AuthorityKeyIdentifier),
        'not_before': isoformat(cert_not_before(cert)),
        'not_after': isoformat(cert_not_after(cert)),
        'sha256': cert_sha256(cert),
        'tls_version': tls_version,
    }


def _pod_mtime_ns(transport, target):
    """Modification time of the mounted CA file in the pod (``stat -L -c %Y``; whole seconds)."""
    code, out, err = transport.exec(target, ['stat', '-L', '-c', '%Y', transport.ca_file])
    text = (out or '').strip()
    if code != 0 or not text.isdigit():
        raise TargetError('stat -L -c %%Y %s in pod %s/%s failed (exit %s): %s'
                          % (transport.ca_file, transport.namespace, target.name, code, _short(err or out or 'no output', 200)))
    return int(text) * _NS


def _gather_server(transport, target, tls_client, tls_timeout, schedule):
    entry = {
        'name': target.name, 'server_id': target.server_id, 'server_name': target.server_name, 'error': target.problem,
        'ca_file': None, 'ca_sha256': None, 'ca_error': None, 'ca_epochs': None, 'ca_cert_sha256s': None, 'ca_mtime': None,
        'ca_mtime_ns': None, 'mtime_resolution_ns': None, 'mtime_error': None, 'config_load_time': None, 'load_time_ns': None, 'start': None,
        'varz_error': None, 'tls': None, 'tls_error': None,
    }
    if target.problem:
        return entry
    kubernetes = isinstance(transport, KubernetesTransport)
    if target.ca_file:
        entry['ca_file'] = transport.ca_location(target)
        try:
            entry['ca_sha256'] = transport.read_sha256(target)
        except TargetError as exc:
            entry['ca_error'] = str(exc)
        try:
            if kubernetes:
                entry['ca_mtime_ns'] = _pod_mtime_ns(transport, target)
                entry['mtime_resolution_ns'] = _NS
            else:
                entry['ca_mtime_ns'] = os.stat(target.ca_file).st_mtime_ns
                entry['mtime_resolution_ns'] = 1
                with open(target.ca_file, 'rb') as handle:
                    parsed = bundle_unverified(handle.read(), schedule)
                    entry['ca_epochs'] = parsed['epochs']
                    entry['ca_cert_sha256s'] = [c['sha256'] for c in parsed['certificates']]
        except TargetError as exc:
            entry['mtime_error'] = str(exc)
        except OSError as exc:
            entry['mtime_error'] = 'cannot stat %s: %s' % (target.ca_file, exc.strerror or exc)
        except BundleError as exc:
            entry['ca_epochs'] = None
            entry['ca_parse_error'] = _short(exc)
        if entry['ca_mtime_ns'] is not None:
            entry['ca_mtime'] = _iso_ns(entry['ca_mtime_ns'])
    varz = {}
    try:
        varz = transport.read_varz(target) or {}
        entry['config_load_time'] = varz.get('config_load_time')
        entry['start'] = varz.get('start')
        entry['server_id'] = entry['server_id'] or varz.get('server_id')
        entry['server_name'] = entry['server_name'] or varz.get('server_name')
        if entry['config_load_time']:
            entry['load_time_ns'] = parse_load_time(entry['config_load_time'])
    except TargetError as exc:
        entry['varz_error'] = str(exc)
    except ValueError as exc:
        entry['varz_error'] = 'unreadable config_load_time: %s' % exc
    try:
        host, port = transport.probe_address(target, varz)
        entry['tls'] = served_certificate(host, port, tls_timeout, (tls_client or {}).get('cert_file'),
                                          (tls_client or {}).get('key_file'), (tls_client or {}).get('server_name'))
    except StatusError as exc:
        entry['tls_error'] = str(exc)
    except (TypeError, ValueError) as exc:
        entry['tls_error'] = 'no address to reach the client port: %s' % exc
    return entry


def gather_cluster(cluster, transport, live_secret=None, k8s_params=None, tls_client=None, tls_timeout=DEFAULT_TLS_TIMEOUT,
                   schedule=None, max_workers=MAX_WORKERS):
    """Facts of one cluster. ``transport`` is a ``_reload`` transport (only its read methods are used, nothing
    is reloaded). ``live_secret``: ``{namespace, name, key}`` of the live CA Secret to read, or None."""
    facts = {'schema': SCHEMA, 'part': 'cluster', 'cluster': cluster, 'transport': transport.name if transport else None,
             'gathered_at': isoformat(datetime.datetime.now(datetime.timezone.utc)), 'error': None, 'servers': [],
             'live_secret': None}
    if live_secret:
        facts['live_secret'] = _read_secret_facts(k8s_params, live_secret.get('namespace') or DEFAULT_LIVE_SECRET_NAMESPACE,
                                                  live_secret.get('name') or DEFAULT_LIVE_SECRET_NAME,
                                                  live_secret.get('key') or DEFAULT_LIVE_SECRET_KEY)
    if transport is None:
        return facts
    try:
        targets = transport.discover()
    except ReloadError as exc:
        facts['error'] = str(exc)
        return facts
    if targets:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets)))) as pool:
            futures = [pool.submit(_safe_gather_server, transport, t, tls_client, tls_timeout, schedule) for t in targets]
            facts['servers'] = [f.result() for f in futures]
    return facts


def _safe_gather_server(transport, target, tls_client, tls_timeout, schedule):
    try:
        return _gather_server(transport, target, tls_client, tls_timeout, schedule)
    except Exception as exc:  # pylint: disable=broad-except  # one server must not take the report down
        return {'name': target.name, 'error': 'unexpected error: %s: %s' % (type(exc).__name__, _short(exc))}


# ================================================================================ load state
def not_loaded(server):
    """True when the server's CA file was written after its configuration was (re)loaded; None when unknown.

    With whole-second modification times (``stat`` in a pod) the file counts as newer only when its
    second starts after the load time, so a write and a reload within the same second are not flagged.
    """
    mtime, loaded = server.get('ca_mtime_ns'), server.get('load_time_ns')
    if mtime is None or loaded is None:
        return None
    return int(mtime) > int(loaded)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rotation status report: gather facts everywhere, compare them, flag every mismatch (private).

Read-only by construction: nothing here writes, signals or reloads. Three steps, so that each part
runs where its credentials are (module ``rotation_status``, playbook ``status.yml``):

:func:`gather_authority`  OpenBao issuers (``epoch-<n>``, the default, expiry), the root, the rotation
                          state (``secret/ca-rotation/state``) and the per-cluster proof records, the KV
                          bundle of the state's epoch, the per-epoch Kubernetes Secret, and the latest
                          announcement on JetStream with its signature checked against the transit key.
:func:`gather_cluster`    for one NATS cluster, every server's CA file (SHA-256 and modification time,
                          local or read with ``exec`` in the pod), its ``config_load_time`` (``/varz`` or
                          ``$SYS.REQ.SERVER.<id>.VARZ``), the certificate it serves (a TLS handshake on the
                          client port) and the live CA Secret.
:func:`build_report`      pure: compares the facts, returns findings (``mismatch`` or ``warning``), a
                          JSON document and a human table.

Gathering never raises for an unreachable service: the problem is recorded in the facts and becomes
a finding, so that the report is always produced.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import re
import socket
import ssl
import traceback

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
except ImportError:  # pragma: no cover - reported by the module with missing_required_lib
    x509 = None
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _bundle
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _nats
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _openbao
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _reload
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochSchedule, isoformat, parse_time
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s import K8sError, core_api

SCHEMA = 'securetransport.ca_rotation_status/v1'
MISMATCH = 'mismatch'
WARNING = 'warning'
DEFAULT_BUNDLE_PATH = _bundle.DEFAULT_KV_PATH
DEFAULT_TLS_TIMEOUT = 5.0
MAX_WORKERS = 32
HISTORY_SHOWN = 5
_NS = 1000000000
_CN_EPOCH_RE = re.compile(r'\bEpoch (\d+)$')


class StatusError(Exception):
    """Options that cannot work (the report cannot be gathered at all); the message says what to do."""

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option


def _short(exc, limit=400):
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _time(text):
    """Aware datetime from ``YYYY-MM-DDTHH:MM:SSZ`` (or any form parse_time takes); None when unparsable."""
    if not text:
        return None
    try:
        return parse_time(text, 'time')
    except ValueError:
        return None


def _iso_ns(ns):
    """``YYYY-MM-DDTHH:MM:SS.fffffffffZ`` for integer nanoseconds since the Unix epoch."""
    seconds, frac = divmod(int(ns), _NS)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')
    return '%s.%09dZ' % (stamp, frac)


# ================================================================================ authority facts
def _issuer_entry(issuer, schedule, now, default_epoch):
    entry = {k: issuer.get(k) for k in ('epoch', 'issuer_name', 'issuer_id', 'is_default', 'revoked', 'sha256',
                                        'serial', 'common_name', 'not_before', 'not_after', 'key_name')}
    entry['state'] = _openbao.issuer_state(issuer, schedule, now, default_epoch)
    try:
        entry['epoch_state'] = schedule.state(issuer['epoch'], now)
    except ValueError:
        entry['epoch_state'] = None
    entry['subject'] = entry['ski'] = None
    if issuer.get('certificate') and x509 is not None:
        cert = _openbao.load_cert(issuer['certificate'])
        entry['subject'] = cert.subject.rfc4514_string()
        entry['ski'] = _key_identifier(cert, x509.SubjectKeyIdentifier)
    return entry


def _key_identifier(cert, kind):
    try:
        ext = cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    value = ext.digest if kind is x509.SubjectKeyIdentifier else ext.key_identifier
    return value.hex() if value else None


def _bundle_facts(pem, schedule):
    """Certificates of a bundle (epoch, kind, subject, sha256, not_before, not_after) without trust checks."""
    parsed = _bundle.bundle_unverified(pem, schedule)
    return {'sha256': parsed['sha256'], 'epochs': parsed['epochs'], 'certificates': parsed['certificates']}


def _state_epoch(state):
    """The epoch of the state's current generation: the newest history entry of that generation, else last_epoch."""
    for entry in state.get('history') or []:
        if entry.get('generation') == state.get('generation') and entry.get('epoch') is not None:
            return int(entry['epoch'])
    return int(state['last_epoch']) if state.get('last_epoch') is not None else None


def _gather_openbao(facts, client, schedule, now, root_mount, int_mount, kv_mount, state_path, bundle_path, clusters):
    errors = facts['errors']
    try:
        issuers = _openbao.list_epoch_issuers(client, int_mount)
        default_epoch = next((i['epoch'] for i in issuers if i.get('is_default')), None)
        facts['issuers'] = [_issuer_entry(i, schedule, now, default_epoch) for i in issuers]
        issuer_id, issuer_name = _openbao.default_issuer(client, int_mount)
        facts['default_issuer'] = ({'issuer_id': issuer_id, 'issuer_name': issuer_name,
                                    'epoch': _openbao.epoch_of(issuer_name)} if issuer_id else None)
    except _openbao.OpenBaoError as exc:
        errors.append({'source': 'issuers', 'msg': 'reading the issuers of %s: %s' % (int_mount, _short(exc))})
    try:
        root_pem = _openbao.root_certificate(client, root_mount)
        root = _openbao.cert_facts(root_pem)
        facts['root'] = {k: root[k] for k in ('common_name', 'sha256', 'not_before', 'not_after')}
    except _openbao.OpenBaoError as exc:
        errors.append({'source': 'root', 'msg': 'reading the root of %s: %s' % (root_mount, _short(exc))})

    try:
        state, version = _state.read_state(client, kv_mount, state_path)
        hold = state.get('hold')
        facts['state'] = {
            'location': '%s/%s' % (kv_mount, state_path),
            'version': version,
            'generation': int(state.get('generation') or 0),
            'last_epoch': state.get('last_epoch'),
            'epoch': _state_epoch(state),
            'bundle_sha256': state.get('bundle_sha256'),
            'lock': state.get('lock'),
            'hold': {k: v for k, v in hold.items() if k != 'pem'} if isinstance(hold, dict) else hold,
            'history': list(state.get('history') or [])[:HISTORY_SHOWN],
            'updated_at': state.get('updated_at'),
        }
    except (_openbao.OpenBaoError, _state.StateError) as exc:
        errors.append({'source': 'state', 'msg': 'reading %s/%s: %s' % (kv_mount, state_path, _short(exc))})

    for name in clusters:
        try:
            facts['cluster_records'][name] = _state.read_cluster(client, name, kv_mount, state_path)
        except (_openbao.OpenBaoError, _state.StateError) as exc:
            facts['cluster_records'][name] = None
            errors.append({'source': 'cluster_records', 'msg': 'reading the proof record of cluster %s (%s/%s): %s'
                           % (name, kv_mount, _state.cluster_path(state_path, name), _short(exc))})

    epoch = facts['state']['epoch'] if facts.get('state') else None
    try:
        facts['kv_epochs'] = sorted(_bundle.kv_epochs(client, kv_mount, bundle_path))
    except (_openbao.OpenBaoError, _bundle.BundleError) as exc:
        errors.append({'source': 'kv', 'msg': 'listing the stored bundles: %s' % _short(exc)})
    if epoch is not None:
        path = _bundle.expand(bundle_path, epoch)
        kv = {'location': '%s/%s' % (kv_mount, path), 'epoch': epoch, 'found': False}
        facts['kv_bundle'] = kv
        try:
            version, data = _bundle.read_kv(client, kv_mount, path)
            kv['version'] = version
            pem = (data or {}).get('ca-bundle.pem')
            if isinstance(pem, str) and pem:
                kv['found'] = True
                kv['sha256_field'] = data.get('sha256')
                kv['created_at'] = data.get('created_at')
                kv['expires_at'] = data.get('expires_at')
                kv.update(_bundle_facts(pem, schedule))
        except (_openbao.OpenBaoError, _bundle.BundleError) as exc:
            kv['error'] = _short(exc)


def _gather_epoch_secret(facts, k8s_params, spec, epoch):
    namespace = spec.get('namespace') or _bundle.DEFAULT_EPOCH_SECRET_NAMESPACE
    name = _bundle.expand(spec.get('name') or _bundle.DEFAULT_EPOCH_SECRET_NAME, epoch)
    key = spec.get('key') or _bundle.DEFAULT_EPOCH_SECRET_KEY
    facts['epoch_secret'] = _read_secret_facts(k8s_params, namespace, name, key)


def _read_secret_facts(k8s_params, namespace, name, key, core=None):
    out = {'namespace': namespace, 'name': name, 'key': key, 'found': False}
    try:
        core = core or core_api(k8s_params)
        # pylint: disable=protected-access
        secret = _bundle._read_secret(core, namespace, name)
        if secret is None:
            return out
        data = _bundle._secret_key_bytes(secret, key)
        out['found'] = data is not None
        annotations = secret.metadata.annotations or {}
        out['annotations'] = {k[len(_bundle.ANNOTATION_PREFIX):]: v for k, v in annotations.items()
                              if k.startswith(_bundle.ANNOTATION_PREFIX)}
        out['labels'] = dict(secret.metadata.labels or {})
        out['resource_version'] = secret.metadata.resource_version
        if data is not None:
            out['sha256'] = _bundle.sha256_hex(data)
            try:
                out['epochs'] = _bundle.bundle_unverified(data)['epochs']
            except _bundle.BundleError as exc:
                out['parse_error'] = _short(exc)
    except (K8sError, _bundle.BundleError) as exc:
        out['error'] = _short(exc)
    except Exception as exc:  # pylint: disable=broad-except  # kubeconfig / connection problems of the client
        out['error'] = '%s: %s' % (type(exc).__name__, _short(exc))
    return out


async def _last_announcement(nats_params, stream, subject, timeout):
    client = await _nats.connect(nats_params, allow_reconnect=False)
    try:
        return await _nats.last_message(client, stream, subject, _nats.Deadline(timeout))
    finally:
        await _nats.close(client)


def _gather_announcement(facts, client, nats_params, stream, subject, transit_mount, transit_key, timeout):
    ann = {'stream': stream, 'subject': subject, 'found': False}
    facts['announcement'] = ann
    try:
        msg = _nats.run(_last_announcement(nats_params, stream, subject, timeout))
    except _nats.NatsError as exc:
        ann['error'] = _short(exc)
        return
    except Exception as exc:  # pylint: disable=broad-except  # nats-py raises many types
        ann['error'] = '%s: %s' % (type(exc).__name__, _short(exc))
        return
    if msg is None:
        return
    ann.update(found=True, seq=msg['seq'], time=msg['time'], msg_id=msg['headers'].get(_nats.HEADER_MSG_ID))
    try:
        message = _message.parse_message(msg['data'])
        fields = ('epoch', 'generation', 'kind', 'bundle_sha256', 'created_at', 'valid_from', 'valid_until', 'kv_location',
                  'secret_locations')
        ann.update({k: message.get(k) for k in fields})
    except _message.MessageVerificationError as exc:
        ann['signature_ok'] = False
        ann['signature_error'] = str(exc)
        return
    if client is None:
        ann['signature_ok'] = None
        ann['signature_error'] = 'not checked: OpenBao (the transit public key) is not reachable'
        return
    try:
        keys = _message.transit_public_keys(client, transit_mount, transit_key)
        _message.verify_announcement(message, keys)
        ann['signature_ok'] = True
        ann['key_version'] = _message.parse_signature(message.get('signature'))[0]
    except _message.MessageVerificationError as exc:
        ann['signature_ok'] = False
        ann['signature_error'] = str(exc)
    except _message.MessageError as exc:
        ann['signature_ok'] = None
        ann['signature_error'] = 'not checked: %s' % _short(exc)


def gather_authority(openbao_params, schedule, now, root_mount='pki', int_mount='pki_int', kv_mount='secret',
                     state_path=_state.DEFAULT_PATH, bundle_path=DEFAULT_BUNDLE_PATH, clusters=(), nats_params=None,
                     stream=_nats.DEFAULT_STREAM, subject=_nats.DEFAULT_SUBJECT, transit_mount=_message.DEFAULT_TRANSIT_MOUNT,
                     transit_key=_message.DEFAULT_TRANSIT_KEY, k8s_params=None, epoch_secret=None, timeout=10.0,
                     connect=_openbao.connect):
    """Facts of the authority side. ``nats_params`` None skips the announcement; ``epoch_secret`` None
    (or ``k8s_params`` None) skips the per-epoch Secret. Never raises for unreachable services."""
    if '{epoch}' not in bundle_path:
        raise StatusError('bundle_path %r must contain {epoch}' % bundle_path, option='bundle_path')
    facts = {
        'schema': SCHEMA, 'part': 'authority', 'now': isoformat(now), 'schedule': schedule.to_params(),
        'plan': {'current_epoch': schedule.epoch(now), 'prepared_epoch': schedule.prepared_epoch(now),
                 'valid_epochs': schedule.valid_epochs(now), 'desired_epochs': schedule.desired_epochs(now)},
        'openbao': {'int_mount': int_mount, 'root_mount': root_mount, 'kv_mount': kv_mount},
        'clusters': list(clusters), 'errors': [], 'issuers': None, 'default_issuer': None, 'root': None,
        'state': None, 'cluster_records': {}, 'kv_epochs': None, 'kv_bundle': None, 'epoch_secret': None,
        'announcement': None,
    }
    client = None
    try:
        client = connect(openbao_params)
    except _openbao.OpenBaoError as exc:
        facts['errors'].append({'source': 'openbao', 'msg': 'connecting to OpenBao: %s' % _short(exc)})
    if client is not None:
        _gather_openbao(facts, client, schedule, now, root_mount, int_mount, kv_mount, state_path, bundle_path, clusters)
    epoch = (facts.get('state') or {}).get('epoch')
    if epoch_secret is not None and k8s_params is not None and epoch is not None:
        _gather_epoch_secret(facts, k8s_params, epoch_secret, epoch)
    if nats_params is not None:
        _gather_announcement(facts, client, nats_params, stream, subject, transit_mount, transit_key, timeout)
    return facts


# ================================================================================ cluster facts
def _read_line(sock, limit=65536):
    data = b''
    while b'\r\n' not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def served_certificate(host, port, timeout=DEFAULT_TLS_TIMEOUT, cert_file=None, key_file=None, server_name=None):
    """The certificate a NATS server presents on its client port (read in a TLS handshake, not verified).

    Reads the plaintext INFO line first (none with ``handshake_first``), then handshakes. Without a
    client certificate this works with TLS 1.3, where the server checks the client's certificate only
    after the handshake. Returns facts (subject, issuer, issuer_cn, issuer_epoch (from the issuer's
    common name), authority_key_id, not_before, not_after, sha256, tls_version); raises StatusError.
    """
    where = '%s:%s' % (host, port)
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        raise StatusError('cannot connect to %s: %s' % (where, exc)) from None
    try:
        raw.settimeout(min(3.0, timeout))
        try:
            greeting = _read_line(raw)
        except socket.timeout:
            greeting = b''
        if greeting and not greeting.startswith(b'INFO '):
            raise StatusError('%s did not greet like a NATS server: %r' % (where, greeting[:60]))
        raw.settimeout(timeout)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # we read the certificate; the rotation's probe proves trust
        if cert_file:
            try:
                ctx.load_cert_chain(cert_file, key_file)
            except (ssl.SSLError, OSError) as exc:
                raise StatusError('cannot load tls_client.cert_file %r / key_file %r: %s' % (cert_file, key_file, exc)) from None
        try:
            tls = ctx.wrap_socket(raw, server_hostname=server_name or host)
        except (ssl.SSLError, OSError) as exc:
            raise StatusError('TLS handshake with %s failed: %s' % (where, exc)) from None
        try:
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
        finally:
            try:
                tls.close()
            except OSError:
                pass
    finally:
        try:
            raw.close()
        except OSError:
            pass
    if not der:
        raise StatusError('%s presented no certificate' % where)
    return certificate_facts(x509.load_der_x509_certificate(der), version)


def certificate_facts(cert, tls_version=None):
    """JSON-safe facts about a served (leaf) certificate."""
    cn = cert.issuer.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    issuer_cn = cn[0].value if cn else None
    match = _CN_EPOCH_RE.search(issuer_cn or '')
    return {
        'subject': cert.subject.rfc4514_string(),
        'issuer': cert.issuer.rfc4514_string(),
        'issuer_cn': issuer_cn,
        'issuer_epoch': int(match.group(1)) if match else None,
        'authority_key_id': _key_identifier(cert, x509.AuthorityKeyIdentifier),
        'not_before': isoformat(cert.not_valid_before_utc),
        'not_after': isoformat(cert.not_valid_after_utc),
        'sha256': cert.fingerprint(hashes.SHA256()).hex(),
        'tls_version': tls_version,
    }


def _pod_mtime_ns(transport, target):
    """Modification time of the mounted CA file in the pod (``stat -L -c %Y``; whole seconds)."""
    code, out, err = transport.exec(target, ['stat', '-L', '-c', '%Y', transport.ca_file])
    text = (out or '').strip()
    if code != 0 or not text.isdigit():
        raise _reload.TargetError('stat -L -c %%Y %s in pod %s/%s failed (exit %s): %s'
                                  % (transport.ca_file, transport.namespace, target.name, code, _short(err or out or 'no output', 200)))
    return int(text) * _NS


def _gather_server(transport, target, tls_client, tls_timeout, schedule):
    entry = {
        'name': target.name, 'server_id': target.server_id, 'server_name': target.server_name, 'error': target.problem,
        'ca_file': None, 'ca_sha256': None, 'ca_error': None, 'ca_epochs': None, 'ca_mtime': None, 'ca_mtime_ns': None,
        'mtime_resolution_ns': None, 'mtime_error': None, 'config_load_time': None, 'load_time_ns': None, 'start': None,
        'varz_error': None, 'tls': None, 'tls_error': None,
    }
    if target.problem:
        return entry
    kubernetes = isinstance(transport, _reload.KubernetesTransport)
    if target.ca_file:
        entry['ca_file'] = transport.ca_location(target)
        try:
            entry['ca_sha256'] = transport.read_sha256(target)
        except _reload.TargetError as exc:
            entry['ca_error'] = str(exc)
        try:
            if kubernetes:
                entry['ca_mtime_ns'] = _pod_mtime_ns(transport, target)
                entry['mtime_resolution_ns'] = _NS
            else:
                entry['ca_mtime_ns'] = os.stat(target.ca_file).st_mtime_ns
                entry['mtime_resolution_ns'] = 1
                with open(target.ca_file, 'rb') as handle:
                    entry['ca_epochs'] = _bundle.bundle_unverified(handle.read(), schedule)['epochs']
        except _reload.TargetError as exc:
            entry['mtime_error'] = str(exc)
        except OSError as exc:
            entry['mtime_error'] = 'cannot stat %s: %s' % (target.ca_file, exc.strerror or exc)
        except _bundle.BundleError as exc:
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
            entry['load_time_ns'] = _reload.parse_load_time(entry['config_load_time'])
    except _reload.TargetError as exc:
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
        facts['live_secret'] = _read_secret_facts(k8s_params, live_secret.get('namespace') or _bundle.DEFAULT_LIVE_SECRET_NAMESPACE,
                                                  live_secret.get('name') or _bundle.DEFAULT_LIVE_SECRET_NAME,
                                                  live_secret.get('key') or _bundle.DEFAULT_LIVE_SECRET_KEY)
    if transport is None:
        return facts
    try:
        targets = transport.discover()
    except _reload.ReloadError as exc:
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


# ================================================================================ the report
def not_loaded(server):
    """True when the server's CA file was written after its configuration was (re)loaded; None when unknown.

    With whole-second modification times (``stat`` in a pod) the file counts as newer only when its
    second starts after the load time, so a write and a reload within the same second are not flagged.
    """
    mtime, loaded = server.get('ca_mtime_ns'), server.get('load_time_ns')
    if mtime is None or loaded is None:
        return None
    return int(mtime) > int(loaded)


class _Findings(object):
    def __init__(self):
        self.items = []

    def add(self, severity, code, where, msg):
        self.items.append({'severity': severity, 'code': code, 'where': where, 'msg': msg})

    def mismatch(self, code, where, msg):
        self.add(MISMATCH, code, where, msg)

    def warning(self, code, where, msg):
        self.add(WARNING, code, where, msg)


def _sha(value):
    return (value or '-')[:16]


def _check_state(f, state, now):
    if not state:
        return
    if not state.get('bundle_sha256') or not state.get('generation'):
        f.mismatch('state_empty', 'state', 'no rotation is recorded in %s (generation %s): run rotate.yml'
                   % (state['location'], state.get('generation')))
    lock = state.get('lock')
    if isinstance(lock, dict) and lock.get('holder'):
        expires = _time(lock.get('expires_at'))
        if expires is None or expires <= now:
            f.mismatch('lock_expired', 'state', 'the rotation lock of %s expired at %s: that run died holding it. The next run '
                       'takes it over; check why it stopped' % (lock.get('holder'), lock.get('expires_at')))
        else:
            f.warning('lock_held', 'state', 'a run (%s) holds the rotation lock until %s: some facts may be mid-rotation'
                      % (lock.get('holder'), lock.get('expires_at')))
    hold = state.get('hold')
    if isinstance(hold, dict):
        f.warning('hold_active', 'state', 'rollback hold since %s keeps the bundle of epoch %s (%s); rotation resumes with '
                  '-e ca_rotation_release_hold=true or when it expires' % (hold.get('since'), hold.get('epoch'), hold.get('reason')))


def _check_issuers(f, auth, now, bundle, held):
    issuers = auth.get('issuers')
    if issuers is None:
        return
    plan = auth['plan']
    by_epoch = {i['epoch']: i for i in issuers}
    current, prepared = plan['current_epoch'], plan['prepared_epoch']
    if current not in by_epoch:
        f.mismatch('issuer_missing', 'openbao', 'no issuer epoch-%d for the current epoch on %s: run rotate.yml'
                   % (current, auth['openbao']['int_mount']))
    if prepared is not None and prepared not in by_epoch and not held:
        f.warning('issuer_not_prepared', 'openbao', 'epoch %d is due for preparation but issuer epoch-%d does not exist yet '
                  '(the next rotate.yml run issues it)' % (prepared, prepared))
    default = auth.get('default_issuer')
    if not default:
        f.mismatch('default_issuer_missing', 'openbao', '%s has no default issuer: leaf certificates cannot be issued'
                   % auth['openbao']['int_mount'])
    elif default.get('epoch') is None:
        f.mismatch('default_issuer_not_epoch', 'openbao', 'the default issuer of %s is %r, not an epoch-<n> issuer'
                   % (auth['openbao']['int_mount'], default.get('issuer_name') or default.get('issuer_id')))
    else:
        n = default['epoch']
        issuer = by_epoch.get(n) or {}
        not_after = _time(issuer.get('not_after'))
        if issuer.get('revoked'):
            f.mismatch('default_issuer_revoked', 'openbao', 'the default issuer epoch-%d is revoked' % n)
        if not_after is not None and not_after <= now:
            f.mismatch('default_issuer_expired', 'openbao', 'the default issuer epoch-%d expired at %s' % (n, issuer['not_after']))
        if n > current:
            f.mismatch('default_issuer_early', 'openbao', 'the default issuer epoch-%d is newer than the current epoch %d: it was '
                       'activated before its epoch started' % (n, current))
        elif n < current:
            f.warning('default_issuer_behind', 'openbao', 'the default issuer is epoch-%d, the current epoch is %d%s'
                      % (n, current, ' (rollback hold)' if held else ': activation waits for every cluster to prove trust'))
        if bundle is not None and issuer.get('sha256') and issuer['sha256'] not in {c['sha256'] for c in bundle['certificates']}:
            f.mismatch('default_not_in_bundle', 'openbao', 'the default issuer epoch-%d is not in the bundle %s: clients and '
                       'servers trusting only the bundle reject the leaves it issues' % (n, bundle['location']))
    if bundle is not None:
        in_bundle = {c['sha256'] for c in bundle['certificates']}
        for issuer in issuers:
            n = issuer['epoch']
            if issuer.get('revoked') or n not in plan['desired_epochs'] or issuer['sha256'] in in_bundle:
                continue
            if _time(issuer.get('not_after')) is not None and _time(issuer['not_after']) <= now:
                continue
            (f.warning if held else f.mismatch)(
                'bundle_missing_epoch', 'kv', 'issuer epoch-%d is valid%s but not in the bundle %s%s'
                % (n, ' (prepared)' if n == prepared else '', bundle['location'],
                   ' (rollback hold)' if held else ': the run that issued it did not distribute it; run rotate.yml'))


def _check_bundle(f, auth, expected, now):
    kv = auth.get('kv_bundle')
    state = auth.get('state')
    if not state or kv is None:
        return None
    if kv.get('error'):
        f.mismatch('kv_bundle_error', 'kv', 'reading %s: %s' % (kv['location'], kv['error']))
        return None
    if not kv.get('found'):
        f.mismatch('kv_bundle_missing', 'kv', 'no bundle is stored at %s (the epoch of generation %s)'
                   % (kv['location'], state.get('generation')))
        return None
    if kv.get('sha256_field') != kv['sha256']:
        f.mismatch('kv_sha256_field', 'kv', '%s says sha256 %s but its ca-bundle.pem hashes to %s'
                   % (kv['location'], _sha(kv.get('sha256_field')), _sha(kv['sha256'])))
    if expected and kv['sha256'] != expected:
        f.mismatch('kv_bundle_sha256', 'kv', 'the bundle at %s (%s) is not the one the state records (bundle_sha256 %s)'
                   % (kv['location'], _sha(kv['sha256']), _sha(expected)))
    for cert in kv['certificates']:
        not_after = _time(cert.get('not_after'))
        if cert.get('kind') == 'intermediate' and not_after is not None and not_after <= now:
            f.mismatch('bundle_expired_intermediate', 'kv', 'the bundle at %s still holds the intermediate of epoch %s, expired at '
                       '%s: the next rotate.yml run drops it' % (kv['location'], cert.get('epoch'), cert['not_after']))
    root = auth.get('root')
    known = {i['sha256'] for i in auth.get('issuers') or []}
    for cert in kv['certificates']:
        if cert.get('kind') == 'root' and root and cert['sha256'] != root['sha256']:
            f.mismatch('bundle_foreign_root', 'kv', 'the bundle at %s holds a root (%s) that is not the root of %s'
                       % (kv['location'], cert.get('subject'), auth['openbao']['root_mount']))
        elif cert.get('kind') == 'intermediate' and auth.get('issuers') is not None and cert['sha256'] not in known:
            f.mismatch('bundle_unknown_intermediate', 'kv', 'the bundle at %s holds %s (epoch %s), which is no issuer of %s'
                       % (kv['location'], cert.get('subject'), cert.get('epoch'), auth['openbao']['int_mount']))
    return kv


def _check_epoch_secret(f, auth, expected):
    secret = auth.get('epoch_secret')
    if secret is None:
        return
    where = 'secret %s/%s' % (secret['namespace'], secret['name'])
    if secret.get('error'):
        f.mismatch('epoch_secret_error', 'kubernetes', 'reading %s: %s' % (where, secret['error']))
    elif not secret.get('found'):
        f.mismatch('epoch_secret_missing', 'kubernetes', 'the per-epoch %s (key %s) does not exist' % (where, secret['key']))
    elif expected and secret.get('sha256') != expected:
        f.mismatch('epoch_secret_sha256', 'kubernetes', 'the per-epoch %s holds %s, the state records %s'
                   % (where, _sha(secret.get('sha256')), _sha(expected)))


def _check_announcement(f, auth, state, now):
    ann = auth.get('announcement')
    if ann is None:
        return
    where = 'announcement'
    if ann.get('error'):
        f.mismatch('announcement_error', where, 'reading the last message on %s (stream %s): %s'
                   % (ann['subject'], ann['stream'], ann['error']))
        return
    if not ann.get('found'):
        f.mismatch('announcement_missing', where, 'no announcement on %s in stream %s' % (ann['subject'], ann['stream']))
        return
    if ann.get('signature_ok') is False:
        f.mismatch('announcement_signature', where, 'the announcement (seq %s) fails verification: %s'
                   % (ann.get('seq'), ann.get('signature_error')))
    elif ann.get('signature_ok') is None:
        f.warning('announcement_unverified', where, ann.get('signature_error') or 'the signature was not checked')
    if state:
        if ann.get('generation') != state.get('generation'):
            f.mismatch('announcement_generation', where, 'the last announcement has generation %s, the state %s'
                       % (ann.get('generation'), state.get('generation')))
        if state.get('bundle_sha256') and ann.get('bundle_sha256') != state['bundle_sha256']:
            f.mismatch('announcement_sha256', where, 'the last announcement carries bundle %s, the state records %s'
                       % (_sha(ann.get('bundle_sha256')), _sha(state['bundle_sha256'])))
    valid_until = _time(ann.get('valid_until'))
    if valid_until is not None and now >= valid_until:
        f.mismatch('announcement_expired', where, 'the last announcement expired at %s: clients refuse it'
                   % ann.get('valid_until'))


def _served_epoch(tls, issuers):
    """Epoch of the served certificate's issuer: by key identifier, then subject, then the issuer's common name."""
    for issuer in issuers or []:
        if tls.get('authority_key_id') and issuer.get('ski') == tls['authority_key_id']:
            return issuer['epoch'], issuer
    for issuer in issuers or []:
        if issuer.get('subject') and issuer['subject'] == tls.get('issuer'):
            return issuer['epoch'], issuer
    return tls.get('issuer_epoch'), None


def _check_cluster(f, name, facts, record, expected, bundle, auth, now, schedule):
    where = 'cluster %s' % name
    if facts is None:
        f.mismatch('cluster_missing', where, 'no facts were gathered for this cluster (its host failed or was unreachable)')
        return
    if name in (auth.get('cluster_records') or {}) and record is not None:  # None: the read failed (reported)
        if not record:
            f.mismatch('cluster_record_missing', where, 'no proof record: this cluster never proved it trusts a bundle')
        elif expected and record.get('sha256') != expected:
            f.mismatch('cluster_record_sha256', where, 'the proof record is for bundle %s (epoch %s), the state records %s'
                       % (_sha(record.get('sha256')), record.get('epoch'), _sha(expected)))
    if facts.get('error'):
        f.mismatch('cluster_error', where, facts['error'])
    live = facts.get('live_secret')
    if live is not None:
        swhere = 'cluster %s secret %s/%s' % (name, live['namespace'], live['name'])
        if live.get('error'):
            f.mismatch('live_secret_error', swhere, live['error'])
        elif not live.get('found'):
            f.mismatch('live_secret_missing', swhere, 'the live CA Secret (key %s) does not exist' % live['key'])
        else:
            if expected and live.get('sha256') != expected:
                f.mismatch('live_secret_sha256', swhere, 'the live CA Secret holds %s, the state records %s'
                           % (_sha(live.get('sha256')), _sha(expected)))
            annotated = (live.get('annotations') or {}).get('sha256')
            if annotated and annotated != live.get('sha256'):
                f.mismatch('live_secret_annotation', swhere, 'annotation %ssha256 says %s but the data hashes to %s (edited by hand?)'
                           % (_bundle.ANNOTATION_PREFIX, _sha(annotated), _sha(live.get('sha256'))))
    if not facts.get('error') and not facts.get('servers'):
        f.mismatch('cluster_no_servers', where, 'no NATS server was found')
    bundle_epochs = {c.get('epoch') for c in (bundle or {}).get('certificates') or [] if c.get('kind') == 'intermediate'}
    for server in facts.get('servers') or []:
        _check_server(f, name, server, expected, bundle, bundle_epochs, auth, now, schedule)


def _check_server(f, cluster, server, expected, bundle, bundle_epochs, auth, now, schedule):
    where = '%s/%s' % (cluster, server.get('name'))
    if server.get('error'):
        f.mismatch('server_error', where, server['error'])
        return
    if server.get('ca_error'):
        f.mismatch('ca_file_error', where, server['ca_error'])
    elif server.get('ca_sha256') and expected and server['ca_sha256'] != expected:
        epochs = server.get('ca_epochs')
        held = '' if epochs is None else ' (%s)' % ('epochs %s' % ', '.join(str(n) for n in epochs) if epochs else 'no epoch intermediate')
        f.mismatch('ca_file_sha256', where, 'CA file %s has %s%s, the state records %s; rotate.yml redelivers a bundle that differs (a mounted '
                   'Secret follows within about a minute)'
                   % (server.get('ca_file'), _sha(server['ca_sha256']), held, _sha(expected)))
    if server.get('varz_error'):
        f.mismatch('server_unreachable', where, 'cannot read its load time: %s' % server['varz_error'])
    loaded = not_loaded(server)
    if loaded:
        f.mismatch('not_loaded', where, 'not loaded: CA file written at %s, configuration loaded at %s - the server runs on '
                   'older trust. %s' % (server.get('ca_mtime'), server.get('config_load_time'),
                                        'Reload it (module nats_sighup): rotate.yml reloads only when it delivers a change'
                                        if server.get('ca_sha256') == expected else
                                        'The next rotate.yml run redelivers the bundle and reloads it'))
    elif loaded is None and server.get('ca_file') and not server.get('varz_error') and not server.get('ca_error'):
        f.warning('load_unknown', where, 'cannot tell whether the CA file was loaded: %s'
                  % (server.get('mtime_error') or 'no modification time'))
    tls = server.get('tls')
    if server.get('tls_error'):
        f.mismatch('tls_error', where, 'cannot read the served certificate: %s' % server['tls_error'])
    elif tls:
        epoch, issuer = _served_epoch(tls, auth.get('issuers'))
        if _time(tls.get('not_after')) is not None and _time(tls['not_after']) <= now:
            f.mismatch('served_leaf_expired', where, 'serves a certificate that expired at %s' % tls['not_after'])
        if epoch is None:
            f.mismatch('served_issuer_unknown', where, 'serves a certificate issued by %s, which is no epoch issuer' % tls.get('issuer'))
        else:
            expiry = _time((issuer or {}).get('not_after'))
            if expiry is None and schedule is not None:
                try:
                    expiry = schedule.expiry(epoch)
                except ValueError:
                    expiry = None
            if expiry is not None and expiry <= now:
                f.mismatch('served_issuer_expired', where, 'serves a certificate of epoch %s, whose intermediate expired at %s'
                           % (epoch, isoformat(expiry)))
            elif bundle is not None and epoch not in bundle_epochs:
                f.mismatch('served_issuer_not_in_bundle', where, 'serves a certificate of epoch %s, which is not in the bundle '
                           '(epochs %s)' % (epoch, ', '.join(str(n) for n in sorted(bundle_epochs, reverse=True)) or 'none'))
        server['served_epoch'] = epoch


def build_report(authority, clusters):
    """Compare the gathered facts. Returns ``{schema, generated_at, ok, mismatch_count, warning_count, findings, table,
    authority, clusters}`` (JSON-safe); ``ok`` is true when nothing mismatches."""
    auth = dict(authority or {})
    try:
        schedule = EpochSchedule.from_params(auth['schedule']) if auth.get('schedule') else None
    except ValueError:
        schedule = None
    now = _time(auth.get('now')) or datetime.datetime.now(datetime.timezone.utc)
    f = _Findings()
    for error in auth.get('errors') or []:
        f.mismatch('authority_error', error.get('source') or 'authority', error.get('msg'))
    state = auth.get('state')
    expected = (state or {}).get('bundle_sha256')
    held = isinstance((state or {}).get('hold'), dict)
    _check_state(f, state, now)
    bundle = _check_bundle(f, auth, expected, now)
    _check_issuers(f, auth, now, bundle, held)
    _check_epoch_secret(f, auth, expected)
    _check_announcement(f, auth, state, now)
    by_name = {}
    for facts in clusters or []:
        if isinstance(facts, dict) and facts.get('cluster'):
            by_name[facts['cluster']] = facts
    names = list(auth.get('clusters') or []) + sorted(n for n in by_name if n not in (auth.get('clusters') or []))
    records = auth.get('cluster_records') or {}
    for name in names:
        _check_cluster(f, name, by_name.get(name), records.get(name), expected, bundle, auth, now, schedule)
    mismatches = [x for x in f.items if x['severity'] == MISMATCH]
    report = {
        'schema': SCHEMA,
        'generated_at': isoformat(now),
        'ok': not mismatches,
        'mismatch_count': len(mismatches),
        'warning_count': len(f.items) - len(mismatches),
        'findings': f.items,
        'authority': auth,
        'clusters': [by_name.get(n) for n in names],
    }
    report['table'] = render_table(report)
    return report


# ================================================================================ the human table
def _columns(rows, headers):
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(str(cell)))
    fmt = '  '.join('%%-%ds' % w for w in widths)
    return [('  ' + fmt % tuple(headers)).rstrip()] + [('  ' + fmt % tuple(str(c) for c in row)).rstrip() for row in rows]


def _yn(value):
    return '-' if value is None else ('yes' if value else 'NO')


def render_table(report):
    """The report as lines of text for a terminal."""
    auth = report['authority'] or {}
    plan = auth.get('plan') or {}
    state = auth.get('state') or {}
    lines = ['CA rotation status at %s: %s' % (report['generated_at'], 'OK' if report['ok'] else '%d MISMATCH(ES)' % report['mismatch_count'])
             + (', %d warning(s)' % report['warning_count'] if report['warning_count'] else ''),
             'epoch %s current, prepared %s, valid %s' % (plan.get('current_epoch'), plan.get('prepared_epoch'),
                                                          ', '.join(str(n) for n in plan.get('valid_epochs') or []))]
    if state:
        lock = state.get('lock') or {}
        hold = state.get('hold') or {}
        lines.append('state %s: generation %s, epoch %s (last %s), bundle %s, lock %s, hold %s'
                     % (state.get('location'), state.get('generation'), state.get('epoch'), state.get('last_epoch'),
                        _sha(state.get('bundle_sha256')), ('%s until %s' % (lock.get('holder'), lock.get('expires_at'))) if lock else 'none',
                        ('epoch %s since %s' % (hold.get('epoch'), hold.get('since'))) if hold else 'none'))
    bundle = auth.get('kv_bundle') or {}
    in_bundle = {c['sha256'] for c in bundle.get('certificates') or []}
    if auth.get('issuers') is not None:
        lines.append('issuers (%s):' % (auth.get('openbao') or {}).get('int_mount'))
        rows = [(i['epoch'], i['issuer_name'], i['state'], 'yes' if i.get('is_default') else '', i['not_after'],
                 _yn(i['sha256'] in in_bundle) if bundle.get('found') else '-') for i in auth['issuers']]
        lines += _columns(rows, ('epoch', 'issuer', 'state', 'default', 'not_after', 'in bundle'))
    if bundle:
        certs = bundle.get('certificates') or []
        lines.append('kv bundle %s: %s' % (bundle.get('location'), (
            '%s, %d certificate(s): %s' % (_sha(bundle.get('sha256')), len(certs), ', '.join(
                'root' if c.get('kind') == 'root' else 'epoch %s' % c.get('epoch') for c in certs)))
            if bundle.get('found') else bundle.get('error') or 'MISSING'))
    secret = auth.get('epoch_secret')
    if secret:
        lines.append('epoch secret %s/%s: %s' % (secret['namespace'], secret['name'], secret.get('error') or (
            _sha(secret.get('sha256')) if secret.get('found') else 'MISSING')))
    ann = auth.get('announcement')
    if ann:
        if ann.get('error') or not ann.get('found'):
            text = ann.get('error') or 'none'
        else:
            text = 'seq %s generation %s epoch %s kind %s bundle %s signature %s' % (
                ann.get('seq'), ann.get('generation'), ann.get('epoch'), ann.get('kind'), _sha(ann.get('bundle_sha256')),
                {True: 'ok', False: 'BAD', None: 'unchecked'}[ann.get('signature_ok')])
        lines.append('announcement %s: %s' % (ann.get('subject'), text))
    expected = state.get('bundle_sha256')
    rows = []
    records = auth.get('cluster_records') or {}
    for facts in report['clusters']:
        if not facts:
            continue
        name = facts['cluster']
        record = records.get(name)
        live = facts.get('live_secret')
        if live:
            lines.append('cluster %s live secret %s/%s: %s' % (name, live['namespace'], live['name'], live.get('error') or (
                '%s%s' % (_sha(live.get('sha256')), '' if live.get('sha256') == expected else ' (DIFFERS)') if live.get('found') else 'MISSING')))
        if record is not None or name in records:
            lines.append('cluster %s proof record: %s' % (name, ('bundle %s epoch %s proven %s' % (
                _sha(record.get('sha256')), record.get('epoch'), record.get('proven_at'))) if record else 'MISSING'))
        if facts.get('error'):
            lines.append('cluster %s: %s' % (name, facts['error']))
        for server in facts.get('servers') or []:
            tls = server.get('tls') or {}
            sha = server.get('ca_sha256')
            rows.append((name, server.get('name'),
                         '%s %s' % (_sha(sha), 'ok' if sha and sha == expected else 'DIFFERS') if sha else (
                             'ERROR' if server.get('ca_error') or server.get('error') else '-'),
                         {True: 'NO', False: 'yes', None: '?'}[not_loaded(server)],
                         server.get('config_load_time') or ('UNREACHABLE' if server.get('varz_error') else '-'),
                         (str(server.get('served_epoch', tls.get('issuer_epoch'))) if tls else (
                             'ERROR' if server.get('tls_error') else '-')),
                         tls.get('not_after') or '-'))
    if rows:
        lines.append('servers:')
        lines += _columns(rows, ('cluster', 'server', 'ca file', 'loaded', 'config_load_time', 'served epoch', 'leaf not_after'))
    if report['findings']:
        lines.append('findings:')
        for item in report['findings']:
            lines.append('  %s %s [%s] %s' % ('MISMATCH' if item['severity'] == MISMATCH else 'warning ', item['code'],
                                              item['where'], item['msg']))
    return lines

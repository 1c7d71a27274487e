# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts of the authority side of the status report: OpenBao, the rotation state, the stored bundles,
the per-epoch Secret and the last announcement (private). Never raises for an unreachable service."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _state
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError, bundle_unverified
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import (
    DEFAULT_EPOCH_SECRET_KEY,
    DEFAULT_EPOCH_SECRET_NAME,
    DEFAULT_EPOCH_SECRET_NAMESPACE,
    DEFAULT_KV_PATH,
    expand,
    kv_epochs,
    read_kv,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import (
    cert_facts,
    cert_sha256,
    load_cert,
    verify_issued_by,
    x509,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import K8sError, core_api
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.secrets import (
    ANNOTATION_PREFIX,
    read_secret,
    secret_key_bytes,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.client import (
    close as nats_close,
    connect as nats_connect,
    run as nats_run,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.jetstream import (
    DEFAULT_STREAM,
    DEFAULT_SUBJECT,
    HEADER_MSG_ID,
    Deadline,
    last_message,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import connect as openbao_connect
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.pki import (
    default_issuer,
    epoch_of,
    epoch_state,
    issuer_state,
    list_epoch_issuers,
    root_certificate,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_public_keys

SCHEMA = 'securetransport.ca_rotation_status/v1'
DEFAULT_BUNDLE_PATH = DEFAULT_KV_PATH
HISTORY_SHOWN = 5


class StatusError(CaRotationError):
    """Options that cannot work (the report cannot be gathered at all); the message says what to do."""

    def __init__(self, message, option=None):
        super().__init__(message, option=option)


def _short(exc, limit=400):
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


# ================================================================================ authority facts
def _issuer_entry(issuer, schedule, now, default_epoch):
    entry = {k: issuer.get(k) for k in ('epoch', 'issuer_name', 'issuer_id', 'is_default', 'revoked', 'sha256',
                                        'serial', 'common_name', 'not_before', 'not_after', 'key_name')}
    entry['state'] = issuer_state(issuer, schedule, now, default_epoch)
    entry['epoch_state'] = epoch_state(schedule, issuer['epoch'], now)
    entry['subject'] = entry['ski'] = None
    if issuer.get('certificate') and x509 is not None:
        cert = load_cert(issuer['certificate'])
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
    parsed = bundle_unverified(pem, schedule)
    return {'sha256': parsed['sha256'], 'epochs': parsed['epochs'], 'certificates': parsed['certificates']}


def _state_epoch(state):
    """The epoch of the state's current generation: the newest history entry of that generation, else last_epoch."""
    for entry in state.get('history') or []:
        if entry.get('generation') == state.get('generation') and entry.get('epoch') is not None:
            return int(entry['epoch'])
    return int(state['last_epoch']) if state.get('last_epoch') is not None else None


def _gather_chain(facts, client, schedule, now, root_mount, int_mount):
    """The epoch issuers, default issuer and root of one family's mounts into ``facts``; returns the root PEM (None
    when it could not be read)."""
    errors = facts['errors']
    try:
        issuers = list_epoch_issuers(client, int_mount)
        default_epoch = next((i['epoch'] for i in issuers if i.get('is_default')), None)
        facts['issuers'] = [_issuer_entry(i, schedule, now, default_epoch) for i in issuers]
        issuer_id, issuer_name = default_issuer(client, int_mount)
        facts['default_issuer'] = ({'issuer_id': issuer_id, 'issuer_name': issuer_name,
                                    'epoch': epoch_of(issuer_name)} if issuer_id else None)
    except OpenBaoError as exc:
        errors.append({'source': 'issuers', 'msg': 'reading the issuers of %s: %s' % (int_mount, _short(exc))})
    root_pem = None
    try:
        root_pem = root_certificate(client, root_mount)
        root = cert_facts(root_pem)
        facts['root'] = {k: root[k] for k in ('common_name', 'sha256', 'not_before', 'not_after')}
    except OpenBaoError as exc:
        errors.append({'source': 'root', 'msg': 'reading the root of %s: %s' % (root_mount, _short(exc))})
    return root_pem


def _gather_openbao(facts, client, schedule, now, root_mount, int_mount, kv_mount, state_path, bundle_path, clusters,
                    families=()):
    errors = facts['errors']
    root_pem = _gather_chain(facts, client, schedule, now, root_mount, int_mount)
    roots = [root_pem] if root_pem is not None else []
    for spec in families:  # dual mode: the other families' chains, each with its own mounts
        enabled = spec.get('enabled', True)
        part = {'int_mount': spec['int_mount'], 'root_mount': spec['root_mount'], 'issuers': None, 'default_issuer': None,
                'root': None, 'enabled': enabled, 'errors': errors if enabled else []}  # switched off: its root, if any
        other = _gather_chain(part, client, schedule, now, spec['root_mount'], spec['int_mount'])
        del part['errors']
        facts['families'][spec['family']] = part
        if other is not None:
            roots.append(other)

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
            'distrusted': [dict(d) for d in state.get('distrusted') or [] if isinstance(d, dict)],
            'distrust_pending': state.get('distrust_pending') or None,
        }
    except (OpenBaoError, _state.StateError) as exc:
        errors.append({'source': 'state', 'msg': 'reading %s/%s: %s' % (kv_mount, state_path, _short(exc))})

    for name in clusters:
        try:
            facts['cluster_records'][name] = _state.read_cluster(client, name, kv_mount, state_path)
        except (OpenBaoError, _state.StateError) as exc:
            facts['cluster_records'][name] = None
            errors.append({'source': 'cluster_records', 'msg': 'reading the proof record of cluster %s (%s/%s): %s'
                           % (name, kv_mount, _state.cluster_path(state_path, name), _short(exc))})

    epoch = facts['state']['epoch'] if facts.get('state') else None
    try:
        facts['kv_epochs'] = sorted(kv_epochs(client, kv_mount, bundle_path))
    except (OpenBaoError, BundleError) as exc:
        errors.append({'source': 'kv', 'msg': 'listing the stored bundles: %s' % _short(exc)})
    if epoch is not None:
        path = expand(bundle_path, epoch)
        kv = {'location': '%s/%s' % (kv_mount, path), 'epoch': epoch, 'found': False}
        facts['kv_bundle'] = kv
        try:
            version, data = read_kv(client, kv_mount, path)
            kv['version'] = version
            pem = (data or {}).get('ca-bundle.pem')
            if isinstance(pem, str) and pem:
                kv['found'] = True
                kv['sha256_field'] = data.get('sha256')
                kv['created_at'] = data.get('created_at')
                kv['expires_at'] = data.get('expires_at')
                kv.update(_bundle_facts(pem, schedule))
        except (OpenBaoError, BundleError) as exc:
            kv['error'] = _short(exc)
    if root_pem is not None:
        facts['kv_foreign'] = _foreign_in_records(client, kv_mount, bundle_path, facts.get('kv_epochs') or [], roots)


def _foreign_in_records(client, kv_mount, bundle_path, epochs, root_pems):
    """Every stored bundle record's certificates that are neither a root (of a family: ``root_pems``) nor signed by
    one (a record written without verification, e.g. ``ca_bundle verify=false`` before it refused epoch records):
    ``[{location, subject, sha256}]``. Signatures, not the issuer list, decide: expired issuers are pruned while their
    records are kept."""
    roots = [load_cert(pem) for pem in root_pems]
    out = []
    for epoch in epochs:
        path = expand(bundle_path, epoch)
        try:
            _version, data = read_kv(client, kv_mount, path)
            certs = [load_cert(block) for block in pem_certificates((data or {}).get('ca-bundle.pem') or '')]
        except (OpenBaoError, BundleError, ValueError) as exc:
            out.append({'location': '%s/%s' % (kv_mount, path), 'subject': None, 'sha256': None, 'error': _short(exc)})
            continue
        for cert in certs:
            if any(cert_sha256(cert) == cert_sha256(root) or _signed_by(cert, root) for root in roots):
                continue
            out.append({'location': '%s/%s' % (kv_mount, path), 'subject': cert.subject.rfc4514_string(),
                        'sha256': cert_sha256(cert), 'error': None})
    return out


def _signed_by(cert, issuer):
    try:
        verify_issued_by(cert, issuer)
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def _gather_epoch_secret(facts, k8s_params, spec, epoch):
    namespace = spec.get('namespace') or DEFAULT_EPOCH_SECRET_NAMESPACE
    name = expand(spec.get('name') or DEFAULT_EPOCH_SECRET_NAME, epoch)
    key = spec.get('key') or DEFAULT_EPOCH_SECRET_KEY
    facts['epoch_secret'] = _read_secret_facts(k8s_params, namespace, name, key)


def _read_secret_facts(k8s_params, namespace, name, key, core=None):
    out = {'namespace': namespace, 'name': name, 'key': key, 'found': False}
    try:
        core = core or core_api(k8s_params)
        secret = read_secret(core, namespace, name)
        if secret is None:
            return out
        data = secret_key_bytes(secret, key)
        out['found'] = data is not None
        annotations = secret.metadata.annotations or {}
        out['annotations'] = {k[len(ANNOTATION_PREFIX):]: v for k, v in annotations.items()
                              if k.startswith(ANNOTATION_PREFIX)}
        out['labels'] = dict(secret.metadata.labels or {})
        out['resource_version'] = secret.metadata.resource_version
        if data is not None:
            out['sha256'] = sha256_hex(data)
            try:
                parsed = bundle_unverified(data)
                out['epochs'] = parsed['epochs']
                out['cert_sha256s'] = [c['sha256'] for c in parsed['certificates']]
            except BundleError as exc:
                out['parse_error'] = _short(exc)
    except (K8sError, BundleError) as exc:
        out['error'] = _short(exc)
    except Exception as exc:  # pylint: disable=broad-except  # kubeconfig / connection problems of the client
        out['error'] = '%s: %s' % (type(exc).__name__, _short(exc))
    return out


async def _last_announcement(nats_params, stream, subject, timeout):
    client = await nats_connect(nats_params, allow_reconnect=False)
    try:
        return await last_message(client, stream, subject, Deadline(timeout))
    finally:
        await nats_close(client)


def _gather_announcement(facts, client, nats_params, stream, subject, transit_mount, transit_key, timeout):
    ann = {'stream': stream, 'subject': subject, 'found': False}
    facts['announcement'] = ann
    try:
        msg = nats_run(_last_announcement(nats_params, stream, subject, timeout))
    except NatsError as exc:
        ann['error'] = _short(exc)
        return
    except Exception as exc:  # pylint: disable=broad-except  # nats-py raises many types
        ann['error'] = '%s: %s' % (type(exc).__name__, _short(exc))
        return
    if msg is None:
        return
    ann.update(found=True, seq=msg['seq'], time=msg['time'], msg_id=msg['headers'].get(HEADER_MSG_ID))
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
        keys = transit_public_keys(client, transit_mount, transit_key)
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
                     stream=DEFAULT_STREAM, subject=DEFAULT_SUBJECT, transit_mount=_message.DEFAULT_TRANSIT_MOUNT,
                     transit_key=_message.DEFAULT_TRANSIT_KEY, k8s_params=None, epoch_secret=None, timeout=10.0,
                     connect=openbao_connect, families=()):
    """Facts of the authority side. ``nats_params`` None skips the announcement; ``epoch_secret`` None
    (or ``k8s_params`` None) skips the per-epoch Secret; ``families``: the other key families' mounts in dual mode
    (``[{family, root_mount, int_mount}]``, read into ``families``). Never raises for unreachable services."""
    if '{epoch}' not in bundle_path:
        raise StatusError('bundle_path %r must contain {epoch}' % bundle_path, option='bundle_path')
    facts = {
        'schema': SCHEMA, 'part': 'authority', 'now': isoformat(now), 'schedule': schedule.to_params(),
        'plan': {'current_epoch': schedule.epoch(now), 'prepared_epoch': schedule.prepared_epoch(now),
                 'valid_epochs': schedule.valid_epochs(now), 'desired_epochs': schedule.desired_epochs(now)},
        'openbao': {'int_mount': int_mount, 'root_mount': root_mount, 'kv_mount': kv_mount},
        'clusters': list(clusters), 'errors': [], 'issuers': None, 'default_issuer': None, 'root': None,
        'state': None, 'cluster_records': {}, 'kv_epochs': None, 'kv_bundle': None, 'kv_foreign': None, 'epoch_secret': None,
        'announcement': None, 'families': {},
    }
    client = None
    try:
        client = connect(openbao_params)
    except OpenBaoError as exc:
        facts['errors'].append({'source': 'openbao', 'msg': 'connecting to OpenBao: %s' % _short(exc)})
    if client is not None:
        _gather_openbao(facts, client, schedule, now, root_mount, int_mount, kv_mount, state_path, bundle_path, clusters,
                        families)
    epoch = (facts.get('state') or {}).get('epoch')
    if epoch_secret is not None and k8s_params is not None and epoch is not None:
        _gather_epoch_secret(facts, k8s_params, epoch_secret, epoch)
    if nats_params is not None:
        _gather_announcement(facts, client, nats_params, stream, subject, transit_mount, transit_key, timeout)
    return facts

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: ca_bundle
short_description: Build, verify and deliver the NATS CA bundle (file, OpenBao KV, Kubernetes Secrets)
version_added: 0.1.0
description:
  - Builds the CA bundle fresh on every run - never by appending to a previous copy. With O(source=openbao) it holds
    the intermediates (issuers named C(epoch-<n>) on O(int_mount)) of every valid epoch plus the prepared next epoch,
    newest first, then the root of O(root_mount) unless O(include_root=false). Revoked issuers are left out.
  - With O(source=pem) the certificates come from O(pem) (a whole bundle, for example an earlier one put back for
    rollback) or O(intermediates) plus O(root_pem).
  - Every intermediate is verified before anything is written - signed by the root, C(CA:true), C(keyCertSign),
    NotAfter exactly the expiry of its epoch, not expired - and there must be at least one and at most
    O(max_certificates). A bad certificate fails the task and no destination is touched.
  - The bytes are deterministic - each certificate re-encoded from DER, newest epoch first, the root last, one
    trailing newline - so the same certificates always give the same SHA-256 and every destination is compared
    by content. C(changed) is true only when a destination really changed.
  - Delivers to any combination of O(destinations) in one task - a file (atomic replace), OpenBao KV version 2
    (check-and-set), the per-epoch Secret C(nats-ca-bundle-epoch-<n>) and the live Secret C(nats-ca-tls) that NATS
    servers mount. Every destination is read (and the file's directory checked) before the first write.
  - O(prune) deletes the per-epoch Secrets and KV entries of expired epochs.
author:
  - SecureTransport platform team (!UNKNOWN)
extends_documentation_fragment:
  - securetransport.ca_rotation.openbao
  - securetransport.ca_rotation.kubernetes
  - securetransport.ca_rotation.epoch
options:
  source:
    description:
      - Where the certificates come from.
      - V(openbao) reads the C(epoch-<n>) issuers of O(int_mount) and the root of O(root_mount); needs O(openbao).
      - V(pem) uses O(pem) or O(intermediates) (with O(root_pem)).
    type: str
    choices: [openbao, pem]
    default: openbao
  pem:
    description:
      - A whole bundle as PEM text, with O(source=pem). Its self-signed certificate is the root (unless O(root_pem)
        is given); every other certificate is an intermediate and is verified.
      - Text between the PEM blocks is ignored; anything but certificates (for example a private key) is refused.
    type: str
  intermediates:
    description:
      - Intermediate certificates (PEM, one or more per item), with O(source=pem). Needs O(root_pem).
      - The epoch of each comes from its common name (C(... Epoch <n>)) or, without one, from its NotAfter.
    type: list
    elements: str
  root_pem:
    description:
      - The root certificate (PEM) the intermediates must be signed by, with O(source=pem).
    type: str
  include_root:
    description:
      - Append the root to the bundle.
      - V(false) makes trust per epoch - removing an intermediate distrusts that epoch at once - but Python clients
        then need C(ssl.VERIFY_X509_PARTIAL_CHAIN).
    type: bool
    default: true
  max_certificates:
    description:
      - Most intermediates the bundle may hold; more fails the task (raise it or shorten O(validity)).
    type: int
    default: 6
  drop_expired:
    description:
      - With O(source=pem), leave expired intermediates out (reported in RV(dropped)) instead of failing.
      - Useful to put back an older bundle whose oldest epoch has expired since.
    type: bool
    default: false
  verify:
    description:
      - V(false) delivers O(pem) byte for byte, WITHOUT the trust checks (signature, CA, key usage, NotAfter, expiry,
        bound) - only for putting back what was live before (a manual rollback), whose bytes must match the SHA-256
        recorded when it was live, given as O(expected_sha256). Needs O(source=pem) with O(pem).
      - Even then the text must hold only parsable certificates (a private key or garbage is refused).
      - Only the live destinations take an unverified bundle (O(destinations.file), O(destinations.live_secret));
        the per-epoch records (O(destinations.kv), O(destinations.epoch_secret)) hold verified bundles only, and
        are refused with V(false), so an epoch's record is never overwritten with bytes nobody checked.
      - The epoch is recognised from the common names (C(... Epoch <n>)) when possible.
    type: bool
    default: true
  expected_sha256:
    description:
      - With O(verify=false) (required then), the SHA-256 (hex) recorded for the bytes of O(pem) when they were live,
        for example C(destinations.live_secret.before_sha256) of the run that replaced them, or the live Secret's
        C(rotation.watcher.io/sha256) annotation. A different SHA-256 is refused before anything is read or written.
    type: str
  int_mount:
    description:
      - Mount path of the intermediate PKI secrets engine holding the C(epoch-<n>) issuers.
    type: str
    default: pki_int
  root_mount:
    description:
      - Mount path of the root PKI secrets engine.
    type: str
    default: pki
  root_issuer:
    description:
      - Issuer reference (name or ID) of the root on O(root_mount).
    type: str
    default: default
  epoch:
    description:
      - The epoch the bundle is labelled with (the KV path, the per-epoch Secret name and label, the live Secret
        annotation).
      - Defaults to the newest epoch in the bundle; when given it must be one of the bundle's epochs (unless
        O(verify=false)).
    type: int
  destinations:
    description:
      - Where to deliver the bundle. Omit (or leave empty) to only build and verify it.
    type: dict
    suboptions:
      file:
        description:
          - Write the bundle to a file (for example a NATS server's C(ca_file) on a VM).
          - Replaced atomically - a temporary file in the same directory, fsync, rename - so a reader never sees a
            partial bundle. The directory must exist.
        type: dict
        suboptions:
          path:
            description: Path of the bundle file.
            type: path
            required: true
          mode:
            description:
              - File mode, as an octal string such as V('0644').
              - Defaults to the mode of the existing file, else V('0644').
            type: raw
          owner:
            description:
              - Owner (name or uid). Defaults to the existing file's owner when running as root, else the user
                running the module.
            type: str
          group:
            description: Group (name or gid). Defaults like O(destinations.file.owner).
            type: str
          backup:
            description: Copy the previous file to C(<path>.<pid>.<time>~) before replacing it.
            type: bool
            default: false
      kv:
        description:
          - Store the bundle in OpenBao KV version 2 with C(ca-bundle.pem), C(epoch), C(sha256), C(created_at),
            C(expires_at) and C(issuers).
          - Written with check-and-set (C(cas) = the version read), and only when something but C(created_at)
            differs.
        type: dict
        suboptions:
          mount:
            description: Mount path of the KV version 2 engine.
            type: str
            default: secret
          path:
            description: Path inside the mount; C({epoch}) is replaced by the epoch number.
            type: str
            default: ca-bundles/epoch-{epoch}
      epoch_secret:
        description:
          - The per-epoch bundle Secret, kept for rollback, with labels C(epoch=<n>) and
            C(app.kubernetes.io/managed-by=securetransport.ca_rotation) and the C(rotation.watcher.io/*) annotations.
        type: dict
        suboptions:
          namespace:
            description: Namespace of the Secret.
            type: str
            default: openbao
          name:
            description: Name of the Secret; C({epoch}) is replaced by the epoch number.
            type: str
            default: nats-ca-bundle-epoch-{epoch}
          key:
            description: Data key holding the bundle.
            type: str
            default: ca-bundle.pem
      live_secret:
        description:
          - The live CA Secret the NATS servers mount (never with C(subPath)), with annotations
            C(rotation.watcher.io/ts) (time of the last change; it only moves when something else changed),
            C(rotation.watcher.io/epoch) and C(rotation.watcher.io/sha256).
          - Other keys, labels and annotations of an existing Secret are kept.
        type: dict
        suboptions:
          namespace:
            description: Namespace of the Secret.
            type: str
            default: nats
          name:
            description: Name of the Secret.
            type: str
            default: nats-ca-tls
          key:
            description: Data key holding the bundle.
            type: str
            default: ca.crt
  prune:
    description:
      - Delete the per-epoch copies (the O(destinations.epoch_secret) Secrets selected by their labels, and the
        O(destinations.kv) entries next to its path) of epochs that have expired, after delivering.
      - Needs O(destinations.epoch_secret) and/or O(destinations.kv). The epoch being delivered is never deleted.
    type: dict
    suboptions:
      keep_epochs:
        description: The newest copies to keep even when their epoch expired (for rollback).
        type: int
        default: 2
  secret_attempts:
    description: Attempts to write a Secret that changes underneath (HTTP 409 conflict) before failing.
    type: int
    default: 5
  return_content:
    description:
      - Return the bundle PEM in RV(pem), and what each destination held before in its C(previous_pem)
        (see RV(destinations)).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description:
      - Builds and verifies the bundle and reads every destination; reports per destination what would change
        without writing.
  diff_mode:
    support: full
    description:
      - The file's text before and after; SHA-256 before and after for the KV entry and the Secrets.
notes:
  - Kubernetes RBAC - C(get), C(create), C(update) on C(secrets) in the namespaces of the Secret destinations; C(list)
    and C(delete) there for O(prune).
  - OpenBao capabilities - C(read) on C(<int_mount>/issuer/*) and C(list) on C(<int_mount>/issuers) and
    C(<int_mount>/keys) for O(source=openbao); C(read), C(create) and C(update) on C(<kv mount>/data/<path>) for
    O(destinations.kv); C(list) and C(delete) on C(<kv mount>/metadata/<parent of path>/*) for O(prune).
  - Delivery is not transactional across destinations. They are written in the order KV, per-epoch Secret, file,
    live Secret; when one fails, the error names it and RV(destinations) lists the ones already written. Re-running
    converges.
seealso:
  - module: securetransport.ca_rotation.openbao_intermediate
  - module: securetransport.ca_rotation.ca_epoch
'''

EXAMPLES = r'''
- name: Build the bundle from OpenBao and deliver it everywhere
  securetransport.ca_rotation.ca_bundle:
    openbao:
      url: https://openbao.example.com:8200
      token_file: /etc/ca-rotation/openbao-token
      ca_cert: /etc/ca-rotation/openbao-ca.pem
    kubernetes:
      kubeconfig: /etc/ca-rotation/kubeconfig
      context: east
    destinations:
      kv: {}
      epoch_secret: {}
      live_secret: {}
    prune:
      keep_epochs: 2
  register: bundle

- name: Write the bundle on a VM running nats-server
  securetransport.ca_rotation.ca_bundle:
    destinations:
      file:
        path: /etc/nats/ca/ca.crt
        mode: '0644'
        owner: nats
        backup: true

- name: Put back an earlier bundle (rollback), dropping intermediates that expired since
  securetransport.ca_rotation.ca_bundle:
    source: pem
    pem: "{{ previous_bundle_pem }}"
    drop_expired: true
    kubernetes:
      context: east
    destinations:
      live_secret: {}

- name: Only verify (no destination), intermediates-only bundle
  securetransport.ca_rotation.ca_bundle:
    include_root: false
    return_content: true
  register: verified
'''

RETURN = r'''
sha256:
  description: SHA-256 (hex) of the bundle bytes.
  returned: always
  type: str
  sample: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555
epoch:
  description: The epoch the bundle is labelled with (null with O(verify=false) when no epoch is recognisable).
  returned: always
  type: int
  sample: 8124
verified:
  description: Whether the bundle went through the trust checks (false only with O(verify=false)).
  returned: always
  type: bool
epochs:
  description: Epochs of the intermediates in the bundle, newest first.
  returned: always
  type: list
  elements: int
  sample: [8124, 8123, 8122, 8121, 8120]
certificates:
  description: The certificates in bundle order (the root last, with C(epoch) null and C(kind) V(root)).
  returned: always
  type: list
  elements: dict
  contains:
    epoch:
      description: Epoch of the intermediate (null for the root).
      type: int
    kind:
      description: V(intermediate) or V(root).
      type: str
    subject:
      description: Subject (RFC 4514).
      type: str
    sha256:
      description: SHA-256 fingerprint of the DER certificate.
      type: str
    serial:
      description: Serial number, colon-separated hex.
      type: str
    not_before:
      description: NotBefore (UTC, ISO 8601).
      type: str
    not_after:
      description: NotAfter (UTC, ISO 8601); for an intermediate exactly the expiry of its epoch.
      type: str
pem:
  description: The bundle.
  returned: when O(return_content=true)
  type: str
skipped:
  description: Issuers of wanted epochs left out (revoked), with O(source=openbao).
  returned: always
  type: list
  elements: dict
missing:
  description: Wanted epochs (valid or prepared) without an issuer on O(int_mount), with O(source=openbao).
  returned: always
  type: list
  elements: int
dropped:
  description: Expired intermediates left out by O(drop_expired).
  returned: always
  type: list
  elements: dict
destinations:
  description:
    - Per destination (C(file), C(kv), C(epoch_secret), C(live_secret)) that was requested - C(changed),
      C(before_sha256) (of the bytes found, null if absent), C(after_sha256), and the location.
    - Secrets also return C(created), C(resource_version) and C(attempts) (more than 1 after 409 conflicts); KV returns
      C(before_version), C(version) and C(attempts); the file returns C(backup_file) and C(mode).
    - With O(return_content=true) each also returns C(previous_pem), the bundle it held before (null if none), for an
      automatic rollback.
  returned: always
  type: dict
  sample:
    live_secret:
      changed: true
      created: false
      namespace: nats
      name: nats-ca-tls
      key: ca.crt
      before_sha256: 9f2c...
      after_sha256: 3b0c...
      resource_version: '4711'
      attempts: 1
pruned:
  description: Per-epoch copies deleted by O(prune) (would be, in check mode) - C(secrets) and C(kv) lists.
  returned: always
  type: dict
'''

import re

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import (
    DEFAULT_MAX_CERTIFICATES,
    BundleError,
    build_bundle,
    bundle_from_pem,
    bundle_unverified,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import (
    DEFAULT_EPOCH_SECRET_KEY,
    DEFAULT_EPOCH_SECRET_NAME,
    DEFAULT_EPOCH_SECRET_NAMESPACE,
    DEFAULT_KV_MOUNT,
    DEFAULT_KV_PATH,
    DEFAULT_LIVE_SECRET_KEY,
    DEFAULT_LIVE_SECRET_NAME,
    DEFAULT_LIVE_SECRET_NAMESPACE,
    copy_result,
    expand,
    kv_record,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.prune import DEFAULT_KEEP_EPOCHS, prune
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.source import bundle_from_openbao
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import CRYPTOGRAPHY_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.module import CaRotationModule
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EPOCH_ARG_SPEC,
    EpochError,
    isoformat,
    schedule_from_module_params,
    utcnow,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import (
    K8S_ARG_SPEC,
    K8sError,
    check_imports as k8s_check_imports,
    core_api,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.secrets import (
    DEFAULT_SECRET_ATTEMPTS,
    valid_secret_key,
    valid_secret_name,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC, connect
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import HVAC_IMPORT_ERROR
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.store import (
    ORDER,
    DeliveryError,
    plan_delivery,
    write_planned,
)

#: Delivery order: the records first, the live trust store last.


def argument_spec():
    spec = dict(
        source=dict(type='str', default='openbao', choices=['openbao', 'pem']),
        pem=dict(type='str'),
        intermediates=dict(type='list', elements='str'),
        root_pem=dict(type='str'),
        include_root=dict(type='bool', default=True),
        max_certificates=dict(type='int', default=DEFAULT_MAX_CERTIFICATES),
        drop_expired=dict(type='bool', default=False),
        verify=dict(type='bool', default=True),
        expected_sha256=dict(type='str'),
        int_mount=dict(type='str', default='pki_int'),
        root_mount=dict(type='str', default='pki'),
        root_issuer=dict(type='str', default='default'),
        epoch=dict(type='int'),
        destinations=dict(type='dict', options=dict(
            file=dict(type='dict', options=dict(
                path=dict(type='path', required=True),
                mode=dict(type='raw'),
                owner=dict(type='str'),
                group=dict(type='str'),
                backup=dict(type='bool', default=False),
            )),
            kv=dict(type='dict', options=dict(
                mount=dict(type='str', default=DEFAULT_KV_MOUNT),
                path=dict(type='str', default=DEFAULT_KV_PATH),
            )),
            epoch_secret=dict(type='dict', no_log=False, options=dict(
                namespace=dict(type='str', default=DEFAULT_EPOCH_SECRET_NAMESPACE),
                name=dict(type='str', default=DEFAULT_EPOCH_SECRET_NAME),
                key=dict(type='str', default=DEFAULT_EPOCH_SECRET_KEY, no_log=False),
            )),
            live_secret=dict(type='dict', no_log=False, options=dict(
                namespace=dict(type='str', default=DEFAULT_LIVE_SECRET_NAMESPACE),
                name=dict(type='str', default=DEFAULT_LIVE_SECRET_NAME),
                key=dict(type='str', default=DEFAULT_LIVE_SECRET_KEY, no_log=False),
            )),
        )),
        prune=dict(type='dict', options=dict(
            keep_epochs=dict(type='int', default=DEFAULT_KEEP_EPOCHS),
        )),
        secret_attempts=dict(type='int', default=DEFAULT_SECRET_ATTEMPTS, no_log=False),
        return_content=dict(type='bool', default=False),
    )
    spec.update(OPENBAO_ARG_SPEC)
    spec.update(K8S_ARG_SPEC)
    spec.update(EPOCH_ARG_SPEC)
    return spec


class _Fail(CaRotationError):
    """A failure with extra result keys (``result``: option, destinations already written, ...)."""

    def __init__(self, msg, **extra):
        super().__init__(msg)
        self.result = extra


def _check_params(params):
    """Argument errors that AnsibleModule cannot express, before anything is contacted."""
    if params['max_certificates'] < 1:
        raise _Fail('max_certificates must be at least 1, got %d' % params['max_certificates'], option='max_certificates')
    if params['secret_attempts'] < 1:
        raise _Fail('secret_attempts must be at least 1, got %d' % params['secret_attempts'], option='secret_attempts')
    if params['epoch'] is not None and params['epoch'] < 0:
        raise _Fail('epoch must not be negative, got %d' % params['epoch'], option='epoch')
    if params['source'] == 'pem':
        if not (params['pem'] or params['intermediates']):
            raise _Fail('source=pem needs pem (a whole bundle) or intermediates (with root_pem)', option='pem')
        if params['intermediates'] and not params['root_pem']:
            raise _Fail('intermediates need root_pem, the root certificate they must be signed by', option='root_pem')
    else:
        for option in ('pem', 'intermediates', 'root_pem'):
            if params[option]:
                raise _Fail('%s is only used with source=pem (source is openbao)' % option, option=option)
    if not params['source'] == 'pem' and params['drop_expired']:
        raise _Fail('drop_expired is only used with source=pem', option='drop_expired')
    if not params['verify'] and not (params['source'] == 'pem' and params['pem']):
        raise _Fail('verify=false only delivers a given bundle as it is: it needs source=pem with pem', option='verify')
    dests = params['destinations'] or {}
    if params['verify'] and params['expected_sha256']:
        raise _Fail('expected_sha256 is only used with verify=false (a verified bundle is checked, not compared)',
                    option='expected_sha256')
    if not params['verify']:
        expected = (params['expected_sha256'] or '').strip().lower()
        if not re.match(r'^[0-9a-f]{64}$', expected):
            raise _Fail('verify=false needs expected_sha256, the SHA-256 (64 hex digits) recorded for these bytes when they were '
                        'live (destinations.live_secret.before_sha256 of the run that replaced them, or the live Secret\'s '
                        'rotation.watcher.io/sha256 annotation)', option='expected_sha256')
        actual = sha256_hex(params['pem'])
        if actual != expected:
            raise _Fail('verify=false: the SHA-256 of pem is %s, not the recorded expected_sha256 %s; an unverified bundle is only '
                        'put back when it is exactly what was live' % (actual, expected), option='expected_sha256')
        records = [name for name in ('kv', 'epoch_secret') if dests.get(name) is not None]
        if records:
            raise _Fail('verify=false delivers only to destinations.file and destinations.live_secret: the per-epoch records '
                        '(%s) hold verified bundles only; drop %s or verify the bundle' % (
                            ', '.join('destinations.%s' % r for r in records), ' and '.join(records)),
                        option='destinations.%s' % records[0])
    for name in ('epoch_secret', 'live_secret'):
        dest = dests.get(name)
        if dest is None:
            continue
        if not valid_secret_key(dest['key']):
            raise _Fail("destinations.%s.key %r is not a valid Secret data key (letters, digits, '-', '_', '.')"
                        % (name, dest['key']), option='destinations.%s.key' % name)
        if not dest['namespace']:
            raise _Fail('destinations.%s.namespace must not be empty' % name, option='destinations.%s.namespace' % name)
        if not valid_secret_name(expand(dest['name'], 0)):
            raise _Fail('destinations.%s.name %r is not a valid Secret name (lower-case RFC 1123 subdomain)'
                        % (name, dest['name']), option='destinations.%s.name' % name)
    if dests.get('kv') is not None and not (dests['kv']['mount'] and dests['kv']['path']):
        raise _Fail('destinations.kv.mount and destinations.kv.path must not be empty', option='destinations.kv')
    if params['prune'] is not None:
        if params['prune']['keep_epochs'] < 0:
            raise _Fail('prune.keep_epochs must not be negative, got %d' % params['prune']['keep_epochs'],
                        option='prune.keep_epochs')
        if dests.get('kv') is None and dests.get('epoch_secret') is None:
            raise _Fail('prune needs destinations.epoch_secret and/or destinations.kv (the per-epoch copies it prunes)',
                        option='prune')


def _build(params, schedule, now, clients):
    if not params['verify']:
        bundle = bundle_unverified(params['pem'], schedule)
    elif params['source'] == 'openbao':
        bundle = bundle_from_openbao(clients.openbao(), schedule, now, int_mount=params['int_mount'],
                                     root_mount=params['root_mount'], include_root=params['include_root'],
                                     max_certificates=params['max_certificates'], root_issuer=params['root_issuer'])
    elif params['pem']:
        bundle = bundle_from_pem(params['pem'], schedule, now, root_pem=params['root_pem'],
                                 include_root=params['include_root'], max_certificates=params['max_certificates'],
                                 drop_expired=params['drop_expired'])
    else:
        bundle = build_bundle(params['intermediates'], params['root_pem'], schedule, now,
                              include_root=params['include_root'], max_certificates=params['max_certificates'],
                              drop_expired=params['drop_expired'])
    bundle.setdefault('skipped', [])
    bundle.setdefault('missing', [])
    return bundle


class _Clients:
    """Connections, opened on first use."""

    def __init__(self, params):
        self.params = params
        self._openbao = None
        self._core = None

    def openbao(self):
        if self._openbao is None:
            if HVAC_IMPORT_ERROR:
                raise _Fail(missing_required_lib('hvac'), exception=HVAC_IMPORT_ERROR)
            self._openbao = connect(self.params)
        return self._openbao

    def core(self, kubernetes=None):  # pylint: disable=unused-argument  # one connection: the module's kubernetes option
        if self._core is None:
            missing = k8s_check_imports()
            if missing:
                raise _Fail(missing_required_lib(missing[0]), exception=missing[1])
            self._core = core_api(self.params['kubernetes'])
        return self._core


def _diff(name, result):
    if name == 'file':
        return result['diff']
    where = {'kv': lambda r: 'kv %s/%s' % (r['mount'], r['path'])}.get(
        name, lambda r: 'secret %s/%s[%s]' % (r['namespace'], r['name'], r['key']))(result)
    return {'before_header': where, 'after_header': where,
            'before': 'sha256: %s\n' % (result['before_sha256'] or '(absent)'),
            'after': 'sha256: %s\n' % result['after_sha256']}


def _run(module, params):
    _check_params(params)
    try:
        schedule, now = schedule_from_module_params(params)
    except EpochError as err:
        raise _Fail(str(err), option=err.option) from None
    clients = _Clients(params)
    check_mode = module.check_mode
    dests = {k: v for k, v in (params['destinations'] or {}).items() if v is not None}

    # 1. Build and verify: any problem stops here, before any destination is even read.
    bundle = _build(params, schedule, now, clients)
    epoch = params['epoch'] if params['epoch'] is not None else bundle['epoch']
    if epoch is None and ('kv' in dests or 'epoch_secret' in dests):
        raise _Fail('No epoch is recognisable in the unverified bundle, and destinations.kv / destinations.epoch_secret '
                    'are named after it: give epoch', option='epoch')
    if bundle['verified'] and epoch not in bundle['epochs']:
        raise _Fail('epoch %d is not in the bundle (its epochs are %s)' % (epoch, ', '.join(str(n) for n in bundle['epochs'])),
                    option='epoch')
    ts = isoformat(utcnow())
    kv_data = kv_record(bundle, epoch, schedule, created_at=utcnow()) if 'kv' in dests else None

    # 2. Read every destination (and what prune would delete) before the first write.
    attempts = params['secret_attempts']
    plan = plan_delivery([(name, dests[name]) for name in ORDER if name in dests], bundle, epoch, kv_data, clients, attempts, ts)
    prune_args = None
    if params['prune'] is not None:
        prune_args = dict(
            keep_epochs=params['prune']['keep_epochs'], protect=[epoch] if epoch is not None else [],
            core_api=clients.core() if 'epoch_secret' in dests else None,
            secret_namespace=dests['epoch_secret']['namespace'] if 'epoch_secret' in dests else None,
            kv_client=clients.openbao() if 'kv' in dests else None,
            kv_mount=dests['kv']['mount'] if 'kv' in dests else None,
            kv_path=dests['kv']['path'] if 'kv' in dests else None)
        pruned = prune(schedule, now, check_mode=True, **prune_args)

    # 3. Write what differs (nothing in check mode: the plan is the prediction).
    try:
        written = write_planned(plan, bundle, epoch, kv_data, clients, check_mode, attempts, ts)
    except DeliveryError as err:
        done = dict(zip([name for name, _d, _p in plan], err.results))
        raise _Fail(str(err), destinations={k: copy_result(v, params['return_content']) for k, v in done.items()},
                    failed_destination=err.destination) from None
    results = dict(zip([name for name, _d, _p in plan], written))
    if prune_args is not None and not check_mode:
        try:
            pruned = prune(schedule, now, check_mode=False, **prune_args)
        except (BundleError, OpenBaoError, K8sError) as err:
            raise _Fail('The CA bundle was delivered (%s) but pruning the expired per-epoch copies failed: %s'
                        % (', '.join(n for n in results if results[n]['changed']) or 'nothing to change', err),
                        destinations={k: copy_result(v, params['return_content']) for k, v in results.items()},
                        failed_destination='prune') from None

    out = {
        'changed': any(r['changed'] for r in results.values()),
        'sha256': bundle['sha256'],
        'epoch': epoch,
        'epochs': bundle['epochs'],
        'certificates': bundle['certificates'],
        'include_root': bundle['include_root'],
        'skipped': bundle['skipped'],
        'missing': bundle['missing'],
        'dropped': bundle['dropped'],
        'verified': bundle['verified'],
        'destinations': {k: copy_result(v, params['return_content']) for k, v in results.items()},
        'pruned': {'secrets': [], 'kv': []},
    }
    if prune_args is not None:
        out['pruned'] = {'secrets': pruned['secrets'], 'kv': pruned['kv']}
        out['changed'] = out['changed'] or pruned['changed']
    if params['return_content']:
        out['pem'] = bundle['pem']
    if module._diff:  # pylint: disable=protected-access
        out['diff'] = [_diff(name, results[name]) for name in ORDER if name in results and results[name]['changed']]
    return out


def main():
    module = CaRotationModule(argument_spec=argument_spec(), supports_check_mode=True,
                              mutually_exclusive=[('pem', 'intermediates')])
    module.doing = 'building or delivering the CA bundle'
    if CRYPTOGRAPHY_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    module.run(_run, module, module.params)


if __name__ == '__main__':
    main()

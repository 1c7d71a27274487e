# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenBao connection and PKI operations for epoch intermediates (private).

Everything here is shared by the modules ``openbao_intermediate`` / ``openbao_leaf`` and by the
scripts. hvac does the HTTP; every request goes through :func:`_request`, which turns failures into
:class:`OpenBaoError` messages that name the operation, the path and (for 403) the capability the
token needs.

OpenBao behaviour this code relies on (verified against OpenBao 2.7.2, see DESIGN section 10):

* ``<root>/issuer/<ref>/sign-intermediate`` honours ``not_after`` (exact NotAfter, even beyond the
  mount's max TTL and even in the past -- so we refuse expired epochs ourselves) and
  ``not_before_duration`` (NotBefore = server time - duration, whole seconds). Its ``not_before``
  parameter is accepted but IGNORED when signing a CSR, so NotBefore is reached through
  ``not_before_duration`` and checked on the returned certificate (see :func:`_sign_exact`).
* ``format=pem`` returns only the new certificate (``pem_bundle`` would import the root into the
  intermediate mount as a key-less issuer).
* ``intermediate/set-signed`` does not name the issuer; naming + ``leaf_not_after_behavior`` is a
  PATCH on ``issuer/<id>``. The first issuer of an empty mount becomes its default automatically;
  later ones do not (``default_follows_latest_issuer`` stays false).
* Reading an unknown issuer reference answers HTTP 500, so issuers are always found by LIST first,
  and HTTP 500 is not retried.
* ``LIST <mount>/issuers`` and ``GET <mount>/issuer/<ref>/json`` need no token.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
import time
import traceback

HVAC_IMPORT_ERROR = None
try:
    import hvac
    import hvac.exceptions
    import requests
    import requests.adapters
    from urllib3.util.retry import Retry
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    hvac = None
    HVAC_IMPORT_ERROR = traceback.format_exc()

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    x509 = None
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

try:
    from ansible.module_utils.basic import env_fallback
except ImportError:  # pragma: no cover - scripts without ansible-core
    env_fallback = None

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import (
    EpochError,
    isoformat,
    parse_duration,
    utcnow,
)

UTC = datetime.timezone.utc

DEFAULT_K8S_TOKEN_PATH = '/var/run/secrets/kubernetes.io/serviceaccount/token'
DEFAULT_AUTH_MOUNTS = {'approle': 'approle', 'kubernetes': 'kubernetes'}
#: HTTP statuses retried (with backoff) for idempotent methods. 500 is left out on purpose:
#: OpenBao answers some deterministic errors with 500 (e.g. an unknown issuer reference).
RETRY_STATUSES = (502, 503, 504)
#: Methods retried on those statuses and on read errors. POST (issue, sign, generate) is only
#: retried when the connection could not be established: repeating it could issue twice.
RETRY_METHODS = frozenset(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'LIST', 'PATCH'])

KEY_TYPES = ('ec', 'rsa', 'ed25519')
EPOCH_ISSUER_RE = re.compile(r'^epoch-(\d+)$')


def _fallback(*names):
    return (env_fallback, list(names)) if env_fallback else None


def _opt(**kwargs):
    if kwargs.get('fallback') is None:
        kwargs.pop('fallback', None)
    return kwargs


#: The whole ``openbao`` option (merge into a module's argument_spec). Documented by the doc
#: fragment ``securetransport.ca_rotation.openbao``. ``token`` has no env fallback here on
#: purpose: :func:`connect` reads BAO_TOKEN/VAULT_TOKEN only when neither ``token`` nor
#: ``token_file`` is set, so an explicit token_file always wins over the environment.
OPENBAO_ARG_SPEC = {
    'openbao': dict(
        type='dict',
        apply_defaults=True,
        options=dict(
            url=_opt(type='str', fallback=_fallback('BAO_ADDR', 'VAULT_ADDR')),
            auth_method=dict(type='str', default='token', choices=['token', 'approle', 'kubernetes']),
            token=dict(type='str', no_log=True),
            token_file=dict(type='path', no_log=False),
            role_id=dict(type='str', no_log=True),
            secret_id=dict(type='str', no_log=True),
            kubernetes_role=dict(type='str'),
            kubernetes_token_path=dict(type='path', no_log=False, default=DEFAULT_K8S_TOKEN_PATH),
            auth_mount_point=dict(type='str'),
            namespace=_opt(type='str', fallback=_fallback('BAO_NAMESPACE', 'VAULT_NAMESPACE')),
            ca_cert=_opt(type='path', fallback=_fallback('BAO_CACERT', 'VAULT_CACERT')),
            validate_certs=dict(type='bool', default=True),
            timeout=dict(type='int', default=30),
            retries=dict(type='int', default=3),
        ),
    ),
}


class OpenBaoError(Exception):
    """A failed OpenBao operation, with a message meant for the operator.

    ``operation`` (what we tried), ``path`` (API path without ``/v1/``) and ``status`` (HTTP
    status, if any) are kept for callers that want to branch on them.
    """

    def __init__(self, message, operation=None, path=None, status=None, errors=None):
        super().__init__(message)
        self.operation = operation
        self.path = path
        self.status = status
        self.errors = list(errors or [])


def check_imports():
    """Raise OpenBaoError when hvac or cryptography is missing (for scripts)."""
    if hvac is None:
        raise OpenBaoError('The Python library hvac is required: %s' % HVAC_IMPORT_ERROR)
    if x509 is None:
        raise OpenBaoError('The Python library cryptography is required: %s' % CRYPTOGRAPHY_IMPORT_ERROR)


# --------------------------------------------------------------------------- connection
def _conn_params(params):
    """The ``openbao`` sub-dict, with defaults and environment fallbacks applied.

    Accepts a module's full params (with an ``openbao`` key) or the sub-dict itself, so that
    scripts can call :func:`connect` with a plain dict.
    """
    params = params or {}
    if isinstance(params.get('openbao'), dict):
        params = params['openbao']
    out = {}
    for name, spec in OPENBAO_ARG_SPEC['openbao']['options'].items():
        value = params.get(name)
        if value is None:
            value = spec.get('default')
        out[name] = value

    def env(*names):
        for name in names:
            if os.environ.get(name):
                return os.environ[name]
        return None

    out['url'] = out['url'] or env('BAO_ADDR', 'VAULT_ADDR')
    out['namespace'] = out['namespace'] or env('BAO_NAMESPACE', 'VAULT_NAMESPACE')
    out['ca_cert'] = out['ca_cert'] or env('BAO_CACERT', 'VAULT_CACERT')
    return out


def _read_secret_file(path, option):
    try:
        with open(os.path.expanduser(path), 'r', encoding='utf-8') as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise OpenBaoError('Cannot read openbao.%s %r: %s' % (option, path, exc.strerror or exc)) from None
    if not value:
        raise OpenBaoError('openbao.%s %r is empty' % (option, path))
    return value


def _session(conn):
    session = requests.Session()
    retries = max(int(conn['retries'] or 0), 0)
    retry = Retry(
        total=retries, connect=retries, read=retries, status=retries, other=0,
        allowed_methods=RETRY_METHODS, status_forcelist=RETRY_STATUSES,
        backoff_factor=0.5, raise_on_status=False, respect_retry_after_header=True,
    )
    adapter = requests.adapters.HTTPAdapter(max_retries=retry)
    session.mount('http://', adapter)
    session.mount('https://', adapter)
    return session


def connect(params):
    """An authenticated ``hvac.Client`` from the ``openbao`` options (see OPENBAO_ARG_SPEC).

    Token precedence: ``token``, then ``token_file``, then BAO_TOKEN / VAULT_TOKEN. AppRole and
    Kubernetes log in through hvac. TLS is verified against ``ca_cert`` (or the system trust
    store); ``validate_certs: false`` turns verification off explicitly.
    """
    check_imports()
    conn = _conn_params(params)
    url = conn['url']
    if not url:
        raise OpenBaoError('No OpenBao address: set openbao.url (or the BAO_ADDR environment variable)')
    if not re.match(r'^https?://', url):
        raise OpenBaoError('openbao.url %r must start with http:// or https://' % url)
    if conn['timeout'] is not None and int(conn['timeout']) <= 0:
        raise OpenBaoError('openbao.timeout must be a positive number of seconds, got %r' % conn['timeout'])
    if conn['retries'] is not None and int(conn['retries']) < 0:
        raise OpenBaoError('openbao.retries must not be negative, got %r' % conn['retries'])

    if not conn['validate_certs']:
        verify = False
    elif conn['ca_cert']:
        ca_cert = os.path.expanduser(conn['ca_cert'])
        if not os.path.isfile(ca_cert):
            raise OpenBaoError('openbao.ca_cert %r does not exist or is not a file' % conn['ca_cert'])
        verify = ca_cert
    else:
        verify = True

    session = _session(conn)
    session.verify = verify
    client = hvac.Client(url=url, verify=verify, timeout=int(conn['timeout'] or 30), session=session,
                         namespace=conn['namespace'] or None)
    client._securetransport_url = url  # pylint: disable=protected-access

    method = conn['auth_method'] or 'token'
    mount = conn['auth_mount_point'] or DEFAULT_AUTH_MOUNTS.get(method)
    if method == 'token':
        token = conn['token']
        if not token and conn['token_file']:
            token = _read_secret_file(conn['token_file'], 'token_file')
        if not token:
            token = os.environ.get('BAO_TOKEN') or os.environ.get('VAULT_TOKEN')
        if not token:
            raise OpenBaoError('No OpenBao token: set openbao.token or openbao.token_file (or BAO_TOKEN), '
                               'or use openbao.auth_method approle / kubernetes')
        client.token = token
    elif method == 'approle':
        if not conn['role_id']:
            raise OpenBaoError('openbao.auth_method is approle but openbao.role_id is not set')
        _login(client, 'AppRole login', 'auth/%s/login' % mount,
               lambda: client.auth.approle.login(role_id=conn['role_id'], secret_id=conn['secret_id'], mount_point=mount))
    elif method == 'kubernetes':
        if not conn['kubernetes_role']:
            raise OpenBaoError('openbao.auth_method is kubernetes but openbao.kubernetes_role is not set')
        jwt = _read_secret_file(conn['kubernetes_token_path'], 'kubernetes_token_path')
        _login(client, 'Kubernetes login', 'auth/%s/login' % mount,
               lambda: client.auth.kubernetes.login(role=conn['kubernetes_role'], jwt=jwt, mount_point=mount))
    else:
        raise OpenBaoError('openbao.auth_method must be one of token, approle, kubernetes; got %r' % method)
    return client


def _login(client, operation, path, call):
    try:
        call()
    except Exception as exc:  # pylint: disable=broad-except
        raise _translate(client, exc, 'POST', path, operation, login=True) from None
    if not client.token:
        raise OpenBaoError('%s at %r returned no token' % (operation, path), operation=operation, path=path)


# --------------------------------------------------------------------------- requests
_CAPABILITY = {'GET': 'read', 'HEAD': 'read', 'LIST': 'list', 'POST': 'update', 'PUT': 'update',
               'PATCH': 'patch', 'DELETE': 'delete'}


def _client_url(client):
    return getattr(client, '_securetransport_url', None) or getattr(client, 'url', None) or '?'


def _translate(client, exc, method, path, operation, login=False):
    """OpenBaoError for an exception raised while calling OpenBao."""
    url = _client_url(client)
    if isinstance(exc, OpenBaoError):
        return exc
    if requests is not None and isinstance(exc, requests.exceptions.SSLError):
        return OpenBaoError(
            'TLS verification failed talking to OpenBao at %s (%s on %r): %s. Set openbao.ca_cert to the CA file that '
            'signed the OpenBao server certificate (validate_certs: false turns verification off, not recommended)'
            % (url, operation, path, _short(exc)), operation=operation, path=path)
    if requests is not None and isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return OpenBaoError(
            'Cannot reach OpenBao at %s (%s on %r): %s. Check openbao.url, that OpenBao is running and unsealed, '
            'and the network; nothing after this step was changed, so re-running converges'
            % (url, operation, path, _short(exc)), operation=operation, path=path)
    if hvac is not None and isinstance(exc, hvac.exceptions.VaultError):
        status = {
            hvac.exceptions.InvalidRequest: 400, hvac.exceptions.Unauthorized: 401,
            hvac.exceptions.Forbidden: 403, hvac.exceptions.InvalidPath: 404,
            hvac.exceptions.RateLimitExceeded: 429, hvac.exceptions.InternalServerError: 500,
            hvac.exceptions.BadGateway: 502, hvac.exceptions.VaultDown: 503,
        }.get(type(exc))
        return _status_error(client, status, list(exc.errors or []) or [str(exc.args[0] if exc.args else exc)],
                             method, path, operation, login=login)
    return OpenBaoError('%s on %r at %s failed: %s' % (operation, path, url, exc), operation=operation, path=path)


def _short(exc):
    text = str(exc)
    match = re.search(r"\((Caused by .*)\)$", text)
    return match.group(1) if match else text


def _status_error(client, status, errors, method, path, operation, login=False):
    url = _client_url(client)
    detail = '; '.join(e.strip() for e in errors if e) or 'no details'
    if status == 403 or (login and status == 400 and 'invalid' in detail.lower()):
        if login:
            msg = '%s failed at %r: %s. Check the role and credentials (role_id/secret_id, kubernetes_role/JWT)' % (
                operation, path, detail)
        else:
            msg = ("Permission denied on %r (%s): the token needs '%s' on that path (or the token is invalid or expired). "
                   "OpenBao said: %s" % (path, operation, _CAPABILITY.get(method.upper(), method.lower()), detail))
    elif status == 404:
        mount = path.split('/', 1)[0]
        if 'no handler for route' in detail:
            msg = ("%s failed: nothing is mounted at %r (%r does not exist). Check the mount option "
                   "(enable it with 'bao secrets enable -path=%s pki')" % (operation, mount + '/', path, mount))
        else:
            msg = '%s failed: %r not found (%s)' % (operation, path, detail)
    elif status in (502, 503, 504):
        msg = ('OpenBao at %s is unavailable (HTTP %s; sealed, standby or restarting) during %s on %r, after retries: %s'
               % (url, status, operation, path, detail))
    elif status is None:
        msg = '%s on %r failed: %s' % (operation, path, detail)
    else:
        msg = 'OpenBao refused %s on %r (HTTP %s): %s' % (operation, path, status, detail)
    return OpenBaoError(msg, operation=operation, path=path, status=status, errors=errors)


def _request(client, method, path, operation, data=None, missing_ok=False):
    """Call ``/v1/<path>``; return the decoded JSON body (``{}`` when empty).

    ``missing_ok``: a 404 without error text (OpenBao's answer to LIST on an empty collection)
    returns ``None`` instead of raising.
    """
    headers = {'Content-Type': 'application/merge-patch+json'} if method.upper() == 'PATCH' else None
    kwargs = {}
    if data is not None:
        kwargs['json'] = data
    try:
        resp = client.adapter.request(method.upper(), '/v1/' + path.lstrip('/'), headers=headers,
                                      raise_exception=False, **kwargs)
    except Exception as exc:  # pylint: disable=broad-except
        raise _translate(client, exc, method, path, operation) from None
    if isinstance(resp, dict):
        return resp
    status = resp.status_code
    try:
        body = resp.json() if resp.content else {}
    except ValueError:
        body = {'errors': [resp.text[:500]]}
    if 200 <= status < 300:
        return body if isinstance(body, dict) else {}
    errors = body.get('errors') if isinstance(body, dict) else None
    if status == 404 and missing_ok and not errors:
        return None
    raise _status_error(client, status, errors or [], method, path, operation)


def _data(resp):
    return (resp or {}).get('data') or {}


# --------------------------------------------------------------------------- certificates
def load_cert(pem):
    return x509.load_pem_x509_certificate(pem.encode('ascii') if isinstance(pem, str) else pem)


def serial_hex(serial):
    """OpenBao's serial notation: lower-case hex byte pairs joined by ':'."""
    text = '%x' % serial
    if len(text) % 2:
        text = '0' + text
    return ':'.join(text[i:i + 2] for i in range(0, len(text), 2))


def cert_sha256(cert):
    """SHA-256 (lower-case hex) of the certificate's DER encoding (its usual fingerprint)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def cert_facts(pem):
    """JSON-safe facts about a PEM certificate."""
    cert = load_cert(pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        'certificate': _normalize_pem(pem),
        'common_name': cn[0].value if cn else None,
        'serial': serial_hex(cert.serial_number),
        'sha256': cert_sha256(cert),
        'not_before': isoformat(cert.not_valid_before_utc),
        'not_after': isoformat(cert.not_valid_after_utc),
    }


def _normalize_pem(pem):
    pem = pem.strip() if isinstance(pem, str) else pem.decode('ascii').strip()
    return pem + '\n'


def _public_key_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_intermediate(pem, root_pem, expected_not_after=None):
    """Problems (list of str) with an intermediate: signature by the root, CA:true, keyCertSign,
    and NotAfter == ``expected_not_after`` when given. Empty list = good."""
    problems = []
    cert = load_cert(pem)
    root = load_cert(root_pem)
    try:
        cert.verify_directly_issued_by(root)
    except Exception as exc:  # pylint: disable=broad-except
        problems.append('not signed by the root issuer (%s)' % (exc or type(exc).__name__))
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            problems.append('BasicConstraints CA is false')
    except x509.ExtensionNotFound:
        problems.append('no BasicConstraints extension')
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            problems.append('KeyUsage lacks keyCertSign')
    except x509.ExtensionNotFound:
        problems.append('no KeyUsage extension')
    if expected_not_after is not None and cert.not_valid_after_utc != expected_not_after.replace(microsecond=0):
        problems.append('NotAfter is %s, expected exactly %s'
                        % (isoformat(cert.not_valid_after_utc), isoformat(expected_not_after)))
    return problems


# --------------------------------------------------------------------------- listing
def _list(client, path, operation):
    resp = _request(client, 'LIST', path, operation, missing_ok=True)
    data = _data(resp)
    return data.get('key_info') or {k: {} for k in data.get('keys') or []}


def list_issuers(client, mount):
    """``{issuer_id: {issuer_name, key_id, is_default, serial_number}}`` of every issuer on ``mount``."""
    return _list(client, '%s/issuers' % mount, 'listing issuers')


def list_keys(client, mount):
    """``{key_id: {key_name, ...}}`` of every key on ``mount``."""
    return _list(client, '%s/keys' % mount, 'listing keys')


def epoch_of(name):
    """Epoch number of an issuer named ``epoch-<n>``, else None."""
    match = EPOCH_ISSUER_RE.match(name or '')
    return int(match.group(1)) if match else None


def _key_epoch(key_name):
    match = re.match(r'^epoch-(\d+)-[0-9a-z]+$', key_name or '')
    return int(match.group(1)) if match else None


def read_issuer(client, mount, issuer_ref):
    """Full facts of one issuer (authenticated read of ``<mount>/issuer/<ref>``)."""
    path = '%s/issuer/%s' % (mount, issuer_ref)
    data = _data(_request(client, 'GET', path, 'reading issuer'))
    facts = cert_facts(data['certificate'])
    facts.update({
        'issuer_id': data.get('issuer_id'),
        'issuer_name': data.get('issuer_name') or '',
        'key_id': data.get('key_id') or '',
        'revoked': bool(data.get('revoked')),
        'leaf_not_after_behavior': data.get('leaf_not_after_behavior'),
        'usage': data.get('usage'),
        'epoch': epoch_of(data.get('issuer_name')),
    })
    return facts


def list_epoch_issuers(client, int_mount, issuers=None, keys=None):
    """Every issuer named ``epoch-<n>`` on ``int_mount``, ascending by epoch.

    Each entry: issuer_id, issuer_name, epoch, certificate (PEM), common_name, not_before,
    not_after, serial, sha256, is_default, key_id, key_name, revoked, leaf_not_after_behavior.
    """
    issuers = list_issuers(client, int_mount) if issuers is None else issuers
    keys = list_keys(client, int_mount) if keys is None else keys
    out = []
    for issuer_id, info in issuers.items():
        if epoch_of(info.get('issuer_name')) is None:
            continue
        facts = read_issuer(client, int_mount, issuer_id)
        facts['is_default'] = bool(info.get('is_default'))
        facts['key_name'] = (keys.get(facts['key_id']) or {}).get('key_name') or ''
        out.append(facts)
    out.sort(key=lambda i: i['epoch'])
    return out


def default_issuer(client, int_mount):
    """``(issuer_id, issuer_name)`` of the mount's default issuer, or ``(None, None)``."""
    data = _data(_request(client, 'GET', '%s/config/issuers' % int_mount, 'reading the default issuer'))
    issuer_id = data.get('default') or None
    if not issuer_id:
        return None, None
    info = list_issuers(client, int_mount).get(issuer_id) or {}
    return issuer_id, info.get('issuer_name') or None


def root_certificate(client, root_mount, root_issuer='default'):
    """PEM of the signing root (unauthenticated ``issuer/<ref>/json``)."""
    path = '%s/issuer/%s/json' % (root_mount, root_issuer)
    data = _data(_request(client, 'GET', path, 'reading the root certificate'))
    if not data.get('certificate'):
        raise OpenBaoError('No certificate for issuer %r on mount %r: is a root CA set up there (root_mount / root_issuer)?'
                           % (root_issuer, root_mount), path=path)
    return _normalize_pem(data['certificate'])


def issuer_state(issuer, schedule, now, default_epoch=None):
    """``active`` (default issuer) | ``revoked`` | ``expired`` | ``prepared`` (newer than the active
    epoch, waiting for activation) | ``valid`` (older or equal, still within its validity)."""
    if issuer.get('is_default'):
        return 'active'
    if issuer.get('revoked'):
        return 'revoked'
    not_after = datetime.datetime.strptime(issuer['not_after'], '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=UTC)
    if now >= not_after:
        return 'expired'
    reference = default_epoch if default_epoch is not None else _safe_epoch(schedule, now)
    if reference is not None and issuer['epoch'] is not None and issuer['epoch'] > reference:
        return 'prepared'
    return 'valid'


def _safe_epoch(schedule, now):
    try:
        return schedule.epoch(now)
    except ValueError:
        return None


def describe_issuers(issuers, schedule, now):
    """Issuer facts (without PEM) plus ``state`` and ``epoch_state`` for reporting."""
    default_epoch = next((i['epoch'] for i in issuers if i.get('is_default')), None)
    out = []
    for issuer in issuers:
        entry = {k: v for k, v in issuer.items() if k != 'certificate'}
        entry['state'] = issuer_state(issuer, schedule, now, default_epoch)
        try:
            entry['epoch_state'] = schedule.state(issuer['epoch'], now)
        except ValueError:
            entry['epoch_state'] = None
        out.append(entry)
    return out


# --------------------------------------------------------------------------- intermediates
def _delete_issuer(client, mount, issuer_id, check_mode):
    if not check_mode:
        _request(client, 'DELETE', '%s/issuer/%s' % (mount, issuer_id), 'deleting issuer')


def _delete_key(client, mount, key_id, check_mode):
    if not check_mode:
        _request(client, 'DELETE', '%s/key/%s' % (mount, key_id), 'deleting key')


def _orphan_keys(keys, issuers, epoch=None):
    """Keys named ``epoch-<n>-*`` (for ``epoch`` if given) that no issuer references."""
    used = {info.get('key_id') for info in issuers.values()}
    out = []
    for key_id, info in keys.items():
        n = _key_epoch(info.get('key_name'))
        if n is None or key_id in used or (epoch is not None and n != epoch):
            continue
        out.append({'key_id': key_id, 'key_name': info.get('key_name'), 'epoch': n})
    return sorted(out, key=lambda k: (k['epoch'], k['key_name']))


def _sign_exact(client, root_mount, root_issuer, csr, common_name, not_after, target_not_before, attempts=3):
    """Sign ``csr`` with NotAfter = ``not_after`` and NotBefore as close to ``target_not_before`` as
    OpenBao allows.

    OpenBao ignores ``not_before`` for CSR signing; ``not_before_duration`` d gives NotBefore =
    floor(server_now) - d. We compute d from the local clock, read the NotBefore back, and retry
    (at most ``attempts`` signatures, nothing is imported in between) correcting for the
    server/local clock offset. Returns ``(response, deviation_seconds)``; deviation is
    NotBefore - target (0 in practice; non-zero only if every attempt crossed a second boundary).
    """
    path = '%s/issuer/%s/sign-intermediate' % (root_mount, root_issuer)
    target = target_not_before.replace(microsecond=0)
    offset = 0
    best = None
    for _attempt in range(max(attempts, 1)):
        duration = int(time.time()) - int(target.timestamp()) + offset
        payload = {
            'csr': csr, 'common_name': common_name, 'format': 'pem', 'not_after': isoformat(not_after),
            'not_before_duration': max(duration, 1), 'exclude_cn_from_sans': True, 'max_path_length': 0,
            'use_csr_values': False,
        }
        resp = _request(client, 'POST', path, 'signing the intermediate with the root', data=payload)
        pem = _data(resp).get('certificate')
        if not pem:
            raise OpenBaoError('%r returned no certificate' % path, path=path)
        got = load_cert(pem).not_valid_before_utc
        deviation = int((got - target).total_seconds())
        if best is None or abs(deviation) < abs(best[1]):
            best = (resp, deviation)
        if deviation == 0 or duration < 1:
            break
        offset += deviation
    return best


def _predicted(schedule, epoch, cn_prefix, real_now):
    return {
        'issuer_id': None, 'issuer_name': 'epoch-%d' % epoch, 'key_id': None, 'key_name': None,
        'epoch': epoch, 'certificate': None, 'common_name': '%s Epoch %d' % (cn_prefix, epoch),
        'serial': None, 'sha256': None,
        'not_before': isoformat(min(schedule.start(epoch), real_now) - datetime.timedelta(seconds=schedule.skew)),
        'not_after': isoformat(schedule.expiry(epoch)), 'revoked': False, 'is_default': False,
        'leaf_not_after_behavior': 'truncate',
    }


def _name_issuer(client, mount, issuer_id, name):
    return _request(client, 'PATCH', '%s/issuer/%s' % (mount, issuer_id), 'naming the new issuer %r' % name,
                    data={'issuer_name': name, 'leaf_not_after_behavior': 'truncate'})


def ensure_epoch_intermediate(client, schedule, epoch, *, root_mount='pki', int_mount='pki_int',
                              cn_prefix='NATS Intermediate CA', key_type='ec', key_bits=0, root_issuer='default',
                              check_mode=False, now=None):
    """Make sure issuer ``epoch-<epoch>`` exists on ``int_mount``, signed by the root on ``root_mount``.

    The key is generated inside OpenBao (``internal``) as ``epoch-<n>-<6 hex>``; NotAfter is
    exactly ``schedule.expiry(n)``; NotBefore is ``schedule.not_before(n)`` (start - skew) when
    the epoch has started, else signing time - skew (a certificate must be usable as soon as it
    is activated, which may be before its epoch starts); the issuer gets
    ``leaf_not_after_behavior=truncate``. Keys ``epoch-<n>-*`` left by an interrupted run are
    deleted; an unnamed issuer left between set-signed and naming is adopted (or deleted if it
    does not match). Returns the issuer facts plus ``changed``, ``created``,
    ``orphan_keys_deleted``, ``root_certificate`` and ``warnings``.
    """
    now = now or utcnow()
    real_now = utcnow()
    if key_type not in KEY_TYPES:
        raise OpenBaoError('key_type must be one of %s, got %r' % (', '.join(KEY_TYPES), key_type))
    expiry = schedule.expiry(epoch)
    if expiry <= now or expiry <= real_now:
        valid = schedule.valid_epochs(now)
        raise OpenBaoError(
            'Epoch %d expired at %s (now %s): an intermediate for it would never be valid. Valid epochs now: %s'
            % (epoch, isoformat(expiry), isoformat(max(now, real_now)), ', '.join(str(n) for n in valid) or 'none'),
            operation='checking the epoch')
    current = schedule.epoch(min(now, real_now))
    if epoch > current + 1:
        raise OpenBaoError(
            'Epoch %d starts at %s, more than one epoch ahead of the current epoch %d: intermediates are issued at most '
            'one epoch in advance' % (epoch, isoformat(schedule.start(epoch)), current), operation='checking the epoch')

    name = 'epoch-%d' % epoch
    common_name = '%s Epoch %d' % (cn_prefix, epoch)
    warnings = []
    root_pem = root_certificate(client, root_mount, root_issuer)
    root = load_cert(root_pem)
    if root.not_valid_after_utc < expiry:
        warnings.append('The root issuer %r on %r expires at %s, before epoch %d ends (%s): chains through it stop '
                        'verifying early' % (root_issuer, root_mount, isoformat(root.not_valid_after_utc), epoch,
                                             isoformat(expiry)))

    issuers = list_issuers(client, int_mount)
    keys = list_keys(client, int_mount)
    result = {'changed': False, 'created': False, 'orphan_keys_deleted': [], 'adopted': False,
              'root_certificate': root_pem, 'warnings': warnings}

    existing = next((iid for iid, info in issuers.items() if info.get('issuer_name') == name), None)
    if existing:
        facts = read_issuer(client, int_mount, existing)
        problems = verify_intermediate(facts['certificate'], root_pem, expiry)
        if facts['revoked']:
            problems.append('it is revoked')
        if not facts['key_id']:
            problems.append('it has no private key in OpenBao')
        if problems:
            raise OpenBaoError(
                'Issuer %r on %r exists but is not a valid intermediate for epoch %d: %s. Remove it (state: absent, or '
                "'bao delete %s/issuer/%s') and run again to issue a fresh one"
                % (name, int_mount, epoch, '; '.join(problems), int_mount, name), path='%s/issuer/%s' % (int_mount, name))
        if facts['leaf_not_after_behavior'] != 'truncate':
            result['changed'] = True
            if not check_mode:
                _request(client, 'PATCH', '%s/issuer/%s' % (int_mount, existing), 'setting leaf_not_after_behavior',
                         data={'leaf_not_after_behavior': 'truncate'})
            facts['leaf_not_after_behavior'] = 'truncate'
        facts['is_default'] = bool(issuers[existing].get('is_default'))
        facts['key_name'] = (keys.get(facts['key_id']) or {}).get('key_name') or ''
        _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
        result.update(facts)
        return result

    # An issuer imported by an interrupted run but never named: adopt it if it is right.
    for issuer_id, info in sorted(issuers.items()):
        key_name = (keys.get(info.get('key_id')) or {}).get('key_name')
        if info.get('issuer_name') or _key_epoch(key_name) != epoch:
            continue
        facts = read_issuer(client, int_mount, issuer_id)
        if not facts['revoked'] and not verify_intermediate(facts['certificate'], root_pem, expiry):
            result.update(changed=True, adopted=True)
            if not check_mode:
                _name_issuer(client, int_mount, issuer_id, name)
            facts.update(issuer_name=name, epoch=epoch, leaf_not_after_behavior='truncate', key_name=key_name,
                         is_default=bool(info.get('is_default')))
            issuers[issuer_id] = dict(info, issuer_name=name)
            _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
            result.update(facts)
            return result
        # Wrong certificate (e.g. the schedule changed): drop the issuer; its key becomes an orphan.
        result['changed'] = True
        _delete_issuer(client, int_mount, issuer_id, check_mode)
        issuers.pop(issuer_id)

    _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
    result.update(changed=True, created=True)
    if check_mode:
        result.update(_predicted(schedule, epoch, cn_prefix, real_now))
        # OpenBao makes the first issuer of a mount without issuers its default.
        result['is_default'] = not issuers
        return result

    key_name = '%s-%s' % (name, secrets.token_hex(3))
    gen = _data(_request(client, 'POST', '%s/intermediate/generate/internal' % int_mount,
                         'generating the key and CSR for epoch %d' % epoch,
                         data={'common_name': common_name, 'key_type': key_type, 'key_bits': int(key_bits or 0),
                               'key_name': key_name, 'exclude_cn_from_sans': True, 'format': 'pem'}))
    csr, key_id = gen.get('csr'), gen.get('key_id')
    if not csr or not key_id:
        raise OpenBaoError('%s/intermediate/generate/internal returned no CSR or key_id' % int_mount)

    target_nb = min(schedule.start(epoch), utcnow()) - datetime.timedelta(seconds=schedule.skew)
    signed, deviation = _sign_exact(client, root_mount, root_issuer, csr, common_name, expiry, target_nb)
    pem = _normalize_pem(_data(signed)['certificate'])
    problems = verify_intermediate(pem, root_pem, expiry)
    csr_key = x509.load_pem_x509_csr(csr.encode('ascii')).public_key()
    if _public_key_der(load_cert(pem).public_key()) != _public_key_der(csr_key):
        problems.append('its public key is not the one of the CSR')
    if problems:
        raise OpenBaoError('The certificate signed for epoch %d is wrong: %s. Nothing was imported; the key %r is '
                           'removed by the next run' % (epoch, '; '.join(problems), key_name))
    if deviation and schedule.start(epoch) <= real_now:
        warnings.append('NotBefore of epoch %d is %+d s off start - skew_allowance (%s): OpenBao only backdates relative '
                        'to its own clock' % (epoch, deviation, isoformat(target_nb)))

    imported = _data(_request(client, 'POST', '%s/intermediate/set-signed' % int_mount,
                              'importing the signed intermediate of epoch %d' % epoch, data={'certificate': pem}))
    issuer_ids = list(imported.get('imported_issuers') or []) + list(imported.get('existing_issuers') or [])
    issuer_id = next((i for i in issuer_ids if (imported.get('mapping') or {}).get(i) == key_id), None)
    if not issuer_id:
        raise OpenBaoError('set-signed on %r did not map the certificate of epoch %d to key %r (mapping %r)'
                           % (int_mount, epoch, key_name, imported.get('mapping')))
    try:
        _name_issuer(client, int_mount, issuer_id, name)
    except OpenBaoError as exc:
        # Lost a race with a concurrent run that named its own epoch-<n>: drop ours.
        if exc.status == 400 and name in list_epoch_names(client, int_mount):
            _delete_issuer(client, int_mount, issuer_id, False)
            _delete_key(client, int_mount, key_id, False)
            retry = ensure_epoch_intermediate(
                client, schedule, epoch, root_mount=root_mount, int_mount=int_mount, cn_prefix=cn_prefix,
                key_type=key_type, key_bits=key_bits, root_issuer=root_issuer, check_mode=check_mode, now=now)
            retry['changed'] = True
            return retry
        raise
    facts = cert_facts(pem)
    facts.update(issuer_id=issuer_id, issuer_name=name, key_id=key_id, key_name=key_name, epoch=epoch,
                 revoked=False, leaf_not_after_behavior='truncate',
                 is_default=bool((list_issuers(client, int_mount).get(issuer_id) or {}).get('is_default')))
    result.update(facts)
    return result


def list_epoch_names(client, mount):
    return {info.get('issuer_name') for info in list_issuers(client, mount).values()}


def _cleanup_orphans(client, mount, keys, issuers, epoch, check_mode, result):
    for orphan in _orphan_keys(keys, issuers, epoch):
        _delete_key(client, mount, orphan['key_id'], check_mode)
        keys.pop(orphan['key_id'], None)
        result['orphan_keys_deleted'].append(orphan)
        result['changed'] = True


def _parse_iso(text):
    return datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=UTC)


def set_default_issuer(client, int_mount, issuer_name, check_mode=False, now=None):
    """Make ``issuer_name`` the default issuer of ``int_mount`` (the activation switch).

    Refuses a revoked, expired or not-yet-valid issuer (OpenBao itself would accept them).
    Returns ``changed``, ``previous_default`` and ``default`` (each ``{issuer_id, issuer_name}``).
    """
    now = now or utcnow()
    issuers = list_issuers(client, int_mount)
    target = next((iid for iid, info in issuers.items() if info.get('issuer_name') == issuer_name), None)
    if target is None:
        names = ', '.join(sorted(i.get('issuer_name') or iid for iid, i in issuers.items())) or 'none'
        raise OpenBaoError('Cannot activate %r: no issuer of that name on mount %r (issuers: %s)'
                           % (issuer_name, int_mount, names), path='%s/issuers' % int_mount)
    facts = read_issuer(client, int_mount, target)
    real_now = utcnow()
    if facts['revoked']:
        raise OpenBaoError('Refusing to make %r the default issuer of %r: it is revoked' % (issuer_name, int_mount))
    if _parse_iso(facts['not_after']) <= max(now, real_now):
        raise OpenBaoError('Refusing to make %r the default issuer of %r: its certificate expired at %s'
                           % (issuer_name, int_mount, facts['not_after']))
    if _parse_iso(facts['not_before']) > real_now:
        raise OpenBaoError('Refusing to make %r the default issuer of %r: its certificate is not valid before %s'
                           % (issuer_name, int_mount, facts['not_before']))
    if not facts['key_id']:
        raise OpenBaoError('Refusing to make %r the default issuer of %r: it has no private key' % (issuer_name, int_mount))
    data = _data(_request(client, 'GET', '%s/config/issuers' % int_mount, 'reading the default issuer'))
    previous = data.get('default') or None
    prev = {'issuer_id': previous, 'issuer_name': (issuers.get(previous) or {}).get('issuer_name') if previous else None}
    new = {'issuer_id': target, 'issuer_name': issuer_name}
    if previous == target:
        return {'changed': False, 'previous_default': prev, 'default': new}
    if not check_mode:
        _request(client, 'POST', '%s/config/issuers' % int_mount, 'setting the default issuer to %r' % issuer_name,
                 data={'default': target})
    return {'changed': True, 'previous_default': prev, 'default': new}


def prune_epoch_issuers(client, schedule, int_mount, grace_seconds, now=None, check_mode=False, assume_default=None):
    """Delete epoch issuers whose NotAfter (and schedule expiry) + ``grace_seconds`` has passed,
    then their keys (only keys no remaining issuer uses), then orphan ``epoch-<n>-*`` keys of
    such epochs. Never the default issuer, never an unexpired one.

    ``assume_default``: treat this issuer name as the default instead of what OpenBao says (check
    mode predicting a run that activates another issuer first).
    Returns ``changed``, ``deleted`` (issuer facts without PEM) and ``kept`` (with a reason).
    """
    now = now or utcnow()
    grace = datetime.timedelta(seconds=int(grace_seconds))
    issuers = list_issuers(client, int_mount)
    keys = list_keys(client, int_mount)
    result = {'changed': False, 'deleted': [], 'kept': [], 'orphan_keys_deleted': []}
    pruned_epochs = set()
    for issuer in list_epoch_issuers(client, int_mount, issuers, keys):
        n = issuer['epoch']
        ends = max(_parse_iso(issuer['not_after']), schedule.expiry(n))
        summary = {k: issuer[k] for k in ('epoch', 'issuer_id', 'issuer_name', 'key_id', 'key_name', 'not_after')}
        if now < ends + grace:
            continue
        is_default = issuer['is_default'] if assume_default is None else issuer['issuer_name'] == assume_default
        if is_default:
            result['kept'].append(dict(summary, reason='default issuer (activate a newer epoch first)'))
            continue
        _delete_issuer(client, int_mount, issuer['issuer_id'], check_mode)
        issuers.pop(issuer['issuer_id'], None)
        users = [iid for iid, info in issuers.items() if info.get('key_id') == issuer['key_id']]
        if issuer['key_id'] and not users:
            _delete_key(client, int_mount, issuer['key_id'], check_mode)
            keys.pop(issuer['key_id'], None)
        result['deleted'].append(summary)
        result['changed'] = True
        pruned_epochs.add(n)
    for orphan in _orphan_keys(keys, issuers):
        n = orphan['epoch']
        if n in pruned_epochs or now >= schedule.expiry(n) + grace:
            _delete_key(client, int_mount, orphan['key_id'], check_mode)
            result['orphan_keys_deleted'].append(orphan)
            result['changed'] = True
    return result


def remove_epoch_intermediate(client, int_mount, epoch, check_mode=False):
    """Delete issuer ``epoch-<n>`` and every key ``epoch-<n>-*`` no other issuer uses (state=absent).

    Refuses the default issuer."""
    name = 'epoch-%d' % epoch
    issuers = list_issuers(client, int_mount)
    keys = list_keys(client, int_mount)
    result = {'changed': False, 'deleted': [], 'orphan_keys_deleted': []}
    for issuer_id, info in list(issuers.items()):
        if info.get('issuer_name') != name:
            continue
        if info.get('is_default'):
            raise OpenBaoError('Refusing to delete %r on %r: it is the default issuer; activate another epoch first'
                               % (name, int_mount))
        _delete_issuer(client, int_mount, issuer_id, check_mode)
        issuers.pop(issuer_id)
        result['deleted'].append({'epoch': epoch, 'issuer_id': issuer_id, 'issuer_name': name,
                                  'key_id': info.get('key_id')})
        result['changed'] = True
    _cleanup_orphans(client, int_mount, keys, issuers, epoch, check_mode, result)
    return result


# --------------------------------------------------------------------------- leaves
def _local_key_and_csr(key_type, key_bits, common_name, alt_names=(), ip_sans=()):
    if key_type == 'ec':
        curve = {0: ec.SECP256R1, 256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}.get(int(key_bits or 0))
        if curve is None:
            raise OpenBaoError('key_bits %r is not an EC size (256, 384, 521)' % key_bits)
        key = ec.generate_private_key(curve())
    elif key_type == 'rsa':
        bits = int(key_bits or 2048)
        if bits < 2048:
            raise OpenBaoError('key_bits %r is too small for RSA (use 2048 or more)' % key_bits)
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif key_type == 'ed25519':
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise OpenBaoError('key_type must be one of %s, got %r' % (', '.join(KEY_TYPES), key_type))
    algorithm = None if key_type == 'ed25519' else hashes.SHA256()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
    # Roles default to use_csr_sans=true, so the SANs must be in the CSR too.
    sans = [x509.DNSName(n) for n in alt_names]
    try:
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans]
    except ValueError as exc:
        raise OpenBaoError('Invalid ip_sans entry: %s' % exc) from None
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, algorithm)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode('ascii')
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode('ascii')


def issue_leaf(client, *, int_mount, role, common_name, alt_names=(), ip_sans=(), ttl=None, issuer_ref=None,
               key_type=None, key_bits=0, local_key=False):
    """Issue a leaf certificate from role ``role`` on ``int_mount``.

    ``local_key`` False: OpenBao generates the key (``issue``); ``key_type``/``key_bits`` are sent
    when given (needed for roles with ``key_type=any``). ``local_key`` True: the key is generated
    here (``key_type`` default ec) and only a CSR goes to OpenBao (``sign``; the role must allow
    that key type). ``issuer_ref`` None uses the mount's default issuer.
    Returns certificate, private_key, ca_chain (list of PEM, issuing CA first), issuing_ca,
    serial, not_before, not_after, issuer_id, issuer_name, epoch.
    """
    base = '%s/issuer/%s' % (int_mount, issuer_ref) if issuer_ref else int_mount
    payload = {'common_name': common_name, 'format': 'pem'}
    if alt_names:
        payload['alt_names'] = ','.join(alt_names)
    if ip_sans:
        payload['ip_sans'] = ','.join(ip_sans)
    if ttl:
        payload['ttl'] = str(ttl)
    if local_key:
        private_key, csr = _local_key_and_csr(key_type or 'ec', key_bits, common_name, alt_names, ip_sans)
        payload['csr'] = csr
        path, operation = '%s/sign/%s' % (base, role), 'signing a leaf certificate'
    else:
        private_key = None
        payload['private_key_format'] = 'pkcs8'
        if key_type:
            payload['key_type'] = key_type
            payload['key_bits'] = int(key_bits or 0)
        path, operation = '%s/issue/%s' % (base, role), 'issuing a leaf certificate'
    data = _data(_request(client, 'POST', path, operation, data=payload))
    if not data.get('certificate'):
        raise OpenBaoError('%s at %r returned no certificate' % (operation, path), path=path)
    private_key = private_key or data.get('private_key')
    issuing_ca = _normalize_pem(data.get('issuing_ca') or '')
    chain = [_normalize_pem(c) for c in data.get('ca_chain') or [issuing_ca] if c and c.strip()]
    facts = cert_facts(data['certificate'])
    issuer_id, issuer_name = _issuer_by_serial(client, int_mount, issuing_ca)
    return {
        'certificate': facts['certificate'], 'private_key': private_key, 'ca_chain': chain,
        'issuing_ca': issuing_ca, 'serial': facts['serial'], 'not_before': facts['not_before'],
        'not_after': facts['not_after'], 'common_name': facts['common_name'], 'sha256': facts['sha256'],
        'issuer_id': issuer_id, 'issuer_name': issuer_name, 'epoch': epoch_of(issuer_name),
    }


def _issuer_by_serial(client, mount, issuing_ca_pem):
    """(issuer_id, issuer_name) of the issuer whose certificate is ``issuing_ca_pem`` (best effort)."""
    try:
        serial = serial_hex(load_cert(issuing_ca_pem).serial_number)
        issuers = list_issuers(client, mount)
    except (OpenBaoError, ValueError):
        return None, None
    for issuer_id, info in issuers.items():
        if (info.get('serial_number') or '').lower() == serial:
            return issuer_id, info.get('issuer_name') or None
    return None, None


def issuer_certificates(client, mount):
    """``{issuer_id: {issuer_name, is_default, certificate}}`` through the unauthenticated endpoints
    (LIST issuers + issuer/<id>/json), for callers whose token may only issue leaves."""
    out = {}
    for issuer_id, info in list_issuers(client, mount).items():
        data = _data(_request(client, 'GET', '%s/issuer/%s/json' % (mount, issuer_id), 'reading issuer certificate'))
        out[issuer_id] = {'issuer_name': info.get('issuer_name') or '', 'is_default': bool(info.get('is_default')),
                          'certificate': data.get('certificate'),
                          'ca_chain': [_normalize_pem(c) for c in data.get('ca_chain') or [] if c and c.strip()]}
    return out


# --------------------------------------------------------------------------- leaf files
_PEM_CERT_RE = re.compile(r'-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----', re.DOTALL)


def split_pem_certs(text):
    """Every PEM certificate block in ``text``, normalised (``\\n``-terminated)."""
    return [_normalize_pem(block) for block in _PEM_CERT_RE.findall(text or '')]


def parse_renew_before(value, option='renew_before'):
    """``('fraction', f)`` for ``'33%'`` / ``0.33``-style values, else ``('seconds', n)`` for a duration."""
    text = str(value).strip()
    if text.endswith('%'):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise EpochError('Invalid %s %r: a percentage must be a number followed by %%' % (option, value), option=option) from None
        if not 0 < pct < 100:
            raise EpochError('Invalid %s %r: the percentage must be between 0 and 100 (exclusive)' % (option, value),
                             option=option)
        return ('fraction', pct / 100.0)
    if re.fullmatch(r'0?\.\d+', text):
        return ('fraction', float(text))
    return ('seconds', parse_duration(value, option))


def renewal_threshold(renew_before, not_before, not_after):
    """Moment from which a leaf valid ``not_before``..``not_after`` must be renewed."""
    kind, amount = renew_before
    if kind == 'fraction':
        return not_after - datetime.timedelta(seconds=(not_after - not_before).total_seconds() * amount)
    return not_after - datetime.timedelta(seconds=amount)


def _private_key_matches(cert, key_pem):
    try:
        key = serialization.load_pem_private_key(key_pem.encode('ascii') if isinstance(key_pem, str) else key_pem, None)
    except (ValueError, TypeError):
        return False
    return _public_key_der(key.public_key()) == _public_key_der(cert.public_key())


def read_leaf_files(cert_file, key_file):
    """What is on disk: ``{'problem': str|None, 'cert': x509|None, 'cert_text': str|None, 'key_ok': bool}``.

    Never returns the key material itself."""
    out = {'problem': None, 'cert': None, 'cert_text': None, 'key_ok': False}
    try:
        with open(cert_file, 'r', encoding='utf-8') as handle:
            out['cert_text'] = handle.read()
    except FileNotFoundError:
        out['problem'] = 'certificate file %s does not exist' % cert_file
        return out
    except (OSError, UnicodeDecodeError) as exc:
        out['problem'] = 'certificate file %s is unreadable (%s)' % (cert_file, exc)
        return out
    blocks = split_pem_certs(out['cert_text'])
    try:
        out['cert'] = load_cert(blocks[0]) if blocks else None
    except ValueError:
        out['cert'] = None
    if out['cert'] is None:
        out['problem'] = 'certificate file %s holds no valid PEM certificate' % cert_file
        return out
    try:
        with open(key_file, 'r', encoding='utf-8') as handle:
            out['key_ok'] = _private_key_matches(out['cert'], handle.read())
    except FileNotFoundError:
        out['problem'] = 'key file %s does not exist' % key_file
        return out
    except (OSError, UnicodeDecodeError) as exc:
        out['problem'] = 'key file %s is unreadable (%s)' % (key_file, exc)
        return out
    if not out['key_ok']:
        out['problem'] = 'key file %s does not hold the private key of the certificate' % key_file
    return out


def _san_sets(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def find_leaf_issuer(cert, issuers):
    """The issuer (from :func:`issuer_certificates`) whose certificate signed ``cert``: ``(id, info)`` or ``(None, None)``."""
    for issuer_id, info in issuers.items():
        if not info.get('certificate'):
            continue
        ca = load_cert(info['certificate'])
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # pylint: disable=broad-except
            continue
        return issuer_id, info
    return None, None


def leaf_renewal_reasons(cert, *, common_name, alt_names=(), ip_sans=(), renew_before=('fraction', 1 / 3.0), now,
                         issuer=None, issuers=None, issuer_ref=None, renew_if_not_default=True, schedule=None):
    """Why an existing, readable leaf ``cert`` must be re-issued (empty list: keep it).

    ``issuer``: ``(issuer_id, info)`` that signed it (None when not found on the mount);
    ``issuers``: all issuers of the mount (:func:`issuer_certificates`), for the default.
    """
    reasons = []
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now >= not_after:
        reasons.append('the certificate expired at %s' % isoformat(not_after))
    elif now >= renewal_threshold(renew_before, not_before, not_after):
        reasons.append('the certificate expires at %s, within the renewal window' % isoformat(not_after))
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != common_name:
        reasons.append('the common name is %r, not %r' % (cn[0].value if cn else None, common_name))
    dns, ips = _san_sets(cert)
    missing = sorted(set(alt_names) - dns) + sorted({str(ip) for ip in ip_sans} - ips)
    if missing:
        reasons.append('subject alternative names missing: %s' % ', '.join(missing))
    if issuers is not None:
        issuer_id, info = issuer or (None, None)
        if issuer_id is None:
            reasons.append('its issuing CA is no longer an issuer of the mount')
        else:
            name = info.get('issuer_name') or issuer_id
            n = epoch_of(info.get('issuer_name'))
            if issuer_ref:
                if issuer_ref not in (issuer_id, info.get('issuer_name')):
                    reasons.append('it was issued by %s, not by issuer_ref %s' % (name, issuer_ref))
            elif renew_if_not_default and not info.get('is_default'):
                default = next((i.get('issuer_name') or iid for iid, i in issuers.items() if i.get('is_default')), None)
                reasons.append('it was issued by %s, which is no longer the default issuer (%s)' % (name, default))
            if schedule is not None and n is not None and schedule.state(n, now) == 'expired':
                reasons.append('its issuing epoch %d has expired' % n)
    return reasons


def parse_mode(value, option):
    """File mode from ``'0644'`` / ``'644'`` / ``0o644`` / ``420``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            raise OpenBaoError('%s %r is not an octal file mode such as 0644' % (option, value)) from None
    if not 0 <= mode <= 0o7777:
        raise OpenBaoError('%s %r is out of range' % (option, value))
    return mode


def _resolve_owner(owner, group):
    import grp  # pylint: disable=import-outside-toplevel
    import pwd  # pylint: disable=import-outside-toplevel
    uid = gid = -1
    try:
        if owner is not None:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        if group is not None:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise OpenBaoError('Unknown owner/group %s' % exc) from None
    return uid, gid


def file_needs_write(path, content, mode, owner=None, group=None):
    """``(content_differs, attributes_differ)`` for ``path``."""
    try:
        with open(path, 'rb') as handle:
            current = handle.read()
        st = os.stat(path)
    except FileNotFoundError:
        return True, True
    uid, gid = _resolve_owner(owner, group)
    attrs = (mode is not None and (st.st_mode & 0o7777) != mode) or (uid != -1 and st.st_uid != uid) \
        or (gid != -1 and st.st_gid != gid)
    return current != content.encode('utf-8'), bool(attrs)


def atomic_write(path, content, mode, owner=None, group=None):
    """Write ``content`` to ``path`` atomically (temp file in the same directory, fsync, rename),
    created with ``mode`` from the start so a private key is never readable by others."""
    import tempfile  # pylint: disable=import-outside-toplevel
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OpenBaoError('Directory %s of %s does not exist' % (directory, path))
    uid, gid = _resolve_owner(owner, group)
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        os.fchmod(fd, 0o600 if mode is None else mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(content.encode('utf-8'))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OpenBaoError('Cannot write %s: %s' % (path, exc.strerror or exc)) from None
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass


def set_attributes(path, mode, owner=None, group=None):
    uid, gid = _resolve_owner(owner, group)
    try:
        if mode is not None:
            os.chmod(path, mode)
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)
    except OSError as exc:
        raise OpenBaoError('Cannot set mode/owner of %s: %s' % (path, exc.strerror or exc)) from None

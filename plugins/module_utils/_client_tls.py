# -*- coding: utf-8 -*-
# Copyright: (c) 2025, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS for client services that follow the CA bundle (tier 3, DESIGN sections 1 and 4).

Importable by any Python service that installed the collection
(``from ansible_collections.securetransport.ca_rotation.plugins.module_utils._client_tls import ReloadingTLS``);
standard library only (with ``_common``: errors, PEM, digest, the TLS context builder).

* :func:`ssl_context_from_bundle` builds a client ``ssl.SSLContext`` from the CA bundle file
  (and an optional client certificate for mutual TLS). When the bundle holds no self-signed
  root (``include_root: false``: trust is exactly the listed epochs), it sets
  ``ssl.VERIFY_X509_PARTIAL_CHAIN`` so that an intermediate is a trust anchor by itself --
  Python's ``ssl`` refuses such chains otherwise (DESIGN section 10).

* :class:`ReloadingTLS` keeps a service's TLS trust in step with the bundle file without
  restarting the service or replacing its NATS client. How it works with nats-py:

  - nats-py keeps the ``tls`` context given to ``connect()`` in ``Client.options['tls']`` and
    hands it to asyncio for every TLS handshake -- the first connect and every reconnect.
  - ``ReloadingTLS.context`` is that object: an ``ssl.SSLContext`` whose ``wrap_bio`` /
    ``wrap_socket`` first check the bundle (and client certificate/key) files -- a ``stat``
    of each, cheap -- rebuild the real context when they changed, and then delegate the
    handshake to the newest good context. So a new bundle applies at the next (re)connect,
    with the SAME ``Client``: its subscriptions, its request inbox and the pending
    acknowledgements of JetStream messages it consumes are kept, because nothing is closed
    or recreated.
  - A bundle that does not load (truncated, garbage, a key that does not match its
    certificate yet) is not used: the last good context stays, ``last_error`` says why and
    the next handshake tries again.
  - Nothing forces a reconnect by default. That is the trade-off, and it is deliberate:
    connections that are up stay up across a server reload, even when their epoch is no
    longer trusted (DESIGN section 10), so there is no need to drop them; the new trust
    matters exactly when a connection is made. ``watch(client, reconnect=True)`` (or a
    manual ``await client.force_reconnect()``) re-handshakes at once when you want to prove
    the new trust immediately; requests in flight at that moment (for example a JetStream
    PubAck) may then time out, and a publisher must retry them with the same
    ``Nats-Msg-Id`` so that JetStream de-duplicates them (see ``examples/ca_aware_service.py``).

``ca-bundle-sync`` (``scripts/ca-bundle-sync``) writes the bundle file atomically (rename),
so a handshake never sees half a file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.digest import sha256_hex
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError, TLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.tls import client_context, has_root

LOG = logging.getLogger(__name__)


class ClientTLSError(CaRotationError, ValueError):
    """The bundle or the client certificate cannot be used; the message names the file and the problem.

    Also a ValueError (as it always was), so ``except ValueError`` keeps catching it.
    """

    def __init__(self, message, path=None):
        super().__init__(message, path=path)


def _read(path, what):
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except OSError as exc:
        raise ClientTLSError('Cannot read the %s %s: %s' % (what, path, exc.strerror or exc), path) from None


def bundle_certificates(pem_text):
    """The PEM certificate blocks of a bundle, in order (text outside the blocks is ignored)."""
    return pem_certificates(pem_text)


def _build(pem_text, bundle_path, cert_file, key_file, partial_chain, check_hostname):
    blocks = bundle_certificates(pem_text)
    if not blocks:
        raise ClientTLSError('The CA bundle %s holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)'
                             % bundle_path, bundle_path)
    try:
        context = client_context(cert_file=cert_file, key_file=key_file or None, partial_chain=partial_chain,
                                 ca_data=''.join(blocks), check_hostname=bool(check_hostname))
    except TLSError as exc:
        if exc.option == 'ca_file':
            raise ClientTLSError('The CA bundle %s does not load: %s' % (bundle_path, exc.error), bundle_path) from None
        if exc.option == 'key_file':
            raise ClientTLSError('key_file %s is given without cert_file: give both for mutual TLS' % key_file, key_file) from None
        raise ClientTLSError('Cannot load the client certificate %s with key %s: %s (both must be PEM and the key must '
                             'match the certificate)' % (cert_file, key_file or cert_file,
                                                         getattr(exc.error, 'strerror', None) or exc.error), cert_file) from None
    info = {'certificates': len(blocks), 'has_root': has_root(context),
            'partial_chain': bool(context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN),
            'bundle_sha256': sha256_hex(pem_text)}
    return context, info


def bundle_has_root(pem_text):
    """Whether the bundle holds a self-signed certificate (a root), by subject == issuer."""
    return _build(pem_text, '(bundle)', None, None, None, True)[1]['has_root']


def ssl_context_from_bundle(bundle_path, cert_file=None, key_file=None, partial_chain=None, check_hostname=True):
    """A client ``ssl.SSLContext`` trusting exactly the certificates of the bundle file.

    TLS 1.2 or newer, server certificate and host name verified. ``partial_chain``: ``None``
    (default) sets ``ssl.VERIFY_X509_PARTIAL_CHAIN`` when the bundle has no self-signed root,
    ``True``/``False`` force it. ``cert_file``/``key_file``: client certificate (chain) and key for
    mutual TLS (``key_file`` may be omitted when the key is in ``cert_file``). Raises
    :class:`ClientTLSError` naming the file and the problem.
    """
    pem = _read(bundle_path, 'CA bundle')
    context, _info = _build(pem, bundle_path, cert_file, key_file, partial_chain, check_hostname)
    return context


def _file_key(path):
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        return ('missing', exc.errno)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class _ReloadingContext(ssl.SSLContext):
    """An SSLContext that delegates each handshake to the newest context of its :class:`ReloadingTLS`.

    Settings made on this object itself are not used: configure through ReloadingTLS.
    """

    def __new__(cls, owner):  # pylint: disable=unused-argument
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self, owner):  # pylint: disable=super-init-not-called
        self._securetransport_owner = owner

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        current = self._securetransport_owner.context_for_handshake()
        return current.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname, session=session)

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
                    server_hostname=None, session=None):
        current = self._securetransport_owner.context_for_handshake()
        return current.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                                   suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname, session=session)


class ReloadingTLS:
    """Client TLS that follows the CA bundle file (and client certificate/key files) as they change.

    ::

        tls = ReloadingTLS('/etc/myservice/ca-bundle.pem', cert_file='/etc/myservice/client.pem',
                           key_file='/etc/myservice/client-key.pem')
        nc = await nats.connect(servers, tls=tls.context, max_reconnect_attempts=-1)
        # optional: notice changes without waiting for a reconnect, and log them
        watcher = asyncio.create_task(tls.watch(interval=10))

    The constructor loads the files once and raises :class:`ClientTLSError` if they are unusable
    (a service should not start without trust). Later changes are picked up by :meth:`refresh`,
    which runs before every handshake made through :attr:`context`, from :meth:`watch`, or when
    you call it (e.g. from a SIGHUP handler, which is what ``ca-bundle-sync --pid-file`` sends).

    Attributes: ``context`` (give it to nats-py as ``tls=``), ``current`` (the plain context in
    use), ``bundle_sha256``, ``info`` (certificates, has_root, partial_chain), ``reloads``
    (number of rebuilds after the first load), ``loaded_at`` (time.time()), ``last_error``
    (text of the last failed rebuild, or None).
    """

    def __init__(self, bundle_path, cert_file=None, key_file=None, partial_chain=None, check_hostname=True,
                 on_reload=None, logger=None):
        self.bundle_path = bundle_path
        self.cert_file = cert_file
        self.key_file = key_file
        self.partial_chain = partial_chain
        self.check_hostname = check_hostname
        self.on_reload = on_reload
        self.log = logger or LOG
        self.reloads = 0
        self.last_error = None
        self._lock = threading.RLock()
        self._keys = None
        self._failed_keys = None
        self.current = None
        self.info = {}
        self.loaded_at = None
        self._rebuild(self._stat())
        self.context = _ReloadingContext(self)

    @property
    def bundle_sha256(self):
        return self.info.get('bundle_sha256')

    def _stat(self):
        return (_file_key(self.bundle_path), _file_key(self.cert_file), _file_key(self.key_file))

    def _rebuild(self, keys):
        pem = _read(self.bundle_path, 'CA bundle')
        context, info = _build(pem, self.bundle_path, self.cert_file, self.key_file, self.partial_chain, self.check_hostname)
        self.current = context
        self.info = info
        self._keys = keys
        self.loaded_at = time.time()

    def refresh(self, force=False):
        """Rebuild the context if a file changed (or ``force``). Returns True when a new context is in use.

        Never raises for a bad file: the previous context stays, ``last_error`` is set and the
        problem is logged once per change.
        """
        with self._lock:
            keys = self._stat()
            if not force and keys == self._keys:
                return False
            if not force and keys == self._failed_keys:
                return False  # already reported; wait for the next change
            before = self.bundle_sha256
            old_info = self.info
            try:
                self._rebuild(keys)
            except ClientTLSError as exc:
                self.last_error = str(exc)
                self._failed_keys = keys
                self.log.warning('TLS files changed but cannot be used, keeping the previous context: %s', exc)
                return False
            self.last_error = None
            self._failed_keys = None
            self.reloads += 1
            self.log.info('TLS context rebuilt: bundle sha256 %s -> %s (%d certificates, partial_chain=%s)',
                          (before or '')[:16], self.bundle_sha256[:16], self.info['certificates'], self.info['partial_chain'])
            changed_info = dict(self.info, previous_bundle_sha256=old_info.get('bundle_sha256'))
        if self.on_reload is not None:
            try:
                self.on_reload(changed_info)
            except Exception:  # a callback must not break a handshake  # pylint: disable=broad-except
                self.log.exception('on_reload callback failed')
        return True

    def context_for_handshake(self):
        """Refresh if needed and return the plain context to handshake with (used by :attr:`context`)."""
        self.refresh()
        return self.current

    async def watch(self, client=None, interval=5.0, reconnect=False, stop=None):
        """Poll the files every ``interval`` seconds until ``stop`` (an asyncio.Event) is set or the task is cancelled.

        With ``client`` and ``reconnect=True``, a changed context is applied at once through
        ``client.force_reconnect()`` (nats-py >= 2.7); otherwise it applies at the next reconnect.
        """
        while stop is None or not stop.is_set():
            if self.refresh() and reconnect and client is not None and getattr(client, 'is_connected', False):
                await client.force_reconnect()
            if stop is None:
                await asyncio.sleep(interval)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except asyncio.TimeoutError:
                    pass

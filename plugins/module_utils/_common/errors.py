# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The error base class of the collection, and the errors of ``_common`` itself (private).

Every error the collection raises for an operator is a :class:`CaRotationError`: catching it catches
them all (``except CaRotationError as err: module.fail_json(msg=str(err), option=err.option)``).
Each system keeps its own subclass (``OpenBaoError``, ``BundleError``, ``NatsError``, ...) with its
own extra attributes; the base carries what several of them have in common.
"""

from __future__ import annotations


class CaRotationError(Exception):
    """A failure with a message meant for the operator.

    ``option``: the offending option, when there is one; ``path``: the file or API path involved;
    ``status``: an HTTP-like status of the failed call. Each is None when it does not apply.
    """

    #: attributes a module returns next to ``msg`` when they are set (subclasses add their own)
    DETAILS = ('option', 'path', 'status')

    def __init__(self, message, option=None, path=None, status=None):
        super().__init__(message)
        self.option = option
        self.path = path
        self.status = status

    def details(self):
        """The set attributes of :data:`DETAILS`, for ``fail_json``."""
        out = {}
        for name in self.DETAILS:
            value = getattr(self, name, None)
            if value not in (None, [], {}):
                out[name] = value
        return out


class FileError(CaRotationError):
    """A file could not be read, written or given its mode/owner (see :mod:`.files`)."""


class PemError(CaRotationError):
    """Text that is not the PEM certificates it should be (see :func:`.pem.pem_certificates`)."""


class TLSError(CaRotationError):
    """A TLS context that cannot be built, or a NATS TLS connection that failed (see :mod:`.tls`).

    ``option``: ``ca_file``, ``cert_file`` or ``key_file`` for a context; ``stage``: ``connect``,
    ``greeting``, ``no-tls``, ``verify`` or ``handshake`` for a connection; ``error``: the
    underlying ``ssl`` / ``OSError`` exception, if any.
    """

    def __init__(self, message, option=None, path=None, stage=None, error=None):
        super().__init__(message, option=option, path=path)
        self.stage = stage
        self.error = error

# -*- coding: utf-8 -*-
"""module_utils/_common/errors.py: one base class under every error of the collection, each keeping its name,
constructor and attributes (and the ValueError ones staying ValueErrors)."""

from __future__ import annotations

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._audit import AuditError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._client_tls import ClientTLSError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import (
    CaRotationError,
    FileError,
    PemError,
    TLSError,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._k8s.client import K8sError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import MessageError, MessageVerificationError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.jetstream import JetStreamAPIError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NatsError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError, TargetError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._state import CasConflict, StateError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.gather import StatusError


@pytest.mark.parametrize('exc, attrs', [
    (BundleError('m', option='o', results=[1]), {'option': 'o', 'results': [1], 'path': None, 'status': None}),
    (OpenBaoError('m', operation='op', path='p', status=403, errors=['e']),
     {'operation': 'op', 'path': 'p', 'status': 403, 'errors': ['e'], 'option': None}),
    (K8sError('m', status=409), {'status': 409, 'option': None, 'path': None}),
    (NatsError('m', 'tls', [{'server': 's'}], option='ca_file'), {'kind': 'tls', 'failures': [{'server': 's'}], 'option': 'ca_file'}),
    (JetStreamAPIError('m', 503, 10008, 'd'), {'kind': 'jetstream', 'code': 503, 'err_code': 10008, 'description': 'd'}),
    (ReloadError('m', option='targets'), {'option': 'targets'}),
    (TargetError('m', permanent=True), {'permanent': True, 'option': None}),
    (StateError('m'), {'option': None}),
    (CasConflict('m'), {'option': None}),
    (MessageError('m', 'epoch'), {'field': 'epoch'}),
    (MessageVerificationError('m', 'bad-signature', 'signature'), {'reason': 'bad-signature', 'field': 'signature'}),
    (StatusError('m', option='bundle_path'), {'option': 'bundle_path'}),
    (EpochError('m', option='epoch_zero'), {'option': 'epoch_zero'}),
    (AuditError('m', kind='chain'), {'kind': 'chain'}),
    (ClientTLSError('m', '/etc/ca.pem'), {'path': '/etc/ca.pem', 'option': None}),
    (FileError('m'), {}),
    (PemError('m'), {}),
    (TLSError('m', option='cert_file', stage='verify', error=None), {'option': 'cert_file', 'stage': 'verify'}),
])
def test_every_error_is_a_ca_rotation_error(exc, attrs):
    assert isinstance(exc, CaRotationError) and str(exc) == 'm' and exc.args == ('m',)
    for name, value in attrs.items():
        assert getattr(exc, name) == value, name


@pytest.mark.parametrize('cls', [EpochError, MessageError, MessageVerificationError, ClientTLSError])
def test_the_value_errors_stay_value_errors(cls):
    assert issubclass(cls, ValueError) and issubclass(cls, CaRotationError)
    with pytest.raises(ValueError):
        raise cls('m')

# -*- coding: utf-8 -*-
"""audit_record: argument handling that fails before any service is contacted (real main(), patched args)."""

from __future__ import annotations

import pytest

BASE = {'nats': {'servers': ['tls://127.0.0.1:1']}, 'openbao': {'url': 'http://127.0.0.1:1', 'token': 'x'},
        'epoch': 1, 'generation': 1, 'bundle_sha256': 'ab' * 32}


@pytest.mark.parametrize('change, text, option', [
    ({'replicas': 6}, 'replicas must be between 1 and 5', 'replicas'),
    ({'timeout': 0}, 'timeout must be a positive', 'timeout'),
    ({'stream': 'bad.name'}, 'not a valid stream name', 'stream'),
    ({'epoch': None}, 'epoch is required', None),
    ({'generation': None, 'report': {'epoch': 3}}, 'generation is required', None),
    ({'at': '2025-01-01T00:00:00'}, 'timezone', 'at'),
    ({'reloads': [{'ok': True}]}, 'reloads[0].name', None),
])
def test_fails_early_with_a_clear_message(run_module, change, text, option):
    params = dict(BASE)
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    result = run_module('audit_record', params)
    assert result['failed'] and text in result['msg'], result
    if option:
        assert result.get('option') == option


def test_kind_choices(run_module):
    result = run_module('audit_record', dict(BASE, kind='upgrade'))
    assert result['failed'] and 'kind' in result['msg']

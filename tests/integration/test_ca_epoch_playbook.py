# -*- coding: utf-8 -*-
"""ca_epoch and the epoch filters through ansible-playbook, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ansible_playbook  # tests/helpers.py (ANSIBLE_COLLECTIONS_PATH = <repo>/.build/collections)

PLAYBOOK = Path(__file__).resolve().parent / 'playbooks' / 'ca_epoch.yml'


def test_ca_epoch_playbook(tmp_path):
    result_file = tmp_path / 'result.json'
    proc = ansible_playbook(PLAYBOOK, extra_vars={'result_file': str(result_file)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(result_file.read_text(encoding='utf-8'))

    fixed = result['fixed']
    assert fixed['changed'] is False
    assert fixed['current_epoch'] == 3
    assert fixed['prepared_epoch'] == 4
    assert fixed['desired_epochs'] == [0, 1, 2, 3, 4]
    assert fixed['schedule'] == {'epoch_zero': '2025-01-01T00:00:00Z', 'epoch_duration': 20, 'validity': 80,
                                 'lead_time': 5, 'skew_allowance': 2}
    assert fixed['epoch'] == {'epoch': 0, 'start': '2025-01-01T00:00:00Z', 'expiry': '2025-01-01T00:01:20Z',
                              'not_before': '2024-12-31T23:59:58Z', 'preparation_at': '2024-12-31T23:59:55Z',
                              'state': 'valid', 'valid': True}
    assert [(e['epoch'], e['state']) for e in fixed['timeline']] == [
        (0, 'valid'), (1, 'valid'), (2, 'valid'), (3, 'current'), (4, 'prepared')]

    checked = result['checked']
    for key in ('current_epoch', 'desired_epochs', 'valid_epochs', 'timeline', 'now'):
        assert checked[key] == fixed[key]

    live = result['live']
    assert live['schedule']['epoch_duration'] == 21600
    assert len(live['valid_epochs']) == 4
    assert live['current_start'] <= live['now'] < live['next_epoch_start']

    assert result['filters'] == {
        'epoch_number': 3,
        'epoch_start': '2025-01-01T00:01:00Z',
        'epoch_expiry': '2025-01-01T00:02:20Z',
        'epoch_not_before': '2025-01-01T00:00:58Z',
        'epoch_valid_epochs': [0, 1, 2, 3],
        'epoch_prepared': 4,
        'epoch_info': {'epoch': 4, 'start': '2025-01-01T00:01:20Z', 'expiry': '2025-01-01T00:02:40Z',
                       'not_before': '2025-01-01T00:01:18Z', 'preparation_at': '2025-01-01T00:01:15Z',
                       'state': 'prepared', 'valid': False},
        'epoch_plan_current': 3,
        'duration_seconds': 5400,
    }


def test_ca_epoch_playbook_bad_duration(tmp_path):
    result_file = tmp_path / 'result.json'
    proc = ansible_playbook(PLAYBOOK, extra_vars={'result_file': str(result_file), 'ca_epoch_duration': 'soon'})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert not result_file.exists()
    # the user sees which option is wrong and what is accepted
    assert "Invalid epoch_duration 'soon'" in output
    assert 'PT20M' in output
    assert '"option": "epoch_duration"' in output
    assert 'failed=1' in output

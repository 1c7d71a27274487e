"""The state file (what was applied last, and the counters behind the metrics) and the Prometheus metrics text."""

from __future__ import annotations

import json

from catools.sync.common import ConfigError, number

from catools.sync.files import atomic_write, read_text

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError  # noqa: E402

STATE_SCHEMA = 'securetransport.ca_bundle_sync_state/v1'
METRIC_PREFIX = 'ca_bundle_sync_'
#: Failure reasons always present in the metrics (0 until they happen), so rate() works from the start.
FAILURE_REASONS = ('nats', 'keys', 'write', 'reload', 'state', 'ack', 'max-deliver')


class State:
    """What was applied last, and the counters behind the metrics. Written atomically (0600)."""

    def __init__(self, path):
        self.path = path
        self.generation = 0
        self.epoch = None
        self.bundle_sha256 = None
        self.kind = None
        self.msg_id = None
        self.stream_sequence = None
        self.applied_at = None
        self.applied_ts = 0.0
        self.last_success_ts = 0.0
        self.failures = {}
        self.invalid = 0

    @classmethod
    def load(cls, path):
        state = cls(path)
        try:
            text = read_text(path)
        except (FileError, OSError, UnicodeDecodeError) as exc:
            raise ConfigError('Cannot read the state file %s: %s' % (path, getattr(exc, 'strerror', None) or exc)) from None
        if text is None:
            return state
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get('schema') != STATE_SCHEMA:
                raise ValueError('not a %s document' % STATE_SCHEMA)
            generation = data.get('generation', 0)
            if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
                raise ValueError('generation must be an integer >= 0')
            state.generation = generation
            state.epoch = data.get('epoch')
            state.bundle_sha256 = data.get('bundle_sha256')
            state.kind = data.get('kind')
            state.msg_id = data.get('msg_id')
            state.stream_sequence = data.get('stream_sequence')
            state.applied_at = data.get('applied_at')
            state.applied_ts = float(data.get('applied_ts') or 0)
            state.last_success_ts = float(data.get('last_success_ts') or 0)
            counters = data.get('counters') or {}
            state.failures = {str(k): int(v) for k, v in (counters.get('failures') or {}).items()}
            state.invalid = int(counters.get('invalid') or 0)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError('The state file %s is corrupt (%s). It records the last applied generation; fix it, or delete it '
                              'and run with --resync to apply the newest announcement again' % (path, exc)) from None
        return state

    def to_dict(self):
        return {
            'schema': STATE_SCHEMA, 'generation': self.generation, 'epoch': self.epoch, 'bundle_sha256': self.bundle_sha256,
            'kind': self.kind, 'msg_id': self.msg_id, 'stream_sequence': self.stream_sequence, 'applied_at': self.applied_at,
            'applied_ts': self.applied_ts, 'last_success_ts': self.last_success_ts,
            'counters': {'failures': dict(sorted(self.failures.items())), 'invalid': self.invalid},
        }

    def save(self):
        atomic_write(self.path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n', 0o600)

    def count_failure(self, reason):
        self.failures[reason] = self.failures.get(reason, 0) + 1


def _label(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def render_metrics(service, state, bundle_matches, run_ts):
    """Prometheus text exposition of the sync metrics."""
    svc = 'service="%s"' % _label(service)
    lines = []

    def metric(name, kind, text, samples):
        lines.append('# HELP %s%s %s' % (METRIC_PREFIX, name, text))
        lines.append('# TYPE %s%s %s' % (METRIC_PREFIX, name, kind))
        for labels, value in samples:
            lines.append('%s%s{%s} %s' % (METRIC_PREFIX, name, labels, number(value)))

    metric('last_applied_generation', 'gauge', 'Generation of the last CA bundle announcement applied (0: none yet).',
           [(svc, state.generation)])
    metric('last_applied_epoch', 'gauge', 'Epoch of the last CA bundle applied (-1: none yet).',
           [(svc, state.epoch if isinstance(state.epoch, int) else -1)])
    metric('last_applied_timestamp_seconds', 'gauge', 'Unix time the last CA bundle was applied (0: never).', [(svc, state.applied_ts)])
    metric('last_success_timestamp_seconds', 'gauge', 'Unix time of the last sync pass without failure (applied, or nothing new).',
           [(svc, state.last_success_ts)])
    metric('last_run_timestamp_seconds', 'gauge', 'Unix time these metrics were written.', [(svc, run_ts)])
    metric('bundle_file_matches', 'gauge', '1 when the bundle file holds the bytes of the last applied bundle, else 0.',
           [(svc, 1 if bundle_matches else 0)])
    reasons = sorted(set(FAILURE_REASONS) | set(state.failures))
    metric('failures_total', 'counter', 'Transient failures while applying announcements, by reason.',
           [('%s,reason="%s"' % (svc, _label(r)), state.failures.get(r, 0)) for r in reasons])
    metric('invalid_messages_total', 'counter', 'Announcements terminated as invalid (bad signature, malformed, expired, ...).',
           [(svc, state.invalid)])
    return '\n'.join(lines) + '\n'

"""Metrics and exit codes of ``ca-rotate-cron`` (:mod:`catools.cron`): the Prometheus textfile it writes after
each run (values this run did not measure carried over from the previous file; counters carried on), and the
optional push to a Pushgateway."""

from __future__ import annotations

import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

METRIC_PREFIX = 'ca_rotation_'

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_ERROR = 5
EXIT_BUSY = 75  # EX_TEMPFAIL from sysexits.h: "try again later"

EXIT_CODES = (
    (EXIT_OK, 'success', 'the rotation converged, or there was nothing to do'),
    (EXIT_FAILED, 'failed', 'a task or host failed (ansible-playbook exit 1 or 2), or the report says ok=false'),
    (EXIT_CONFIG, 'config', 'configuration or usage error (option, inventory, playbook, ansible-playbook, lock/output file)'),
    (EXIT_UNREACHABLE, 'unreachable', 'hosts unreachable (ansible-playbook exit 4, which ansible also uses for parse errors)'),
    (EXIT_TIMEOUT, 'timeout', 'the run exceeded --timeout and was killed'),
    (EXIT_ERROR, 'error', 'ansible-playbook crashed, was interrupted or was killed by a signal'),
    (EXIT_BUSY, 'busy', 'another run holds the local lock, or the OpenBao rotation lock (report locked_out)'),
)


def flag(value):
    """A report boolean (also "true"/"false" strings, as templated YAML may produce), or None when unset."""
    if isinstance(value, str):
        return {'true': True, 'yes': True, '1': True, 'false': False, 'no': False, '0': False}.get(value.strip().lower())
    return None if value is None else bool(value)


def _log(message: str) -> None:
    print(f'ca-rotate-cron: {message}', file=sys.stderr, flush=True)


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return re.sub(r'\\(.)', lambda m: '\n' if m.group(1) == 'n' else m.group(1), value)


def _escape_label(value: str) -> str:
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def read_metrics(path: Path | None) -> dict:
    """Samples of a textfile written by this wrapper: ``{(name, ((label, value), ...)): float}``.

    Unknown or malformed lines are ignored: the previous file is only a source of values to carry over.
    """
    samples: dict = {}
    if not path:
        return samples
    try:
        text = Path(path).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError):
        return samples
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            continue
        name, labels_text, value = match.groups()
        labels = tuple(sorted((k, _unescape(v)) for k, v in _LABEL_RE.findall(labels_text or '')))
        try:
            samples[(name, labels)] = float(value)
        except ValueError:
            continue
    return samples


def _format_value(value: float) -> str:
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53):
        return str(int(value))
    return repr(float(value))


class Metrics:
    """An ordered set of metric families, rendered in the Prometheus text format (version 0.0.4)."""

    def __init__(self):
        self.families: dict = {}

    def set(self, name: str, kind: str, help_text: str, value, labels: dict | None = None) -> None:
        if value is None:
            return
        family = self.families.setdefault(name, {'type': kind, 'help': help_text, 'samples': {}})
        family['samples'][tuple(sorted((labels or {}).items()))] = float(value)

    def render(self) -> str:
        lines = []
        for name, family in self.families.items():
            if not family['samples']:
                continue
            lines.append('# HELP %s %s' % (name, family['help'].replace('\\', '\\\\').replace('\n', '\\n')))
            lines.append('# TYPE %s %s' % (name, family['type']))
            for labels, value in sorted(family['samples'].items()):
                label_text = ','.join('%s="%s"' % (k, _escape_label(v)) for k, v in labels)
                lines.append('%s%s %s' % (name, '{%s}' % label_text if label_text else '', _format_value(value)))
        return '\n'.join(lines) + '\n'


def parse_timestamp(value):
    """ISO-8601 (with timezone) or Unix seconds -> Unix seconds (float), or None."""
    if value is None or value == '':
        return None
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, parse_time
    try:
        return parse_time(value, 'report').timestamp()
    except EpochError:
        return None


def _int_or_none(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def reload_counts(rotation: dict | None) -> tuple[int, int]:
    """(ok, failed) reloads in a rotation report.

    A server entry counts as a reload attempt when its cluster says ``reloaded``, or when the entry has a
    ``reload_ms`` or an ``error``; a server that was only verified (no reload needed) is not counted.
    """
    ok = failed = 0
    clusters = (rotation or {}).get('clusters') or {}
    if not isinstance(clusters, dict):
        return 0, 0
    for cluster in clusters.values():
        if not isinstance(cluster, dict):
            continue
        for server in cluster.get('servers') or []:
            if not isinstance(server, dict):
                continue
            attempted = bool(flag(cluster.get('reloaded'))) or server.get('reload_ms') is not None or bool(server.get('error'))
            if not attempted:
                continue
            if flag(server.get('ok')):
                ok += 1
            else:
                failed += 1
    return ok, failed


def build_metrics(previous: dict, result: str, started: float, finished: float, exit_code: int,
                  rotation: dict | None, epoch_duration: int | None = None) -> Metrics:
    """Metrics after a run, carrying over what this run did not measure from ``previous``.

    ``result`` is one of the names in :data:`EXIT_CODES`.
    """
    def prev(name, labels=()):
        return previous.get((name, tuple(sorted(labels))))

    rotation = rotation if isinstance(rotation, dict) else None
    success = result == 'success'
    m = Metrics()
    p = METRIC_PREFIX

    m.set(p + 'last_success_timestamp_seconds', 'gauge',
          'Unix time at which the last successful rotation run finished (kept across failed runs).',
          finished if success else prev(p + 'last_success_timestamp_seconds'))
    last_ok = 1 if success else (0 if result != 'busy' else prev(p + 'last_run_success'))
    m.set(p + 'last_run_success', 'gauge',
          'Whether the last rotation run succeeded (1) or failed (0); a run that found another run busy changes nothing.',
          last_ok)
    m.set(p + 'last_run_timestamp_seconds', 'gauge', 'Unix time at which the last rotation run finished.', finished)
    m.set(p + 'last_run_exit_code', 'gauge', 'Exit code of the last ca-rotate-cron run (see deploy/README.md).', exit_code)
    m.set(p + 'duration_seconds', 'gauge', 'Wall-clock duration of the last rotation run.', round(finished - started, 3))

    def from_report(name, kind, help_text, value):
        m.set(name, kind, help_text, value if value is not None else prev(name))

    r = rotation or {}
    current = _int_or_none(r.get('current_epoch'))
    from_report(p + 'current_epoch', 'gauge', 'Current epoch (wall clock) at the last run that reported it.',
                current if current is not None else _int_or_none(r.get('epoch')))
    from_report(p + 'bundle_newest_epoch', 'gauge', 'Newest epoch in the distributed CA bundle (the prepared one after the lead time).',
                _int_or_none(r.get('epoch')))
    from_report(p + 'generation', 'gauge', 'Generation of the last announced CA bundle.', _int_or_none(r.get('generation')))
    from_report(p + 'bundle_certificates', 'gauge', 'Number of certificates in the current CA bundle.',
                _int_or_none(r.get('bundle_certificates')))
    from_report(p + 'bundle_earliest_expiry_timestamp_seconds', 'gauge',
                'Unix time at which the first certificate of the current CA bundle expires.',
                parse_timestamp(r.get('earliest_expiry')))
    from_report(p + 'bundle_latest_expiry_timestamp_seconds', 'gauge',
                'Unix time at which the newest intermediate of the current CA bundle expires (needs latest_expiry in the report).',
                parse_timestamp(r.get('latest_expiry')))
    from_report(p + 'activated_epoch', 'gauge', 'Epoch whose issuer was last made the default issuer for new leaf certificates.',
                _int_or_none(r.get('activated_epoch')))
    duration = _int_or_none(r.get('epoch_duration'))
    if duration is None:
        duration = epoch_duration
    from_report(p + 'epoch_duration_seconds', 'gauge', 'Configured epoch duration (used by the alert rules).', duration)

    # bundle change time: when the bundle SHA-256 differs from the previous run's
    sha = r.get('bundle_sha256') if isinstance(r.get('bundle_sha256'), str) else None
    old_sha = None
    for (name, labels), _value in previous.items():
        if name == p + 'bundle_info':
            old_sha = dict(labels).get('sha256')
    changed_at = prev(p + 'bundle_last_change_timestamp_seconds')
    if sha and (sha != old_sha or changed_at is None):
        changed_at = finished
    m.set(p + 'bundle_last_change_timestamp_seconds', 'gauge',
          'Unix time at which a run first saw the current CA bundle (its SHA-256 changed).', changed_at)
    m.set(p + 'bundle_info', 'gauge', 'The current CA bundle (value 1, SHA-256 in a label).', 1 if (sha or old_sha) else None,
          {'sha256': sha or old_sha} if (sha or old_sha) else None)

    # counters, carried over
    ok, failed = reload_counts(rotation)
    for label, count in (('ok', ok), ('failed', failed)):
        m.set(p + 'reloads_total', 'counter', 'NATS server reloads attempted by rotation runs, by result.',
              (prev(p + 'reloads_total', (('result', label),)) or 0) + count, {'result': label})
    for _code, name, _text in EXIT_CODES:
        m.set(p + 'runs_total', 'counter', 'Rotation runs, by result (see deploy/README.md for the exit codes).',
              (prev(p + 'runs_total', (('result', name),)) or 0) + (1 if name == result else 0), {'result': name})

    # per-cluster outcome of the last run that reported clusters
    clusters = r.get('clusters') if isinstance(r.get('clusters'), dict) else None
    if clusters:
        for cluster, info in sorted(clusters.items()):
            m.set(p + 'cluster_ok', 'gauge', 'Whether every server of the cluster reloaded and proved the bundle in the last run.',
                  1 if isinstance(info, dict) and flag(info.get('ok')) else 0, {'cluster': str(cluster)})
    else:
        for (name, labels), value in previous.items():
            if name == p + 'cluster_ok':
                m.set(name, 'gauge', 'Whether every server of the cluster reloaded and proved the bundle in the last run.',
                      value, dict(labels))
    return m


def push_metrics(url: str, job: str, text: str, timeout: float = 10.0) -> bool:
    """PUT ``text`` to a Prometheus Pushgateway (replacing the group ``job=<job>``). Failures are logged, not raised:
    the run's outcome does not depend on monitoring, and a missing push shows up in the alerts (absent metrics)."""
    target = '%s/metrics/job/%s' % (url.rstrip('/'), urllib.parse.quote(job, safe=''))
    request = urllib.request.Request(target, data=text.encode('utf-8'), method='PUT',
                                     headers={'Content-Type': 'text/plain; version=0.0.4; charset=utf-8'})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - operator-given URL
            response.read()
        return True
    except (OSError, ValueError) as exc:
        _log(f'cannot push the metrics to {target}: {exc}')
        return False

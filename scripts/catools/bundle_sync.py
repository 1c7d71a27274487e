"""``ca-bundle-sync``: apply signed CA-bundle announcements on a client host (tier 3, DESIGN section 6).

A durable JetStream pull consumer ``<service>-ca-consumer`` on ``metadata.client.ca-cert`` (stream
``METADATA_CA_CLIENT``) receives the ``securetransport.ca_bundle/v1`` announcements. For each one,
in order:

1. verify the signature (fail closed) with a pinned ed25519 public key file -- one PEM key, or a
   JSON object ``{"<key version>": "<PEM or OpenBao base64 key>"}`` -- or with the public keys
   OpenBao transit publishes for the signing key (``--transit``);
2. accept only a generation newer than the one applied (kept in ``--state-file``, written
   atomically, so a restart never re-applies and never goes backwards); an older or equal
   generation is acknowledged and skipped (logged). A newer generation with an older epoch (a
   rollback) is applied like any other. An announcement whose ``valid_until`` has passed is
   refused (``valid_from`` is not enforced: bundles are distributed ahead of their epoch);
3. check the bundle (its SHA-256 against ``bundle_sha256``, certificates only, CA certificates);
4. write the bundle file atomically (temporary file, fsync, rename; ``--bundle-mode``), read it
   back and compare the SHA-256;
5. reload the service: run ``--reload-command`` (an argv; through ``/bin/sh -c`` only with
   ``--reload-shell``) and/or send ``--signal`` (SIGHUP) to the process in ``--pid-file``;
6. persist the state, and only then acknowledge the message (and wait for the server's reply).

Invalid messages (bad or missing signature, unknown key version, wrong schema, SHA-256 mismatch,
garbage, expired) are terminated (``+TERM <reason>``) with a logged reason: never redelivered,
never looped on. Transient failures (the reload command failed, a disk error, OpenBao transit
unreachable) are negatively acknowledged with a delay taken from ``--backoff``; the consumer
bounds redeliveries with ``--max-deliver`` (after the last one, ``--resync`` fetches the latest
announcement again).

Exit codes (``--once``; ``--follow`` exits 0 after SIGTERM/SIGINT, 2 on a configuration error):

==  ==========================================================================================
0   success: a newer bundle was applied, or there was nothing new (older/equal generations skipped)
1   failure: a transient failure (reload command, disk, NATS, OpenBao); the message is kept for a retry
2   configuration or usage error (options, config file, key file, state file, consumer mismatch)
3   an invalid message was seen and terminated (forged, malformed, expired), nothing failed
75  busy: another ca-bundle-sync holds the lock of this state file
==  ==========================================================================================

Prometheus textfile metrics (``--metrics-file``, written atomically, label ``service``):
``ca_bundle_sync_last_applied_generation``, ``ca_bundle_sync_last_applied_epoch`` (-1 before the
first), ``ca_bundle_sync_last_applied_timestamp_seconds``, ``ca_bundle_sync_last_success_timestamp_seconds``
(last pass without failure: applied, or nothing new), ``ca_bundle_sync_last_run_timestamp_seconds``,
``ca_bundle_sync_bundle_file_matches`` (1 when the bundle file still has the applied bytes),
``ca_bundle_sync_failures_total{reason}`` and ``ca_bundle_sync_invalid_messages_total`` (counters kept
in the state file, so they survive ``--once`` runs).

Log lines go to stderr, one line each (``key=value``), and never contain secrets: known secret values
(NATS password/token, OpenBao token/secret_id) are masked wherever they would appear.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

from catools import ensure_collection_importable

ensure_collection_importable()

# pylint: disable=wrong-import-position
try:
    from nats.js import errors as nats_js_errors
except ImportError:  # pragma: no cover - reported by main() through nats_options.check_imports()
    nats_js_errors = None
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import BundleError, parse_bundle  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._client_tls import ClientTLSError, ReloadingTLS  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import digest as common_digest  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import CaRotationError, FileError  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import atomic_write, parse_mode  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, isoformat, parse_duration, utcnow  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options  # noqa: E402

PROG = 'ca-bundle-sync'

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INVALID = 3
EXIT_BUSY = 75  # EX_TEMPFAIL, as scripts/ca-rotate-cron

EXIT_CODES = (
    (EXIT_OK, 'ok', 'a newer bundle was applied, or there was nothing new (older or equal generations are skipped)'),
    (EXIT_FAILURE, 'failure', 'a transient failure (reload command, disk, NATS, OpenBao); the message stays for a retry'),
    (EXIT_CONFIG, 'config', 'configuration or usage error (options, config file, key file, state file, consumer mismatch)'),
    (EXIT_INVALID, 'invalid', 'an invalid message (forged, malformed, expired) was seen and terminated; nothing failed'),
    (EXIT_BUSY, 'busy', 'another ca-bundle-sync holds the lock of this state file'),
)

STATE_SCHEMA = 'securetransport.ca_bundle_sync_state/v1'
METRIC_PREFIX = 'ca_bundle_sync_'
#: Failure reasons always present in the metrics (0 until they happen), so rate() works from the start.
FAILURE_REASONS = ('nats', 'keys', 'write', 'reload', 'state', 'ack', 'max-deliver')
#: Upper bound of messages handled by one --once run (a backlog is bounded by the stream anyway).
ONCE_MAX_MESSAGES = 1000
ACK_TIMEOUT = 5.0
#: Longest logged value (messages can quote attacker-controlled fields).
MAX_FIELD = 2000

DEFAULTS = {
    'service': None,
    'durable': None,
    'stream': nats_jetstream.DEFAULT_STREAM,
    'subject': nats_jetstream.DEFAULT_SUBJECT,
    'bundle_file': None,
    'bundle_mode': '0644',
    'state_file': None,
    'metrics_file': None,
    'reload_command': None,
    'reload_shell': False,
    'reload_timeout': 60,
    'pid_file': None,
    'signal': 'HUP',
    'public_key_file': None,
    'transit': False,
    'transit_mount': _message.DEFAULT_TRANSIT_MOUNT,
    'transit_key': _message.DEFAULT_TRANSIT_KEY,
    'openbao': {},
    'nats': {},
    'max_deliver': 10,
    'backoff': ['5s', '30s', '2m', '5m', '10m'],
    'deliver_policy': 'last',
    'fetch_timeout': None,
    'clock_skew': '5m',
    'timeout': 30,
    'log_level': 'info',
}
DELIVER_POLICIES = ('last', 'all', 'new')
LOG_LEVELS = {'debug': 10, 'info': 20, 'warning': 30, 'error': 40}
_NAME_RE = re.compile(r'^[A-Za-z0-9_-]+$')
_SECRET_OPTIONS = {'nats': ('password', 'token'), 'openbao': ('token', 'secret_id')}


class ConfigError(Exception):
    """Bad options, config file, key file or state file: exit 2."""


class Busy(Exception):
    """Another instance holds the lock: exit 75."""


# --------------------------------------------------------------------------- logging
class Log:
    """Single-line ``key=value`` log records on stderr; masks known secret values."""

    def __init__(self, service=None, level='info', stream=None):
        self.service = service
        self.level = LOG_LEVELS.get(level, 20)
        self.stream = stream or sys.stderr
        self.secrets = set()

    def mask(self, text):
        """``text`` with every known secret replaced by ``***``, then cut to MAX_FIELD characters."""
        text = str(text)
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, '***')
        if len(text) > MAX_FIELD:
            text = text[:MAX_FIELD] + '...(%d more characters)' % (len(text) - MAX_FIELD)
        return text

    @staticmethod
    def _value(value):
        text = str(value)
        text = text.replace('\\', '\\\\').replace('\r', '\\r').replace('\n', '\\n').replace('"', '\\"')
        if not text or any(c in text for c in ' =\t"\\'):
            return '"%s"' % text
        return text

    def __call__(self, level, event, msg=None, **fields):
        if LOG_LEVELS[level] < self.level:
            return
        parts = ['ts=%s' % isoformat(utcnow()), 'level=%s' % level, 'prog=%s' % PROG]
        if self.service:
            parts.append('service=%s' % self._value(self.service))
        parts.append('event=%s' % event)
        for key, value in fields.items():
            if value is not None:
                parts.append('%s=%s' % (key, self._value(self.mask(value))))
        if msg:
            parts.append('msg=%s' % self._value(self.mask(msg)))
        line = ' '.join(parts)
        try:
            self.stream.write(line + '\n')
            self.stream.flush()
        except (OSError, ValueError):  # pragma: no cover - stderr closed
            pass


# --------------------------------------------------------------------------- configuration
def _seconds(value, option, allow_zero=False):
    """Seconds from a number or a duration string (``30s``, ``2m``, ``PT1M``)."""
    if isinstance(value, bool):
        raise ConfigError('%s must be a duration, got %r' % (option, value))
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                seconds = float(parse_duration(text, option, allow_zero=allow_zero))
            except EpochError as exc:
                raise ConfigError(str(exc)) from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError('%s must be %s, got %r' % (option, 'zero or more' if allow_zero else 'positive', value))
    return seconds


def _signal(value):
    text = str(value).strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            raise ConfigError('--signal %r is not a signal number of this system' % value) from None
    name = text if text.startswith('SIG') else 'SIG' + text
    try:
        return signal.Signals[name]
    except KeyError:
        raise ConfigError('--signal %r is not a signal name (HUP, USR1, TERM, ...)' % value) from None


def read_config_file(path):
    """The options of a JSON or YAML config file (a mapping of option names with underscores)."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except OSError as exc:
        raise ConfigError('Cannot read --config %s: %s' % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError:
        raise ConfigError('--config %s is not UTF-8 text' % path) from None
    if not text.strip():
        return {}
    if text.lstrip().startswith('{'):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError('--config %s is not valid JSON: %s' % (path, exc)) from None
    else:
        try:
            import yaml  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise ConfigError('--config %s looks like YAML but PyYAML is not installed; write it as JSON' % path) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError('--config %s is not valid YAML: %s' % (path, str(exc).replace('\n', ' '))) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError('--config %s must hold a mapping of options, got %s' % (path, type(data).__name__))
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError('--config %s has unknown option(s) %s; known: %s' % (path, ', '.join(map(str, unknown)), ', '.join(sorted(DEFAULTS))))
    for name in ('nats', 'openbao'):
        if name in data and data[name] is not None and not isinstance(data[name], dict):
            raise ConfigError('--config %s: %s must be a mapping of connection options' % (path, name))
    return data


def build_parser():
    codes = '\n'.join('  %-3d %-8s %s' % code for code in EXIT_CODES)
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Apply signed CA-bundle announcements from NATS JetStream: verify, write the bundle atomically, '
                    'reload the service, then acknowledge.',
        epilog='Every option can also be set in --config (JSON or YAML; names with underscores, e.g. bundle_file, '
               'plus the mappings nats: and openbao:). Command-line options win.\n\nExit codes:\n' + codes)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--once', action='store_const', const='once', dest='mode', help='process what is pending, then exit (cron)')
    mode.add_argument('--follow', action='store_const', const='follow', dest='mode', help='run as a daemon until SIGTERM/SIGINT')
    mode.add_argument('--check-config', action='store_const', const='check', dest='mode',
                      help='validate the configuration (files, keys, state) without connecting, then exit 0 or 2')
    parser.add_argument('--config', metavar='FILE', help='JSON or YAML file with the options below')
    parser.add_argument('--resync', action='store_true', default=None,
                        help='delete and recreate the durable consumer first, so the latest announcement is delivered again '
                             '(the state file still prevents re-applying a generation)')
    add = parser.add_argument
    add('--service', help='service name: durable consumer <service>-ca-consumer, metrics label (letters, digits, - and _)')
    add('--durable', help='durable consumer name (default <service>-ca-consumer)')
    add('--stream', help='JetStream stream (default %s)' % DEFAULTS['stream'])
    add('--subject', help='subject of the announcements (default %s)' % DEFAULTS['subject'])
    add('--bundle-file', help='where the CA bundle is written')
    add('--bundle-mode', help='file mode of the bundle (default 0644)')
    add('--state-file', help='state file (default: .<bundle file name>.sync-state.json next to the bundle)')
    add('--metrics-file', help='Prometheus textfile metrics (e.g. /var/lib/node_exporter/textfile/ca_bundle_sync.prom)')
    add('--reload-command', help='command run after writing the bundle (split like a shell would, run without a shell)')
    add('--reload-shell', action='store_true', default=None, help='run --reload-command through /bin/sh -c')
    add('--reload-timeout', help='seconds the reload command may take (default 60)')
    add('--pid-file', help='signal the process whose pid is in this file after writing the bundle')
    add('--signal', help='signal for --pid-file (default HUP)')
    add('--public-key-file', help='pinned ed25519 public key: a PEM file, or JSON {"<version>": "<PEM>"}')
    add('--transit', action='store_true', default=None, help='verify with the public keys of OpenBao transit instead of a pinned key')
    add('--transit-mount', help='transit mount (default transit)')
    add('--transit-key', help='transit key (default ca-bundle-signer)')
    add('--openbao-url', help='OpenBao address (or BAO_ADDR)')
    add('--openbao-token-file', help='file with the OpenBao token (or BAO_TOKEN)')
    add('--openbao-ca-cert', help='CA file for TLS to OpenBao')
    add('--nats-server', action='append', help='NATS server URL (repeat, or comma-separated; or NATS_URL)')
    add('--nats-ca-file', help='CA bundle for TLS to NATS (may be --bundle-file itself: new bundles apply at reconnect)')
    add('--nats-cert-file', help='client certificate for mutual TLS')
    add('--nats-key-file', help='client key for mutual TLS')
    add('--nats-partial-chain', action='store_true', default=None, help='trust intermediates in --nats-ca-file as anchors (automatic when it holds no root)')
    add('--nats-tls-hostname', help='expected server name in the certificates')
    add('--nats-creds-file', help='NATS credentials file (JWT + nkey seed)')
    add('--nats-nkey-seed-file', help='NATS nkey seed file')
    add('--nats-user', help='NATS user')
    add('--nats-password-file', help='file with the NATS password')
    add('--nats-token-file', help='file with the NATS token')
    add('--nats-connect-timeout', type=int, help='seconds per connection attempt (default 5)')
    add('--nats-name', help='client name shown by the server')
    add('--max-deliver', type=int, help='deliveries per message before the server gives up (default 10)')
    add('--backoff', help='redelivery delays, comma-separated durations (default 5s,30s,2m,5m,10m)')
    add('--deliver-policy', choices=DELIVER_POLICIES, help='where a NEW durable consumer starts (default last: the newest announcement)')
    add('--fetch-timeout', help='seconds to wait for a message (default 2 with --once, 30 with --follow)')
    add('--clock-skew', help='tolerance when checking valid_until (default 5m)')
    add('--timeout', help='seconds for JetStream API calls (default 30)')
    add('--log-level', choices=sorted(LOG_LEVELS, key=LOG_LEVELS.get), help='default info')
    return parser


_CLI_NATS = {'nats_server': 'servers', 'nats_ca_file': 'ca_file', 'nats_cert_file': 'cert_file', 'nats_key_file': 'key_file',
             'nats_partial_chain': 'partial_chain', 'nats_tls_hostname': 'tls_hostname', 'nats_creds_file': 'creds_file',
             'nats_nkey_seed_file': 'nkey_seed_file', 'nats_user': 'user', 'nats_password_file': 'password_file',
             'nats_connect_timeout': 'connect_timeout', 'nats_name': 'name'}
_CLI_OPENBAO = {'openbao_url': 'url', 'openbao_token_file': 'token_file', 'openbao_ca_cert': 'ca_cert'}
_NATS_EXTRA = ('token_file',)


def _read_secret(path, option):
    try:
        value = Path(os.path.expanduser(path)).read_text(encoding='utf-8').strip()
    except OSError as exc:
        raise ConfigError('Cannot read %s %s: %s' % (option, path, exc.strerror or exc)) from None
    if not value:
        raise ConfigError('%s %s is empty' % (option, path))
    return value


class Config:
    """Merged, validated options (command line > config file > defaults)."""

    def __init__(self, values, mode, resync=False, config_file=None):
        self.mode = mode
        self.resync = bool(resync)
        self.config_file = config_file
        v = dict(values)
        self.service = v['service']
        if not self.service:
            raise ConfigError('--service is required (it names the durable consumer <service>-ca-consumer)')
        if not _NAME_RE.match(str(self.service)):
            raise ConfigError('--service %r may contain only letters, digits, - and _' % self.service)
        self.durable = v['durable'] or '%s-ca-consumer' % self.service
        if not _NAME_RE.match(str(self.durable)):
            raise ConfigError('--durable %r may contain only letters, digits, - and _' % self.durable)
        self.stream = str(v['stream'])
        if not _NAME_RE.match(self.stream):
            raise ConfigError('--stream %r is not a valid stream name' % self.stream)
        self.subject = str(v['subject'])
        if not self.subject or any(c in self.subject for c in ' \t*>'):
            raise ConfigError('--subject %r must be a literal subject (no spaces or wildcards)' % self.subject)
        if not v['bundle_file']:
            raise ConfigError('--bundle-file is required (where the CA bundle is written)')
        self.bundle_file = os.path.abspath(os.path.expanduser(str(v['bundle_file'])))
        try:
            self.bundle_mode = parse_mode(v['bundle_mode'], '--bundle-mode')
        except FileError as exc:
            raise ConfigError(str(exc)) from None
        bundle_dir = os.path.dirname(self.bundle_file)
        self.state_file = os.path.abspath(os.path.expanduser(str(v['state_file']))) if v['state_file'] else \
            os.path.join(bundle_dir, '.%s.sync-state.json' % os.path.basename(self.bundle_file))
        self.metrics_file = os.path.abspath(os.path.expanduser(str(v['metrics_file']))) if v['metrics_file'] else None
        for option, path in (('--bundle-file', self.bundle_file), ('--state-file', self.state_file), ('--metrics-file', self.metrics_file)):
            if path and not os.path.isdir(os.path.dirname(path)):
                raise ConfigError('%s %s: directory %s does not exist (create it first)' % (option, path, os.path.dirname(path)))
            if path and os.path.isdir(path):
                raise ConfigError('%s %s is a directory' % (option, path))

        self.reload_shell = bool(v['reload_shell'])
        command = v['reload_command']
        if command in (None, '', []):
            self.reload_argv = None
        elif self.reload_shell:
            if not isinstance(command, str):
                command = ' '.join(shlex.quote(str(a)) for a in command)
            self.reload_argv = ['/bin/sh', '-c', command]
        elif isinstance(command, str):
            try:
                self.reload_argv = shlex.split(command)
            except ValueError as exc:
                raise ConfigError('--reload-command %r cannot be split into arguments: %s' % (command, exc)) from None
        elif isinstance(command, list) and all(isinstance(a, (str, int, float)) for a in command):
            self.reload_argv = [str(a) for a in command]
        else:
            raise ConfigError('reload_command must be a string or a list of arguments, got %r' % (command,))
        self.reload_timeout = _seconds(v['reload_timeout'], '--reload-timeout')
        self.pid_file = os.path.abspath(os.path.expanduser(str(v['pid_file']))) if v['pid_file'] else None
        self.signal = _signal(v['signal'])

        self.public_key_file = os.path.expanduser(str(v['public_key_file'])) if v['public_key_file'] else None
        self.transit = bool(v['transit'])
        self.transit_mount = str(v['transit_mount'])
        self.transit_key = str(v['transit_key'])
        if self.public_key_file and self.transit:
            raise ConfigError('Give --public-key-file (pinned key) or --transit (OpenBao transit), not both')
        if not self.public_key_file and not self.transit:
            raise ConfigError('No way to verify announcements: give --public-key-file (pinned ed25519 public key) or --transit '
                              '(OpenBao transit, with --openbao-url / openbao: in --config)')
        self.openbao = dict(v['openbao'] or {})
        if self.transit and not (self.openbao.get('url') or os.environ.get('BAO_ADDR') or os.environ.get('VAULT_ADDR')):
            raise ConfigError('--transit needs the OpenBao address: --openbao-url, openbao.url in --config, or BAO_ADDR')

        self.nats = dict(v['nats'] or {})
        self._from_files = set()
        unknown = sorted(set(self.nats) - set(nats_options.NATS_ARG_SPEC['nats']['options']) - set(_NATS_EXTRA))
        if unknown:
            raise ConfigError('Unknown nats option(s) %s; known: %s' % (', '.join(unknown), ', '.join(
                sorted(list(nats_options.NATS_ARG_SPEC['nats']['options']) + list(_NATS_EXTRA)))))
        if self.nats.get('token_file'):
            if self.nats.get('token'):
                raise ConfigError('Give nats.token or nats.token_file, not both')
            self.nats['token'] = _read_secret(self.nats.pop('token_file'), 'nats.token_file')
            self._from_files.add(self.nats['token'])
        else:
            self.nats.pop('token_file', None)
        if self.nats.get('servers') is None and not os.environ.get('NATS_URL'):
            raise ConfigError('No NATS server: give --nats-server (or nats.servers in --config, or NATS_URL)')
        if self.nats.get('name') is None:
            self.nats['name'] = '%s/%s' % (PROG, self.service)

        self.max_deliver = v['max_deliver']
        if isinstance(self.max_deliver, bool) or not isinstance(self.max_deliver, int) or self.max_deliver < 1:
            raise ConfigError('--max-deliver must be a positive integer, got %r' % (self.max_deliver,))
        backoff = v['backoff']
        if isinstance(backoff, str):
            backoff = [b for b in backoff.split(',') if b.strip()]
        if not isinstance(backoff, list) or not backoff:
            raise ConfigError('--backoff must be a comma-separated list of durations, got %r' % (v['backoff'],))
        self.backoff = [_seconds(b, '--backoff') for b in backoff]
        if len(self.backoff) >= self.max_deliver:
            raise ConfigError('--max-deliver (%d) must be larger than the number of --backoff delays (%d)'
                              % (self.max_deliver, len(self.backoff)))
        self.deliver_policy = v['deliver_policy']
        if self.deliver_policy not in DELIVER_POLICIES:
            raise ConfigError('--deliver-policy must be one of %s, got %r' % (', '.join(DELIVER_POLICIES), self.deliver_policy))
        fetch = v['fetch_timeout']
        self.fetch_timeout = _seconds(fetch, '--fetch-timeout') if fetch is not None else (30.0 if mode == 'follow' else 2.0)
        self.clock_skew = _seconds(v['clock_skew'], '--clock-skew', allow_zero=True)
        self.timeout = _seconds(v['timeout'], '--timeout')
        if v['log_level'] not in LOG_LEVELS:
            raise ConfigError('--log-level must be one of %s' % ', '.join(LOG_LEVELS))
        self.log_level = v['log_level']

    def inline_secrets(self):
        """Secret values given in the options themselves (so in the config file, if there is one)."""
        out = set()
        for section, names in _SECRET_OPTIONS.items():
            for name in names:
                value = getattr(self, section).get(name)
                if value and value not in self._from_files:
                    out.add(str(value))
        return out

    def secrets(self):
        """Secret values to mask in logs: given inline, or read from the password/token files."""
        out = self.inline_secrets() | self._from_files
        for path in (self.nats.get('password_file'), self.openbao.get('token_file')):
            if path:
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    value = Path(os.path.expanduser(str(path))).read_text(encoding='utf-8').strip()
                    if value:
                        out.add(value)
        return out


def load_config(argv=None):
    """Parse the command line (and --config); return a Config. Raises ConfigError (exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode is None:
        raise ConfigError('Choose a mode: --once (cron), --follow (daemon) or --check-config')
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    values['nats'] = {}
    values['openbao'] = {}
    if args.config:
        for key, value in read_config_file(args.config).items():
            if key in ('nats', 'openbao'):
                values[key] = dict(value or {})
            elif value is not None:
                values[key] = value
    cli = vars(args)
    for key in DEFAULTS:
        if key in cli and cli[key] is not None:
            values[key] = cli[key]
    for cli_name, option in _CLI_NATS.items():
        if cli.get(cli_name) is not None:
            values['nats'][option] = cli[cli_name]
    if cli.get('nats_token_file'):
        values['nats']['token_file'] = cli['nats_token_file']
        values['nats'].pop('token', None)
    for cli_name, option in _CLI_OPENBAO.items():
        if cli.get(cli_name) is not None:
            values['openbao'][option] = cli[cli_name]
    return Config(values, args.mode, resync=args.resync, config_file=args.config)


# --------------------------------------------------------------------------- state and metrics
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
            text = Path(path).read_text(encoding='utf-8')
        except FileNotFoundError:
            return state
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError('Cannot read the state file %s: %s' % (path, getattr(exc, 'strerror', None) or exc)) from None
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
            lines.append('%s%s{%s} %s' % (METRIC_PREFIX, name, labels, _number(value)))

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


def _number(value):
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else '%d' % value
    return str(value)


def _idle(info):
    """Consumer info says: nothing to deliver and nothing awaiting an acknowledgement."""
    return bool(info) and info.get('num_pending') == 0 and info.get('num_ack_pending') == 0


def sha256_file(path):
    try:
        with open(path, 'rb') as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def instance_lock(state_file):
    """An exclusive, non-blocking flock on ``<state file>.lock`` for the lifetime of the run."""
    path = state_file + '.lock'
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError('Cannot open the lock file %s: %s' % (path, exc.strerror or exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy('another %s holds %s' % (PROG, path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, ('%d\n' % os.getpid()).encode('ascii'))
        yield path
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- keys
class PinnedKeys:
    """Public keys pinned in a file: one PEM key (any key version label), or JSON {version: key}."""

    def __init__(self, path):
        self.path = path
        self.single, self.versions = self._load()

    def _load(self):
        try:
            text = Path(self.path).read_text(encoding='utf-8').strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError('Cannot read --public-key-file %s: %s' % (self.path, getattr(exc, 'strerror', None) or exc)) from None
        if not text:
            raise ConfigError('--public-key-file %s is empty' % self.path)
        try:
            if text.startswith('{'):
                data = json.loads(text)
                if not isinstance(data, dict) or not data:
                    raise ValueError('expected a non-empty JSON object {"<key version>": "<public key>"}')
                versions = {}
                for version, key in data.items():
                    if not str(version).isdigit() or int(version) < 1:
                        raise ValueError('key version %r is not a positive integer' % (version,))
                    versions[int(version)] = _message.load_public_key(key)
                return None, versions
            return _message.load_public_key(text), None
        except (ValueError, TypeError) as exc:
            raise ConfigError('--public-key-file %s does not hold an ed25519 public key (PEM, or JSON {"<version>": "<PEM>"}): %s'
                              % (self.path, exc)) from None

    async def keys_for(self, data):
        if self.versions is not None:
            return self.versions
        version = 1
        with contextlib.suppress(Exception):
            version, _raw = _message.parse_signature(_message.parse_message(data).get('signature'))
        return {version: self.single}


class TransitKeys:
    """The public keys OpenBao transit publishes for the signing key (read for every message)."""

    def __init__(self, params, mount, key):
        self.params = params
        self.mount = mount
        self.key = key
        self.client = None

    def _fetch(self):
        # only transit mode talks to OpenBao: the rest of ca-bundle-sync never imports _openbao (hvac)
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import connect
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_public_keys
        if self.client is None:
            self.client = connect(self.params)
        return transit_public_keys(self.client, self.mount, self.key)

    async def keys_for(self, data):  # pylint: disable=unused-argument
        return await asyncio.to_thread(self._fetch)


class Transient(Exception):
    """A failure worth retrying later (the message is negatively acknowledged with a delay)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class Invalid(Exception):
    """The message can never be applied (it is terminated)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- the work
class Outcome:
    """What happened to one message: applied | unchanged | stale | invalid | retry."""

    def __init__(self, kind, reason=None, text=None, message=None):
        self.kind = kind
        self.reason = reason
        self.text = text
        self.message = message

    def __repr__(self):
        return 'Outcome(%s, %s)' % (self.kind, self.reason)


class Syncer:
    """Consume, verify, apply, acknowledge."""

    def __init__(self, config, log, keys=None):
        self.cfg = config
        self.log = log
        self.keys = keys or (PinnedKeys(config.public_key_file) if config.public_key_file else
                             TransitKeys(config.openbao, config.transit_mount, config.transit_key))
        self.state = State.load(config.state_file)
        self.stop = None
        self.counts = {'applied': 0, 'unchanged': 0, 'stale': 0, 'invalid': 0, 'retry': 0}
        self.failed = False
        self.heartbeat = 2.0
        self.closing = False

    # ------------------------------------------------------------ pure-ish decision
    async def evaluate(self, data, now=None):
        """Verify ``data``: Outcome ``apply`` (with the message) or ``stale``; raises Invalid or Transient."""
        try:
            keys = await self.keys.keys_for(data)
        except CaRotationError as exc:  # OpenBao (connect) or transit key problems
            raise Transient('keys', 'Cannot read the public keys of transit key %s/%s: %s'
                            % (self.cfg.transit_mount, self.cfg.transit_key, exc)) from None
        except Exception as exc:  # e.g. connection errors from hvac/requests  # pylint: disable=broad-except
            raise Transient('keys', 'Cannot get the verification keys: %s: %s' % (type(exc).__name__, exc)) from None
        try:
            message = _message.verify_announcement(data, keys)
        except _message.MessageVerificationError as exc:
            raise Invalid(exc.reason, str(exc)) from None
        if message['generation'] <= self.state.generation:
            return Outcome('stale', 'stale-generation', message=message)
        now = now or utcnow()
        limit = now - datetime.timedelta(seconds=self.cfg.clock_skew)
        if isoformat(limit) >= message['valid_until']:
            raise Invalid('expired', 'The announcement (generation %d) expired at %s; its bundle is no longer usable'
                          % (message['generation'], message['valid_until']))
        if common_digest.sha256_hex(message['bundle_pem']) != message['bundle_sha256']:  # verify_announcement checks it too
            raise Invalid('bundle-sha256', 'bundle_sha256 does not match the bundle')
        try:
            certs = parse_bundle(message['bundle_pem'], 'bundle_pem')
        except BundleError as exc:
            raise Invalid('certificates', 'The bundle is not usable: %s' % exc) from None
        not_ca = [c['subject'] for c in certs if not c['is_ca']]
        if not_ca:
            raise Invalid('certificates', 'The bundle holds certificates that are not CAs: %s' % '; '.join(not_ca))
        return Outcome('apply', message=message)

    def write_bundle(self, message):
        """Write the bundle atomically if the file differs; return True when the bytes changed."""
        path = self.cfg.bundle_file
        pem = message['bundle_pem']
        before = sha256_file(path)
        if before == message['bundle_sha256']:
            with contextlib.suppress(OSError):
                if (os.stat(path).st_mode & 0o7777) != self.cfg.bundle_mode:
                    os.chmod(path, self.cfg.bundle_mode)
            return False
        try:
            atomic_write(path, pem, self.cfg.bundle_mode)
        except (FileError, OSError) as exc:
            raise Transient('write', 'Cannot write the bundle: %s' % exc) from None
        after = sha256_file(path)
        if after != message['bundle_sha256']:
            raise Transient('write', 'The bundle file %s reads back with SHA-256 %s, not %s' % (path, after, message['bundle_sha256']))
        return True

    async def reload(self, message):
        """Run the reload command and/or signal the pid file; raise Transient on failure."""
        did = []
        if self.cfg.reload_argv:
            env = dict(os.environ, CA_BUNDLE_FILE=self.cfg.bundle_file, CA_BUNDLE_SHA256=message['bundle_sha256'],
                       CA_BUNDLE_EPOCH=str(message['epoch']), CA_BUNDLE_GENERATION=str(message['generation']),
                       CA_BUNDLE_KIND=message['kind'])
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.cfg.reload_argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as exc:
                raise Transient('reload', 'Cannot run the reload command %s: %s' % (self.cfg.reload_argv[0], exc.strerror or exc)) from None
            try:
                output, _stderr = await asyncio.wait_for(proc.communicate(), self.cfg.reload_timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                raise Transient('reload', 'The reload command %s did not finish within %ss and was killed'
                                % (self.cfg.reload_argv[0], _number(self.cfg.reload_timeout))) from None
            if proc.returncode != 0:
                lines = [ln for ln in output.decode('utf-8', 'replace').splitlines() if ln.strip()]
                tail = (lines[-1].strip()[:200]) if lines else ''
                raise Transient('reload', 'The reload command %s exited with %d%s' % (
                    self.cfg.reload_argv[0], proc.returncode, ('; last output line: %s' % tail) if tail else ''))
            did.append('command')
        if self.cfg.pid_file:
            try:
                text = Path(self.cfg.pid_file).read_text(encoding='ascii').strip()
                pid = int(text.split()[0])
                if pid <= 1:
                    raise ValueError('pid %d' % pid)
            except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
                raise Transient('reload', 'Cannot read a pid from --pid-file %s: %s' % (
                    self.cfg.pid_file, getattr(exc, 'strerror', None) or exc)) from None
            try:
                os.kill(pid, self.cfg.signal)
            except ProcessLookupError:
                raise Transient('reload', 'Process %d (from %s) is not running' % (pid, self.cfg.pid_file)) from None
            except PermissionError:
                raise Transient('reload', 'Not allowed to signal process %d (from %s)' % (pid, self.cfg.pid_file)) from None
            did.append('%s to %d' % (self.cfg.signal.name, pid))
        return did

    async def apply(self, message, seq=None):
        """Write, reload, persist. Returns 'applied' or 'unchanged' (same bytes already applied: no reload)."""
        changed = self.write_bundle(message)
        needs_reload = changed or self.state.bundle_sha256 != message['bundle_sha256']
        did = await self.reload(message) if needs_reload else []
        st = self.state
        previous = (st.generation, st.epoch)
        st.generation = message['generation']
        st.epoch = message['epoch']
        st.bundle_sha256 = message['bundle_sha256']
        st.kind = message['kind']
        st.msg_id = _message.msg_id(message)
        st.stream_sequence = seq
        st.applied_at = isoformat(utcnow())
        st.applied_ts = time.time()
        try:
            st.save()
        except (FileError, OSError) as exc:
            raise Transient('state', 'The bundle is in place but the state file cannot be written: %s' % exc) from None
        self.log('info', 'applied', 'CA bundle applied' if needs_reload else 'CA bundle already in place; state updated, no reload',
                 generation=message['generation'], epoch=message['epoch'], kind=message['kind'],
                 sha256=message['bundle_sha256'][:16], seq=seq, previous_generation=previous[0], previous_epoch=previous[1],
                 file_changed=str(changed).lower(), reload=','.join(did) or 'none')
        return 'applied' if needs_reload else 'unchanged'

    async def process(self, data, seq=None, delivered=1):
        """The whole decision for one message body; returns an Outcome (never raises for message problems)."""
        try:
            outcome = await self.evaluate(data)
            if outcome.kind == 'stale':
                m = outcome.message
                self.log('info', 'skipped', 'generation %d is not newer than the applied generation %d; acknowledged and skipped'
                         % (m['generation'], self.state.generation), generation=m['generation'], epoch=m['epoch'], seq=seq,
                         applied_generation=self.state.generation,
                         same_bundle=str(m['bundle_sha256'] == self.state.bundle_sha256).lower())
                return outcome
            kind = await self.apply(outcome.message, seq)
            return Outcome(kind, message=outcome.message)
        except Invalid as exc:
            return Outcome('invalid', exc.reason, str(exc))
        except Transient as exc:
            return Outcome('retry', exc.reason, str(exc))

    # ------------------------------------------------------------ NATS
    def _record(self, outcome, seq, delivered):
        self.counts[outcome.kind if outcome.kind in self.counts else 'applied'] += 1
        if outcome.kind == 'invalid':
            self.state.invalid += 1
            self.log('warning', 'invalid', outcome.text, reason=outcome.reason, seq=seq, delivered=delivered, action='term')
        elif outcome.kind == 'retry':
            self.failed = True
            self.state.count_failure(outcome.reason)
            last = delivered >= self.cfg.max_deliver
            if last:
                self.state.count_failure('max-deliver')
            self.log('error' if last else 'warning', 'failed', outcome.text, reason=outcome.reason, seq=seq, delivered=delivered,
                     max_deliver=self.cfg.max_deliver,
                     action='giving up: the server will not redeliver it; fix the cause, then run with --resync' if last
                     else 'nak, retry in %ss' % _number(self.delay(delivered)))

    def delay(self, delivered):
        return self.cfg.backoff[min(max(delivered, 1) - 1, len(self.cfg.backoff) - 1)]

    async def _reply(self, nc, msg, payload, what):
        try:
            await nc.request(msg.reply, payload, timeout=ACK_TIMEOUT)
            return True
        except Exception as exc:  # the server redelivers; the state file guards  # pylint: disable=broad-except
            self.log('warning', 'ack-failed', 'The server did not confirm the %s: %s: %s (it will redeliver the message; the state '
                     'file prevents applying it twice)' % (what, type(exc).__name__, exc), seq=msg.metadata.sequence.stream)
            return False

    async def settle(self, nc, msg, outcome, delivered):
        if outcome.kind in ('applied', 'unchanged', 'stale'):
            if not await self._reply(nc, msg, b'+ACK', 'acknowledgement'):
                self.state.count_failure('ack')
        elif outcome.kind == 'invalid':
            reason = re.sub(r'[^A-Za-z0-9_.-]', '-', outcome.reason or 'invalid')
            await self._reply(nc, msg, b'+TERM ' + reason.encode('ascii'), 'termination')
        else:
            delay_ns = int(self.delay(delivered) * 1e9)
            await self._reply(nc, msg, b'-NAK ' + json.dumps({'delay': delay_ns}).encode('ascii'), 'negative acknowledgement')

    async def _keepalive(self, msg):
        while True:
            await asyncio.sleep(self.heartbeat)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def handle(self, nc, msg):
        meta = msg.metadata
        seq, delivered = meta.sequence.stream, meta.num_delivered
        self.log('debug', 'received', seq=seq, delivered=delivered, size=len(msg.data))
        keepalive = asyncio.create_task(self._keepalive(msg))
        try:
            outcome = await self.process(msg.data, seq, delivered)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        self._record(outcome, seq, delivered)
        await self.settle(nc, msg, outcome, delivered)
        self.save_counters()
        self.write_metrics()
        return outcome

    def save_counters(self):
        try:
            self.state.save()
        except (FileError, OSError) as exc:
            self.log('warning', 'state-write-failed', 'Cannot write the state file: %s' % exc)

    def write_metrics(self, success=False):
        if success:
            self.state.last_success_ts = time.time()
        if not self.cfg.metrics_file:
            return
        matches = self.state.bundle_sha256 is not None and sha256_file(self.cfg.bundle_file) == self.state.bundle_sha256
        text = render_metrics(self.cfg.service, self.state, matches, time.time())
        try:
            atomic_write(self.cfg.metrics_file, text, 0o644)
        except (FileError, OSError) as exc:
            self.log('warning', 'metrics-write-failed', 'Cannot write the metrics file: %s' % exc)

    async def connect(self):
        extra = {}
        conn = nats_options.conn_params(self.cfg.nats)
        if conn.get('ca_file'):
            # The trust for NATS follows its CA file (often the bundle this script writes): rebuilt at every reconnect.
            try:
                tls = ReloadingTLS(os.path.expanduser(conn['ca_file']), conn.get('cert_file'), conn.get('key_file'),
                                   partial_chain=True if conn.get('partial_chain') else None)
                extra['tls'] = tls.context
            except ClientTLSError:
                pass  # nats_client.connect reports the file problem with the option name
        if self.cfg.mode == 'follow':
            extra.update(max_reconnect_attempts=-1, reconnect_time_wait=2)

        async def disconnected():
            if not self.closing:
                self.log('warning', 'nats-disconnected', 'Disconnected from NATS; reconnecting')

        async def reconnected():
            self.log('info', 'nats-reconnected', server=nc_holder[0].connected_url.netloc if nc_holder else None)

        nc_holder = []
        nc = await nats_client.connect(self.cfg.nats, disconnected_cb=disconnected, reconnected_cb=reconnected, **extra)
        nc_holder.append(nc)
        self.log('info', 'nats-connected', server=nc.connected_url.netloc if nc.connected_url else None)
        return nc

    async def ensure_consumer(self, nc):
        """Create the durable pull consumer, or update its limits; return its info (and set the progress heartbeat)."""
        cfg = self.cfg
        deadline = nats_jetstream.Deadline(cfg.timeout)
        if cfg.resync:
            try:
                await nats_jetstream.js_api(nc, 'CONSUMER.DELETE.%s.%s' % (cfg.stream, cfg.durable), b'', deadline,
                                            'Deleting consumer %s' % cfg.durable)
                self.log('info', 'consumer-deleted', 'Deleted the durable consumer for --resync', consumer=cfg.durable)
            except nats_jetstream.JetStreamAPIError as exc:
                if exc.code != 404:
                    raise
            cfg.resync = False
        want = {
            'ack_policy': 'explicit',
            'max_deliver': cfg.max_deliver,
            'backoff': [int(b * 1e9) for b in cfg.backoff],
            'max_ack_pending': 1,
            'filter_subject': cfg.subject,
        }
        try:
            info = await nats_jetstream.js_api(nc, 'CONSUMER.INFO.%s.%s' % (cfg.stream, cfg.durable), b'', deadline,
                                               'Reading consumer %s on stream %s' % (cfg.durable, cfg.stream))
        except nats_jetstream.JetStreamAPIError as exc:
            if exc.err_code == nats_jetstream.JS_STREAM_NOT_FOUND:
                raise nats_options.NatsError('Stream %s does not exist: the authority creates it when it first announces a bundle '
                                             '(jetstream_publish); check --stream' % cfg.stream, 'stream') from None
            if exc.code != 404:
                raise
            info = None
        if info is None:
            config = dict(want, durable_name=cfg.durable, name=cfg.durable, deliver_policy=cfg.deliver_policy,
                          description='%s for service %s' % (PROG, cfg.service))
            if cfg.deliver_policy == 'last':
                config['deliver_policy'] = 'last_per_subject'
            info = await nats_jetstream.js_api(nc, 'CONSUMER.CREATE.%s.%s' % (cfg.stream, cfg.durable),
                                               {'stream_name': cfg.stream, 'config': config, 'action': 'create'}, deadline,
                                               'Creating consumer %s on stream %s' % (cfg.durable, cfg.stream))
            self.log('info', 'consumer-created', consumer=cfg.durable, stream=cfg.stream, deliver_policy=cfg.deliver_policy)
        else:
            current = info['config']
            if current.get('ack_policy') != 'explicit' or (current.get('filter_subject') or '') != cfg.subject \
                    or current.get('deliver_subject'):
                raise ConfigError('The consumer %s on stream %s exists but is not ours (ack policy %s, filter subject %r%s): choose '
                                  'another --durable, or --resync to recreate it' % (
                                      cfg.durable, cfg.stream, current.get('ack_policy'), current.get('filter_subject'),
                                      ', a push consumer' if current.get('deliver_subject') else ''))
            differs = {k: v for k, v in want.items() if current.get(k) != v}
            if differs:
                config = dict(current, **want)
                info = await nats_jetstream.js_api(nc, 'CONSUMER.CREATE.%s.%s' % (cfg.stream, cfg.durable),
                                                   {'stream_name': cfg.stream, 'config': config, 'action': 'update'}, deadline,
                                                   'Updating consumer %s on stream %s' % (cfg.durable, cfg.stream))
                self.log('info', 'consumer-updated', consumer=cfg.durable, changed=','.join(sorted(differs)))
        info = await self._wait_for_leader(nc, info, deadline)
        ack_wait = (info.get('config') or {}).get('ack_wait') or int(cfg.backoff[0] * 1e9)
        self.heartbeat = max(0.2, ack_wait / 1e9 / 3.0)
        return info

    async def _wait_for_leader(self, nc, info, deadline):
        """A consumer of a replicated stream answers pulls only once it has a leader (just after creation it may not)."""
        delay = 0.1
        while info.get('cluster') and not info['cluster'].get('leader') and not deadline.expired():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            info = await nats_jetstream.js_api(nc, 'CONSUMER.INFO.%s.%s' % (self.cfg.stream, self.cfg.durable), b'', deadline,
                                               'Reading consumer %s' % self.cfg.durable)
        return info

    async def subscribe(self, nc):
        info = await self.ensure_consumer(nc)
        sub = await nc.jetstream().pull_subscribe_bind(consumer=self.cfg.durable, stream=self.cfg.stream)
        return sub, info

    async def nothing_pending(self, nc):
        """True when the consumer has no message to deliver now and none awaiting an acknowledgement."""
        try:
            info = await nats_jetstream.js_api(nc, 'CONSUMER.INFO.%s.%s' % (self.cfg.stream, self.cfg.durable), b'',
                                               nats_jetstream.Deadline(min(self.cfg.timeout, 10)),
                                               'Reading consumer %s' % self.cfg.durable)
        except Exception:  # fall back to waiting for the fetch timeout  # pylint: disable=broad-except
            return False
        return _idle(info)

    def check_bundle_drift(self):
        if self.state.bundle_sha256 and sha256_file(self.cfg.bundle_file) != self.state.bundle_sha256:
            self.log('warning', 'bundle-drift', 'The bundle file no longer holds the last applied bundle (generation %d); a newer '
                     'announcement rewrites it, or run with --resync to apply the latest one again' % self.state.generation,
                     path=self.cfg.bundle_file)

    async def _fetch(self, sub):
        """One message, or None when none came within the fetch timeout (or a stop was requested)."""
        fetch = asyncio.ensure_future(sub.fetch(1, timeout=self.cfg.fetch_timeout))
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            done, _pending = await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if fetch not in done:
            fetch.cancel()
            with contextlib.suppress(BaseException):
                await fetch
            return None
        try:
            msgs = fetch.result()
        except asyncio.TimeoutError:  # nats.errors.TimeoutError is one
            return None
        except nats_js_errors.ServiceUnavailableError:
            # 503 to a pull: the consumer has no leader at this moment (election after a restart or creation)
            self.log('debug', 'fetch-unavailable', 'The consumer has no leader right now; waiting')
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), min(1.0, self.cfg.fetch_timeout))
            return 'retry'
        return msgs[0] if msgs else None

    async def run_once(self):
        self.check_bundle_drift()
        try:
            nc = await self.connect()
        except nats_options.NatsError as exc:
            if exc.kind == 'config':
                raise ConfigError(str(exc)) from None
            return self._nats_failure(exc)
        try:
            try:
                sub, info = await self.subscribe(nc)
            except nats_options.NatsError as exc:
                return self._nats_failure(exc)
            handled = 0
            idle = _idle(info)
            while not idle and not self.stop.is_set() and handled < ONCE_MAX_MESSAGES:
                try:
                    msg = await self._fetch(sub)
                    unavailable = 0
                    while msg == 'retry' and unavailable < 10:
                        unavailable += 1
                        msg = await self._fetch(sub)
                except Exception as exc:  # any fetch error ends this run as a failure  # pylint: disable=broad-except
                    return self._nats_failure(exc)
                if msg == 'retry':
                    return self._nats_failure(nats_options.NatsError(
                        'The consumer %s has had no leader for %d attempts' % (self.cfg.durable, unavailable)))
                if msg is None:
                    break
                handled += 1
                outcome = await self.handle(nc, msg)
                if outcome.kind == 'retry':
                    break  # the rest stays for the next run; this failure would most likely repeat
                idle = await self.nothing_pending(nc)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        finally:
            await self._close(nc)
        if not self.failed:
            self.state.last_success_ts = time.time()
        self.save_counters()
        self.write_metrics()
        self.log('info', 'done', applied=self.counts['applied'], unchanged=self.counts['unchanged'], skipped=self.counts['stale'],
                 invalid=self.counts['invalid'], failed=self.counts['retry'], generation=self.state.generation, epoch=self.state.epoch)
        if self.failed:
            return EXIT_FAILURE
        if self.counts['invalid']:
            return EXIT_INVALID
        return EXIT_OK

    def _nats_failure(self, exc):
        self.failed = True
        self.state.count_failure('nats')
        self.log('error', 'nats-failed', '%s: %s' % (type(exc).__name__, exc) if not isinstance(exc, nats_options.NatsError) else str(exc))
        self.save_counters()
        self.write_metrics()
        return EXIT_FAILURE

    async def _close(self, nc):
        self.closing = True
        try:
            await asyncio.wait_for(nc.drain(), 5)
        except Exception:  # closing is best effort  # pylint: disable=broad-except
            await nats_client.close(nc)

    async def run_follow(self):
        self.check_bundle_drift()
        delay = 1.0
        nc = sub = None
        while not self.stop.is_set():
            try:
                if nc is None or nc.is_closed:
                    self.closing = False
                    nc = await self.connect()
                    sub = None
                if sub is None:
                    sub, _info = await self.subscribe(nc)
                    self.log('info', 'following', consumer=self.cfg.durable, stream=self.cfg.stream, subject=self.cfg.subject)
                msg = await self._fetch(sub)
                delay = 1.0
                if msg == 'retry':
                    continue
                if msg is None:
                    if not self.stop.is_set():
                        self.write_metrics(success=True)
                    continue
                self.failed = False
                outcome = await self.handle(nc, msg)
                if outcome.kind != 'retry':
                    self.write_metrics(success=True)
            except ConfigError:
                raise
            except nats_options.NatsError as exc:
                if exc.kind == 'config':
                    raise ConfigError(str(exc)) from None
                self._follow_error(exc, delay)
                sub = None
            except Exception as exc:  # the daemon keeps going  # pylint: disable=broad-except
                self._follow_error(exc, delay)
                sub = None
                if nc is not None and not nc.is_connected and not nc.is_reconnecting:
                    await nats_client.close(nc)
                    nc = None
            else:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            delay = min(delay * 2, 30.0)
        if nc is not None:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            await self._close(nc)
        self.save_counters()
        self.write_metrics()
        self.log('info', 'stopped', applied=self.counts['applied'], unchanged=self.counts['unchanged'], skipped=self.counts['stale'],
                 invalid=self.counts['invalid'], failed=self.counts['retry'], generation=self.state.generation)
        return EXIT_OK

    def _follow_error(self, exc, delay):
        self.state.count_failure('nats')
        self.log('error', 'nats-failed', '%s (retrying in %ss)' % (
            str(exc) if isinstance(exc, nats_options.NatsError) else '%s: %s' % (type(exc).__name__, exc), _number(delay)))
        self.write_metrics()

    async def run(self):
        self.stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_stop, signum)
        try:
            if self.cfg.mode == 'follow':
                return await self.run_follow()
            return await self.run_once()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _request_stop(self, signum):
        if not self.stop.is_set():
            self.log('info', 'stopping', 'Got %s: finishing the current message, then closing' % signal.Signals(signum).name)
        self.stop.set()


def main(argv=None):
    log = Log()
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        log('error', 'config', str(exc))
        return EXIT_CONFIG
    log = Log(cfg.service, cfg.log_level)
    log.secrets = cfg.secrets()
    try:
        _message.check_imports()
        nats_options.check_imports()
    except (_message.MessageError, nats_options.NatsError) as exc:
        log('error', 'config', str(exc).splitlines()[0])
        return EXIT_CONFIG
    if cfg.config_file:
        with contextlib.suppress(OSError):
            if os.stat(cfg.config_file).st_mode & 0o077 and cfg.inline_secrets():
                log('warning', 'config-permissions', 'The config file holds secrets but is readable by others; chmod 0600 it',
                    path=cfg.config_file)
    try:
        with instance_lock(cfg.state_file):
            syncer = Syncer(cfg, log)
            if cfg.mode == 'check':
                nats_options.client_options(cfg.nats)
                log('info', 'config-ok', 'Configuration is valid', bundle_file=cfg.bundle_file, state_file=cfg.state_file,
                    generation=syncer.state.generation, verify='transit' if cfg.transit else 'pinned')
                return EXIT_OK
            return asyncio.run(syncer.run())
    except Busy as exc:
        log('warning', 'busy', str(exc))
        return EXIT_BUSY
    except ConfigError as exc:
        log('error', 'config', str(exc))
        return EXIT_CONFIG
    except nats_options.NatsError as exc:
        if exc.kind == 'config':
            log('error', 'config', str(exc))
            return EXIT_CONFIG
        log('error', 'nats-failed', str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it
        return EXIT_FAILURE
    except Exception as exc:  # a bug: say so on one line, exit 1  # pylint: disable=broad-except
        log('error', 'crashed', '%s: %s' % (type(exc).__name__, exc))
        return EXIT_FAILURE


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())

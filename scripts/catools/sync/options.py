"""Options of ca-bundle-sync: the command line, the --config file, and their validation into a Config."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
from pathlib import Path

from catools.sync.common import EXIT_CODES, PROG, ConfigError
from catools.sync.files import symlink_problem
from catools.sync.log import LOG_LEVELS

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import parse_mode  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, parse_duration  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import DEFAULT_TRANSIT_KEY, DEFAULT_TRANSIT_MOUNT  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options  # noqa: E402

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
    'transit_mount': DEFAULT_TRANSIT_MOUNT,
    'transit_key': DEFAULT_TRANSIT_KEY,
    'openbao': {},
    'nats': {},
    'max_deliver': 10,
    'backoff': ['5s', '30s', '2m', '5m', '10m'],
    'deliver_policy': 'last',
    'fetch_timeout': None,
    'clock_skew': '0s',
    'max_generation_jump': 100,
    'timeout': 30,
    'log_level': 'info',
}
DELIVER_POLICIES = ('last', 'all', 'new')
_NAME_RE = re.compile(r'^[A-Za-z0-9_-]+$')
_SECRET_OPTIONS = {'nats': ('password', 'token'), 'openbao': ('token', 'secret_id')}


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


def bundle_mode(value):
    """The file mode for the bundle: a regular-file mode its owner can read, without execute, setuid/setgid/sticky or
    world-write bits (0644, 0640, 0444, ...)."""
    try:
        mode = parse_mode(value, '--bundle-mode')
    except FileError as exc:
        raise ConfigError('%s; give a mode such as 0644' % exc) from None
    problems = []
    if mode & 0o7000:
        problems.append('setuid/setgid/sticky bits')
    if mode & 0o111:
        problems.append('execute bits')
    if mode & 0o002:
        problems.append('world-write permission')
    if not mode & 0o400:
        problems.append('no read permission for its owner')
    if problems:
        raise ConfigError('--bundle-mode %s is not a mode for a CA bundle file (%s): give a regular-file mode such as 0644 '
                          '(world-readable) or 0640 (owner and group)' % (value, ', '.join(problems)))
    return mode


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
    add('--clock-skew', help='tolerance for a late clock when checking valid_until (default 0: an announcement past its valid_until is refused)')
    add('--max-generation-jump', type=int, help='refuse a generation more than this far ahead of the applied one (default 100; 0: no limit)')
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
        self.bundle_mode = bundle_mode(v['bundle_mode'])
        bundle_dir = os.path.dirname(self.bundle_file)
        self.state_file = os.path.abspath(os.path.expanduser(str(v['state_file']))) if v['state_file'] else \
            os.path.join(bundle_dir, '.%s.sync-state.json' % os.path.basename(self.bundle_file))
        self.metrics_file = os.path.abspath(os.path.expanduser(str(v['metrics_file']))) if v['metrics_file'] else None
        for option, path in (('--bundle-file', self.bundle_file), ('--state-file', self.state_file), ('--metrics-file', self.metrics_file)):
            if path and not os.path.isdir(os.path.dirname(path)):
                raise ConfigError('%s %s: directory %s does not exist (create it first)' % (option, path, os.path.dirname(path)))
            if path and os.path.isdir(path):
                raise ConfigError('%s %s is a directory' % (option, path))
        for option, path in (('--bundle-file', self.bundle_file), ('--state-file', self.state_file),
                             ('--state-file (its lock)', self.state_file + '.lock'), ('--metrics-file', self.metrics_file)):
            problem = symlink_problem(path, option)
            if problem:
                raise ConfigError(problem)

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
        self.max_generation_jump = v['max_generation_jump']
        if isinstance(self.max_generation_jump, bool) or not isinstance(self.max_generation_jump, int) or self.max_generation_jump < 0:
            raise ConfigError('--max-generation-jump must be an integer >= 0 (0: no limit), got %r; the default 100 suits '
                              'one rotation every few hours' % (self.max_generation_jump,))
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

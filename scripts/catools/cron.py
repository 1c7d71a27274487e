"""``ca-rotate-cron``: run the rotation playbook from cron / a Kubernetes CronJob, once at a time.

What it does, in order:

1. takes an exclusive ``flock`` on ``--lock-file`` (non-blocking). If another wrapper holds it, it
   prints who and exits with ``--busy-exit-code`` (75, ``EX_TEMPFAIL``, unless changed) without
   touching the report or the metrics (the running instance owns them);
2. runs ``ansible-playbook <playbook> -i <inventory> -e ca_rotation_report_file=<tmp>`` with a
   controlled environment (see :data:`PASS_ENV_PREFIXES`), killing the whole process group after
   ``--timeout`` seconds (SIGTERM, then SIGKILL after ``--kill-grace``); SIGTERM/SIGINT sent to the
   wrapper are forwarded the same way;
3. reads the rotation report the playbook wrote (contract: DESIGN / issue 8), merges it into a JSON
   run report (``--report-file``) and writes Prometheus textfile metrics (``--metrics-file``),
   both atomically (temporary file + rename in the same directory);
4. with ``--canary-verdict``, reads the trust canary's last verdict (``ca-trust-canary --verdict-file``)
   beside the rotation report: the run report's ``canary`` section and ``trust_ok`` say whether the
   canary saw a trust violation, so a run that "succeeded" while a server did not trust the default
   issuer (for example) is visible as such. The exit code stays the rotation's.

Exit codes (also in ``--help`` and deploy/README.md):

==  =====================================================================================
0   success: the rotation converged (or there was nothing to do)
1   rotation failed: a task or host failed (ansible-playbook 1 or 2), or the report says ok=false
2   configuration or usage error (bad option, missing inventory/playbook/ansible-playbook,
    lock or output file not writable, ansible-playbook rejected its options)
3   hosts unreachable (ansible-playbook 4; ansible also uses 4 for playbook parse errors)
4   timeout: the run took longer than --timeout and was killed
5   ansible-playbook crashed, was interrupted or was killed by a signal
75  already running: another wrapper holds the lock, or the playbook found the OpenBao rotation
    lock held by another controller (report ``locked_out``); configurable with --busy-exit-code
==  =====================================================================================
"""

from __future__ import annotations

import argparse
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catools import COLLECTION_ROOT, ensure_collection_importable
from catools.cron_metrics import (
    EXIT_BUSY,
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    build_metrics,
    flag as _flag,
    parse_timestamp,
    push_metrics,
    read_metrics,
)

REPORT_SCHEMA = 'securetransport.ca_rotation_run/v1'
REPORT_VAR = 'ca_rotation_report_file'

#: Environment variables passed to ansible-playbook: these names, plus every name starting with one
#: of the prefixes, plus ``--pass-env`` names. Everything else in the caller's environment is dropped,
#: so that a cron or CronJob environment cannot change the run by accident.
PASS_ENV_NAMES = (
    'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'TZ', 'TMPDIR', 'TERM',
    'SSH_AUTH_SOCK', 'KUBECONFIG', 'PYTHONPATH', 'VIRTUAL_ENV',
    'SSL_CERT_FILE', 'SSL_CERT_DIR', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE',
    'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy',
)
PASS_ENV_PREFIXES = ('ANSIBLE_', 'BAO_', 'VAULT_', 'NATS_', 'KUBERNETES_', 'K8S_AUTH_', 'CA_ROTATION_', 'LC_')

UTC = datetime.timezone.utc


class ConfigError(Exception):
    """A problem with the wrapper's own configuration (exit 2)."""


# --------------------------------------------------------------------------- small helpers
def _log(message: str) -> None:
    print(f'ca-rotate-cron: {message}', file=sys.stderr, flush=True)


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=str(path.parent))
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------- the run
def _exit_code_table() -> str:
    return '\n'.join('  %-3d %-12s %s' % (code, name, text) for code, name, text in EXIT_CODES)


def _env(name: str, default=None):
    value = os.environ.get(name)
    return value if value not in (None, '') else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='ca-rotate-cron',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Run the CA rotation playbook once (single instance), then write a JSON run report and '
                    'Prometheus textfile metrics. Every option can also be set with the environment variable in brackets.',
        epilog='exit codes:\n' + _exit_code_table() + '\n\nArguments after "--" go to ansible-playbook unchanged.',
    )
    parser.add_argument('-i', '--inventory', default=_env('CA_ROTATE_INVENTORY'),
                        help='inventory (file, directory or comma-separated hosts) [CA_ROTATE_INVENTORY]')
    parser.add_argument('--playbook', default=_env('CA_ROTATE_PLAYBOOK', str(COLLECTION_ROOT / 'playbooks' / 'rotate.yml')),
                        help='playbook path or FQCN (default: the collection\'s playbooks/rotate.yml) [CA_ROTATE_PLAYBOOK]')
    parser.add_argument('--lock-file', default=_env('CA_ROTATE_LOCK_FILE', os.path.join(tempfile.gettempdir(), 'ca-rotate-cron.lock')),
                        help='flock file; one file per fabric (default: $TMPDIR/ca-rotate-cron.lock) [CA_ROTATE_LOCK_FILE]')
    parser.add_argument('--busy-exit-code', type=int, default=_env('CA_ROTATE_BUSY_EXIT_CODE', str(EXIT_BUSY)),
                        help='exit code when another run is busy (default 75; 0 for schedulers that treat any other '
                             'code as a failure) [CA_ROTATE_BUSY_EXIT_CODE]')
    parser.add_argument('--report-file', default=_env('CA_ROTATE_REPORT_FILE'),
                        help='write the JSON run report here [CA_ROTATE_REPORT_FILE]')
    parser.add_argument('--metrics-file', default=_env('CA_ROTATE_METRICS_FILE'),
                        help='write Prometheus textfile metrics here (node_exporter textfile collector: name it *.prom) '
                             '[CA_ROTATE_METRICS_FILE]')
    parser.add_argument('--pushgateway', default=_env('CA_ROTATE_PUSHGATEWAY'),
                        help='also PUT the metrics to this Prometheus Pushgateway (http://host:9091), grouped by '
                             'job=--pushgateway-job; for Kubernetes CronJobs, where no node_exporter reads the file '
                             '[CA_ROTATE_PUSHGATEWAY]')
    parser.add_argument('--pushgateway-job', default=_env('CA_ROTATE_PUSHGATEWAY_JOB', 'ca_rotation'),
                        help='job label of the pushed metrics (default ca_rotation) [CA_ROTATE_PUSHGATEWAY_JOB]')
    parser.add_argument('--collections-path', default=_env('CA_ROTATE_COLLECTIONS_PATH'),
                        help='ANSIBLE_COLLECTIONS_PATH for the run (default: inherited, else where this collection '
                             'lives) [CA_ROTATE_COLLECTIONS_PATH]')
    parser.add_argument('--stdout-callback', default=_env('CA_ROTATE_STDOUT_CALLBACK', 'ansible.builtin.default'),
                        help='ANSIBLE_STDOUT_CALLBACK for the run (default ansible.builtin.default) [CA_ROTATE_STDOUT_CALLBACK]')
    parser.add_argument('--ansible-playbook', default=_env('CA_ROTATE_ANSIBLE_PLAYBOOK'),
                        help='ansible-playbook executable (default: next to this Python, else on PATH) [CA_ROTATE_ANSIBLE_PLAYBOOK]')
    parser.add_argument('-e', '--extra-vars', action='append', default=[],
                        help='extra variables for the playbook (repeatable, as for ansible-playbook)')
    parser.add_argument('--pass-env', action='append', default=[],
                        help='also pass this environment variable to ansible-playbook (repeatable); by default only '
                             + ', '.join(p + '*' for p in PASS_ENV_PREFIXES) + ' and a few system variables pass')
    parser.add_argument('--timeout', type=float, default=_env('CA_ROTATE_TIMEOUT', '3600'),
                        help='kill the run after this many seconds, 0 for no limit (default 3600) [CA_ROTATE_TIMEOUT]')
    parser.add_argument('--kill-grace', type=float, default=_env('CA_ROTATE_KILL_GRACE', '30'),
                        help='seconds between SIGTERM and SIGKILL when stopping the run (default 30)')
    parser.add_argument('--canary-verdict', default=_env('CA_ROTATE_CANARY_VERDICT'),
                        help="the trust canary's verdict file (ca-trust-canary --verdict-file): linked into the run report "
                             '[CA_ROTATE_CANARY_VERDICT]')
    parser.add_argument('--canary-max-age', type=float, default=_env('CA_ROTATE_CANARY_MAX_AGE', '900'),
                        help='a canary verdict older than this many seconds is reported as stale (default 900) '
                             '[CA_ROTATE_CANARY_MAX_AGE]')
    parser.add_argument('--epoch-duration', default=_env('CA_ROTATE_EPOCH_DURATION'),
                        help='epoch duration for the ca_rotation_epoch_duration_seconds metric when the playbook report '
                             'does not carry it (6h, PT20M, seconds) [CA_ROTATE_EPOCH_DURATION]')
    return parser


def child_environment(args, collections_path: str | None) -> dict:
    env = {}
    extra = set(args.pass_env or [])
    for name, value in os.environ.items():
        if name in PASS_ENV_NAMES or name in extra or name.startswith(PASS_ENV_PREFIXES):
            env[name] = value
    env.setdefault('PATH', os.defpath)
    # ansible-playbook next to this interpreter first (virtualenvs, execution environments)
    bindir = str(Path(sys.executable).parent)
    if bindir not in env['PATH'].split(os.pathsep):
        env['PATH'] = bindir + os.pathsep + env['PATH']
    if collections_path:
        env['ANSIBLE_COLLECTIONS_PATH'] = collections_path
    if args.stdout_callback:
        env['ANSIBLE_STDOUT_CALLBACK'] = args.stdout_callback
    env['ANSIBLE_NOCOLOR'] = '1'
    env.pop('ANSIBLE_FORCE_COLOR', None)
    env.setdefault('ANSIBLE_RETRY_FILES_ENABLED', 'False')
    env['PYTHONUNBUFFERED'] = '1'
    return env


def _find_ansible_playbook(args) -> str:
    if args.ansible_playbook:
        path = shutil.which(args.ansible_playbook)
        if not path:
            raise ConfigError(f'--ansible-playbook {args.ansible_playbook!r} is not an executable')
        return path
    candidate = Path(sys.executable).parent / 'ansible-playbook'
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    path = shutil.which('ansible-playbook')
    if not path:
        raise ConfigError('ansible-playbook not found next to %s nor on PATH; install ansible-core or pass --ansible-playbook'
                          % sys.executable)
    return path


def _check_output_file(option: str, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.parent.is_dir():
        raise ConfigError(f'{option} {value!r}: directory {str(path.parent)!r} does not exist; create it first')
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f'{option} {value!r}: directory {str(path.parent)!r} is not writable by uid {os.getuid()}')
    return path


def _validate(args) -> dict:
    if not args.inventory:
        raise ConfigError('no inventory: pass --inventory (or set CA_ROTATE_INVENTORY)')
    if ',' not in args.inventory and not Path(args.inventory).exists():
        raise ConfigError(f'inventory {args.inventory!r} does not exist')
    playbook = args.playbook
    is_fqcn = re.fullmatch(r'[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+', playbook or '') is not None and not Path(playbook).exists()
    if not playbook or (not is_fqcn and not Path(playbook).is_file()):
        raise ConfigError(f'playbook {playbook!r} does not exist (give a path or a FQCN such as securetransport.ca_rotation.rotate)')
    if args.timeout < 0 or args.kill_grace < 0:
        raise ConfigError('--timeout and --kill-grace must not be negative')
    if args.canary_max_age <= 0:
        raise ConfigError('--canary-max-age must be a positive number of seconds')
    if not 0 <= args.busy_exit_code <= 255:
        raise ConfigError('--busy-exit-code must be between 0 and 255')
    epoch_duration = None
    if args.epoch_duration:
        ensure_collection_importable()
        from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import EpochError, parse_duration
        try:
            epoch_duration = parse_duration(args.epoch_duration, '--epoch-duration')
        except EpochError as err:
            raise ConfigError(str(err)) from None
    lock_parent = Path(args.lock_file).parent
    if not lock_parent.is_dir():
        raise ConfigError(f'--lock-file {args.lock_file!r}: directory {str(lock_parent)!r} does not exist')
    return {
        'playbook': playbook,
        'report_file': _check_output_file('--report-file', args.report_file),
        'metrics_file': _check_output_file('--metrics-file', args.metrics_file),
        'ansible_playbook': _find_ansible_playbook(args),
        'epoch_duration': epoch_duration,
    }


def acquire_lock(path: str):
    """Open and flock ``path``. Returns the open fd, or ``(None, holder text)`` when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o644)
        writable = True
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
            writable = False
        except OSError as exc:
            raise ConfigError(f'cannot open lock file {path!r}: {exc.strerror}; pick another --lock-file') from None
    except OSError as exc:
        raise ConfigError(f'cannot open lock file {path!r}: {exc.strerror}; pick another --lock-file') from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise ConfigError(f'cannot lock {path!r}: {exc.strerror}') from None
        try:
            holder = os.pread(fd, 200, 0).decode('utf-8', 'replace').strip()
        except OSError:
            holder = ''
        os.close(fd)
        return None, holder
    if writable:
        stamp = f'pid={os.getpid()} host={socket.gethostname()} started={_iso(time.time())}\n'
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp.encode('utf-8'), 0)
        except OSError:
            pass
    return fd, None


class _Runner:
    """Runs ansible-playbook in its own process group, with timeout and signal forwarding."""

    def __init__(self, argv, env, timeout, kill_grace):
        self.argv = argv
        self.env = env
        self.timeout = timeout or None
        self.kill_grace = kill_grace
        self.proc = None
        self.signalled = None
        self.timed_out = False

    def _forward(self, signum, _frame):
        self.signalled = signum
        self._terminate()

    def _terminate(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        old = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                return self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                _log(f'the run exceeded --timeout {self.timeout:g}s; stopping it')
                self._terminate()
            try:
                return self.proc.wait(timeout=self.kill_grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return self.proc.wait()
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)


def classify(rc: int, rotation: dict | None, timed_out: bool, signalled) -> tuple[str, int, str]:
    """(result name, wrapper exit code, message) for an ansible-playbook exit status and report."""
    if timed_out:
        return 'timeout', EXIT_TIMEOUT, 'the run exceeded the timeout and was killed'
    if signalled is not None:
        return 'error', EXIT_ERROR, f'the wrapper received signal {signalled} and stopped the run'
    if rc == 0:
        if rotation is None:
            return 'success', EXIT_OK, 'ansible-playbook succeeded (the playbook wrote no report)'
        if _flag(rotation.get('locked_out')):
            return 'busy', EXIT_BUSY, 'another controller holds the OpenBao rotation lock; nothing was done'
        if _flag(rotation.get('ok')) is False:
            return 'failed', EXIT_FAILED, 'ansible-playbook succeeded but its report says the rotation failed'
        return 'success', EXIT_OK, 'rotation converged' + (' (changed)' if _flag(rotation.get('changed')) else ' (nothing to do)')
    if rc in (1, 2):
        return 'failed', EXIT_FAILED, f'the rotation failed (ansible-playbook exit {rc})'
    if rc == 4:
        return 'unreachable', EXIT_UNREACHABLE, 'hosts were unreachable, or the playbook/inventory could not be parsed (ansible-playbook exit 4)'
    if rc == 5:
        return 'config', EXIT_CONFIG, 'ansible-playbook rejected its options (exit 5); check the arguments after "--"'
    if rc < 0:
        return 'error', EXIT_ERROR, f'ansible-playbook was killed by signal {-rc}'
    return 'error', EXIT_ERROR, f'ansible-playbook ended with exit {rc} (99: interrupted, 250: internal error)'


def _read_rotation_report(path: Path):
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f'cannot read the playbook report {str(path)!r}: {exc.strerror}'
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f'the playbook report {str(path)!r} is not JSON: {exc}'
    if not isinstance(data, dict):
        return None, f'the playbook report {str(path)!r} is not a JSON object'
    return data, None


CANARY_SCHEMA = 'securetransport.ca_trust_canary_verdict/v1'


def canary_link(path, finished: float, max_age: float) -> dict:
    """The ``canary`` section of the run report: the trust canary's last verdict, read beside the rotation report.

    ``status``: ``ok`` (no violation), ``violation``, ``incomplete`` (no violation, but OpenBao or a server could not be
    checked), ``stale`` (older than ``max_age`` seconds at the end of the run), ``missing`` or ``unreadable``.
    """
    out = {'file': str(path), 'status': 'missing', 'ok': None}
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except FileNotFoundError:
        return out
    except (OSError, ValueError) as exc:
        return dict(out, status='unreadable', error=str(exc))
    if not isinstance(data, dict) or data.get('schema') != CANARY_SCHEMA:
        return dict(out, status='unreadable', error='not a %s document' % CANARY_SCHEMA)
    checked = parse_timestamp(data.get('checked_at'))
    age = None if checked is None else round(finished - checked, 3)
    violations = [v for v in data.get('violations') or [] if isinstance(v, dict)]
    out.update(checked_at=data.get('checked_at'), age_seconds=age, violation_count=len(violations),
               invariants=sorted({str(v.get('invariant')) for v in violations}),
               violations=[v.get('msg') for v in violations][:20], errors=len(data.get('errors') or []),
               default_epoch=data.get('default_epoch'))
    if age is None or age > max_age:
        out['status'] = 'stale'
    elif violations:
        out.update(status='violation', ok=False)
    else:
        out.update(status='ok' if data.get('complete', True) else 'incomplete', ok=True)
    return out


def run(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = []
    if '--' in argv:  # everything after "--" goes to ansible-playbook unchanged
        index = argv.index('--')
        argv, passthrough = argv[:index], argv[index + 1:]
    args = build_parser().parse_args(argv)  # usage errors exit 2 (EXIT_CONFIG), as argparse does

    try:
        base = ensure_collection_importable()
        checked = _validate(args)
        collections_path = args.collections_path or os.environ.get('ANSIBLE_COLLECTIONS_PATH') or str(base)
        lock_fd, holder = acquire_lock(args.lock_file)
    except ConfigError as err:
        _log(f'configuration error: {err}')
        return EXIT_CONFIG
    if lock_fd is None:
        _log(f'another run holds {args.lock_file} ({holder or "holder unknown"}); exiting with {args.busy_exit_code} '
             '(this is not an error: the running instance does the work)')
        return args.busy_exit_code

    try:
        return _run_locked(args, checked, collections_path, passthrough)
    finally:
        os.close(lock_fd)


def _run_locked(args, checked, collections_path, passthrough) -> int:
    started = time.time()
    workdir = tempfile.mkdtemp(prefix='ca-rotate-cron.')
    rotation_path = Path(workdir) / 'rotation-report.json'
    argv = [checked['ansible_playbook'], checked['playbook'], '-i', args.inventory,
            '-e', json.dumps({REPORT_VAR: str(rotation_path)})]
    for extra in args.extra_vars:
        argv += ['-e', extra]
    argv += passthrough
    env = child_environment(args, collections_path)
    _log(f'running {checked["playbook"]} on {args.inventory}')
    runner = _Runner(argv, env, args.timeout, args.kill_grace)
    try:
        rc = runner.run()
        launch_error = None
    except OSError as exc:
        rc, launch_error = 127, f'cannot run {argv[0]}: {exc.strerror}'
    finished = time.time()

    rotation, report_problem = _read_rotation_report(rotation_path)
    shutil.rmtree(workdir, ignore_errors=True)
    if launch_error:
        result, code, message = 'config', EXIT_CONFIG, launch_error
    else:
        result, code, message = classify(rc, rotation, runner.timed_out, runner.signalled)
        if report_problem:
            message += f'; {report_problem}'
            if result == 'success':
                result, code = 'failed', EXIT_FAILED
    if result == 'busy':
        code = args.busy_exit_code

    report = {
        'schema': REPORT_SCHEMA,
        'result': result,
        'exit_code': code,
        'message': message,
        'ansible_playbook_rc': None if launch_error else rc,
        'started_at': _iso(started),
        'finished_at': _iso(finished),
        'duration_seconds': round(finished - started, 3),
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'playbook': checked['playbook'],
        'inventory': args.inventory,
        'rotation': rotation,
    }
    if rotation:
        for key in ('epoch', 'current_epoch', 'generation', 'bundle_sha256', 'changed', 'activated_epoch'):
            report[key] = rotation.get(key)
    if args.canary_verdict:
        canary = canary_link(args.canary_verdict, finished, args.canary_max_age)
        report['canary'] = canary
        report['trust_ok'] = canary['ok']
        if canary['status'] == 'violation':
            message += '; but the trust canary saw %d violation(s) (%s) at %s' % (
                canary['violation_count'], ', '.join(canary['invariants']), canary['checked_at'])
            report['message'] = message
        elif canary['status'] in ('stale', 'missing', 'unreadable'):
            message += '; the trust canary verdict %s is %s' % (args.canary_verdict, canary['status'])
            report['message'] = message
    try:
        if checked['report_file']:
            atomic_write(checked['report_file'], json.dumps(report, indent=2, sort_keys=True) + '\n')
        if checked['metrics_file'] or args.pushgateway:
            previous = read_metrics(checked['metrics_file'])
            metrics = build_metrics(previous, result, started, finished, code, rotation, checked['epoch_duration']).render()
            if checked['metrics_file']:
                atomic_write(checked['metrics_file'], metrics)
            if args.pushgateway:
                push_metrics(args.pushgateway, args.pushgateway_job, metrics)
    except OSError as exc:
        _log(f'cannot write the report or metrics: {exc}')
        if code == EXIT_OK:
            code = EXIT_CONFIG
    summary = f'result={result} exit={code} duration={finished - started:.1f}s'
    if 'canary' in report:
        summary += f' canary={report["canary"]["status"]}'
    if rotation:
        summary += f' epoch={rotation.get("epoch")} generation={rotation.get("generation")} changed={rotation.get("changed")}'
    _log(f'{message}; {summary}')
    return code


def main(argv=None) -> int:
    return run(argv)

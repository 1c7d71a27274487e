# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reload orchestration over any transport: every target in parallel, proven (private).

For every target: optionally wait (bounded, polling) until its CA file has the expected SHA-256, check that the file
parses into certificates as nats-server reads it (counted per key family), read ``config_load_time``, reload, and
poll until ``config_load_time`` has advanced. An optional TLS probe with a client certificate (e.g. of the new
epoch) must then be accepted by every server.
"""

from __future__ import annotations

import concurrent.futures
import time

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import family_counts
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import PemError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pem import pem_certificates
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.pqtls import PQContext
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import (
    ReloadError,
    TargetError,
    _short,
    load_time_advanced,
    normalize_sha256,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.probe import probe_context, tls_probe
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.system import SystemTransport

TRANSPORTS = ('signal', 'command', 'kubernetes', 'system')
MAX_WORKERS = 64


# --------------------------------------------------------------------------------------------------
# orchestration

def _poll(fn, timeout, interval, max_interval=1.0, sleep=time.sleep):
    """Call ``fn()`` until it returns a true value or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        sleep(max(0.0, min(interval, deadline - time.monotonic())))
        interval = min(max_interval, interval * 1.5)


def new_result(transport_name, target):
    return {
        'target': target.name, 'transport': transport_name, 'server_id': target.server_id,
        'server_name': target.server_name, 'ca_file': None, 'sha256_seen': None, 'sha256_ok': None, 'ca_certificates': None,
        'load_time_before': None, 'load_time_after': None, 'reload_ms': None, 'signalled': False,
        'changed': False, 'probe_ok': None, 'probe_detail': None, 'probes': None, 'ok': False, 'error': None,
    }


def process_target(transport, target, expect_sha256=None, propagation_timeout=180.0, reload_timeout=30.0,
                   probe=None, check_mode=False, sleep=time.sleep):
    """Pre-check, reload and verify one target; returns its result dict (never raises). ``probe``: the list of
    :func:`prepare_probes`, every one of which must be accepted (None or empty: no probe)."""
    res = new_result(transport.name, target)
    res['ca_file'] = transport.ca_location(target) if (expect_sha256 or target.ca_file) else None
    try:
        _process(transport, target, res, expect_sha256, propagation_timeout, reload_timeout, probe, check_mode, sleep)
    except TargetError as exc:
        res['error'] = str(exc)
    except Exception as exc:  # pylint: disable=broad-except  # one target must not take the others down
        res['error'] = f"unexpected error: {type(exc).__name__}: {_short(exc)}"
    res['ok'] = res['error'] is None
    return res


def _process(transport, target, res, expect, propagation_timeout, reload_timeout, probe, check_mode, sleep):
    if target.problem:
        raise TargetError(target.problem)

    # 1. the expected bundle bytes are visible where the server reads them
    if expect:
        errors = []  # the read error of the last attempt, if it failed

        def seen():
            del errors[:]
            try:
                res['sha256_seen'] = transport.read_sha256(target)
            except TargetError as exc:
                if exc.permanent:
                    raise
                errors.append(exc)
                return False
            return res['sha256_seen'] == expect

        if check_mode:
            seen()
        else:
            _poll(seen, propagation_timeout, transport.sha_interval, max(transport.sha_interval, 2.0), sleep)
        if errors and res['sha256_seen'] is None:
            raise errors[-1]
        res['sha256_ok'] = res['sha256_seen'] == expect
        if not res['sha256_ok'] and not check_mode:
            raise TargetError(f"CA file {transport.ca_location(target)} still has sha256 {res['sha256_seen']} after "
                              f"{propagation_timeout:g}s, expected {expect}: the new bundle has not reached this server "
                              "(kubelet syncs mounted Secrets about once a minute; raise propagation_timeout if needed)")

    # 1b. the CA file parses as nats-server reads it: Go's PEM decoder skips a block glued to the next one without an
    # error, so a reload would "succeed" while those certificates are not trusted
    text = transport.read_ca_text(target)
    if text is not None:
        where = f"CA file {transport.ca_location(target)}"
        try:
            res['ca_certificates'] = family_counts(pem_certificates(text, where, strict=True))
        except PemError as exc:
            raise TargetError(f"{exc}; not reloaded", permanent=True) from None
        except ValueError as exc:
            raise TargetError(f"{where} holds a certificate that does not parse ({_short(exc)}); not reloaded",
                              permanent=True) from None

    # 2. the load time before
    try:
        varz = transport.read_varz(target)
    except TargetError as exc:
        raise TargetError(f"server not reachable before the reload: {exc}") from None
    before = varz.get('config_load_time')
    if not before:
        raise TargetError("the server reports no config_load_time (nats-server older than 2.2?)")
    if target.server_id and varz.get('server_id') and varz['server_id'] != target.server_id:
        raise TargetError(f"the monitoring endpoint answers for server {varz['server_id']} ({varz.get('server_name')}), "
                          f"not {target.server_id}: check monitor_url")
    res['server_id'] = res['server_id'] or varz.get('server_id')
    res['server_name'] = res['server_name'] or varz.get('server_name')
    res['load_time_before'] = before
    if check_mode:
        return

    # 3. reload and see the load time advance
    transport.prepare(target)
    started = time.monotonic()
    try:
        transport.reload(target)
        res['signalled'] = True
    finally:  # a refused reload was still delivered when the server itself answered
        res['signalled'] = res['signalled'] or bool(target.state.get('delivered'))
    state = {'varz': None, 'error': None, 'reason': None}

    def advanced():
        try:
            state['varz'] = transport.read_varz(target)
            state['error'] = None
        except TargetError as exc:
            state['error'] = exc
            state['varz'] = None
        if state['varz'] and load_time_advanced(before, state['varz'].get('config_load_time')):
            return True
        state['reason'] = transport.failure_reason(target)
        return bool(state['reason'])

    _poll(advanced, reload_timeout, transport.varz_interval, 0.5, sleep)
    after = (state['varz'] or {}).get('config_load_time')
    res['load_time_after'] = after
    if not (after and load_time_advanced(before, after)):
        reason = state['reason'] or transport.failure_reason(target)
        if reason:
            raise TargetError(f"NATS rejected the new configuration and kept the old one: {reason}")
        if state['error'] is not None:
            raise TargetError(f"server not reachable after the reload: {state['error']}")
        hint = target.state.get('log_error') or ('see the server log' if not target.log_file else 'nothing in its log explains it')
        raise TargetError(f"config_load_time did not advance within {reload_timeout:g}s (still {before}): the server did not "
                          f"reload, or kept its old configuration ({hint})")
    res['reload_ms'] = int(round((time.monotonic() - started) * 1000))
    if varz.get('start') and state['varz'].get('start') and varz['start'] != state['varz']['start']:
        raise TargetError(f"the server restarted (start {varz['start']} -> {state['varz']['start']}) instead of reloading")
    res['changed'] = True

    # 4. the new trust works, for each probe (one per key family a dual-family bundle serves)
    if probe:
        host, port = transport.probe_address(target, state['varz'])
        verdicts = []
        for spec in probe:
            ok, detail = tls_probe(host, port, spec['context'], spec.get('server_name'), spec.get('timeout', 10.0))
            verdicts.append({'name': spec['name'], 'ok': ok, 'detail': detail})
        res['probes'] = verdicts
        res['probe_ok'] = all(v['ok'] for v in verdicts)
        res['probe_detail'] = (verdicts[0]['detail'] if len(verdicts) == 1
                               else '; '.join(f"{v['name']}: {v['detail']}" for v in verdicts))
        refused = [v for v in verdicts if not v['ok']]
        if len(verdicts) == 1 and refused:
            raise TargetError(f"reloaded, but the probe certificate is not accepted: {refused[0]['detail']}")
        if refused:
            raise TargetError("reloaded, but the probe certificate%s %s %s not accepted: %s"
                              % ('s' if len(refused) > 1 else '', ', '.join(v['name'] for v in refused),
                                 'are' if len(refused) > 1 else 'is', '; '.join(f"{v['name']}: {v['detail']}" for v in refused)))


def prepare_probes(probe=None, probes=None):
    """The probes every server must accept, each with its SSL context (loaded now, so a bad file stops the run before
    any reload) and a ``name``: its own, or its certificate chain's key family (``classical``, ``mldsa``)."""
    if probe is not None and probes:
        raise ReloadError("give probe or probes, not both (probes lists one client certificate per key family)",
                          option='probes')
    given = [('probe', probe)] if probe is not None else [('probes[%d]' % i, p) for i, p in enumerate(probes or [])]
    prepared, names = [], {}
    for option, spec in given:
        spec = dict(spec or {})
        spec['context'] = probe_context(spec, option=option)
        spec['timeout'] = float(spec.get('timeout') or 10.0)
        spec['name'] = spec.get('name') or ('mldsa' if isinstance(spec['context'], PQContext) else 'classical')
        if spec['name'] in names:
            raise ReloadError(f"{option} and {names[spec['name']]} are both named {spec['name']!r}: give each probe its own "
                              f"name ({option}.name)", option=f'{option}.name')
        names[spec['name']] = option
        prepared.append(spec)
    return prepared


def reload_servers(transport, expect_sha256=None, propagation_timeout=180, reload_timeout=30, probe=None,
                   min_success=None, check_mode=False, max_workers=MAX_WORKERS, sleep=time.sleep, probes=None):
    """Discover, pre-check, reload and verify every target of ``transport`` in parallel; returns the module result.

    ``probe``: None or a dict with ``cert_file``, ``key_file`` and optionally ``ca_file``, ``server_name``,
    ``partial_chain``, ``timeout``; ``probes``: a list of such dicts (each may have a ``name``), every one of which
    each server must accept. Raises ReloadError when the run cannot start; otherwise the result has
    ``failed`` set when fewer than ``min_success`` (default: every target) passed.
    """
    expect = normalize_sha256(expect_sha256)
    for option, value in (('propagation_timeout', propagation_timeout), ('reload_timeout', reload_timeout)):
        if value is None or float(value) <= 0:
            raise ReloadError(f"{option} must be a positive number of seconds, got {value!r}", option=option)
    if min_success is not None and int(min_success) < 0:
        raise ReloadError(f"min_success must be 0 or more, got {min_success}", option='min_success')
    probe = prepare_probes(probe, probes)
    transport.varz_timeout = min(float(transport.varz_timeout), float(reload_timeout))
    targets = transport.discover()
    if expect and isinstance(transport, SystemTransport):
        missing = [t.name for t in targets if not t.ca_file and not t.problem]
        if missing:
            raise ReloadError("expect_sha256 with transport=system needs each server's ca_file (readable on this host) in "
                              f"targets; missing for: {', '.join(missing)}", option='expect_sha256')
    results = []
    if targets:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets)))) as pool:
            futures = [pool.submit(process_target, transport, target, expect, float(propagation_timeout), float(reload_timeout),
                                   probe, check_mode, sleep) for target in targets]
            results = [f.result() for f in futures]
    return summarize(results, transport.name, min_success, check_mode)


def summarize(results, transport_name, min_success=None, check_mode=False):
    """The module result for per-target ``results``: counts, changed, failed, msg."""
    total = len(results)
    passed = sum(1 for r in results if r['ok'])
    required = total if min_success is None else int(min_success)
    changed = any(r['changed'] for r in results) or (check_mode and any(r['ok'] for r in results))
    failed = passed < required or (total == 0 and min_success != 0)
    verb = 'would be reloaded (check mode)' if check_mode else 'reloaded and verified'
    if total == 0:
        msg = f"no NATS server found (transport {transport_name})"
    else:
        msg = f"{passed} of {total} NATS servers {verb}"
        if min_success is not None:
            msg += f" (min_success {required})"
    groups = {}  # the same failure on several servers is told once, naming them all
    for r in results:
        if r['error']:
            groups.setdefault(r['error'].replace(r['target'], '\0'), []).append(r)
    if groups:
        msg += '; ' + '; '.join(f"{', '.join(r['target'] for r in rs)}: {rs[0]['error']}" for rs in groups.values())
    return {
        'changed': bool(changed), 'failed': bool(failed), 'msg': msg, 'targets': results, 'transport': transport_name,
        'total': total, 'ok_count': passed, 'failed_count': total - passed, 'reloaded': sum(1 for r in results if r['changed']),
        'min_success': required,
    }

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status report as a human table (private)."""

from __future__ import annotations

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._status.cluster import not_loaded

MISMATCH = 'mismatch'
WARNING = 'warning'


def _sha(value):
    return (value or '-')[:16]


def _columns(rows, headers):
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(str(cell)))
    fmt = '  '.join('%%-%ds' % w for w in widths)
    return [('  ' + fmt % tuple(headers)).rstrip()] + [('  ' + fmt % tuple(str(c) for c in row)).rstrip() for row in rows]


def _yn(value):
    return '-' if value is None else ('yes' if value else 'NO')


def render_table(report):
    """The report as lines of text for a terminal."""
    auth = report['authority'] or {}
    plan = auth.get('plan') or {}
    state = auth.get('state') or {}
    lines = ['CA rotation status at %s: %s' % (report['generated_at'], 'OK' if report['ok'] else '%d MISMATCH(ES)' % report['mismatch_count'])
             + (', %d warning(s)' % report['warning_count'] if report['warning_count'] else ''),
             'epoch %s current, prepared %s, valid %s' % (plan.get('current_epoch'), plan.get('prepared_epoch'),
                                                          ', '.join(str(n) for n in plan.get('valid_epochs') or []))]
    if state:
        lock = state.get('lock') or {}
        hold = state.get('hold') or {}
        lines.append('state %s: generation %s, epoch %s (last %s), bundle %s, lock %s, hold %s'
                     % (state.get('location'), state.get('generation'), state.get('epoch'), state.get('last_epoch'),
                        _sha(state.get('bundle_sha256')), ('%s until %s' % (lock.get('holder'), lock.get('expires_at'))) if lock else 'none',
                        ('epoch %s since %s' % (hold.get('epoch'), hold.get('since'))) if hold else 'none'))
    for entry in report.get('distrusted') or []:
        lines.append('distrusted: epoch %s %s (sha256 %s) since %s%s, %s%s' % (
            entry.get('epoch'), entry.get('issuer_name'), _sha(entry.get('sha256')), entry.get('at'),
            ' (%s)' % entry['reason'] if entry.get('reason') else '',
            'DISTRUST PENDING' if entry.get('pending') else
            'valid until %s' % entry.get('not_after') if entry.get('valid') else 'expired',
            ': STILL HELD by %s' % ', '.join(entry['held_by']) if entry.get('held_by') else ': held nowhere'))
    bundle = auth.get('kv_bundle') or {}
    in_bundle = {c['sha256'] for c in bundle.get('certificates') or []}
    if auth.get('issuers') is not None:
        lines.append('issuers (%s):' % (auth.get('openbao') or {}).get('int_mount'))
        rows = [(i['epoch'], i['issuer_name'], i['state'], 'yes' if i.get('is_default') else '', i['not_after'],
                 _yn(i['sha256'] in in_bundle) if bundle.get('found') else '-') for i in auth['issuers']]
        lines += _columns(rows, ('epoch', 'issuer', 'state', 'default', 'not_after', 'in bundle'))
    if bundle:
        certs = bundle.get('certificates') or []
        lines.append('kv bundle %s: %s' % (bundle.get('location'), (
            '%s, %d certificate(s): %s' % (_sha(bundle.get('sha256')), len(certs), ', '.join(
                'root' if c.get('kind') == 'root' else 'epoch %s' % c.get('epoch') for c in certs)))
            if bundle.get('found') else bundle.get('error') or 'MISSING'))
    secret = auth.get('epoch_secret')
    if secret:
        lines.append('epoch secret %s/%s: %s' % (secret['namespace'], secret['name'], secret.get('error') or (
            _sha(secret.get('sha256')) if secret.get('found') else 'MISSING')))
    ann = auth.get('announcement')
    if ann:
        if ann.get('error') or not ann.get('found'):
            text = ann.get('error') or 'none'
        else:
            text = 'seq %s generation %s epoch %s kind %s bundle %s signature %s' % (
                ann.get('seq'), ann.get('generation'), ann.get('epoch'), ann.get('kind'), _sha(ann.get('bundle_sha256')),
                {True: 'ok', False: 'BAD', None: 'unchecked'}[ann.get('signature_ok')])
        lines.append('announcement %s: %s' % (ann.get('subject'), text))
    expected = state.get('bundle_sha256')
    rows = []
    records = auth.get('cluster_records') or {}
    for facts in report['clusters']:
        if not facts:
            continue
        name = facts['cluster']
        record = records.get(name)
        live = facts.get('live_secret')
        if live:
            lines.append('cluster %s live secret %s/%s: %s' % (name, live['namespace'], live['name'], live.get('error') or (
                '%s%s' % (_sha(live.get('sha256')), '' if live.get('sha256') == expected else ' (DIFFERS)') if live.get('found') else 'MISSING')))
        if record is not None or name in records:
            lines.append('cluster %s proof record: %s' % (name, ('bundle %s epoch %s proven %s' % (
                _sha(record.get('sha256')), record.get('epoch'), record.get('proven_at'))) if record else 'MISSING'))
        if facts.get('error'):
            lines.append('cluster %s: %s' % (name, facts['error']))
        for server in facts.get('servers') or []:
            tls = server.get('tls') or {}
            sha = server.get('ca_sha256')
            rows.append((name, server.get('name'),
                         '%s %s' % (_sha(sha), 'ok' if sha and sha == expected else 'DIFFERS') if sha else (
                             'ERROR' if server.get('ca_error') or server.get('error') else '-'),
                         {True: 'NO', False: 'yes', None: '?'}[not_loaded(server)],
                         server.get('config_load_time') or ('UNREACHABLE' if server.get('varz_error') else '-'),
                         (str(server.get('served_epoch', tls.get('issuer_epoch'))) if tls else (
                             'ERROR' if server.get('tls_error') else '-')),
                         tls.get('not_after') or '-'))
    if rows:
        lines.append('servers:')
        lines += _columns(rows, ('cluster', 'server', 'ca file', 'loaded', 'config_load_time', 'served epoch', 'leaf not_after'))
    if report['findings']:
        lines.append('findings:')
        for item in report['findings']:
            lines.append('  %s %s [%s] %s' % ('MISMATCH' if item['severity'] == MISMATCH else 'warning ', item['code'],
                                              item['where'], item['msg']))
    return lines

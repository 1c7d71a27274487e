# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The epoch timeline as one self-contained HTML page with an inline SVG (private; standard library only).

No script, no stylesheet or font from elsewhere: the page is a file that opens anywhere, also offline and
with JavaScript off. :func:`render_timeline` draws a *timeline model* (below); :func:`model_from_report`
makes one from the status report (``playbooks/status.yml``); the trust canary builds its own.

Timeline model (every time an ISO-8601 string, UTC)::

    {'title': str, 'now': str, 'generated_at': str,
     'verdict': {'ok': bool, 'text': str, 'items': [str]},          # optional
     'epochs': [{'epoch': int, 'name': str, 'not_before': str, 'not_after': str,
                 'state': 'prepared' | 'active' | 'valid' | 'expired' | 'distrusted', 'in_bundle': bool | None}],
     'clusters': [{'name': str, 'servers': [{'name': str, 'status': 'ok' | 'mismatch' | 'unreachable' | 'unknown',
                   'loaded': [int] | None, 'served_epoch': int | None, 'served_not_after': str | None,
                   'accepted': {epoch: bool}, 'note': str}]}]}
"""

from __future__ import annotations

import datetime
from html import escape

STATES = ('prepared', 'active', 'valid', 'expired', 'distrusted')
COLOURS = {
    'prepared': '#6c8ebf', 'active': '#2e8b57', 'valid': '#9ccc65', 'expired': '#b0b0b0', 'distrusted': '#d9534f',
}
STATUS_COLOURS = {'ok': '#2e8b57', 'mismatch': '#d9534f', 'unreachable': '#f0ad4e', 'unknown': '#b0b0b0'}
# the issuer states of _openbao.pki.issuer_state, as the timeline names them
ISSUER_STATES = {'active': 'active', 'prepared': 'prepared', 'valid': 'valid', 'expired': 'expired', 'revoked': 'distrusted'}

WIDTH = 960
LABEL_W = 170
ROW_H = 26
TOP = 34

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555;font-size:13px}.verdict{padding:8px 12px;border-radius:4px;margin:12px 0;font-weight:600}
.verdict.ok{background:#e6f4ea;color:#1e6b3a}.verdict.bad{background:#fdecea;color:#a12622}
.verdict ul{margin:4px 0 0 18px;font-weight:400}
table{border-collapse:collapse;font-size:13px;margin-bottom:8px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.chip{display:inline-block;border-radius:3px;padding:0 5px;margin:1px;color:#fff;font-size:12px}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
.yes{color:#1e6b3a;font-weight:600}.na{color:#666}td.t{white-space:nowrap}.no{color:#a12622;font-weight:600}
"""


def _time(value):
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if not value:
        return None
    text = str(value).strip().replace('Z', '+00:00')
    if '.' in text:  # nanoseconds (NATS) do not parse: keep microseconds
        head, _dot, tail = text.partition('.')
        digits = ''.join(c for c in tail if c.isdigit())
        text = head + '.' + digits[:6] + tail[len(digits):]
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _short_time(dt):
    return dt.strftime('%H:%M:%S') if dt else '-'


def _colour(state):
    return COLOURS.get(state, '#999')


def _chip(text, colour, title=''):
    return '<span class="chip" style="background:%s" title="%s">%s</span>' % (colour, escape(title), escape(str(text)))


def _svg(epochs, now):
    """The timeline: one bar per epoch from NotBefore to NotAfter, coloured by state, and a line at "now"."""
    spans = [(_time(e.get('not_before')), _time(e.get('not_after'))) for e in epochs]
    times = [t for pair in spans for t in pair if t] + ([now] if now else [])
    height = TOP + ROW_H * max(len(epochs), 1) + 24
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="%d" height="%d" viewBox="0 0 %d %d" '
             'role="img" aria-label="epoch timeline">' % (WIDTH, height, WIDTH, height),
             '<rect x="0" y="0" width="%d" height="%d" fill="#fcfcfc" stroke="#e5e5e5"/>' % (WIDTH, height)]
    if not times:
        parts.append('<text x="12" y="24" font-size="13">no intermediates</text></svg>')
        return '\n'.join(parts)
    start, end = min(times), max(times)
    total = max((end - start).total_seconds(), 1.0)
    longest = max(len('%s %s' % (e.get('name') or 'epoch-%s' % e.get('epoch'), e.get('state') or '')) for e in epochs) if epochs else 0
    label_w = max(LABEL_W, int(longest * 7.6) + 20)
    plot_w = WIDTH - label_w - 16

    def x_of(t):
        return label_w + plot_w * (t - start).total_seconds() / total

    for i in range(6):  # time axis
        t = start + datetime.timedelta(seconds=total * i / 5)
        x = x_of(t)
        anchor = 'start' if i == 0 else ('end' if i == 5 else 'middle')
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>' % (x, TOP - 6, x, height - 20))
        parts.append('<text x="%.1f" y="%d" font-size="11" fill="#666" text-anchor="%s">%s</text>'
                     % (x, height - 6, anchor, escape(t.strftime('%m-%d %H:%M:%S'))))
    for row, (entry, (nb, na)) in enumerate(zip(epochs, spans)):
        y = TOP + row * ROW_H
        state = entry.get('state') or 'valid'
        name = entry.get('name') or 'epoch-%s' % entry.get('epoch')
        title = '%s %s: %s .. %s%s' % (name, state, entry.get('not_before'), entry.get('not_after'),
                                       {True: ', in the bundle', False: ', not in the bundle'}.get(entry.get('in_bundle'), ''))
        parts.append('<g class="epoch" id="epoch-%s" data-epoch="%s" data-state="%s"><title>%s</title>'
                     % (escape(str(entry.get('epoch'))), escape(str(entry.get('epoch'))), escape(state), escape(title)))
        parts.append('<text x="8" y="%d" font-size="13">%s <tspan fill="%s">%s</tspan></text>'
                     % (y + 16, escape(name), _colour(state), escape(state)))
        if nb and na:
            x1, x2 = x_of(nb), x_of(na)
            dash = ' stroke-dasharray="4 2"' if entry.get('in_bundle') is False else ''
            parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="3" fill="%s" stroke="#333" stroke-opacity="0.25"%s/>'
                         % (x1, y + 4, max(x2 - x1, 2.0), ROW_H - 8, _colour(state), dash))
        parts.append('</g>')
    if now:
        x = min(max(x_of(now), label_w + 30), WIDTH - 50)
        line = x_of(now)
        parts.append('<g id="now"><line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c00" stroke-width="2"/>'
                     '<text x="%.1f" y="%d" font-size="12" fill="#c00" text-anchor="middle">now %s</text></g>'
                     % (line, TOP - 8, line, height - 20, x, TOP - 12, escape(_short_time(now))))
    parts.append('</svg>')
    return '\n'.join(parts)


def _server_rows(cluster, epochs, with_accepts=True):
    rows = []
    for server in cluster.get('servers') or []:
        status = server.get('status') or 'unknown'
        loaded = server.get('loaded')
        loaded_html = ' '.join(_chip('epoch-%s' % n, _colour(_state_of(epochs, n))) for n in loaded) if loaded else (
            '-' if loaded is None else 'none')
        served = server.get('served_epoch')
        served_html = _chip('epoch-%s' % served, _colour(_state_of(epochs, served))) if served is not None else '-'
        accepted = server.get('accepted') or {}
        acc_html = ' '.join('<span class="%s" title="epoch-%s %s: %s">%s%s</span>' % (
            _expected(_state_of(epochs, _int(n)), ok), escape(str(n)), escape(str(_state_of(epochs, _int(n)))),
            'accepted' if ok else 'refused', escape(str(n)), '&#10003;' if ok else '&#10007;')
            for n, ok in sorted(accepted.items(), key=lambda kv: _int(kv[0]))) or '-'
        rows.append('<tr class="server" data-cluster="%s" data-server="%s" data-status="%s" data-served-epoch="%s">'
                    '<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td class="t">%s</td>%s<td>%s</td></tr>' % (
                        escape(cluster.get('name') or ''), escape(server.get('name') or ''), escape(status),
                        '' if served is None else escape(str(served)),
                        escape(server.get('name') or ''), _chip(status, STATUS_COLOURS.get(status, '#999')), loaded_html,
                        served_html, escape(server.get('served_not_after') or '-'),
                        '<td>%s</td>' % acc_html if with_accepts else '', escape(server.get('note') or '')))
    return rows


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _expected(state, accepted):
    """CSS class of a handshake outcome: ``yes`` as it should be (valid accepted, expired or distrusted refused), ``no``
    when it should not be, ``na`` for a prepared epoch (refused until its bundle is delivered)."""
    if state in ('active', 'valid'):
        return 'yes' if accepted else 'no'
    if state in ('expired', 'distrusted'):
        return 'no' if accepted else 'yes'
    return 'na'


def _state_of(epochs, number):
    for entry in epochs:
        if entry.get('epoch') == number:
            return entry.get('state')
    return None


def render_timeline(model):
    """The timeline model as a complete HTML document (text)."""
    model = model or {}
    epochs = sorted(model.get('epochs') or [], key=lambda e: (e.get('epoch') is None, e.get('epoch')))
    now = _time(model.get('now')) or datetime.datetime.now(datetime.timezone.utc)
    title = model.get('title') or 'CA rotation epochs'
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>%s</title><style>%s</style></head><body>' % (escape(title), CSS),
           '<h1>%s</h1>' % escape(title),
           '<div class="meta">generated %s &middot; now %s</div>' % (
               escape(model.get('generated_at') or '-'), escape(now.strftime('%Y-%m-%dT%H:%M:%SZ')))]
    verdict = model.get('verdict')
    if verdict:
        items = ''.join('<li>%s</li>' % escape(str(i)) for i in verdict.get('items') or [])
        out.append('<div class="verdict %s" id="verdict" data-ok="%s">%s%s</div>' % (
            'ok' if verdict.get('ok') else 'bad', 'true' if verdict.get('ok') else 'false', escape(verdict.get('text') or ''),
            '<ul>%s</ul>' % items if items else ''))
    out.append('<div class="legend">%s<span><i style="background:#c00"></i>now</span></div>'
               % ''.join('<span><i style="background:%s"></i>%s</span>' % (_colour(s), s) for s in STATES))
    out.append(_svg(epochs, now))
    for cluster in model.get('clusters') or []:
        out.append('<h2>cluster %s</h2>' % escape(cluster.get('name') or '?'))
        with_accepts = any(s.get('accepted') for s in cluster.get('servers') or [])
        rows = _server_rows(cluster, epochs, with_accepts)
        if cluster.get('note'):
            out.append('<div class="meta">%s</div>' % escape(cluster['note']))
        out.append('<table class="cluster" data-cluster="%s"><tr><th>server</th><th>status</th><th>loaded (CA file)</th>'
                   '<th>served</th><th>served NotAfter</th>%s<th>note</th></tr>%s</table>'
                   % (escape(cluster.get('name') or ''), '<th>accepts (leaf-only handshake)</th>' if with_accepts else '',
                      ''.join(rows) or '<tr><td colspan="7">no servers</td></tr>'))
    out.append('</body></html>')
    return '\n'.join(out) + '\n'


def model_from_report(report):
    """A timeline model from the status report (``checks.build_report``)."""
    report = report or {}
    auth = report.get('authority') or {}
    bundle = auth.get('kv_bundle') or {}
    in_bundle = {c.get('sha256') for c in bundle.get('certificates') or []} if bundle.get('found') else None
    epochs = []
    for issuer in auth.get('issuers') or []:
        epochs.append({'epoch': issuer.get('epoch'), 'name': issuer.get('issuer_name'), 'not_before': issuer.get('not_before'),
                       'not_after': issuer.get('not_after'), 'state': ISSUER_STATES.get(issuer.get('state'), issuer.get('state')),
                       'in_bundle': None if in_bundle is None else issuer.get('sha256') in in_bundle})
    mismatched = {}
    for item in report.get('findings') or []:
        if item.get('severity') == 'mismatch':
            mismatched.setdefault(item.get('where'), []).append(item.get('code'))
    clusters = []
    for facts in report.get('clusters') or []:
        if not facts:
            continue
        servers = []
        for server in facts.get('servers') or []:
            tls = server.get('tls') or {}
            codes = mismatched.get('%s/%s' % (facts.get('cluster'), server.get('name'))) or []
            if server.get('error') or (server.get('tls_error') and not tls):
                status = 'unreachable'
            else:
                status = 'mismatch' if codes else 'ok'
            servers.append({'name': server.get('name'), 'status': status, 'loaded': server.get('ca_epochs'),
                            'served_epoch': server.get('served_epoch', tls.get('issuer_epoch')),
                            'served_not_after': tls.get('not_after'), 'accepted': {},
                            'note': ', '.join(codes) or server.get('error') or server.get('tls_error') or ''})
        clusters.append({'name': facts.get('cluster'), 'servers': servers, 'note': facts.get('error')})
    return {
        'title': 'CA rotation status',
        'now': (auth.get('now') or report.get('generated_at')),
        'generated_at': report.get('generated_at'),
        'verdict': {'ok': bool(report.get('ok')),
                    'text': 'OK' if report.get('ok') else '%s mismatch(es)' % report.get('mismatch_count'),
                    'items': ['%s [%s] %s' % (f.get('code'), f.get('where'), f.get('msg')) for f in report.get('findings') or []
                              if f.get('severity') == 'mismatch']},
        'epochs': epochs,
        'clusters': clusters,
    }

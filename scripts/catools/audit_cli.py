"""``ca-audit``: check and show the hash-chained CA audit log (JetStream stream ``CA_AUDIT``).

Commands:

* ``verify``: read every message of the stream and check the chain - no removed message (also the
  last one), sequence continuity, ``prev_hash`` links, each record's ``hash``, and each signature
  against the pinned public key(s) (``--public-key-file``) or the transit key's public keys read
  from OpenBao (``--transit``). Reports the first broken record. Exit 0 when the chain is intact,
  1 when it is broken, 2 on a usage, connection or configuration error.
* ``show``: list the records (table, or ``--json``).
* ``public-key``: write the transit key's public keys (``{"<version>": "<PEM>"}``) to a file, to pin
  them for ``verify --public-key-file``.

Connection options can come from a local stack (``--stack <state dir or stack.json>``), the
environment (``NATS_URL``, ``BAO_ADDR``, ``BAO_TOKEN``, ``BAO_CACERT``) or the options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from catools import ensure_collection_importable

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_ERROR = 2


class UsageError(Exception):
    pass


def _stack_info(value):
    path = Path(value)
    if path.is_dir():
        path = path / 'stack.json'
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise UsageError(f'--stack {value!r}: cannot read {path}: {exc}') from None


def build_parser():
    parser = argparse.ArgumentParser(prog='ca-audit', description='Check and show the hash-chained CA audit log in JetStream.',
                                     epilog='exit codes: 0 chain intact, 1 chain broken, 2 usage/connection/configuration error')
    sub = parser.add_subparsers(dest='command', required=True)

    def common(p, openbao=True):
        g = p.add_argument_group('NATS')
        g.add_argument('--stack', help='take connection settings from a local stack (scripts/localstack state dir or stack.json)')
        g.add_argument('--server', action='append', default=[], help='NATS server URL (repeatable; default: $NATS_URL)')
        g.add_argument('--ca-file', help='CA bundle that signs the NATS servers\' certificates')
        g.add_argument('--cert-file', help='client certificate (mTLS)')
        g.add_argument('--key-file', help='client private key (mTLS)')
        g.add_argument('--partial-chain', action='store_true', help='trust an intermediate in --ca-file as anchor')
        g.add_argument('--user', help='NATS user')
        g.add_argument('--password-file', help='file holding the NATS password')
        g.add_argument('--creds-file', help='NATS credentials file (JWT + nkey)')
        g.add_argument('--connect-timeout', type=int, default=5)
        p.add_argument('--stream', default=None, help='audit stream (default CA_AUDIT)')
        p.add_argument('--subject', default=None, help='audit subject (default audit.ca.rotation)')
        p.add_argument('--timeout', type=float, default=120, help='seconds for reading the stream (default 120)')
        if openbao:
            b = p.add_argument_group('OpenBao (for --transit and public-key)')
            b.add_argument('--openbao-url', help='OpenBao address (default: $BAO_ADDR)')
            b.add_argument('--openbao-token-file', help='file holding an OpenBao token (default: $BAO_TOKEN)')
            b.add_argument('--openbao-ca-cert', help='CA certificate of the OpenBao listener (default: $BAO_CACERT)')
            b.add_argument('--transit-mount', default=None, help='transit mount (default transit)')
            b.add_argument('--transit-key', default=None, help='transit key (default ca-bundle-signer)')

    verify = sub.add_parser('verify', help='check the whole chain')
    common(verify)
    keys = verify.add_mutually_exclusive_group(required=True)
    keys.add_argument('--public-key-file', help='pinned public key(s): a PEM ed25519 key, or {"<version>": "<PEM>"} JSON '
                                                '(as written by "ca-audit public-key")')
    keys.add_argument('--transit', action='store_true', help='verify signatures with the transit key\'s public keys from OpenBao')
    verify.add_argument('--expect-last-hash', help='the hash the last record must have (detects removed trailing records '
                                                   'and a re-created stream)')
    verify.add_argument('--json', action='store_true', help='print the report as JSON')

    show = sub.add_parser('show', help='list the records')
    common(show, openbao=False)
    show.add_argument('--json', action='store_true', help='print the records as JSON')

    pub = sub.add_parser('public-key', help='write the transit public keys to a file, to pin them')
    common(pub)
    pub.add_argument('--out', required=True, help='file to write ({"<version>": "<PEM>"} JSON)')
    return parser


def nats_params(args, info):
    params = {'servers': list(args.server), 'ca_file': args.ca_file, 'cert_file': args.cert_file, 'key_file': args.key_file,
              'partial_chain': args.partial_chain, 'user': args.user, 'password_file': args.password_file,
              'creds_file': args.creds_file, 'connect_timeout': args.connect_timeout, 'name': 'ca-audit'}
    if info:
        auth = info.get('nats_auth') or {}
        if not params['servers']:
            params['servers'] = [s['url'] for s in info['clusters'][0]['servers']]
        params['ca_file'] = params['ca_file'] or auth.get('ca_file')
        params['cert_file'] = params['cert_file'] or auth.get('client_cert_file')
        params['key_file'] = params['key_file'] or auth.get('client_key_file')
        if not params['user'] and not params['creds_file']:
            params['user'] = auth.get('app_user')
            params['password_file'] = params['password_file'] or auth.get('app_password_file')
    if not params['servers'] and os.environ.get('NATS_URL'):
        params['servers'] = [os.environ['NATS_URL']]
    if not params['servers']:
        raise UsageError('no NATS server: pass --server, --stack or set NATS_URL')
    return params


def openbao_params(args, info):
    params = {'url': args.openbao_url, 'ca_cert': args.openbao_ca_cert, 'token_file': args.openbao_token_file}
    if info:
        bao = info.get('openbao') or {}
        params['url'] = params['url'] or bao.get('addr')
        params['token_file'] = params['token_file'] or bao.get('token_file')
        params['ca_cert'] = params['ca_cert'] or bao.get('ca_cert')
    return {k: v for k, v in params.items() if v}


def transit_names(args, info):
    pki = (info or {}).get('pki') or {}
    return (args.transit_mount or pki.get('transit_mount') or 'transit',
            args.transit_key or pki.get('transit_key') or 'ca-bundle-signer')


def load_pinned_keys(path):
    """``{version or None: key}`` from a PEM file (any version) or a ``{"<version>": "<PEM>"}`` JSON file."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except OSError as exc:
        raise UsageError(f'--public-key-file {path!r}: {exc.strerror}') from None
    stripped = text.strip()
    if stripped.startswith('{'):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise UsageError(f'--public-key-file {path!r} is not valid JSON: {exc}') from None
        if not isinstance(data, dict) or not data:
            raise UsageError(f'--public-key-file {path!r}: expected {{"<version>": "<PEM>"}}')
        return data
    if '-----BEGIN PUBLIC KEY-----' not in stripped:
        raise UsageError(f'--public-key-file {path!r} holds neither a PEM public key nor a JSON key map')
    return {None: stripped}


def _print_report(report):
    if report['ok']:
        last = report['last']
        if last:
            print('OK: stream %s, %d records, chain intact; last record %d (generation %s, epoch %s, %s) hash %s'
                  % (report['stream'], report['records'], last['seq'], last['generation'], last['epoch'], last['at'], last['hash']))
        else:
            print('OK: stream %s is empty' % report['stream'])
        if not report['signatures_checked']:
            print('WARNING: signatures were not checked')
        return
    first = report['first_broken']
    print('BROKEN: stream %s, first broken record at stream sequence %s%s: %s: %s'
          % (report['stream'], first['stream_seq'], ' (record %s)' % first['seq'] if first.get('seq') else '', first['problem'],
             first['message']))
    for item in report['problems'][1:]:
        where = ' (record %s)' % item['seq'] if item.get('seq') else ''
        print('  also: stream sequence %s%s: %s: %s' % (item['stream_seq'], where, item['problem'], item['message']))


def run(argv=None):
    args = build_parser().parse_args(argv)
    ensure_collection_importable()
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _audit
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._message import MessageError, public_key_pem
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import connect as bao_connect
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.transit import transit_public_keys

    try:
        info = _stack_info(args.stack) if args.stack else None
        stream = args.stream or _audit.DEFAULT_STREAM
        subject = args.subject or _audit.DEFAULT_SUBJECT

        def transit_keys():
            client = bao_connect(openbao_params(args, info))
            mount, key = transit_names(args, info)
            return transit_public_keys(client, mount, key)

        if args.command == 'public-key':
            keys = transit_keys()
            out = Path(args.out)
            out.write_text(json.dumps({str(v): k for v, k in sorted(keys.items())}, indent=2) + '\n', encoding='utf-8')
            print('wrote %d public key version(s) of %s/%s to %s' % (len(keys), *transit_names(args, info), out))
            return EXIT_OK

        public_keys = None
        if args.command == 'verify':
            raw = transit_keys() if args.transit else load_pinned_keys(args.public_key_file)
            try:
                public_keys = _audit.load_public_keys({v: public_key_pem(k) for v, k in raw.items()})
            except (ValueError, TypeError) as exc:
                raise UsageError(f'cannot load the public key(s): {exc}') from None
        params = nats_params(args, info)

        async def work():
            deadline = nats_jetstream.Deadline(args.timeout)
            client = await nats_client.connect(params)
            try:
                if args.command == 'verify':
                    return await _audit.verify_stream(client, stream, deadline, public_keys=public_keys, subject=subject,
                                                      expect_last_hash=args.expect_last_hash)
                entries, _info = await _audit.read_entries(client, stream, deadline)
                return entries
            finally:
                await nats_client.close(client)

        result = nats_client.run(work())
    except UsageError as exc:
        print(f'ca-audit: {exc}', file=sys.stderr)
        return EXIT_ERROR
    except (_audit.AuditError, nats_options.NatsError, MessageError, OpenBaoError) as exc:
        print(f'ca-audit: {exc}', file=sys.stderr)
        return EXIT_ERROR

    if args.command == 'verify':
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            _print_report(result)
        return EXIT_OK if result['ok'] else EXIT_BROKEN

    records = []
    for entry in result:
        record = None
        if entry['data'] is not None:
            try:
                record = json.loads(entry['data'].decode('utf-8'))
            except (UnicodeDecodeError, ValueError):
                record = {'undecodable': entry['data'][:200].decode('utf-8', 'replace')}
        records.append({'stream_seq': entry['stream_seq'], 'record': record})
    if args.json:
        print(json.dumps(records, indent=2, sort_keys=True))
    else:
        print('%-6s %-5s %-9s %-10s %-10s %-20s %-16s %s' % ('sseq', 'seq', 'kind', 'generation', 'epoch', 'at', 'hash', 'reloads ok/all'))
        for item in records:
            r = item['record']
            if r is None:
                print('%-6s (removed)' % item['stream_seq'])
                continue
            reloads = r.get('reloads') if isinstance(r.get('reloads'), list) else []
            print('%-6s %-5s %-9s %-10s %-10s %-20s %-16s %d/%d' % (
                item['stream_seq'], r.get('seq'), r.get('kind'), r.get('generation'), r.get('epoch'), r.get('at'),
                str(r.get('hash'))[:16], sum(1 for x in reloads if isinstance(x, dict) and x.get('ok')), len(reloads)))
    return EXIT_OK


def main(argv=None):
    return run(argv)

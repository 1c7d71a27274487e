#!/usr/bin/env python
"""A NATS service that follows the CA bundle: it publishes to JetStream continuously, with acknowledgements,
and picks up a new bundle without restarting and without losing a message.

Run it next to ``ca-bundle-sync --pid-file <its pid file>`` (SIGHUP is the default signal)::

    ca_aware_service.py --servers tls://nats-0:4222,tls://nats-1:4222 \\
        --bundle-file /etc/myservice/ca-bundle.pem --cert-file client.pem --key-file client-key.pem \\
        --user app --password-file app-password --stream EXAMPLE --subject example.events \\
        --pid-file /run/myservice.pid --acked-log acked.jsonl

How it keeps working across a rotation (see examples/README.md):

* TLS comes from ``ReloadingTLS`` (``plugins/module_utils/_client_tls.py``): the context given to nats-py
  rebuilds itself from the bundle file before each handshake, so the same ``Client`` uses the new bundle
  at its next reconnect. Nothing is torn down: subscriptions and the request inbox survive.
* SIGHUP (sent by ca-bundle-sync after it wrote the bundle) refreshes the context at once and logs it;
  with ``--reconnect-on-reload`` it also forces a reconnect, so the new trust is used immediately.
* Every message has a ``Nats-Msg-Id``. A publish whose acknowledgement is lost in a reconnect times out
  and is retried with the same id; JetStream's duplicate window turns the retry into the original's
  acknowledgement (same sequence), so no message is lost and none is stored twice.

``--acked-log`` records every acknowledged message (id, stream sequence) as JSON lines; ``--status-file``
holds running counters (JSON, replaced atomically). SIGTERM/SIGINT: finish the current publish, drain,
print a JSON summary on stdout, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

try:
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._client_tls import ClientTLSError, ReloadingTLS
except ImportError:  # a source checkout: make the collection importable the way the scripts do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'scripts'))
    from catools import ensure_collection_importable  # pylint: disable=wrong-import-position

    ensure_collection_importable()
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._client_tls import ClientTLSError, ReloadingTLS

import nats  # noqa: E402  pylint: disable=wrong-import-position
import nats.errors  # noqa: E402  pylint: disable=wrong-import-position
import nats.js.errors  # noqa: E402  pylint: disable=wrong-import-position


def log(event, **fields):
    """One line per event on stderr."""
    parts = ['ts=%s' % time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'event=%s' % event]
    parts += ['%s=%s' % (k, json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v) for k, v in fields.items()]
    sys.stderr.write(' '.join(parts) + '\n')
    sys.stderr.flush()


def write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(text)
    os.replace(tmp, path)


class Service:
    def __init__(self, args):
        self.args = args
        self.stop = asyncio.Event()
        self.nc = None
        self.tls = None
        self.stats = {'published': 0, 'acked': 0, 'duplicates': 0, 'retries': 0, 'reconnects': 0, 'disconnects': 0,
                      'tls_reloads': 0, 'reload_signals': 0, 'last_seq': None, 'bundle_sha256': None,
                      'connected_url': None, 'pid': os.getpid(), 'running': True, 'last_error': None}
        self.acked_log = None
        self.run_id = args.run_id or uuid.uuid4().hex[:12]

    # ----------------------------------------------------------- status
    def status(self):
        self.stats['bundle_sha256'] = self.tls.bundle_sha256 if self.tls else None
        self.stats['tls_reloads'] = self.tls.reloads if self.tls else 0
        if self.nc is not None and self.nc.connected_url is not None:
            self.stats['connected_url'] = self.nc.connected_url.netloc
        if self.args.status_file:
            write_atomic(self.args.status_file, json.dumps(self.stats, sort_keys=True) + '\n')

    # ----------------------------------------------------------- signals
    def on_sighup(self):
        self.stats['reload_signals'] += 1
        changed = self.tls.refresh()
        log('bundle-reload', changed=changed, sha256=(self.tls.bundle_sha256 or '')[:16],
            certificates=self.tls.info.get('certificates'), partial_chain=self.tls.info.get('partial_chain'),
            error=self.tls.last_error or '-')
        if self.args.reconnect_on_reload and self.nc is not None:
            asyncio.get_running_loop().create_task(self.nc.force_reconnect())
        self.status()

    def on_stop(self, signum):
        log('stopping', signal=signal.Signals(signum).name)
        self.stop.set()

    # ----------------------------------------------------------- NATS
    async def connect(self):
        self.tls = ReloadingTLS(self.args.bundle_file, self.args.cert_file, self.args.key_file)
        options = dict(servers=[s for s in self.args.servers.split(',') if s], tls=self.tls.context, name='ca-aware-example',
                       max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
                       disconnected_cb=self._disconnected, reconnected_cb=self._reconnected, error_cb=self._error)
        if self.args.user:
            options['user'] = self.args.user
            options['password'] = Path(self.args.password_file).read_text(encoding='utf-8').strip()
        self.nc = await nats.connect(**options)
        log('connected', server=self.nc.connected_url.netloc, sha256=self.tls.bundle_sha256[:16])

    async def _disconnected(self):
        self.stats['disconnects'] += 1
        log('disconnected')

    async def _reconnected(self):
        self.stats['reconnects'] += 1
        log('reconnected', server=self.nc.connected_url.netloc, sha256=(self.tls.bundle_sha256 or '')[:16])
        self.status()

    async def _error(self, exc):
        self.stats['last_error'] = '%s: %s' % (type(exc).__name__, exc)
        log('nats-error', error=self.stats['last_error'])

    async def ensure_stream(self, js):
        try:
            await js.stream_info(self.args.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.args.stream, subjects=[self.args.subject], num_replicas=self.args.replicas,
                                duplicate_window=120.0)
            log('stream-created', stream=self.args.stream, replicas=self.args.replicas)

    async def publish_one(self, js, index):
        """Publish message ``index`` until JetStream acknowledges it (same Nats-Msg-Id on every retry)."""
        msg_id = '%s-%d' % (self.run_id, index)
        payload = json.dumps({'id': msg_id, 'index': index, 'ts': time.time()}).encode()
        delay = 0.1
        started = time.monotonic()
        while True:
            try:
                ack = await js.publish(self.args.subject, payload, timeout=self.args.ack_timeout, stream=self.args.stream,
                                       headers={'Nats-Msg-Id': msg_id})
                break
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # timeouts, no responders, reconnecting: retry  # pylint: disable=broad-except
                self.stats['retries'] += 1
                if self.stop.is_set() and time.monotonic() - started > self.args.stop_timeout:
                    log('gave-up', id=msg_id, error='%s: %s' % (type(exc).__name__, exc), note='stopping; not acknowledged')
                    return False
                if time.monotonic() - started > self.args.dedup_window * 0.8:
                    log('retry-too-long', id=msg_id, note='beyond 80% of the duplicate window a retry could store a copy')
                log('publish-retry', id=msg_id, error='%s: %s' % (type(exc).__name__, exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.stats['acked'] += 1
        self.stats['last_seq'] = ack.seq
        if ack.duplicate:
            self.stats['duplicates'] += 1
        if self.acked_log is not None:
            self.acked_log.write(json.dumps({'id': msg_id, 'seq': ack.seq, 'duplicate': bool(ack.duplicate)}) + '\n')
            self.acked_log.flush()
        return True

    async def run(self):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.on_sighup)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.on_stop, signum)
        if self.args.pid_file:
            write_atomic(self.args.pid_file, '%d\n' % os.getpid())
        if self.args.acked_log:
            self.acked_log = open(self.args.acked_log, 'a', encoding='utf-8')  # pylint: disable=consider-using-with
        try:
            await self.connect()
            js = self.nc.jetstream(timeout=self.args.ack_timeout)
            if self.args.create_stream:
                await self.ensure_stream(js)
            index = 0
            last_status = 0.0
            while not self.stop.is_set() and (not self.args.count or index < self.args.count):
                index += 1
                self.stats['published'] += 1
                await self.publish_one(js, index)
                if time.monotonic() - last_status > 0.2:
                    self.status()
                    last_status = time.monotonic()
                if self.args.interval:
                    try:
                        await asyncio.wait_for(self.stop.wait(), self.args.interval)
                    except asyncio.TimeoutError:
                        pass
            await self.nc.drain()
        finally:
            self.stats['running'] = False
            self.status()
            if self.acked_log is not None:
                self.acked_log.close()
            if self.args.pid_file:
                try:
                    os.unlink(self.args.pid_file)
                except OSError:
                    pass
        return self.stats


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--servers', required=True, help='NATS server URLs, comma-separated')
    parser.add_argument('--bundle-file', required=True, help='the CA bundle ca-bundle-sync keeps current')
    parser.add_argument('--cert-file', help='client certificate (mutual TLS)')
    parser.add_argument('--key-file', help='client key (mutual TLS)')
    parser.add_argument('--user')
    parser.add_argument('--password-file')
    parser.add_argument('--stream', required=True)
    parser.add_argument('--subject', required=True)
    parser.add_argument('--create-stream', action='store_true', help='create the stream when it is missing')
    parser.add_argument('--replicas', type=int, default=1)
    parser.add_argument('--interval', type=float, default=0.02, help='seconds between messages')
    parser.add_argument('--count', type=int, default=0, help='stop after this many messages (0: run until SIGTERM)')
    parser.add_argument('--ack-timeout', type=float, default=2.0, help='seconds to wait for a PubAck before retrying')
    parser.add_argument('--dedup-window', type=float, default=120.0, help="the stream's duplicate window, in seconds")
    parser.add_argument('--stop-timeout', type=float, default=30.0, help='after SIGTERM, seconds to keep retrying the last message')
    parser.add_argument('--run-id', help='prefix of the message ids (default: random)')
    parser.add_argument('--acked-log', help='append every acknowledged message (id, seq) as a JSON line')
    parser.add_argument('--status-file', help='running counters as JSON (replaced atomically)')
    parser.add_argument('--pid-file', help='write the pid here (for ca-bundle-sync --pid-file)')
    parser.add_argument('--reconnect-on-reload', action='store_true', help='force a reconnect on SIGHUP')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if bool(args.user) != bool(args.password_file):
        sys.stderr.write('--user and --password-file go together\n')
        return 2
    service = Service(args)
    try:
        stats = asyncio.run(service.run())
    except ClientTLSError as exc:
        sys.stderr.write('TLS setup failed: %s\n' % exc)
        return 2
    sys.stdout.write(json.dumps(stats, sort_keys=True) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""The NATS side of ca-bundle-sync: connect, keep the durable pull consumer as configured, fetch one message at a time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os

from catools.sync.common import PROG, ConfigError

# pylint: disable=wrong-import-position
try:
    from nats import errors as nats_errors
    from nats.js import errors as nats_js_errors
except ImportError:  # pragma: no cover - reported by main() through nats_options.check_imports()
    nats_errors = nats_js_errors = None
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._client_tls import ClientTLSError, ReloadingTLS  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options  # noqa: E402

#: What a fetch returns when the consumer has no leader at this moment (worth another attempt).
RETRY = 'retry'


class Consumer:
    """One connection and the durable pull consumer ``cfg.durable`` on ``cfg.stream``."""

    def __init__(self, cfg, log, stop):
        self.cfg = cfg
        self.log = log
        self.stop = stop
        self.heartbeat = 2.0
        self.closing = False
        self.pulls = 0

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
        self.closing = False
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
        info = await self.wait_for_leader(nc, info, deadline)
        ack_wait = (info.get('config') or {}).get('ack_wait') or int(cfg.backoff[0] * 1e9)
        self.heartbeat = max(0.2, ack_wait / 1e9 / 3.0)
        return info

    async def wait_for_leader(self, nc, info, deadline):
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

    async def pull_now(self, nc, wait=None):
        """One message the server has for the consumer right now (a no-wait pull), or None when it says it has none.

        With ``wait`` (seconds): a pull that expires after that long instead (None when it expired).

        Only the server's answer counts (404 no messages, 408 request expired, 409 while a message awaits its
        acknowledgement), never the counters of CONSUMER.INFO: on a consumer that was left alone while the
        stream rolled over, ``num_pending`` has been seen at 0 with messages still deliverable. Returns RETRY
        while the consumer has no leader (no responders).
        """
        self.pulls += 1
        subject = '$JS.API.CONSUMER.MSG.NEXT.%s.%s' % (self.cfg.stream, self.cfg.durable)
        if wait:
            request, timeout = {'batch': 1, 'expires': int(wait * 1e9)}, wait + min(self.cfg.timeout, 10)
        else:
            request, timeout = {'batch': 1, 'no_wait': True}, min(self.cfg.timeout, 10)
        # its own inbox per pull: JetStream delivers the message under its stream subject, so a request() would not
        # see it as the reply, and a late answer to an earlier pull can never be taken for this one's
        inbox = await nc.subscribe(nc.new_inbox(), max_msgs=1)
        try:
            await nc.publish(subject, json.dumps(request).encode('ascii'), reply=inbox.subject)
            try:
                msg = await inbox.next_msg(timeout=timeout)
            except nats_errors.TimeoutError:
                self.log('debug', 'pull-unanswered', 'No answer to a pull within %ss' % timeout)
                return None
        finally:
            with contextlib.suppress(Exception):
                await inbox.unsubscribe()
        status = (msg.headers or {}).get('Status')
        if not status:
            return msg
        if status == '503':  # no responders: the consumer has no leader at this moment
            return RETRY
        if status in ('404', '408', '409'):
            self.log('debug', 'pull-empty', status=status, description=(msg.headers or {}).get('Description'))
            return None
        raise nats_options.NatsError('Pulling from consumer %s on stream %s: status %s %s' % (
            self.cfg.durable, self.cfg.stream, status, (msg.headers or {}).get('Description') or ''))

    async def caught_up(self, nc):
        """True when the consumer has been handed every message the stream holds on the subject (its delivered
        stream sequence has reached the newest message's): the server's positions, not its pending counters."""
        deadline = nats_jetstream.Deadline(min(self.cfg.timeout, 10))
        last = await nats_jetstream.last_message(nc, self.cfg.stream, self.cfg.subject, deadline)
        if last is None:
            return True
        info = await nats_jetstream.js_api(nc, 'CONSUMER.INFO.%s.%s' % (self.cfg.stream, self.cfg.durable), b'', deadline,
                                           'Reading consumer %s' % self.cfg.durable)
        delivered = ((info.get('delivered') or {}).get('stream_seq')) or 0
        return delivered >= last['seq']

    async def retained(self, nc, limit=100):
        """Every message the stream keeps on the subject, oldest first, as ``(stream sequence, data)`` (at most ``limit``)."""
        deadline = nats_jetstream.Deadline(self.cfg.timeout)
        out = []
        seq = 1
        while len(out) < limit:
            try:
                resp = await nats_jetstream.js_api(nc, 'STREAM.MSG.GET.%s' % self.cfg.stream, {'seq': seq, 'next_by_subj': self.cfg.subject},
                                                   deadline, 'Reading the announcements kept on %s' % self.cfg.subject)
            except nats_jetstream.JetStreamAPIError as exc:
                if exc.err_code == nats_jetstream.JS_NO_MESSAGE_FOUND or exc.code == 404:
                    break
                raise
            msg = resp.get('message') or {}
            out.append((msg['seq'], base64.b64decode(msg.get('data') or b'')))
            seq = msg['seq'] + 1
        return out

    async def fetch(self, sub):
        """One message, or None when none came within the fetch timeout (or a stop was requested)."""
        self.pulls += 1
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
            return RETRY
        return msgs[0] if msgs else None

    async def close(self, nc):
        self.closing = True
        try:
            await asyncio.wait_for(nc.drain(), 5)
        except Exception:  # closing is best effort  # pylint: disable=broad-except
            await nats_client.close(nc)

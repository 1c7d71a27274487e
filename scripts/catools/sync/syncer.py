"""The loop of ca-bundle-sync: fetch, verify and decide, apply, record, acknowledge (``--once`` and ``--follow``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time

from catools.sync import apply as host
from catools.sync import files, policy
from catools.sync.common import ACK_TIMEOUT, EXIT_FAILURE, EXIT_INVALID, EXIT_OK, ONCE_MAX_MESSAGES, ConfigError, Invalid, Outcome, Transient, number
from catools.sync.consumer import RETRY, Consumer
from catools.sync.keys import PinnedKeys, TransitKeys
from catools.sync.state import State, render_metrics

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options  # noqa: E402


class Syncer:
    """Consume, verify, apply, acknowledge."""

    def __init__(self, config, log, keys=None):
        self.cfg = config
        self.log = log
        self.keys = keys or (PinnedKeys(config.public_key_file) if config.public_key_file else
                             TransitKeys(config.openbao, config.transit_mount, config.transit_key))
        self.state = State.load(config.state_file)
        self.stop = None
        self.nats = None
        self.counts = {'applied': 0, 'unchanged': 0, 'stale': 0, 'invalid': 0, 'retry': 0}
        self.failed = False
        #: generations below this one are superseded (set when a host without state starts from the newest)
        self.floor = 0

    # ------------------------------------------------------------ one message

    async def evaluate(self, data, now=None):
        """Verify ``data``: Outcome ``apply`` (with the message) or ``stale``; raises Invalid or Transient."""
        try:
            current = files.read_text(self.cfg.bundle_file)
        except (FileError, OSError, UnicodeDecodeError):
            current = None
        return await policy.evaluate(data, self.keys, self.state, self.cfg, now, current_pem=current, floor=self.floor)

    async def apply(self, message, seq=None):
        """Write, reload, persist. Returns 'applied' or 'unchanged' (same bytes already applied: no reload)."""
        changed = host.write_bundle(self.cfg, message)
        needs_reload = changed or self.state.bundle_sha256 != message['bundle_sha256']
        did = await host.reload(self.cfg, message) if needs_reload else []
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

    async def process(self, data, seq=None, delivered=1):  # pylint: disable=unused-argument
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

    # ------------------------------------------------------------ recording and settling

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
                     action='giving up (term): the server will not redeliver it; fix the cause, then run with --resync' if last
                     else 'nak, retry in %ss' % number(self.delay(delivered)))

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
        elif delivered >= self.cfg.max_deliver:
            # the last delivery: terminate it, so that the server drops it from the pending set now (a delayed NAK
            # would keep it pending until the delay ends, only for the server to find no delivery left)
            await self._reply(nc, msg, b'+TERM max-deliver', 'termination')
        else:
            delay_ns = int(self.delay(delivered) * 1e9)
            await self._reply(nc, msg, b'-NAK ' + json.dumps({'delay': delay_ns}).encode('ascii'), 'negative acknowledgement')

    async def _keepalive(self, msg):
        while True:
            await asyncio.sleep(self.nats.heartbeat)
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
        matches = self.state.bundle_sha256 is not None and files.sha256_file(self.cfg.bundle_file) == self.state.bundle_sha256
        text = render_metrics(self.cfg.service, self.state, matches, time.time())
        try:
            files.atomic_write(self.cfg.metrics_file, text, 0o644)
        except (FileError, OSError) as exc:
            self.log('warning', 'metrics-write-failed', 'Cannot write the metrics file: %s' % exc)

    def check_bundle_drift(self):
        if self.state.bundle_sha256 and files.sha256_file(self.cfg.bundle_file) != self.state.bundle_sha256:
            self.log('warning', 'bundle-drift', 'The bundle file no longer holds the last applied bundle (generation %d); a newer '
                     'announcement rewrites it, or run with --resync to apply the latest one again' % self.state.generation,
                     path=self.cfg.bundle_file)

    async def run_once(self):
        self.check_bundle_drift()
        try:
            nc = await self.nats.connect()
        except nats_options.NatsError as exc:
            if exc.kind == 'config':
                raise ConfigError(str(exc)) from None
            return self._nats_failure(exc)
        try:
            try:
                await self.nats.ensure_consumer(nc)
                if not self.state.generation:
                    await self.catch_up(nc)
                await self.drain(nc)
            except (nats_options.NatsError, Exception) as exc:  # any NATS error ends this run as a failure  # pylint: disable=broad-except
                if isinstance(exc, ConfigError):
                    raise
                return self._nats_failure(exc)
        finally:
            await self.nats.close(nc)
        if not self.failed:
            self.state.last_success_ts = time.time()
        self.save_counters()
        self.write_metrics()
        self.log('info', 'done', applied=self.counts['applied'], unchanged=self.counts['unchanged'], skipped=self.counts['stale'],
                 invalid=self.counts['invalid'], failed=self.counts['retry'], generation=self.state.generation, epoch=self.state.epoch,
                 pulls=self.nats.pulls)
        if self.failed:
            return EXIT_FAILURE
        if self.counts['invalid']:
            return EXIT_INVALID
        return EXIT_OK

    async def drain(self, nc):
        """Handle messages until the server has none left for the consumer (``--once``).

        It ends only when the server answers a pull with "no messages" *and* the consumer's delivered position has
        reached the newest message the stream holds on the subject. A no-wait pull is answered from the consumer's
        pending count, which nats-server recounts wrongly after a consumer leader change (one per subject for a
        last-per-subject consumer): when the positions disagree with a "no messages", the rest of the run pulls
        with an expiring request instead (answered as soon as a message is there). A transient failure ends the
        run (the rest waits for the next one).
        """
        handled = unavailable = misses = 0
        no_wait = True
        while not self.stop.is_set() and handled < ONCE_MAX_MESSAGES:
            if not no_wait and not misses and await self.nats.caught_up(nc):
                return  # spares the last expiring pull its wait
            msg = await self.nats.pull_now(nc, wait=None if no_wait else self.cfg.fetch_timeout)
            if msg == RETRY:
                unavailable += 1
                if unavailable >= 10:
                    raise nats_options.NatsError('The consumer %s has had no leader for %d attempts' % (self.cfg.durable, unavailable))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 0.5)
                continue
            if msg is None:
                if await self.nats.caught_up(nc):
                    return
                if no_wait:
                    no_wait = False
                    self.log('info', 'pending-miscounted', 'The server says it has nothing for consumer %s, but its delivered '
                             'position is behind the newest announcement; pulling with a wait instead' % self.cfg.durable)
                    continue
                misses += 1
                if misses >= 3:
                    self.log('warning', 'not-caught-up', 'Consumer %s is still behind the newest announcement after %d pulls of '
                             '%ss that got nothing (a message awaiting its acknowledgement or redelivery?); ending this run, '
                             'the next one carries on' % (self.cfg.durable, misses, number(self.cfg.fetch_timeout)))
                    return
                continue
            misses = 0
            handled += 1
            outcome = await self.handle(nc, msg)
            if outcome.kind == 'retry':
                return  # the rest stays for the next run; this failure would most likely repeat

    async def catch_up(self, nc):
        """Without state (a new service, a lost state file), start from the newest generation the stream keeps.

        A durable consumer starts at the last message on the subject, which need not be the newest generation
        (an older announcement published again is the last one). Every kept message is verified; anything older
        than the newest signed generation is superseded (skipped when the consumer delivers it). When that newest
        generation is not the last message, the consumer may never deliver it: it is applied from the stream here.
        """
        candidates = []
        kept = await self.nats.retained(nc)
        for seq, data in kept:
            try:
                message = await policy.verified(data, self.keys, self.cfg)
            except Invalid:
                continue
            except Transient as exc:
                self.log('warning', 'catch-up-failed', 'Cannot verify the kept announcements: %s' % exc, reason=exc.reason)
                return
            candidates.append((message['generation'], seq, message, data))
        if not candidates:
            return
        generation, seq, message, data = max(candidates, key=lambda c: (c[0], c[1]))
        self.floor = generation
        if seq == kept[-1][0]:
            return  # the newest generation is the last message: the consumer delivers it (after anything older, skipped)
        self.log('info', 'catch-up', 'No applied generation yet and the last message on the subject is not the newest '
                 'generation: applying the newest generation the stream keeps', generation=generation, epoch=message['epoch'],
                 seq=seq, last_seq=kept[-1][0])
        outcome = await self.process(data, seq)
        if outcome.kind in ('applied', 'unchanged'):
            self.counts[outcome.kind] += 1
        elif outcome.kind == 'retry':
            self._record(outcome, seq, 0)
        else:  # refused (expired, ...)
            self.log('warning', 'catch-up-refused', outcome.text, reason=outcome.reason, seq=seq)
        self.save_counters()

    def _nats_failure(self, exc):
        self.failed = True
        self.state.count_failure('nats')
        self.log('error', 'nats-failed', '%s: %s' % (type(exc).__name__, exc) if not isinstance(exc, nats_options.NatsError) else str(exc))
        self.save_counters()
        self.write_metrics()
        return EXIT_FAILURE

    async def run_follow(self):
        self.check_bundle_drift()
        delay = 1.0
        nc = sub = None
        while not self.stop.is_set():
            try:
                if nc is None or nc.is_closed:
                    nc = await self.nats.connect()
                    sub = None
                if sub is None:
                    sub, _info = await self.nats.subscribe(nc)
                    if not self.state.generation and not self.floor:
                        await self.catch_up(nc)
                    self.log('info', 'following', consumer=self.cfg.durable, stream=self.cfg.stream, subject=self.cfg.subject)
                msg = await self.nats.fetch(sub)
                delay = 1.0
                if msg == RETRY:
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
            await self.nats.close(nc)
        self.save_counters()
        self.write_metrics()
        self.log('info', 'stopped', applied=self.counts['applied'], unchanged=self.counts['unchanged'], skipped=self.counts['stale'],
                 invalid=self.counts['invalid'], failed=self.counts['retry'], generation=self.state.generation)
        return EXIT_OK

    def _follow_error(self, exc, delay):
        self.state.count_failure('nats')
        self.log('error', 'nats-failed', '%s (retrying in %ss)' % (
            str(exc) if isinstance(exc, nats_options.NatsError) else '%s: %s' % (type(exc).__name__, exc), number(delay)))
        self.write_metrics()

    async def run(self):
        self.stop = asyncio.Event()
        self.nats = Consumer(self.cfg, self.log, self.stop)
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

"""scripts/ca-bundle-sync against the real stack: 3-node mTLS NATS cluster (JetStream) and OpenBao transit.

Every test gets its own stream and subject, so tests never see each other's announcements. Announcements are
signed with the stack's real transit key ``ca-bundle-signer``; state is checked independently of the script
(the bundle file's bytes, the durable consumer's info on the server, the reload command's own record).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.build import parse_bundle
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import digest as common_digest
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import transit as bao_transit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'scripts' / 'ca-bundle-sync'
UTC = dt.timezone.utc
RUN_TIMEOUT = 120


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope='module')
def nats_params(stack):
    auth = stack['nats_auth']
    return {'servers': [s['url'] for c in stack['clusters'] for s in c['servers']], 'ca_file': auth['ca_file'],
            'cert_file': auth['client_cert_file'], 'key_file': auth['client_key_file'], 'user': auth['app_user'],
            'password_file': auth['app_password_file']}


@pytest.fixture(scope='module')
def signer(bao_client, stack):
    return bao_transit.transit_signer(bao_client, stack['pki']['transit_mount'], stack['pki']['transit_key'])


@pytest.fixture(scope='module')
def pinned_key(bao_client, stack, tmp_path_factory):
    path = tmp_path_factory.mktemp('pinned') / 'ca-bundle-signer.json'
    keys = bao_transit.transit_public_keys(bao_client, stack['pki']['transit_mount'], stack['pki']['transit_key'])
    path.write_text(json.dumps({str(k): v for k, v in keys.items()}))
    return path


@pytest.fixture(scope='module')
def bundles(stack):
    """Three different valid bundles made of the stack's certificates (intermediate + root, root, intermediate)."""
    text = Path(stack['pki']['bundle_file']).read_text(encoding='ascii')
    blocks = [b + '-----END CERTIFICATE-----\n' for b in text.split('-----END CERTIFICATE-----') if 'BEGIN' in b]
    blocks = [b[b.index('-----BEGIN'):] for b in blocks]
    assert len(blocks) == 2
    return {'full': blocks[0] + blocks[1], 'root': blocks[1], 'int': blocks[0]}


def run(coro):
    return asyncio.run(coro)


class Channel:
    """A private stream + subject on the stack, with helpers that talk to NATS directly (not through the script)."""

    def __init__(self, params, signer):
        tag = uuid.uuid4().hex[:10]
        self.params = params
        self.signer = signer
        self.stream = 'CA_SYNC_T_%s' % tag.upper()
        self.subject = 'test.casync.%s.ca-cert' % tag

    async def _call(self, func):
        nc = await nats_client.connect(self.params)
        try:
            return await func(nc)
        finally:
            await nats_client.close(nc)

    def create(self, **limits):
        wanted = dict({'subjects': [self.subject], 'replicas': 3}, **limits)
        return run(self._call(lambda nc: nats_jetstream.ensure_stream(nc, self.stream, wanted, nats_jetstream.Deadline(60))))

    def delete(self):
        run(self._call(lambda nc: nats_jetstream.js_api(nc, 'STREAM.DELETE.%s' % self.stream, b'', nats_jetstream.Deadline(30), 'delete')))

    def publish(self, data, msg_id=None):
        return run(self._call(lambda nc: nats_jetstream.publish(nc, self.subject, data, nats_jetstream.Deadline(30),
                                                                msg_id=msg_id or uuid.uuid4().hex, stream=self.stream)))

    def announce(self, pem, generation, epoch, kind='rotation', valid_until=None, sign=None):
        """Publish a signed announcement; ``valid_until`` defaults to the earliest NotAfter of its certificates (as the authority's)."""
        now = dt.datetime.now(UTC).replace(microsecond=0)
        earliest = min(dt.datetime.strptime(c['not_after'], '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=UTC) for c in parse_bundle(pem))
        message = _message.build_announcement(
            epoch=epoch, generation=generation, kind=kind, bundle_pem=pem, certificates=None,
            kv_location='secret/ca-bundles/epoch-%d' % epoch, secret_locations=['openbao/nats-ca-bundle-epoch-%d' % epoch],
            valid_from=now - dt.timedelta(hours=6), valid_until=valid_until or earliest, created_at=now)
        signed = _message.sign_announcement(message, sign or self.signer)
        self.publish(_message.canonical_json(signed), msg_id=_message.msg_id(signed))
        return signed

    def stepdown(self, durable):
        """Move the consumer's leadership to another server (as a restart or a fault does); return its info once it has a leader."""
        run(self._call(lambda nc: nats_jetstream.js_api(nc, 'CONSUMER.LEADER.STEPDOWN.%s.%s' % (self.stream, durable), b'',
                                                        nats_jetstream.Deadline(30), 'stepdown')))

        def led():
            info = self.consumer(durable)
            return info if (info.get('cluster') or {}).get('leader') else None
        return wait_until(led, what='a new leader of consumer %s' % durable)

    def last_seq(self):
        """Stream sequence of the newest message on the subject (read from the stream, not a consumer)."""
        last = run(self._call(lambda nc: nats_jetstream.last_message(nc, self.stream, self.subject, nats_jetstream.Deadline(30))))
        return last['seq'] if last else None

    def consumer(self, durable):
        """The durable consumer's info as the server reports it, or None."""
        async def info(nc):
            try:
                return await nats_jetstream.js_api(nc, 'CONSUMER.INFO.%s.%s' % (self.stream, durable), b'', nats_jetstream.Deadline(30), 'info')
            except nats_jetstream.JetStreamAPIError as exc:
                if exc.code == 404:
                    return None
                raise
        return run(self._call(info))


@pytest.fixture
def channel(nats_params, signer):
    chan = Channel(nats_params, signer)
    chan.create()
    yield chan
    chan.delete()


def forged_signer():
    key = ed25519.Ed25519PrivateKey.generate()
    return lambda data: 'vault:v1:' + base64.b64encode(key.sign(data)).decode()


class Client:
    """One client host: bundle file, state, metrics, and a reload command that records what it was told."""

    def __init__(self, tmp_path, stack, channel, key_file, service=None):
        self.dir = tmp_path
        self.service = service or 'svc-' + uuid.uuid4().hex[:6]
        self.bundle = tmp_path / 'client' / 'ca-bundle.pem'
        self.bundle.parent.mkdir(parents=True, exist_ok=True)
        self.metrics = tmp_path / 'client' / 'ca_bundle_sync.prom'
        self.marker = tmp_path / 'client' / 'reloads.log'
        self.state_file = tmp_path / 'client' / 'state.json'
        self.stack = stack
        self.channel = channel
        self.key_file = key_file
        self.reload_script = ('import os; open(%r, "a").write(os.environ["CA_BUNDLE_GENERATION"] + " " + '
                              'os.environ["CA_BUNDLE_EPOCH"] + "\\n")' % str(self.marker))

    def args(self, *extra, reload_command=None):
        auth = self.stack['nats_auth']
        argv = ['--service', self.service, '--stream', self.channel.stream, '--subject', self.channel.subject,
                '--bundle-file', str(self.bundle), '--state-file', str(self.state_file), '--metrics-file', str(self.metrics),
                '--reload-command', reload_command or '%s -c %s' % (sys.executable, json.dumps(self.reload_script)),
                '--nats-ca-file', auth['ca_file'], '--nats-cert-file', auth['client_cert_file'],
                '--nats-key-file', auth['client_key_file'], '--nats-user', auth['app_user'],
                '--nats-password-file', auth['app_password_file'], '--backoff', '1s,2s', '--max-deliver', '5']
        for server in (s for c in self.stack['clusters'] for s in c['servers']):
            argv += ['--nats-server', server['url']]
        if '--transit' not in extra:
            argv += ['--public-key-file', str(self.key_file)]
        return argv + list(extra)

    def once(self, *extra, reload_command=None):
        proc = subprocess.run([sys.executable, str(SCRIPT), '--once'] + self.args(*extra, reload_command=reload_command),
                              capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
        return proc

    def follow(self, *extra):
        log = open(self.dir / ('follow-%s.log' % uuid.uuid4().hex[:6]), 'w+', encoding='utf-8')  # pylint: disable=consider-using-with
        proc = subprocess.Popen([sys.executable, str(SCRIPT), '--follow', '--fetch-timeout', '1'] + self.args(*extra),
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        proc.log = log
        return proc

    def reloads(self):
        return self.marker.read_text().split() if self.marker.exists() else []

    def state(self):
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {'generation': 0}

    def metric(self, name, **labels):
        for family in text_string_to_metric_families(self.metrics.read_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None

    @property
    def durable(self):
        return '%s-ca-consumer' % self.service


@pytest.fixture
def client(tmp_path, stack, channel, pinned_key):
    return Client(tmp_path, stack, channel, pinned_key)


def wait_until(predicate, timeout=60, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))


def stop(proc, timeout=60):
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    proc.log.seek(0)
    text = proc.log.read()
    proc.log.close()
    return code, text


def settled(info):
    """Nothing left for the consumer: delivered everything, nothing awaits an ack or a redelivery."""
    return info['num_pending'] == 0 and info['num_ack_pending'] == 0 and info['num_redelivered'] == 0


def sha(path):
    return common_digest.sha256_hex(Path(path).read_bytes()) if Path(path).exists() else None


# ----------------------------------------------------------------------------- tests
def test_applies_a_new_bundle_then_acks(client, channel, bundles):
    signed = channel.announce(bundles['full'], generation=1, epoch=7)
    proc = client.once()
    assert proc.returncode == 0, proc.stderr
    assert client.bundle.read_text() == bundles['full'] and sha(client.bundle) == signed['bundle_sha256']
    assert client.reloads() == ['1', '7']
    assert client.state()['generation'] == 1 and client.state()['epoch'] == 7
    info = channel.consumer(client.durable)
    assert info['config']['ack_policy'] == 'explicit' and info['config']['max_deliver'] == 5
    assert info['config']['backoff'] == [1000000000, 2000000000] and info['config']['filter_subject'] == channel.subject
    assert settled(info) and info['ack_floor']['stream_seq'] == 1
    assert client.metric('ca_bundle_sync_last_applied_generation') == 1
    assert client.metric('ca_bundle_sync_last_applied_epoch') == 7
    assert client.metric('ca_bundle_sync_last_success_timestamp_seconds') > time.time() - 300
    assert all(line.startswith('ts=') for line in proc.stderr.splitlines()), proc.stderr
    assert 'event=applied' in proc.stderr
    # nothing new: exit 0, no reload; changed limits update the existing consumer in place
    again = client.once('--max-deliver', '6', '--backoff', '1s,3s')
    assert again.returncode == 0 and client.reloads() == ['1', '7'], again.stderr
    assert 'event=consumer-updated' in again.stderr
    info = channel.consumer(client.durable)
    assert info['config']['max_deliver'] == 6 and info['config']['backoff'] == [1000000000, 3000000000]
    assert info['ack_floor']['stream_seq'] == 1


def test_forged_and_malformed_messages_are_terminated_and_never_redelivered(client, channel, bundles, signer):
    channel.announce(bundles['root'], generation=1, epoch=7)
    assert client.once().returncode == 0
    before = sha(client.bundle)
    channel.announce(bundles['root'], generation=2, epoch=8, sign=forged_signer())  # bad signature
    genuine = channel.announce(bundles['int'], generation=50, epoch=9)  # applied
    tampered = dict(genuine, generation=3, kind='rollback')  # signature no longer matches
    channel.publish(_message.canonical_json(tampered))
    channel.publish(b'\x00\xffgarbage')
    wrong_schema = {k: v for k, v in genuine.items() if k != 'signature'}
    wrong_schema.update(schema='securetransport.ca_bundle/v0', generation=4)
    wrong_schema['signature'] = signer(_message.signed_bytes(wrong_schema))  # a real signature over a wrong schema
    channel.publish(_message.canonical_json(wrong_schema))

    proc = client.once()
    # generation 50 (genuine) is applied; the four invalid ones are terminated
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count('event=invalid') == 4
    for reason in ('bad-signature', 'json', 'schema'):
        assert 'reason=%s' % reason in proc.stderr
    assert client.state()['generation'] == 50 and client.bundle.read_text() == bundles['int'] != before
    assert client.metric('ca_bundle_sync_invalid_messages_total') == 4
    info = channel.consumer(client.durable)
    assert settled(info), info  # terminated: not pending, not awaiting an ack, never redelivered
    again = client.once()
    assert again.returncode == 0 and 'event=invalid' not in again.stderr and settled(channel.consumer(client.durable))


def test_forged_message_leaves_the_bundle_untouched(client, channel, bundles):
    channel.announce(bundles['full'], generation=1, epoch=7)
    assert client.once().returncode == 0
    before = client.bundle.read_bytes()
    channel.announce(bundles['root'], generation=2, epoch=8, sign=forged_signer())
    proc = client.once()
    assert proc.returncode == 3 and 'reason=bad-signature' in proc.stderr
    assert client.bundle.read_bytes() == before and client.state()['generation'] == 1 and client.reloads() == ['1', '7']
    assert settled(channel.consumer(client.durable))


def test_replayed_older_generation_is_ignored(client, channel, bundles):
    channel.announce(bundles['full'], generation=3, epoch=7)
    assert client.once().returncode == 0
    channel.announce(bundles['root'], generation=2, epoch=6)  # a replay of an older (genuine) generation
    channel.announce(bundles['int'], generation=3, epoch=8)  # same generation, other bundle
    proc = client.once()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count('event=skipped') == 2
    assert client.bundle.read_text() == bundles['full'] and client.reloads() == ['3', '7']
    assert settled(channel.consumer(client.durable))


def test_rollback_newer_generation_older_epoch_is_applied(client, channel, bundles):
    channel.announce(bundles['full'], generation=1, epoch=10)
    assert client.once().returncode == 0
    channel.announce(bundles['root'], generation=2, epoch=9, kind='rollback')
    proc = client.once()
    assert proc.returncode == 0, proc.stderr
    assert client.bundle.read_text() == bundles['root']
    state = client.state()
    assert (state['generation'], state['epoch'], state['kind']) == (2, 9, 'rollback')
    assert client.reloads() == ['1', '10', '2', '9']


def test_once_drains_a_backlog(client, channel, bundles):
    channel.announce(bundles['root'], generation=1, epoch=21)
    assert client.once().returncode == 0  # creates the durable consumer, applies generation 1
    assert channel.consumer(client.durable) is not None and client.state()['generation'] == 1
    pems = [bundles['int'], bundles['root'], bundles['int'], bundles['root']]
    for generation, pem in enumerate(pems, 2):
        channel.announce(pem, generation=generation, epoch=20 + generation)
    proc = client.once()
    assert proc.returncode == 0, proc.stderr
    assert client.state()['generation'] == 5 and client.bundle.read_text() == bundles['root']
    assert client.reloads()[::2] == ['1', '2', '3', '4', '5']  # applied in order, each acked after its reload
    info = channel.consumer(client.durable)
    assert settled(info) and info['ack_floor']['stream_seq'] == 5


def test_a_host_without_state_skips_to_the_newest_generation(client, channel, bundles):
    assert client.once().returncode == 0  # creates the durable consumer (nothing to apply yet)
    pems = [bundles['int'], bundles['root'], bundles['int'], bundles['root'], bundles['full']]
    for generation, pem in enumerate(pems, 1):
        channel.announce(pem, generation=generation, epoch=20 + generation)
    proc = client.once()
    assert proc.returncode == 0, proc.stderr
    assert client.state()['generation'] == 5 and client.bundle.read_text() == bundles['full']
    assert client.reloads() == ['5', '25'] and proc.stderr.count('event=skipped') == 4  # one reload, the older ones superseded
    assert settled(channel.consumer(client.durable))


def test_restart_resumes_from_the_durable_consumer_without_reapplying(client, channel, bundles):
    daemon = client.follow()
    try:
        channel.announce(bundles['int'], generation=1, epoch=7)
        wait_until(lambda: client.state()['generation'] == 1, what='generation 1 applied by the daemon')
    finally:
        code, log = stop(daemon)
    assert code == 0, log
    assert 'event=stopping' in log and 'event=stopped' in log
    channel.announce(bundles['root'], generation=2, epoch=8)  # published while the daemon is down
    daemon = client.follow()
    try:
        wait_until(lambda: client.state()['generation'] == 2, what='generation 2 applied after the restart')
        wait_until(lambda: settled(channel.consumer(client.durable)), what='the consumer to settle')
    finally:
        code, log = stop(daemon)
    assert code == 0, log
    assert client.reloads() == ['1', '7', '2', '8'], 'generation 1 must not be applied again'
    assert channel.consumer(client.durable)['ack_floor']['stream_seq'] == 2
    # recreating the consumer delivers the newest announcement again; the state file keeps it from being re-applied
    proc = client.once('--resync')
    assert proc.returncode == 0 and 'event=consumer-deleted' in proc.stderr and 'event=skipped' in proc.stderr
    assert client.reloads() == ['1', '7', '2', '8']


def test_sigterm_while_reloading_finishes_the_message(client, channel, bundles):
    slow = '%s -c "import time; time.sleep(5)"' % sys.executable
    daemon = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, str(SCRIPT), '--follow', '--fetch-timeout', '1'] + client.args(reload_command=slow),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        channel.announce(bundles['full'], generation=1, epoch=7)
        wait_until(client.bundle.exists, what='the bundle to be written (reload running)')
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert 'event=applied' in err and err.index('event=stopping') < err.index('event=applied')
    assert client.state()['generation'] == 1 and settled(channel.consumer(client.durable))


def test_transient_reload_failure_is_retried_with_backoff_and_bounded(client, channel, bundles):
    failing = '%s -c "import sys; print(\'service refused the reload\'); sys.exit(4)"' % sys.executable
    channel.announce(bundles['full'], generation=1, epoch=7)
    first = client.once('--max-deliver', '3', reload_command=failing)
    assert first.returncode == 1, first.stderr
    assert 'reason=reload' in first.stderr and 'service refused the reload' in first.stderr
    assert client.state()['generation'] == 0  # not applied: will be redelivered
    assert client.metric('ca_bundle_sync_failures_total', reason='reload') == 1
    info = channel.consumer(client.durable)
    assert info['num_ack_pending'] == 1  # nak'd with a delay, not acked, not terminated
    # keep failing until the server gives up (max_deliver 3)
    outputs = [first.stderr]
    deadline = time.monotonic() + 90
    while 'giving up' not in outputs[-1] and time.monotonic() < deadline:
        outputs.append(client.once('--max-deliver', '3', reload_command=failing).stderr)
    assert 'giving up' in outputs[-1], outputs
    assert client.metric('ca_bundle_sync_failures_total', reason='max-deliver') == 1
    assert sum(o.count('event=failed') for o in outputs) == 3, 'delivered exactly max_deliver times'
    # the last delivery was terminated: the server dropped it for this consumer at once (it stays in the stream) and
    # never delivers it again
    assert channel.consumer(client.durable)['num_ack_pending'] == 0
    quiet = client.once('--max-deliver', '3', reload_command=failing)
    assert quiet.returncode == 0 and 'event=failed' not in quiet.stderr, quiet.stderr
    # the operator fixes the reload, then asks for the latest announcement again
    fixed = client.once('--max-deliver', '3', '--resync')
    assert fixed.returncode == 0, fixed.stderr
    assert client.state()['generation'] == 1 and client.reloads() == ['1', '7']


def test_expired_announcement_is_terminated(client, channel, bundles):
    channel.announce(bundles['full'], generation=1, epoch=7, valid_until=dt.datetime.now(UTC) - dt.timedelta(hours=1))
    proc = client.once()
    assert proc.returncode == 3 and 'reason=expired' in proc.stderr
    assert not client.bundle.exists() and settled(channel.consumer(client.durable))


def test_transit_verification(client, channel, bundles, stack):
    channel.announce(bundles['full'], generation=1, epoch=7)
    channel.announce(bundles['root'], generation=2, epoch=8, sign=forged_signer())
    proc = client.once('--transit', '--openbao-url', stack['openbao']['addr'], '--openbao-token-file',
                       stack['openbao']['token_file'], '--deliver-policy', 'all')
    assert proc.returncode == 3, proc.stderr
    assert client.state()['generation'] == 1 and client.bundle.read_text() == bundles['full']
    assert 'reason=bad-signature' in proc.stderr
    token = Path(stack['openbao']['token_file']).read_text().strip()
    assert token not in proc.stderr


def test_transit_unreachable_is_transient(client, channel, bundles):
    channel.announce(bundles['full'], generation=1, epoch=7)
    proc = client.once('--transit', '--openbao-url', 'http://127.0.0.1:9', '--openbao-token-file', str(client.key_file))
    assert proc.returncode == 1 and 'reason=keys' in proc.stderr
    assert not client.bundle.exists() and channel.consumer(client.durable)['num_ack_pending'] == 1


def test_nats_ca_file_may_be_the_managed_bundle(client, channel, bundles, stack):
    """The script's own NATS trust can be the bundle it manages (intermediates only: partial chain is automatic)."""
    channel.announce(bundles['int'], generation=1, epoch=7)
    client.bundle.write_text(bundles['int'])
    proc = client.once('--nats-ca-file', str(client.bundle))
    assert proc.returncode == 0, proc.stderr
    assert client.state()['generation'] == 1


def test_second_instance_is_busy(client, channel):
    client.state_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(client.state_file) + '.lock', os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = client.once()
    finally:
        os.close(fd)
    assert proc.returncode == 75 and 'event=busy' in proc.stderr
    assert channel.consumer(client.durable) is None


def test_missing_stream_is_a_failure_with_a_clear_message(tmp_path, stack, nats_params, signer, pinned_key):
    ghost = Channel(nats_params, signer)  # never created
    proc = Client(tmp_path, stack, ghost, pinned_key).once()
    assert proc.returncode == 1 and 'does not exist' in proc.stderr and ghost.stream in proc.stderr


def test_consumer_that_is_not_ours_is_a_config_error(client, channel):
    async def make(nc):
        config = {'durable_name': client.durable, 'ack_policy': 'none', 'filter_subject': channel.subject}
        return await nats_jetstream.js_api(nc, 'CONSUMER.CREATE.%s.%s' % (channel.stream, client.durable),
                                           {'stream_name': channel.stream, 'config': config}, nats_jetstream.Deadline(30), 'create')
    run(channel._call(make))  # pylint: disable=protected-access
    proc = client.once()
    assert proc.returncode == 2 and 'is not ours' in proc.stderr


# ----------------------------------------------------------------------------- issue 17: always the newest, never a replay
def _done_fields(stderr):
    """The key=value fields of the run's last ``event=done`` line."""
    line = [ln for ln in stderr.splitlines() if 'event=done' in ln][-1]
    return dict(part.split('=', 1) for part in line.split() if '=' in part)


def test_once_reaches_the_newest_generation_on_consumers_of_every_age(tmp_path, stack, nats_params, signer, pinned_key, bundles):
    """50 announcements on a stream that keeps 10 per subject; 5 consumers left idle at different points
    (generations 0, 10, 20, 30, 40); one --once each must end on generation 50, whatever the counters say."""
    channel = Channel(nats_params, signer)
    channel.create(max_msgs_per_subject=10)
    try:
        clients = [Client(tmp_path / ('c%d' % k), stack, channel, pinned_key, service='age%d-%s' % (k, uuid.uuid4().hex[:4]))
                   for k in range(5)]
        generation = 0
        for k, host in enumerate(clients):  # host k applies generation 10k+1, then stays idle
            for _i in range(10 if k else 1):
                generation += 1
                channel.announce(bundles['int' if generation % 2 else 'root'], generation=generation, epoch=100 + generation)
            proc = host.once()
            assert proc.returncode == 0 and host.state()['generation'] == generation, proc.stderr
        while generation < 50:
            generation += 1
            channel.announce(bundles['int' if generation % 2 else 'root'], generation=generation, epoch=100 + generation)
        # a consumer leader change (a restart, a fault) makes nats-server 2.15 recount num_pending for a last-per-subject
        # consumer as one per subject: the counters then say 1 while 9-10 messages are deliverable
        leaders = {host.durable: channel.stepdown(host.durable) for host in clients}
        counts = []
        for host in clients:
            before, start = leaders[host.durable], host.state()['generation']
            proc = host.once()
            assert proc.returncode == 0, proc.stderr
            done = _done_fields(proc.stderr)
            counts.append({'service': host.service, 'from_generation': start, 'num_pending_before': before['num_pending'],
                           'last_seq': channel.last_seq(), 'delivered_before': before['delivered']['stream_seq'],
                           'generation': host.state()['generation'],
                           'applied': int(done['applied']), 'skipped': int(done['skipped']), 'pulls': done.get('pulls')})
            print('issue-17 consumer: %s' % json.dumps(counts[-1]))
            assert host.state()['generation'] == 50 and host.state()['epoch'] == 150, (counts[-1], proc.stderr)
            assert sha(host.bundle) == common_digest.sha256_hex(bundles['root'])
            assert settled(channel.consumer(host.durable))
        print('\nissue-17 counts: %s' % json.dumps(counts))
    finally:
        channel.delete()


def test_a_replayed_older_announcement_is_not_applied_by_a_host_without_state(tmp_path, stack, channel, pinned_key, bundles):
    """Capture generation 1, wait for generation 2, publish generation 1 again (a new Nats-Msg-Id), then a new service runs --once."""
    first = channel.announce(bundles['int'], generation=1, epoch=7)
    second = channel.announce(bundles['full'], generation=2, epoch=8)
    channel.publish(_message.canonical_json(first), msg_id='replay-' + uuid.uuid4().hex)  # now the last message on the subject
    newcomer = Client(tmp_path, stack, channel, pinned_key)
    proc = newcomer.once()
    assert proc.returncode == 0, proc.stderr
    assert newcomer.state()['generation'] == 2 and sha(newcomer.bundle) == second['bundle_sha256'], proc.stderr
    assert 'event=catch-up' in proc.stderr and 'event=skipped' in proc.stderr
    assert newcomer.reloads() == ['2', '8']
    assert settled(channel.consumer(newcomer.durable))
    # a lost state file: the same, from the bundle in place
    newcomer.state_file.unlink()
    again = newcomer.once('--resync')
    assert again.returncode == 0 and newcomer.state()['generation'] == 2, again.stderr
    assert sha(newcomer.bundle) == second['bundle_sha256'] and newcomer.reloads()[2:] == ['2', '8']  # generation 2 again, never 1


def test_the_client_identity_may_not_publish_announcements(stack):
    """NATS permissions of the stack: app reads the announcement subject but may not publish on it or change its
    stream; the announcer may publish (checked on the real servers, independently of the collection's code)."""
    import ssl  # pylint: disable=import-outside-toplevel
    import nats  # pylint: disable=import-outside-toplevel

    auth = stack['nats_auth']
    servers = [s['url'] for c in stack['clusters'] for s in c['servers']]
    subject = nats_jetstream.DEFAULT_SUBJECT

    async def connect(user, password_file, errors):
        ctx = ssl.create_default_context(cafile=auth['ca_file'])
        ctx.load_cert_chain(auth['client_cert_file'], auth['client_key_file'])

        async def on_error(exc):
            errors.append(str(exc))
        return await nats.connect(servers=servers, tls=ctx, user=user, password=Path(password_file).read_text(encoding='utf-8').strip(),
                                  error_cb=on_error, allow_reconnect=False, connect_timeout=5)

    async def scenario():
        app_errors, announcer_errors = [], []
        reader = await connect(auth['app_user'], auth['app_password_file'], app_errors)
        announcer = await connect(auth['announcer_user'], auth['announcer_password_file'], announcer_errors)
        got = []

        async def received(msg):
            got.append(msg.data)
        await reader.subscribe(subject, cb=received)  # app may read the announcements
        await reader.flush()
        await reader.publish(subject, b'forged by app')
        await reader.flush()
        for denied in ('$JS.API.STREAM.PURGE.METADATA_CA_CLIENT', '$JS.API.STREAM.DELETE.METADATA_CA_CLIENT'):
            with pytest.raises(Exception):
                await reader.request(denied, b'', timeout=1)
        await announcer.publish(subject, b'from the announcer')
        await announcer.flush()
        deadline = time.monotonic() + 10
        while (not got or len([e for e in app_errors if 'permissions violation' in e.lower()]) < 3) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await reader.close()
        await announcer.close()
        return got, app_errors, announcer_errors

    got, app_errors, announcer_errors = run(scenario())
    assert got == [b'from the announcer']
    assert any('permissions violation for publish to "%s"' % subject in e.lower() for e in app_errors), app_errors
    assert any('stream.purge.metadata_ca_client' in e.lower() for e in app_errors), app_errors
    assert not announcer_errors

"""examples/ca_aware_service.py keeps publishing to JetStream across a real CA rotation, with 0 lost messages.

A private LocalStack (its own OpenBao and 3-node mTLS NATS cluster), so the rotation -- a new epoch
intermediate, new server bundles, server reloads (SIGHUP), new server certificates -- never disturbs the
session stack. The client side is the real thing: ca-bundle-sync --follow consumes the signed announcement
(verified through OpenBao transit), writes the client's bundle and sends SIGHUP to the example service, whose
ReloadingTLS context is then used for every (re)connect. The client bundle holds intermediates only
(include_root: false), so the service can verify the servers' new certificates ONLY with the new bundle.

Loss check, independent of the service: every acknowledged (Nats-Msg-Id, sequence) is read back from the
stream, and the stream holds exactly the acknowledged messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catools.localstack import LocalStack

from catools.procs import http_json
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import build as bundle_build
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import digest as common_digest
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import intermediate as bao_intermediate
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import transit as bao_transit

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / 'examples' / 'ca_aware_service.py'
SYNC = REPO / 'scripts' / 'ca-bundle-sync'
UTC = dt.timezone.utc
STREAM, SUBJECT = 'EXAMPLE_ROTATION', 'example.rotation'


@pytest.fixture(scope='module')
def private_stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp('example-stack') / 'state')
    stack.up()
    yield stack
    stack.down()


def wait_until(predicate, timeout=90, what='condition'):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError) as exc:  # a file being replaced, a server restarting
            value, last = None, exc
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError('timed out after %ss waiting for %s (last error: %s)' % (timeout, what, last))


def read_json(path):
    return json.loads(Path(path).read_text())


def servers(info):
    return [s for c in info['clusters'] for s in c['servers']]


def nats_params(info, ca_file=None, partial_chain=False):
    auth = info['nats_auth']
    return {'servers': [s['url'] for s in servers(info)], 'ca_file': ca_file or auth['ca_file'],
            'cert_file': auth['client_cert_file'], 'key_file': auth['client_key_file'], 'user': auth['app_user'],
            'password_file': auth['app_password_file'], 'partial_chain': partial_chain}


def announcer_params(info):
    """The authority's identity: the only one allowed to publish announcements (the client identity app may not)."""
    auth = info['nats_auth']
    return dict(nats_params(info), user=auth['announcer_user'], password_file=auth['announcer_password_file'])


def reload_servers(info):
    """SIGHUP every server and wait until each reports a newer config_load_time (DESIGN section 10)."""
    before = {s['name']: http_json(s['monitor_url'] + '/varz')[1]['config_load_time'] for s in servers(info)}
    for server in servers(info):
        os.kill(server['pid'], signal.SIGHUP)
    for server in servers(info):
        wait_until(lambda s=server: http_json(s['monitor_url'] + '/varz')[1]['config_load_time'] != before[s['name']],
                   what='%s to reload' % server['name'])


async def _with(params, func):
    nc = await nats_client.connect(params)
    try:
        return await func(nc)
    finally:
        await nats_client.close(nc)


async def _stream_contents(nc):
    """The stream state and ``{sequence: Nats-Msg-Id}`` of every stored message (read one by one, by sequence)."""
    deadline = nats_jetstream.Deadline(300)
    info = await nats_jetstream.js_api(nc, 'STREAM.INFO.%s' % STREAM, b'', deadline, 'info')
    out = {}
    for seq in range(info['state']['first_seq'], info['state']['last_seq'] + 1):
        resp = await nats_jetstream.js_api(nc, 'STREAM.MSG.GET.%s' % STREAM, {'seq': seq}, deadline, 'get %d' % seq)
        out[resp['message']['seq']] = nats_jetstream.parse_headers(resp['message'].get('hdrs')).get('Nats-Msg-Id')
    return info['state'], out


def test_example_service_keeps_publishing_across_a_rotation(private_stack, tmp_path):
    stack = private_stack
    info = stack.info
    auth = info['nats_auth']
    bao = stack.bao_client()
    sched = stack.schedule
    now = dt.datetime.now(UTC)
    epoch = info['pki']['bootstrap_epoch']
    root_pem = Path(info['pki']['root_pem_file']).read_text()
    current = Path(info['pki']['bundle_file']).read_text()
    old_int = current[:current.index('-----END CERTIFICATE-----') + len('-----END CERTIFICATE-----')] + '\n'

    # the client's bundle: intermediates only -> the service trusts exactly the listed epochs
    client_dir = tmp_path / 'client'
    client_dir.mkdir()
    bundle_file = client_dir / 'ca-bundle.pem'
    first = bundle_build.build_bundle([old_int], root_pem, sched, now, include_root=False)
    bundle_file.write_text(first['pem'])
    old_bundle_copy = tmp_path / 'old-bundle.pem'
    old_bundle_copy.write_text(first['pem'])

    pid_file, status_file, acked_log = client_dir / 'service.pid', client_dir / 'status.json', client_dir / 'acked.jsonl'
    service_log = open(tmp_path / 'service.log', 'w+', encoding='utf-8')  # pylint: disable=consider-using-with
    service = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, str(EXAMPLE), '--servers', ','.join(s['url'] for s in servers(info)), '--bundle-file', str(bundle_file),
         '--cert-file', auth['client_cert_file'], '--key-file', auth['client_key_file'], '--user', auth['app_user'],
         '--password-file', auth['app_password_file'], '--stream', STREAM, '--subject', SUBJECT, '--create-stream',
         '--replicas', '3', '--interval', '0.01', '--acked-log', str(acked_log), '--status-file', str(status_file),
         '--pid-file', str(pid_file), '--reconnect-on-reload'],
        stdout=subprocess.PIPE, stderr=service_log, text=True, start_new_session=True)
    sync = None
    try:
        wait_until(lambda: read_json(status_file)['acked'] >= 30, what='the service to publish')

        # the announcement stream and the client's ca-bundle-sync daemon (its own NATS trust is the managed bundle too)
        asyncio.run(_with(announcer_params(info), lambda nc: nats_jetstream.ensure_stream(
            nc, nats_jetstream.DEFAULT_STREAM, {'subjects': [nats_jetstream.DEFAULT_SUBJECT], 'replicas': 3}, nats_jetstream.Deadline(60))))
        state_file = client_dir / 'sync-state.json'
        sync_log = open(tmp_path / 'sync.log', 'w+', encoding='utf-8')  # pylint: disable=consider-using-with
        sync = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, str(SYNC), '--follow', '--service', 'example', '--bundle-file', str(bundle_file),
             '--state-file', str(state_file), '--pid-file', str(pid_file), '--transit', '--openbao-url', info['openbao']['addr'],
             '--openbao-token-file', info['openbao']['token_file'], '--nats-ca-file', str(bundle_file),
             '--nats-cert-file', auth['client_cert_file'], '--nats-key-file', auth['client_key_file'],
             '--nats-user', auth['app_user'], '--nats-password-file', auth['app_password_file'], '--fetch-timeout', '1',
             '--metrics-file', str(client_dir / 'sync.prom')] + sum((['--nats-server', s['url']] for s in servers(info)), []),
            stdout=subprocess.DEVNULL, stderr=sync_log, start_new_session=True)
        sync.log = sync_log
        wait_until(lambda: 'event=following' in Path(sync_log.name).read_text(), what='ca-bundle-sync to follow')

        # --- rotation, tier 1: issue the next epoch's intermediate ("trust first, then issue")
        issued = bao_intermediate.ensure_epoch_intermediate(bao, sched, epoch + 1, root_mount='pki', int_mount='pki_int',
                                                            cn_prefix=info['pki']['cn_prefix'])
        new_int = issued['certificate']
        server_bundle = bundle_build.build_bundle([new_int, old_int], root_pem, sched, now, include_root=True)
        client_bundle = bundle_build.build_bundle([new_int, old_int], root_pem, sched, now, include_root=False)
        # --- tier 2: every server trusts epoch N+1, reloaded without restarting
        for server in servers(info):
            Path(server['ca_file']).write_text(server_bundle['pem'])
        reload_servers(info)
        # --- announce (signed with the real transit key); tier 3 picks it up
        message = _message.build_announcement(
            epoch=client_bundle['epoch'], generation=1, kind='rotation', bundle_pem=client_bundle['pem'],
            certificates=client_bundle['certificates'], valid_from=sched.start(epoch), valid_until=sched.expiry(epoch),
            created_at=now)
        signed = _message.sign_announcement(message, bao_transit.transit_signer(bao, 'transit', 'ca-bundle-signer'))
        asyncio.run(_with(announcer_params(info), lambda nc: nats_jetstream.publish(
            nc, nats_jetstream.DEFAULT_SUBJECT, _message.canonical_json(signed), nats_jetstream.Deadline(30), msg_id=_message.msg_id(signed),
            stream=nats_jetstream.DEFAULT_STREAM)))
        wait_until(lambda: common_digest.sha256_hex(bundle_file.read_bytes()) == client_bundle['sha256'],
                   what='ca-bundle-sync to write the new client bundle')
        wait_until(lambda: read_json(state_file)['generation'] == 1, what='the sync state to record generation 1')
        wait_until(lambda: read_json(status_file)['tls_reloads'] >= 1 and read_json(status_file)['reconnects'] >= 1,
                   what='the service to reload its TLS context (SIGHUP) and reconnect')
        assert read_json(status_file)['bundle_sha256'] == client_bundle['sha256']

        # --- activate epoch N+1 and give every server a certificate of the new epoch
        bao_intermediate.set_default_issuer(bao, 'pki_int', 'epoch-%d' % (epoch + 1))
        for server in servers(info):
            stack.issue_leaf(server['name'], Path(server['cert_file']), Path(server['key_file']), bao)
        reload_servers(info)
        # the old client bundle can no longer verify the servers: the new one is really needed
        with pytest.raises(nats_options.NatsError) as refused:
            asyncio.run(_with(nats_params(info, str(old_bundle_copy), partial_chain=True), lambda nc: nc.flush()))
        assert refused.value.kind == 'tls'

        # --- a reconnect now must verify an epoch N+1 server certificate with the bundle the service picked up
        before = read_json(status_file)
        os.kill(service.pid, signal.SIGHUP)  # --reconnect-on-reload: force a new handshake
        wait_until(lambda: read_json(status_file)['reconnects'] > before['reconnects'], what='the service to reconnect')
        reconnected_at = read_json(status_file)['acked']
        wait_until(lambda: read_json(status_file)['acked'] >= reconnected_at + 200, what='publishing to go on after the rotation')
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
        summary, _err = service.communicate(timeout=90)
        if sync is not None:
            if sync.poll() is None:
                sync.send_signal(signal.SIGTERM)
            sync.wait(60)
            sync.log.seek(0)
            sync_text = sync.log.read()
            sync.log.close()
        service_log.seek(0)
        service_text = service_log.read()
        service_log.close()
    assert service.returncode == 0, service_text
    assert sync.returncode == 0, sync_text
    assert 'event=applied' in sync_text and 'reload="SIGHUP to %d"' % service.pid in sync_text
    stats = json.loads(summary)
    assert stats['acked'] == stats['published'] and stats['reconnects'] >= 2
    # the connection dropped only when the service itself asked (two forced reconnects) and at the final drain:
    # reloading the servers -- twice -- never cut it
    assert stats['disconnects'] == stats['reconnects'] + 1, stats

    # --- 0 lost messages: every acknowledged message is in the stream, and nothing else is
    acked = [json.loads(line) for line in acked_log.read_text().splitlines()]
    assert len(acked) == stats['acked'] and len({a['id'] for a in acked}) == len(acked)
    state, stored = asyncio.run(_with(nats_params(info, str(bundle_file), partial_chain=True), _stream_contents))
    assert state['messages'] == len(acked) and state['first_seq'] == 1 and state['last_seq'] == len(acked)
    assert {a['seq']: a['id'] for a in acked} == stored

"""Role securetransport.ca_rotation.client_bundle, run with ansible-playbook against this machine.

Everything goes under a temporary ``client_bundle_root``; systemd is not running here, so
``client_bundle_manage_services: false``. In sync mode the ca-bundle-sync the role installed is then run as
cron would run it, against the real NATS cluster and a signed announcement, to prove the installation works.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from helpers import ansible_playbook
from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common import digest as common_digest
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import client as nats_client
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import jetstream as nats_jetstream
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import transit as bao_transit

UTC = dt.timezone.utc
PLAYBOOK = """---
- name: Client bundle
  hosts: localhost
  gather_facts: false
  roles:
    - role: securetransport.ca_rotation.client_bundle
"""


def play(tmp_path, variables, check=False):
    book = tmp_path / 'client_bundle.yml'
    book.write_text(PLAYBOOK)
    proc = ansible_playbook(book, '-c', 'local', inventory='localhost,', extra_vars=variables, check=check)
    recap = re.search(r'localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', proc.stdout)
    assert recap, proc.stdout + proc.stderr
    return proc, int(recap.group(2)), int(recap.group(4))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope='module')
def bundle_pem(stack):
    return Path(stack['pki']['bundle_file']).read_text(encoding='ascii')


@pytest.fixture
def channel(stack, bao_client):
    """A private stream/subject with a signed announcement of the stack's bundle (generation 1)."""
    auth = stack['nats_auth']
    params = {'servers': [s['url'] for c in stack['clusters'] for s in c['servers']], 'ca_file': auth['ca_file'],
              'cert_file': auth['client_cert_file'], 'key_file': auth['client_key_file'], 'user': auth['app_user'],
              'password_file': auth['app_password_file']}
    tag = uuid.uuid4().hex[:10]
    chan = {'stream': 'CA_ROLE_T_%s' % tag.upper(), 'subject': 'test.carole.%s.ca-cert' % tag, 'params': params}

    async def call(func):
        nc = await nats_client.connect(params)
        try:
            return await func(nc)
        finally:
            await nats_client.close(nc)

    asyncio.run(call(lambda nc: nats_jetstream.ensure_stream(nc, chan['stream'], {'subjects': [chan['subject']]}, nats_jetstream.Deadline(60))))

    def announce(pem, generation, epoch):
        now = dt.datetime.now(UTC).replace(microsecond=0)
        message = _message.build_announcement(
            epoch=epoch, generation=generation, kind='rotation', bundle_pem=pem, certificates=None, valid_from=now,
            valid_until=now + dt.timedelta(hours=6), created_at=now)
        signed = _message.sign_announcement(message, bao_transit.transit_signer(bao_client, 'transit', 'ca-bundle-signer'))
        asyncio.run(call(lambda nc: nats_jetstream.publish(nc, chan['subject'], _message.canonical_json(signed), nats_jetstream.Deadline(30),
                                                           msg_id=_message.msg_id(signed), stream=chan['stream'])))
        return signed

    chan['announce'] = announce
    yield chan
    asyncio.run(call(lambda nc: nats_jetstream.js_api(nc, 'STREAM.DELETE.%s' % chan['stream'], b'', nats_jetstream.Deadline(30), 'delete')))


def sync_vars(tmp_path, stack, bao_client, channel, **extra):
    auth = stack['nats_auth']
    keys = bao_transit.transit_public_keys(bao_client, 'transit', 'ca-bundle-signer')
    marker = tmp_path / 'reloads.log'
    variables = {
        'client_bundle_service': 'billing',
        'client_bundle_root': str(tmp_path / 'root'),
        'client_bundle_python': sys.executable,
        'client_bundle_manage_services': False,
        'client_bundle_sync_method': 'cron',
        'client_bundle_public_key': {str(k): v for k, v in keys.items()},
        'client_bundle_stream': channel['stream'],
        'client_bundle_subject': channel['subject'],
        'client_bundle_metrics_file': '/var/lib/node_exporter/textfile/ca_bundle_sync_billing.prom',
        'client_bundle_reload_command': [sys.executable, '-c', 'import os; open(%r, "a").write(os.environ["CA_BUNDLE_GENERATION"] '
                                                               '+ "\\n")' % str(marker)],
        'client_bundle_backoff': ['1s'],
        'client_bundle_max_deliver': 3,
        'client_bundle_nats': {'servers': [s['url'] for c in stack['clusters'] for s in c['servers']], 'ca_file': auth['ca_file'],
                               'cert_file': auth['client_cert_file'], 'key_file': auth['client_key_file'],
                               'user': auth['app_user'], 'password_file': auth['app_password_file']},
    }
    variables.update(extra)
    return variables


def test_sync_mode_installs_a_working_ca_bundle_sync(tmp_path, stack, bao_client, channel, bundle_pem):
    root = tmp_path / 'root'
    variables = sync_vars(tmp_path, stack, bao_client, channel)
    proc, changed, failed = play(tmp_path, variables)
    assert failed == 0 and changed > 0, proc.stdout
    launcher = root / 'usr/local/bin/ca-bundle-sync'
    config = root / 'etc/ca-bundle-sync/billing.json'
    installed = root / 'opt/ca-bundle-sync/ansible_collections/securetransport/ca_rotation'
    assert mode(launcher) == 0o755 and mode(config) == 0o600
    assert (installed / 'scripts/catools/bundle_sync.py').is_file() and (installed / 'plugins/module_utils/_message.py').is_file()
    assert (installed / 'plugins/module_utils/_common/tls.py').is_file() and (installed / 'plugins/module_utils/_bundle/build.py').is_file()
    assert not (installed / 'plugins/module_utils/_openbao').exists()  # no OpenBao code without transit mode
    settings = json.loads(config.read_text())
    assert settings['bundle_file'] == str(root / 'etc/ca-bundle-sync/billing/ca-bundle.pem')
    assert settings['state_file'] == str(root / 'var/lib/ca-bundle-sync/billing.json')
    assert settings['public_key_file'] == str(root / 'etc/ca-bundle-sync/billing-signer.pub')
    assert settings['stream'] == channel['stream'] and settings['backoff'] == ['1s'] and 'transit' not in settings
    cron = (root / 'etc/cron.d/ca-bundle-sync-billing').read_text()
    assert re.search(r'^\*/5 \* \* \* \* root %s --once --config %s ' % (re.escape(str(launcher)), re.escape(str(config))), cron, re.M)
    assert not (root / 'etc/systemd/system/ca-bundle-sync-billing.service').exists()

    proc, changed, failed = play(tmp_path, variables)
    assert (changed, failed) == (0, 0), proc.stdout  # idempotent

    before = config.read_text()
    proc, changed, failed = play(tmp_path, dict(variables, client_bundle_max_deliver=4), check=True)
    assert failed == 0 and changed > 0 and config.read_text() == before, proc.stdout  # check mode writes nothing

    # what cron would run: the installed copy, with the written configuration, against the real cluster
    signed = channel['announce'](bundle_pem, 1, 11)
    run = subprocess.run([str(launcher), '--once', '--config', str(config)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    bundle = root / 'etc/ca-bundle-sync/billing/ca-bundle.pem'
    assert common_digest.sha256_hex(bundle.read_bytes()) == signed['bundle_sha256'] and mode(bundle) == 0o644
    assert (tmp_path / 'reloads.log').read_text() == '1\n'
    assert 'ca_bundle_sync_last_applied_generation{service="billing"} 1' in \
        (root / 'var/lib/node_exporter/textfile/ca_bundle_sync_billing.prom').read_text()


@pytest.mark.slow
def test_switching_the_sync_method_removes_the_old_schedule(tmp_path, stack, bao_client, channel):
    root = tmp_path / 'root'
    units = root / 'etc/systemd/system'
    cron = root / 'etc/cron.d/ca-bundle-sync-billing'
    _proc, _changed, failed = play(tmp_path, sync_vars(tmp_path, stack, bao_client, channel))
    assert failed == 0 and cron.exists()

    proc, _changed, failed = play(tmp_path, sync_vars(tmp_path, stack, bao_client, channel, client_bundle_sync_method='systemd_timer',
                                                      client_bundle_timer_interval='10min'))
    assert failed == 0, proc.stdout
    assert not cron.exists()
    service = (units / 'ca-bundle-sync-billing.service').read_text()
    assert 'Type=oneshot' in service and '--once --config %s' % (root / 'etc/ca-bundle-sync/billing.json') in service
    assert 'OnUnitActiveSec=10min' in (units / 'ca-bundle-sync-billing.timer').read_text()

    proc, _changed, failed = play(tmp_path, sync_vars(tmp_path, stack, bao_client, channel,
                                                      client_bundle_sync_method='systemd_service'))
    assert failed == 0, proc.stdout
    assert not (units / 'ca-bundle-sync-billing.timer').exists() and not cron.exists()
    service = (units / 'ca-bundle-sync-billing.service').read_text()
    assert 'Type=simple' in service and '--follow --config' in service and 'RestartPreventExitStatus=2' in service


def test_transit_mode_and_bad_settings(tmp_path, stack, bao_client, channel):
    variables = sync_vars(tmp_path, stack, bao_client, channel, client_bundle_public_key='', client_bundle_transit=True,
                          client_bundle_openbao={'url': stack['openbao']['addr'], 'token_file': stack['openbao']['token_file']},
                          client_bundle_sync_method='none')
    proc, _changed, failed = play(tmp_path, variables)
    assert failed == 0, proc.stdout
    settings = json.loads((tmp_path / 'root/etc/ca-bundle-sync/billing.json').read_text())
    assert settings['transit'] is True and settings['openbao']['url'] == stack['openbao']['addr']
    utils = tmp_path / 'root/opt/ca-bundle-sync/ansible_collections/securetransport/ca_rotation/plugins/module_utils'
    assert (utils / '_openbao/transit.py').is_file() and not (utils / '_openbao/pki.py').exists()
    # two ways to verify at once is refused before anything else
    proc, _changed, failed = play(tmp_path, dict(variables, client_bundle_public_key_file='/etc/pinned.pub'))
    assert failed == 1 and 'exactly one way to verify' in proc.stdout
    # a configuration the script refuses fails the role (validated by the installed script itself)
    proc, _changed, failed = play(tmp_path, dict(variables, client_bundle_extra_options={'max_deliver': 1}))
    assert failed == 1 and 'must be larger than the number of --backoff' in proc.stdout


def test_push_mode_writes_the_bundle_and_reloads_once(tmp_path, bundle_pem):
    root = tmp_path / 'root'
    marker = tmp_path / 'pushed.log'
    variables = {
        'client_bundle_mode': 'push',
        'client_bundle_service': 'edge',
        'client_bundle_root': str(root),
        'client_bundle_file': '/etc/edge/ca.pem',
        'client_bundle_pem': bundle_pem,
        'client_bundle_expected_sha256': common_digest.sha256_hex(bundle_pem),
        'client_bundle_reload_command': [sys.executable, '-c', 'open(%r, "a").write("reload\\n")' % str(marker)],
    }
    bundle = root / 'etc/edge/ca.pem'
    proc, changed, failed = play(tmp_path, variables, check=True)
    assert failed == 0 and changed > 0 and not bundle.exists() and not marker.exists(), proc.stdout

    proc, changed, failed = play(tmp_path, variables)
    assert failed == 0 and changed > 0, proc.stdout
    assert bundle.read_text() == bundle_pem and mode(bundle) == 0o644
    assert marker.read_text() == 'reload\n'

    proc, changed, failed = play(tmp_path, variables)
    assert (changed, failed) == (0, 0), proc.stdout
    assert marker.read_text() == 'reload\n', 'unchanged bundle: no reload'

    other = bundle_pem.split('-----END CERTIFICATE-----')[0] + '-----END CERTIFICATE-----\n'
    proc, changed, failed = play(tmp_path, dict(variables, client_bundle_pem=other))  # wrong expected SHA-256
    assert failed == 1 and 'must equal client_bundle_expected_sha256' in proc.stdout
    assert bundle.read_text() == bundle_pem and marker.read_text() == 'reload\n'

    pid_target = subprocess.Popen([sys.executable, '-c', 'import signal, sys, time\n'  # pylint: disable=consider-using-with
                                   'signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))\ntime.sleep(120)'])
    try:
        pid_file = tmp_path / 'edge.pid'
        pid_file.write_text('%d\n' % pid_target.pid)
        proc, changed, failed = play(tmp_path, dict(variables, client_bundle_pem=other, client_bundle_expected_sha256='',
                                                    client_bundle_reload_command=[], client_bundle_pid_file=str(pid_file),
                                                    client_bundle_signal='SIGUSR1'))
        assert failed == 0 and changed > 0, proc.stdout
        assert pid_target.wait(30) == 7  # the handler signalled the service
        assert bundle.read_text() == other
    finally:
        if pid_target.poll() is None:
            pid_target.kill()
            pid_target.wait()

# -*- coding: utf-8 -*-
"""deploy/: Kubernetes manifests (schema-valid, least privilege), execution environment (ansible-builder),
Prometheus rules, AWX credential types, the AWX schedule playbook and the crontab example.

Offline: kubernetes-validate ships the Kubernetes JSON schemas; ansible-builder only generates the build
context (no image is built) and the collection is installed from it with ansible-galaxy --offline.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jinja2.sandbox
import kubernetes_validate
import pytest
import yaml

from catools import cron, cron_metrics
from helpers import ansible_playbook

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / 'deploy'
K8S = DEPLOY / 'kubernetes'
K8S_VERSION = '1.37.0'
SA = {'kind': 'ServiceAccount', 'name': 'ca-rotation', 'namespace': 'ca-rotation'}
BIN = Path(sys.executable).parent


def k8s_documents():
    docs = []
    for path in sorted(K8S.glob('*.yaml')):
        if path.name == 'kustomization.yaml':
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


DOCS = k8s_documents()


def by_kind(kind):
    return [doc for _name, doc in DOCS if doc['kind'] == kind]


# --------------------------------------------------------------------------- Kubernetes
@pytest.mark.parametrize('name, doc', DOCS, ids=['%s:%s/%s' % (n, d['kind'], d['metadata']['name']) for n, d in DOCS])
def test_manifest_validates_against_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_is_strict():
    cronjob = copy.deepcopy(by_kind('CronJob')[0])
    cronjob['spec']['jobTemplate']['spec']['template']['spec']['containers'][0]['securityContex'] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / 'kustomization.yaml').read_text())
    files = {p.name for p in K8S.glob('*.yaml')} - {'kustomization.yaml'}
    assert set(kustomization['resources']) == files


def test_rbac_is_least_privilege():
    assert not by_kind('ClusterRole') and not by_kind('ClusterRoleBinding')
    roles = {(r['metadata']['namespace'], r['metadata']['name']): r for r in by_kind('Role')}
    for role in roles.values():
        for rule in role['rules']:
            for field in ('verbs', 'resources', 'apiGroups', 'resourceNames'):
                assert '*' not in rule.get(field, []), (role['metadata']['name'], field)
                assert not any('*' in value for value in rule.get(field, [])), (role['metadata']['name'], field)
            assert rule['apiGroups'] == ['']
    # nats: the live Secret by name only, pods read-only
    nats = roles[('nats', 'ca-rotation')]['rules']
    secrets = [r for r in nats if 'secrets' in r['resources']]
    assert secrets == [{'apiGroups': [''], 'resources': ['secrets'], 'resourceNames': ['nats-ca-tls'], 'verbs': ['get', 'update', 'patch']}]
    pods = [r for r in nats if 'pods' in r['resources']]
    assert pods == [{'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get', 'list']}]
    # openbao: per-epoch bundle Secrets (names unknown in advance), nothing else
    bundles = roles[('openbao', 'ca-rotation-bundles')]['rules']
    assert bundles == [{'apiGroups': [''], 'resources': ['secrets'], 'verbs': ['create', 'get', 'list', 'update', 'patch', 'delete']}]
    # exec only in its own Role, only pods/exec
    exec_roles = [key for key, role in roles.items() if any('pods/exec' in r['resources'] for r in role['rules'])]
    assert exec_roles == [('nats', 'ca-rotation-exec')]
    assert roles[('nats', 'ca-rotation-exec')]['rules'] == [{'apiGroups': [''], 'resources': ['pods/exec'], 'verbs': ['create', 'get']}]
    exec_file = yaml.safe_load_all((K8S / 'rbac-exec.yaml').read_text())
    assert {d['kind'] for d in exec_file if d} == {'Role', 'RoleBinding'}
    # every binding binds a Role of its namespace to the rotation's service account only
    for binding in by_kind('RoleBinding'):
        ns = binding['metadata']['namespace']
        assert binding['roleRef']['kind'] == 'Role' and (ns, binding['roleRef']['name']) in roles
        assert binding['subjects'] == [SA]
    assert by_kind('ServiceAccount')[0]['metadata'] == {**by_kind('ServiceAccount')[0]['metadata'], 'name': SA['name'],
                                                        'namespace': SA['namespace']}


def test_cronjob_is_safe_and_runs_the_wrapper():
    cronjob = by_kind('CronJob')[0]
    spec = cronjob['spec']
    assert spec['concurrencyPolicy'] == 'Forbid'
    assert 0 < spec['startingDeadlineSeconds'] < 300  # shorter than the 5-minute schedule
    assert spec['schedule'] == '*/5 * * * *'
    job = spec['jobTemplate']['spec']
    assert job['backoffLimit'] == 0
    pod = job['template']['spec']
    assert pod['serviceAccountName'] == SA['name'] and cronjob['metadata']['namespace'] == SA['namespace']
    assert pod['restartPolicy'] == 'Never'
    assert pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] != 0
    assert pod['securityContext']['seccompProfile'] == {'type': 'RuntimeDefault'}
    (container,) = pod['containers']
    sc = container['securityContext']
    assert sc['readOnlyRootFilesystem'] is True and sc['allowPrivilegeEscalation'] is False
    assert sc['capabilities'] == {'drop': ['ALL']}
    # every mount has a volume, /tmp is writable (readOnlyRootFilesystem), state survives between Jobs
    volumes = {v['name']: v for v in pod['volumes']}
    mounts = {m['mountPath']: m['name'] for m in container['volumeMounts']}
    assert set(mounts.values()) <= set(volumes)
    assert 'emptyDir' in volumes[mounts['/tmp']]
    assert volumes[mounts['/var/lib/ca-rotation']]['persistentVolumeClaim']['claimName'] == by_kind('PersistentVolumeClaim')[0]['metadata']['name']
    assert volumes['openbao-token']['projected']['sources'][0]['serviceAccountToken']['audience'] == 'openbao'
    # the wrapper of this collection, with options it accepts; its timeout fires before the Job deadline
    assert container['command'][1].endswith('/ansible_collections/securetransport/ca_rotation/scripts/ca-rotate-cron')
    args = cron.build_parser().parse_args(container['args'])
    assert args.inventory.startswith('/etc/ca-rotation/inventory/')
    assert args.lock_file.startswith('/var/lib/ca-rotation/') and args.metrics_file.startswith('/var/lib/ca-rotation/')
    assert 0 < args.timeout + args.kill_grace < job['activeDeadlineSeconds']
    inventory = yaml.safe_load(by_kind('ConfigMap')[0]['data']['hosts.yml'])
    assert 'authority' in inventory['all']['children']['ca_authority']['hosts']
    assert inventory['all']['vars']['ca_rotation_openbao']['kubernetes_token_path'] == '/var/run/secrets/openbao/token'


# --------------------------------------------------------------------------- execution environment
def test_execution_environment_builds_a_context_and_installs_the_collection(tmp_path):
    ee_file = DEPLOY / 'execution-environment.yml'
    ee = yaml.safe_load(ee_file.read_text())
    assert ee['version'] == 3
    assert (ee_file.parent / ee['dependencies']['python']).resolve() == (REPO / 'requirements.txt').resolve()
    core = ee['dependencies']['ansible_core']['package_pip']
    assert core in (REPO / 'requirements.txt').read_text().splitlines()  # same ansible-core as the collection pins

    context = tmp_path / 'context'
    result = subprocess.run([str(BIN / 'ansible-builder'), 'create', '-f', str(ee_file), '-c', str(context), '--output-filename',
                             'Containerfile'], capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr  # includes the v3 schema validation
    containerfile = (context / 'Containerfile').read_text()
    assert 'ansible-galaxy collection install' in containerfile and 'requirements.txt' in containerfile

    # the galaxy requirements of the context install this collection, offline, from the copied sources
    build = context / '_build'
    installed = tmp_path / 'collections'
    # only the target directory: otherwise the development checkout (ANSIBLE_COLLECTIONS_PATH, PYTHONPATH) counts as installed
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'ANSIBLE_COLLECTIONS_PATH', 'ANSIBLE_COLLECTIONS_PATHS')}
    env['ANSIBLE_COLLECTIONS_PATH'] = str(installed)
    result = subprocess.run([str(BIN / 'ansible-galaxy'), 'collection', 'install', '--offline', '-r', 'requirements.yml', '-p',
                             str(installed)], capture_output=True, text=True, timeout=300, check=False, cwd=build, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    root = installed / 'ansible_collections' / 'securetransport' / 'ca_rotation'
    galaxy = yaml.safe_load((REPO / 'galaxy.yml').read_text())
    assert json.loads((root / 'MANIFEST.json').read_text())['collection_info']['version'] == galaxy['version']
    for part in ('scripts/ca-rotate-cron', 'scripts/catools/cron.py', 'playbooks/rotate.yml', 'plugins/module_utils/_epoch.py'):
        assert (root / part).is_file(), part

    # ansible-builder's own introspection finds the collection's Python dependencies (ansible-core excluded)
    result = subprocess.run([str(BIN / 'ansible-builder'), 'introspect', '--sanitize', str(installed)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    deps = yaml.safe_load(result.stdout.split('\n', 1)[1] if result.stdout.startswith('#') else result.stdout)
    found = {re.split(r'[=<>~ ]', line, maxsplit=1)[0].lower() for line in deps['python']}
    wanted = {re.split(r'[=<>~ ]', line, maxsplit=1)[0].lower() for line in (REPO / 'requirements.txt').read_text().splitlines()
              if line and not line.startswith('#')} - {'ansible-core'}
    assert found == wanted


# --------------------------------------------------------------------------- Prometheus
RULES = yaml.safe_load((DEPLOY / 'prometheus' / 'ca-rotation-rules.yml').read_text())
ALL_RULES = [rule for group in RULES['groups'] for rule in group['rules']]


def wrapper_metric_names():
    report = {'epoch': 1, 'generation': 1, 'bundle_sha256': 'ab' * 32, 'bundle_certificates': 5, 'earliest_expiry': '2025-01-01T00:00:00Z',
              'latest_expiry': '2025-01-02T00:00:00Z', 'activated_epoch': 1, 'epoch_duration': 1200,
              'clusters': {'c': {'ok': True, 'reloaded': True, 'servers': [{'name': 'n', 'ok': True, 'reload_ms': 1, 'error': None}]}}}
    text = cron_metrics.build_metrics({}, 'success', 0.0, 1.0, 0, report).render()
    return set(re.findall(r'^([a-z_]+)(?:\{| )', text, re.M))


def test_alert_rules_are_well_formed():
    names = [rule['alert'] for rule in ALL_RULES]
    assert len(names) == len(set(names))
    for rule in ALL_RULES:
        assert set(rule) <= {'alert', 'expr', 'for', 'labels', 'annotations', 'keep_firing_for'}
        assert rule['labels']['severity'] in ('warning', 'critical')
        assert rule['annotations']['summary'] and rule['annotations']['description']
        expr = rule['expr']
        assert expr.count('(') == expr.count(')') and expr.count('{') == expr.count('}') and expr.count('[') == expr.count(']')
        if 'for' in rule:
            assert re.fullmatch(r'\d+[smh]', rule['for'])
        for text in rule['annotations'].values():
            assert text.count('{{') == text.count('}}')


def test_alert_rules_cover_the_issue_and_use_real_metric_names():
    names = {rule['alert'] for rule in ALL_RULES}
    assert {'CaBundleTooOld', 'NatsCaReloadFailures', 'ClientCaReloadFailure', 'CaIntermediateExpiringWithoutSuccessor',
            'CaRotationNotSuccessfulForTwoEpochs'} <= names
    produced = wrapper_metric_names()
    used = set()
    for rule in ALL_RULES:
        used |= set(re.findall(r'\b(ca_rotation_[a-z_]+)', rule['expr']))
    assert used <= produced, used - produced
    client = set()
    for rule in ALL_RULES:
        client |= set(re.findall(r'\b(ca_bundle_sync_[a-z_]+)', rule['expr']))
    assert client == {'ca_bundle_sync_failures_total', 'ca_bundle_sync_last_success_timestamp_seconds'}


# --------------------------------------------------------------------------- AWX
TYPES = yaml.safe_load((DEPLOY / 'awx' / 'credential_types.yml').read_text())['ca_rotation_awx_credential_types']


def render_injectors(ctype, inputs):
    """Render injectors the way AWX does (sandboxed Jinja2, tower.filename.<name> for file templates)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    files = {name.split('.', 1)[1]: '/runner/env/%s' % name for name in ctype['injectors'].get('file', {})}
    namespace = dict(inputs, tower={'filename': files})

    def render(node):
        if isinstance(node, dict):
            return {render(k): render(v) for k, v in node.items()}
        if isinstance(node, list):
            return [render(x) for x in node]
        return env.from_string(node).render(**namespace)
    return {key: render(value) for key, value in ctype['injectors'].items()}


@pytest.mark.parametrize('ctype', TYPES, ids=[t['name'] for t in TYPES])
def test_credential_type_definition(ctype):
    assert ctype['kind'] == 'cloud' and ctype['name'] and ctype['description']
    fields = {f['id']: f for f in ctype['inputs']['fields']}
    assert set(ctype['inputs']['required']) <= set(fields)
    for field in fields.values():
        assert field['type'] == 'string' and field['label']
    for secret in ('secret_id', 'password', 'client_key'):
        if secret in fields:
            assert fields[secret].get('secret') is True
    for name in ctype['injectors'].get('file', {}):
        assert re.fullmatch(r'template\.[a-z_]+', name)
    sample = {f: 'value-of-%s' % f for f in fields}
    rendered = render_injectors(ctype, sample)
    assert set(rendered) <= {'file', 'env', 'extra_vars'}


def test_credential_types_feed_the_collection_options():
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats.options import NATS_ARG_SPEC
    from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.client import OPENBAO_ARG_SPEC
    bao, nats_type = TYPES
    rendered = render_injectors(bao, {f['id']: 'x' for f in bao['inputs']['fields']})
    openbao = rendered['extra_vars']['ca_rotation_openbao']
    assert set(openbao) <= set(OPENBAO_ARG_SPEC['openbao']['options'])
    assert openbao['auth_method'] == 'approle' and openbao['ca_cert'] == '/runner/env/template.ca_cert'
    assert rendered['env'] == {'BAO_ADDR': 'x', 'BAO_CACERT': '/runner/env/template.ca_cert'}
    rendered = render_injectors(nats_type, {f['id']: 'tls://a:4222,tls://b:4222' if f['id'] == 'servers' else 'x'
                                            for f in nats_type['inputs']['fields']})
    nats = rendered['extra_vars']['ca_rotation_authority_nats']
    assert set(nats) <= set(NATS_ARG_SPEC['nats']['options'])
    assert nats['servers'] == ['tls://a:4222,tls://b:4222']
    assert nats['key_file'] == '/runner/env/template.client_key'


def test_awx_schedule_playbook_uses_awx_modules_and_the_rrule_filter(tmp_path):
    plays = yaml.safe_load((REPO / 'playbooks' / 'awx_schedule.yml').read_text())
    tasks = plays[0]['tasks']
    modules = {next(k for k in task if '.' in k and k not in ('loop_control',)) for task in tasks}
    assert {'awx.awx.project', 'awx.awx.inventory', 'awx.awx.job_template', 'awx.awx.schedule'} <= modules
    assert all(m.startswith(('awx.awx.', 'ansible.builtin.')) for m in modules)
    schedule = next(t for t in tasks if 'awx.awx.schedule' in t)['awx.awx.schedule']
    assert schedule['rrule'] == '{{ _ca_rotation_awx_rrule.rrule }}'
    job_template = next(t for t in tasks if 'awx.awx.job_template' in t)['awx.awx.job_template']
    assert job_template['playbook'] == 'playbooks/rotate.yml' and job_template['allow_simultaneous'] is False

    # the RRULE task, run as it is in the playbook (awx.awx is not needed for it)
    rrule_task = next(t for t in tasks if t['name'].startswith('Compute the schedule'))
    probe = [{'name': 'probe', 'hosts': 'localhost', 'gather_facts': False, 'vars': dict(plays[0]['vars'],
              ca_rotation_schedule={'epoch_duration': '6h', 'epoch_zero': '2025-01-01T00:00:00Z'}),
              'tasks': [rrule_task, {'name': 'out', 'ansible.builtin.copy': {
                  'content': '{{ _ca_rotation_awx_rrule | to_json }}', 'dest': str(tmp_path / 'rrule.json'), 'mode': '0644'}}]}]
    (tmp_path / 'probe.yml').write_text(yaml.safe_dump(probe))
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}
    result = ansible_playbook(tmp_path / 'probe.yml', inventory='localhost,', extra_vars=local)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads((tmp_path / 'rrule.json').read_text())
    # 6h epochs, lead time 90m, 4 runs per epoch, 1 minute after each slot
    assert out['rrule'] == 'DTSTART:20250101T043100Z RRULE:FREQ=MINUTELY;INTERVAL=90'


# --------------------------------------------------------------------------- cron
def test_crontab_example_runs_the_wrapper_with_valid_options():
    entries = []
    for line in (DEPLOY / 'crontab.example').read_text().splitlines():
        if not line.strip() or line.lstrip().startswith('#') or re.match(r'^[A-Z_]+=', line):
            continue
        entries.append(line)
    assert entries, 'no cron entry'
    for line in entries:
        fields = line.split(None, 6)
        assert len(fields) == 7  # 5 time fields, user, command
        assert fields[0] == '*/5'
        command = shlex.split(fields[6].split('>>')[0])
        script = next(i for i, word in enumerate(command) if word.endswith('/scripts/ca-rotate-cron'))
        args = cron.build_parser().parse_args(command[script + 1:])
        assert args.inventory and args.lock_file and args.metrics_file.endswith('.prom') and args.report_file
        assert 0 < args.timeout < 3600

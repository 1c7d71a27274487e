# -*- coding: utf-8 -*-
# Copyright: (c) 2026, securetransport.ca_rotation contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-local steps of a NATS server on a VM: write the CA file, signal, read ``/varz``, make the leaf key
and CSR (the key never leaves the host), install the signed leaf.

They run in the controller for servers it can reach, and on the VM (module ``nats_host_step``, one call per
host) for servers on other machines. Nothing here talks to OpenBao.
"""

from __future__ import annotations

import os

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle.deliver import deliver_file
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.certs import load_cert
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.errors import FileError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._common.files import atomic_write
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.errors import OpenBaoError
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao.leaf import (
    _local_key_and_csr,
    _private_key_matches,
    find_leaf_issuer,
    leaf_renewal_reasons,
    read_leaf_files,
)
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.base import ReloadError, reload_specs
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.engine import reload_servers
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload.local import LocalTransport

PENDING_SUFFIX = '.pending'


class HostStepError(Exception):
    """A host-local step could not run; the message names the server and the file."""


def reload_local(targets, transport='signal', expect_sha256=None, propagation_timeout=180, reload_timeout=30, probes=None,
                 min_success=None, check_mode=False, nats_server_path=None):
    """Reload the servers of this host (signal or ``nats-server --signal reload``) and prove each reload."""
    local = LocalTransport(transport, reload_specs(targets), nats_server_path=nats_server_path)
    try:
        return reload_servers(local, expect_sha256=expect_sha256, propagation_timeout=propagation_timeout,
                              reload_timeout=reload_timeout, probes=probes, min_success=min_success, check_mode=check_mode)
    finally:
        local.close()


def deliver_reload(pem, targets, transport='signal', file_mode='0644', reload='auto', expect_sha256=None,
                   propagation_timeout=180, reload_timeout=30, min_success=None, probes=None, check_mode=False,
                   nats_server_path=None):
    """Write ``pem`` into every server's ``ca_file`` (only where it differs), then reload and prove the servers.

    ``reload``: ``auto`` (when a file changed), ``always`` or ``never``. Returns ``{destinations, delivered,
    previous_pem, reload}`` (``reload`` is the reload summary, or None when no reload was due).
    """
    # the targets are checked (pid or pid file, monitor_url, nats-server for command) before anything is written
    LocalTransport(transport, reload_specs(targets), nats_server_path=nats_server_path).close()
    plan = [deliver_file(t['ca_file'], pem, mode=file_mode, check_mode=True) for t in targets]
    results = plan if check_mode else [
        deliver_file(t['ca_file'], pem, mode=file_mode, check_mode=False) if p['changed'] else p
        for t, p in zip(targets, plan)]
    delivered = any(r['changed'] for r in results)
    previous = next((r.get('previous_pem') for r in results if r.get('previous_pem')), None)
    out = {'destinations': [{'name': t['name'], 'path': r['path'], 'changed': r['changed'], 'before_sha256': r['before_sha256'],
                             'after_sha256': r['after_sha256']} for t, r in zip(targets, results)],
           'delivered': delivered, 'previous_pem': previous, 'reload': None}
    if reload == 'always' or (reload == 'auto' and delivered):
        try:
            out['reload'] = reload_local(targets, transport, expect_sha256=expect_sha256,
                                         propagation_timeout=propagation_timeout, reload_timeout=reload_timeout, probes=probes,
                                         min_success=min_success, check_mode=check_mode, nats_server_path=nats_server_path)
        except ReloadError as err:  # written already: the caller must be able to put the previous bundle back
            out['reload'] = {'failed': True, 'changed': False, 'msg': str(err), 'targets': [], 'transport': transport}
    return out


def leaf_requests(targets, issuers, renew_before, now, schedule=None, key_type='ec', key_bits=0, check_mode=False):
    """For each server leaf that is due: a new key kept next to the key file (``<key_file>.pending``, 0600) and its CSR.

    ``issuers``: the issuer certificates of the intermediate mount (``_openbao.issuer_certificates``), so that the
    renewal reasons are exactly those of the controller. Returns ``[{name, reasons, csr}]`` (``csr`` None when the
    leaf is kept).
    """
    out = []
    for target in targets:
        disk = read_leaf_files(target['cert_file'], target['key_file'])
        if disk['problem']:
            reasons = [disk['problem']]
        else:
            reasons = leaf_renewal_reasons(
                disk['cert'], common_name=target['name'], alt_names=target.get('alt_names') or [],
                ip_sans=target.get('ip_sans') or [], renew_before=renew_before, now=now,
                issuer=find_leaf_issuer(disk['cert'], issuers), issuers=issuers, renew_if_not_default=True, schedule=schedule,
                key_type=key_type, key_bits=key_bits)
        entry = {'name': target['name'], 'reasons': reasons, 'csr': None}
        if reasons and not check_mode:
            key_pem, csr = _local_key_and_csr(key_type, key_bits, target['name'], target.get('alt_names') or [],
                                              target.get('ip_sans') or [])
            atomic_write(target['key_file'] + PENDING_SUFFIX, key_pem, 0o600)
            entry['csr'] = csr
        elif reasons:
            entry['csr'] = 'predicted'
        out.append(entry)
    return out


def install_leaves(targets, certificates, cert_mode=0o644, key_mode=0o600):
    """Install signed leaves: ``certificates`` ``{name: certificate + issuing CA PEM}``; the pending key becomes
    the key file (key first: a crash in between leaves a mismatching pair, which the next run re-issues)."""
    installed = []
    for target in targets:
        pem = certificates.get(target['name'])
        if not pem:
            continue
        pending = target['key_file'] + PENDING_SUFFIX
        try:
            with open(pending, 'r', encoding='utf-8') as handle:
                key_pem = handle.read()
        except OSError as exc:
            raise HostStepError('server %s: the pending key %s is gone (%s); the next run makes a new one'
                                % (target['name'], pending, exc.strerror or exc)) from None
        if not _private_key_matches(load_cert(pem), key_pem):
            raise HostStepError('server %s: the signed certificate does not match the pending key %s; nothing was installed'
                                % (target['name'], pending))
        try:
            atomic_write(target['key_file'], key_pem, key_mode)
            atomic_write(target['cert_file'], pem, cert_mode)
            os.unlink(pending)
        except (OSError, OpenBaoError, FileError) as exc:  # atomic_write raises FileError now
            raise HostStepError('server %s: installing the new leaf failed: %s' % (target['name'], exc)) from None
        installed.append(target['name'])
    return installed

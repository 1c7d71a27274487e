"""``ca-bundle-sync``: apply signed CA-bundle announcements on a client host (tier 3, DESIGN section 6).

A durable JetStream pull consumer ``<service>-ca-consumer`` on ``metadata.client.ca-cert`` (stream
``METADATA_CA_CLIENT``) receives the ``securetransport.ca_bundle/v1`` announcements. For each one,
in order:

1. verify the signature (fail closed) with a pinned ed25519 public key file -- one PEM key, or a
   JSON object ``{"<key version>": "<PEM or OpenBao base64 key>"}`` -- or with the public keys
   OpenBao transit publishes for the signing key (``--transit``);
2. accept only a generation newer than the one applied (kept in ``--state-file``, written
   atomically, so a restart never re-applies and never goes backwards) and at most
   ``--max-generation-jump`` (default 100) ahead of it; an older or equal generation is
   acknowledged and skipped (logged). A newer generation with an older epoch (a rollback) is
   applied like any other. An announcement whose ``valid_until`` has passed is refused (no
   tolerance unless ``--clock-skew``; ``valid_from`` is not enforced: bundles are distributed ahead
   of their epoch), and so is one whose ``valid_until`` is later than a certificate's NotAfter;
3. check the bundle: its SHA-256 against ``bundle_sha256``, PEM certificates and nothing else, CA
   certificates, at least one not expired, and not fewer still-valid certificates than the bundle
   in place unless the announcement is a signed ``rollback`` (scripts/catools/sync/policy.py);
4. write the bundle file atomically (temporary file, fsync, rename; ``--bundle-mode``, a regular
   file mode such as 0644), read it back and compare the SHA-256. No file is ever written through a
   symbolic link (bundle, state, lock, metrics: refused with exit 2);
5. reload the service: run ``--reload-command`` (an argv; through ``/bin/sh -c`` only with
   ``--reload-shell``) and/or send ``--signal`` (SIGHUP) to the process in ``--pid-file``;
6. persist the state, and only then acknowledge the message (and wait for the server's reply).

``--once`` pulls until the server answers "no messages" *and* the consumer's delivered position has
reached the newest message on the subject (consumer counters are never trusted: nats-server recounts
``num_pending`` wrongly after a consumer leader change). A host without state (a new service, a lost
state file) first reads every announcement the stream keeps and starts from the newest signed
generation: a replayed older announcement published last is skipped.

Invalid messages (bad or missing signature, unknown key version, wrong schema, SHA-256 mismatch,
garbage, expired) are terminated (``+TERM <reason>``) with a logged reason: never redelivered,
never looped on. Transient failures (the reload command failed, a disk error, OpenBao transit
unreachable) are negatively acknowledged with a delay taken from ``--backoff``; the consumer
bounds redeliveries with ``--max-deliver`` (after the last one, ``--resync`` fetches the latest
announcement again).

Exit codes (``--once``; ``--follow`` exits 0 after SIGTERM/SIGINT, 2 on a configuration error):

==  ==========================================================================================
0   success: a newer bundle was applied, or there was nothing new (older/equal generations skipped)
1   failure: a transient failure (reload command, disk, NATS, OpenBao); the message is kept for a retry
2   configuration or usage error (options, config file, key file, state file, consumer mismatch)
3   an invalid message was seen and terminated (forged, malformed, expired), nothing failed
75  busy: another ca-bundle-sync holds the lock of this state file
==  ==========================================================================================

Prometheus textfile metrics (``--metrics-file``, written atomically, label ``service``):
``ca_bundle_sync_last_applied_generation``, ``ca_bundle_sync_last_applied_epoch`` (-1 before the
first), ``ca_bundle_sync_last_applied_timestamp_seconds``, ``ca_bundle_sync_last_success_timestamp_seconds``
(last pass without failure: applied, or nothing new), ``ca_bundle_sync_last_run_timestamp_seconds``,
``ca_bundle_sync_bundle_file_matches`` (1 when the bundle file still has the applied bytes),
``ca_bundle_sync_failures_total{reason}`` and ``ca_bundle_sync_invalid_messages_total`` (counters kept
in the state file, so they survive ``--once`` runs).

Log lines go to stderr, one line each (``key=value``), and never contain secrets: known secret values
(NATS password/token, OpenBao token/secret_id) are masked wherever they would appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from catools import ensure_collection_importable

ensure_collection_importable()

# pylint: disable=wrong-import-position,unused-import
from catools.sync.common import (  # noqa: E402,F401  (the names the command line and its tests use)
    EXIT_BUSY, EXIT_CODES, EXIT_CONFIG, EXIT_FAILURE, EXIT_INVALID, EXIT_OK, PROG, Busy, ConfigError, Invalid, Outcome, Transient,
)
from catools.sync.files import instance_lock, sha256_file  # noqa: E402,F401
from catools.sync.keys import PinnedKeys, TransitKeys  # noqa: E402,F401
from catools.sync.log import Log  # noqa: E402
from catools.sync.options import DEFAULTS, Config, _seconds, build_parser, load_config, read_config_file  # noqa: E402,F401
from catools.sync.state import STATE_SCHEMA, State, render_metrics  # noqa: E402,F401
from catools.sync.syncer import Syncer  # noqa: E402

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _message  # noqa: E402
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._nats import options as nats_options  # noqa: E402


def main(argv=None):
    log = Log()
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        log('error', 'config', str(exc))
        return EXIT_CONFIG
    log = Log(cfg.service, cfg.log_level)
    log.secrets = cfg.secrets()
    try:
        _message.check_imports()
        nats_options.check_imports()
    except (_message.MessageError, nats_options.NatsError) as exc:
        log('error', 'config', str(exc).splitlines()[0])
        return EXIT_CONFIG
    if cfg.config_file:
        with contextlib.suppress(OSError):
            if os.stat(cfg.config_file).st_mode & 0o077 and cfg.inline_secrets():
                log('warning', 'config-permissions', 'The config file holds secrets but is readable by others; chmod 0600 it',
                    path=cfg.config_file)
    try:
        with instance_lock(cfg.state_file):
            syncer = Syncer(cfg, log)
            if cfg.mode == 'check':
                nats_options.client_options(cfg.nats)
                log('info', 'config-ok', 'Configuration is valid', bundle_file=cfg.bundle_file, state_file=cfg.state_file,
                    generation=syncer.state.generation, verify='transit' if cfg.transit else 'pinned')
                return EXIT_OK
            return asyncio.run(syncer.run())
    except Busy as exc:
        log('warning', 'busy', str(exc))
        return EXIT_BUSY
    except ConfigError as exc:
        log('error', 'config', str(exc))
        return EXIT_CONFIG
    except nats_options.NatsError as exc:
        if exc.kind == 'config':
            log('error', 'config', str(exc))
            return EXIT_CONFIG
        log('error', 'nats-failed', str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it
        return EXIT_FAILURE
    except Exception as exc:  # a bug: say so on one line, exit 1  # pylint: disable=broad-except
        log('error', 'crashed', '%s: %s' % (type(exc).__name__, exc))
        return EXIT_FAILURE


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())

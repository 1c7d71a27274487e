"""Soak: SOAK_EPOCHS (default 100) consecutive 6 s epochs under continuous JetStream load.

A rotate.yml run takes ~13-15 s on this machine, longer than a 6 s epoch, so the rotation is driven at Python level
through the same module_utils the modules call (issue current + prepared intermediate, build and verify the bundle,
deliver it to every server's CA file, reload + prove, then activate: trust first, then issue). Checks: 0 lost
messages and 0 reconnects, a leaf of every valid epoch connects, a leaf of an expired epoch is refused, and the
default issuer is trusted by every server at every check (activation never ahead of trust).

    SOAK_EPOCHS=100 make soak            # CI: SOAK_EPOCHS=5 python -m pytest tests/soak -m soak
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from rotation_harness import RotationStack, Traffic  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.securetransport.ca_rotation.plugins.module_utils import _epoch  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import deliver as bundle_deliver  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._bundle import source as bundle_source  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import client as bao_client  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import intermediate as bao_intermediate  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import engine as reload_engine  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._reload import local as reload_local  # noqa: E402  pylint: disable=wrong-import-position

EPOCHS = int(os.environ.get("SOAK_EPOCHS", "100"))
DURATION = 6

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.timeout(EPOCHS * DURATION * 3 + 300)]


def test_soak_short_epochs_under_load(tmp_path):
    # intermediates-only bundles: trust is exactly the listed epochs; skew 1 s so expired means expired
    rs = RotationStack(tmp_path / "soak", epoch_duration=f"{DURATION}s", skew_allowance="1s")
    traffic = None
    try:
        info, pki = rs.info, rs.info["pki"]
        client = bao_client.connect({"url": info["openbao"]["addr"], "token": Path(info["openbao"]["token_file"]).read_text().strip()})
        schedule = _epoch.EpochSchedule.from_params(dict(info["epoch"]))
        servers = rs.servers
        targets = [{k: s[k] for k in ("name", "pid_file", "ca_file", "monitor_url", "log_file", "url")} for s in servers]
        root_pem = Path(pki["root_pem_file"]).read_text()
        traffic = Traffic(rs, stream="SOAK", rate=50.0)
        traffic.start()
        assert traffic.ready.wait(30), traffic.errors
        leaves, refused_expired, accepted_valid, failures, rotations = {}, 0, 0, [], 0
        start_epoch = schedule.epoch(datetime.now(timezone.utc))
        last_bundle = None
        while True:
            now = datetime.now(timezone.utc)
            current = schedule.epoch(now)
            if current >= start_epoch + EPOCHS:
                break
            wanted = [current] + ([schedule.prepared_epoch(now)] if schedule.prepared_epoch(now) is not None else [])
            for n in wanted:
                bao_intermediate.ensure_epoch_intermediate(client, schedule, n, root_mount=pki["root_mount"], int_mount=pki["int_mount"],
                                                           cn_prefix=pki["cn_prefix"])
            bundle = bundle_source.bundle_from_openbao(client, schedule, now, int_mount=pki["int_mount"], root_mount=pki["root_mount"],
                                                       include_root=False)
            if bundle["sha256"] != last_bundle:
                for s in servers:
                    bundle_deliver.deliver_file(s["ca_file"], bundle["pem"])
                transport = reload_local.LocalTransport("signal", targets)
                try:
                    result = reload_engine.reload_servers(transport, expect_sha256=bundle["sha256"], reload_timeout=30)
                finally:
                    transport.close()
                assert not result["failed"], result["msg"]
                last_bundle = bundle["sha256"]
                rotations += 1
                # trust first, then issue: activate the current epoch only once it is in the proven bundle
                if current in bundle["epochs"]:
                    activated = bao_intermediate.set_default_issuer(client, pki["int_mount"], f"epoch-{current}")
                    if activated.get("changed"):
                        # servers' own leaves follow the new default issuer (as the renew_leaves play does), then reload
                        for s in servers:
                            rs.stack.issue_leaf(s["name"], Path(s["cert_file"]), Path(s["key_file"]))
                        transport = reload_local.LocalTransport("signal", targets)
                        try:
                            result = reload_engine.reload_servers(transport, reload_timeout=30)
                        finally:
                            transport.close()
                        assert not result["failed"], result["msg"]
            default = rs.default_issuer_epoch()
            if default is not None:
                if default not in leaves:
                    leaves[default] = rs.issue_client_leaf(tmp_path / f"leaf-{default}", f"epoch-{default}")
                for s in servers:
                    ok, detail = rs.handshake(*leaves[default], s)
                    if not ok:
                        failures.append(f"default issuer epoch-{default} refused by {s['name']}: {detail}")
            # every valid epoch we hold a leaf of connects; expired ones are refused
            check_now = datetime.now(timezone.utc)
            for n, (cert, key) in list(leaves.items()):
                exp = schedule.expiry(n)
                if exp < check_now - timedelta(seconds=2):
                    ok, _unused = rs.handshake(cert, key, servers[0])
                    if ok:
                        failures.append(f"expired epoch {n} accepted")
                    else:
                        refused_expired += 1
                    del leaves[n]
                elif exp > check_now + timedelta(seconds=2) and n in bundle["epochs"]:
                    ok, detail = rs.handshake(cert, key, servers[0])
                    accepted_valid += ok
                    if not ok:
                        failures.append(f"valid epoch {n} refused: {detail}")
            time.sleep(0.5)
        traffic.stop()
        traffic_stopped = True
        print(f"soak: {EPOCHS} epochs, {rotations} reloads, {len(traffic.acked)} messages, "
              f"{accepted_valid} valid-epoch handshakes, {refused_expired} expired refused")
        assert failures == [], failures[:10]
        assert traffic.errors == [], traffic.errors[:5]
        assert traffic.reconnects == 0 and traffic.disconnects_during == 0
        assert set(traffic.acked) <= traffic.consumed
        assert rotations >= EPOCHS
        if EPOCHS > 5:
            assert refused_expired >= 1
        assert traffic_stopped
    finally:
        if traffic is not None and traffic.is_alive():
            traffic.stop()
        rs.down()

# -*- coding: utf-8 -*-
"""The run report and the failure message (what operators, ca-rotate-cron and the alerts read)."""

from __future__ import annotations

import pytest

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import decisions
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation import results as r
from ansible_collections.securetransport.ca_rotation.plugins.module_utils._rotation.results import group_clusters

CERTS = [{'epoch': 9, 'not_after': '2026-01-05T00:00:00Z'}, {'epoch': 8, 'not_after': '2026-01-04T00:00:00Z'},
         {'epoch': None, 'not_after': '2036-01-01T00:00:00Z'}]
AUTH = {'go': True, 'started_at': 's', 'epoch': 9, 'sha256': 'f' * 64, 'generation': 4, 'new_bundle': False,
        'certificates': CERTS, 'plan': {'current_epoch': 8, 'schedule': {'epoch_duration': 20}}, 'hold': None,
        'announce_error': None, 'kind': 'rotation'}


def test_a_quiet_run_reports_nothing_changed():
    rep = r.run_report(AUTH, [{'cluster': 'a', 'ok': True, 'reloaded': False}], {'changed': False, 'epoch': 8}, 'f')
    assert rep['ok'] and rep['changed'] is False and rep['activated_epoch'] is None
    assert rep['earliest_expiry'] == '2026-01-04T00:00:00Z' and rep['latest_expiry'] == '2026-01-05T00:00:00Z'
    assert rep['bundle_certificates'] == 3 and rep['epoch_duration'] == 20 and set(rep['clusters']) == {'a'}
    assert r.failure_message(rep) is None


def test_a_failed_cluster_fails_the_run_and_says_nothing_was_activated():
    rep = r.run_report(AUTH, [{'cluster': 'a', 'ok': True}, {'cluster': 'b', 'ok': False, 'error': 'nats-1: no reload'}],
                       {'changed': False, 'epoch': 8}, 'f')
    msg = r.failure_message(rep)
    assert not rep['ok'] and 'cluster(s) b: nats-1: no reload' in msg and 'Epoch 8 was NOT activated' in msg


def test_announcement_and_authority_errors_are_reported():
    rep = r.run_report(dict(AUTH, announce_error='no servers'), [], {'changed': True, 'epoch': 8}, 'f')
    assert 'The announcement failed: no servers' in r.failure_message(rep) and rep['activated_epoch'] == 8
    stopped = r.authority_stopped('s', 'rotation', 'clock is behind', error='clock is behind').to_fact()
    rep = r.run_report(stopped, [], {}, 'f')
    assert not rep['ok'] and r.failure_message(rep).startswith('clock is behind')


def test_locked_out_run_is_ok_and_unchanged():
    stopped = r.authority_stopped('s', 'rotation', 'rotation is locked by x', locked_out=True).to_fact()
    rep = r.run_report(stopped, [], {}, 'f')
    assert rep['ok'] and rep['locked_out'] and rep['changed'] is False


def test_timings_are_kept_per_step():
    t = r.Timings()
    with t.step('plan'):
        pass
    with t.step('plan'):
        pass
    assert list(t.as_dict()) == ['plan'] and t.as_dict()['plan'] >= 0


# ---------------------------------------------------------------- a cluster spread over several hosts (VMs)

SPREAD_AUTH = {"sha256": "s" * 64, "epoch": 7, "holder": "run-1"}
FLEET = {"local": ["local"], "fleet": ["vm-0", "vm-1", "vm-2"]}


def _host(host, ok=True, min_success=0, servers=1, error=None, cluster="fleet"):
    return {"ok": ok, "cluster": cluster, "host": host, "holder": "run-1", "sha256": SPREAD_AUTH["sha256"] if ok else None,
            "servers": [{"name": "%s-%d" % (host, i), "ok": ok} for i in range(servers)], "min_success": min_success,
            "server_count": servers,
            "reloaded": ok, "changed": ok, "error": error, "module_calls": 2, "renewed": [host] if ok else []}


def _by_name(results):
    return {r["cluster"]: r for r in results}


def test_a_spread_cluster_is_one_result_proven_when_every_host_proved():
    local = dict(_host("local", cluster="local"), host="local")
    out = _by_name(group_clusters([local] + [_host(h) for h in FLEET["fleet"]], FLEET, SPREAD_AUTH))
    assert set(out) == {"local", "fleet"} and out["local"] is local, "a cluster of one host keeps its own result"
    fleet = out["fleet"]
    assert fleet["ok"] and fleet["sha256"] == SPREAD_AUTH["sha256"] and fleet["epoch"] == 7
    assert [s["host"] for s in fleet["servers"]] == FLEET["fleet"] and fleet["proven_servers"] == 3
    assert fleet["module_calls"] == 6 and fleet["renewed"] == FLEET["fleet"] and "error" not in fleet
    assert all(part["ok"] for part in fleet["hosts"].values())
    assert decisions.all_clusters_proven(list(out.values()), len(FLEET), SPREAD_AUTH["sha256"])


@pytest.mark.parametrize("min_success, ok", [(0, False), (2, True), (3, False)])
def test_a_missing_host_counts_as_nothing_proven_and_min_success_decides(min_success, ok):
    results = [_host("vm-0", min_success=min_success), _host("vm-1", min_success=min_success)]  # vm-2: no result
    (fleet,) = group_clusters(results, {"fleet": FLEET["fleet"]}, SPREAD_AUTH)
    assert fleet["ok"] is ok and fleet["proven_servers"] == 2
    said = fleet["degraded"] if ok else fleet["error"]
    assert "host vm-2: no result of this run" in said, fleet
    assert fleet["hosts"]["vm-2"] == {"ok": False, "reloaded": False, "servers": 0, "rolled_back": False,
                                      "error": "no result of this run"}
    assert (fleet["sha256"] is not None) is ok


def test_a_failed_host_is_named_and_its_servers_count_for_nothing():
    results = [_host("vm-0", min_success=2, servers=2), _host("vm-1", ok=False, min_success=2, error="reload: boom"),
               _host("vm-2", min_success=2)]
    (fleet,) = group_clusters(results, {"fleet": FLEET["fleet"]}, SPREAD_AUTH)
    assert fleet["ok"] and fleet["proven_servers"] == 3 and "host vm-1: reload: boom" in fleet["degraded"]
    # a host that proved another bundle (an earlier run's sha) proves nothing for this one
    stale = dict(_host("vm-2", min_success=4), sha256="t" * 64)
    (fleet,) = group_clusters([_host("vm-0", min_success=4, servers=3), stale], {"fleet": ["vm-0", "vm-2"]}, SPREAD_AUTH)
    assert not fleet["ok"] and fleet["proven_servers"] == 3


def test_a_host_that_proved_in_an_earlier_run_counts_its_servers_without_reloading():
    quiet = dict(_host("vm-0", min_success=2, servers=2), servers=[], reloaded=False)  # nothing to reload this time
    (fleet,) = group_clusters([quiet], {"fleet": ["vm-0", "vm-1"]}, SPREAD_AUTH)
    assert fleet["ok"] and fleet["proven_servers"] == 2 and fleet["hosts"]["vm-0"]["servers"] == 2


def test_the_largest_min_success_of_the_hosts_counts():
    results = [_host("vm-0", min_success=1), _host("vm-1", min_success=3)]
    (fleet,) = group_clusters(results, {"fleet": ["vm-0", "vm-1", "vm-2"]}, SPREAD_AUTH)
    assert fleet["min_success"] == 3 and not fleet["ok"]

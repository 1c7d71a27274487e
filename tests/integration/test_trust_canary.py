"""ca-trust-canary against a real OpenBao and a real 3-node NATS cluster with short epochs.

The canary probes every server's client port and its route (cluster) port: the local stack's servers use one
``tls`` block (same ca_file, verify: true) for both, so both ports must give the same answers. Beside repeated
rotate.yml runs the canary sees no violation; then each fault is injected and the matching violation must show
within two intervals: the default issuer moved ahead of the servers' bundle (on both ports of every server), a new
epoch delivered to all servers but one (the route ports follow their CA files), an expired epoch in one server's CA
file (written and reloaded on that server only), a server serving a certificate about to expire (on both ports).
A route port that does not answer is an error, never a violation; a server without a route port is not probed there.
ca-rotate-cron then links the canary's verdict into its run report.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from catools.procs import free_port
from helpers import REPO, ansible_env
from rotation_harness import RotationStack

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._openbao import intermediate as bao_intermediate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EPOCH, VALIDITY, LEAD = 20, 40, 5
INTERVAL = 1.0
SERVED_MIN = 4      # seconds: a served certificate closer than this to its end is a violation
EXPIRED_GRACE = 15  # longer than a rotation run: an epoch that just expired leaves the bundle at the next run
EXTRA = {"ca_rotation_nats_reload_renew_leaves": True, "ca_rotation_nats_reload_leaf_renew_before": "50%",
         "ca_rotation_nats_reload_propagation_timeout": 20}
UTC = datetime.timezone.utc
CANARY = REPO / "scripts" / "ca-trust-canary"
CRON = REPO / "scripts" / "ca-rotate-cron"


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    stack = RotationStack(tmp_path_factory.mktemp("canary"), epoch_duration=f"{EPOCH}s", validity=f"{VALIDITY}s",
                          lead_time=f"{LEAD}s")
    yield stack
    stack.down()


def canary_config(rs, workdir: Path, port: int | None, routes: dict | None = None, name: str = "canary.yml",
                  **extra) -> Path:
    """The canary's configuration for the stack; ``routes`` maps a server name to its ``route`` setting (default:
    every server's real cluster port)."""
    info = rs.info
    routes = {s["name"]: s["cluster_port"] for s in rs.servers} if routes is None else routes
    cfg = {
        "openbao": {"url": info["openbao"]["addr"], "token_file": info["openbao"]["token_file"]},
        "pki": {k: info["pki"][k] for k in ("root_mount", "int_mount", "kv_mount")},
        "schedule": dict(info["epoch"]),
        "leaf": {"ensure_role": True, "ttl": "30s"},
        "tls": {"ca_file": info["pki"]["root_pem_file"]},
        "interval": f"{INTERVAL:g}s", "timeout": "3s",
        "expired_grace": f"{EXPIRED_GRACE}s", "served_min_validity": f"{SERVED_MIN}s",
        "verdict_file": str(workdir / "verdict.json"), "metrics_file": str(workdir / "canary.prom"),
        "html_file": str(workdir / "canary.html"),
        "clusters": [{"name": c["name"], "servers": [
            {"name": s["name"], "url": s["url"], "ca_file": s["ca_file"]} | ({"route": routes[s["name"]]} if s["name"] in routes else {})
            for s in c["servers"]]} for c in info["clusters"]],
    }
    if port is not None:
        cfg["listen"] = f"127.0.0.1:{port}"
    cfg.update(extra)
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def verdict(workdir: Path) -> dict | None:
    try:
        return json.loads((workdir / "verdict.json").read_text())
    except (OSError, ValueError):
        return None


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def violation_after(workdir: Path, since: float, invariant: str, server: str | None = None) -> dict | None:
    """The first verdict checked after ``since`` (Unix time) that shows ``invariant`` (on ``server``)."""
    v = verdict(workdir)
    if not v or datetime.datetime.fromisoformat(v["checked_at"].replace("Z", "+00:00")).timestamp() < int(since):
        return None
    hits = [x for x in v["violations"] if x["invariant"] == invariant and (server is None or x["server"] == server)]
    return v if hits else None


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:  # noqa: S310 - loopback
        return resp.read().decode()


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def checked_at(v: dict) -> float:
    return datetime.datetime.fromisoformat(v["checked_at"].replace("Z", "+00:00")).timestamp()


PORTS = ("client", "route")


def listener(entry: dict, port: str) -> dict:
    """A verdict's server entry, seen at one port (the client port's results are the entry's own fields)."""
    return entry if port == "client" else (entry.get("route") or {})


def at_ports(v: dict, invariant: str) -> set:
    return {(x["server"], x["port"]) for x in v["violations"] if x["invariant"] == invariant}


def run_once(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CANARY), "--config", str(cfg), "--once", *args], env=ansible_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def lab(**labels) -> tuple:
    return tuple(sorted(labels.items()))


def check_where_reachable(rs, workdir: Path, default: int) -> None:
    """A server without a route port is not probed there, a route port that does not answer is an error (never a
    violation), and route probing switched off (probe_routes: false, --no-route-probes) probes no route port."""
    workdir.mkdir()
    probed, closed, bare = rs.servers
    dead = free_port()
    cfg = canary_config(rs, workdir, None, routes={probed["name"]: probed["cluster_port"], closed["name"]: dead}, name="routes.yml")
    once = run_once(cfg)
    doc = json.loads((workdir / "verdict.json").read_text())
    by = {x["name"]: x for x in doc["servers"]}
    assert by[probed["name"]]["route"]["reachable"] is True, by[probed["name"]]
    assert by[probed["name"]]["route"]["accepted"][str(default)] is True
    assert by[closed["name"]]["reachable"] is True and by[closed["name"]]["route"]["reachable"] is False
    assert by[closed["name"]]["route"]["port"] == dead and by[closed["name"]]["route"]["accepted"] == {}
    assert by[bare["name"]]["route"] is None and by[bare["name"]]["reachable"] is True
    assert not [v for v in doc["violations"] if v["port"] == "route" and v["server"] != probed["name"]], doc["violations"]
    route_errors = [e for e in doc["errors"] if e["source"] == "route"]
    assert len(route_errors) == 1 and closed["name"] in route_errors[0]["where"] and str(dead) in route_errors[0]["msg"], doc["errors"]
    assert once.returncode == (1 if doc["violation_count"] else 3), (once.returncode, doc["violations"], once.stderr[-2000:])
    prom = samples((workdir / "canary.prom").read_text())
    assert prom[("ca_trust_canary_server_up", lab(cluster="local", port="route", server=closed["name"]))] == 0
    assert prom[("ca_trust_canary_server_up", lab(cluster="local", port="route", server=probed["name"]))] == 1
    assert prom[("ca_trust_canary_server_up", lab(cluster="local", port="client", server=bare["name"]))] == 1
    assert not [k for k in prom if dict(k[1]).get("server") == bare["name"] and dict(k[1]).get("port") == "route"]
    assert prom[("ca_trust_canary_check_errors_last", lab(source="route"))] == 1

    # switched off, in the file or on the command line: no route port is probed, whatever the servers name
    off = canary_config(rs, workdir, None, name="off.yml", probe_routes=False)
    for argv in ((off,), (cfg, "--no-route-probes")):
        once = run_once(*argv)
        doc = json.loads((workdir / "verdict.json").read_text())
        assert [x["route"] for x in doc["servers"]] == [None, None, None], (argv, doc["servers"])
        assert all(x["reachable"] for x in doc["servers"]) and not [e for e in doc["errors"] if e["source"] == "route"]
        assert 'port="route"' not in (workdir / "canary.prom").read_text()
        assert once.returncode == (1 if doc["violation_count"] else 0 if doc["complete"] else 3), once.stderr[-2000:]


def rs_server(rs, name: str) -> dict:
    return next(s for s in rs.servers if s["name"] == name)


def sighup(server: dict) -> None:
    pid = int(Path(server["pid_file"]).read_text().strip())
    os.kill(pid, signal.SIGHUP)


def test_canary_beside_rotations_then_each_fault(rs, tmp_path):
    schedule = rs.stack.schedule
    servers = rs.servers
    bootstrap = rs.info["pki"]["bootstrap_epoch"]
    old_bundle = Path(servers[0]["ca_file"]).read_text()  # the bootstrap bundle: epoch `bootstrap` + root
    first = rs.playbook("rotate.yml", extra_vars=EXTRA)
    assert first["rc"] == 0, first["stdout"][-3000:]

    port = free_port()
    cfg = canary_config(rs, tmp_path, port)
    log = open(tmp_path / "canary.log", "w", encoding="utf-8")  # noqa: SIM115  pylint: disable=consider-using-with  # closed below
    proc = subprocess.Popen([sys.executable, str(CANARY), "--config", str(cfg)], stdout=log,  # pylint: disable=consider-using-with
                            stderr=subprocess.STDOUT, env=ansible_env(), start_new_session=True)
    try:
        wait_for(lambda: verdict(tmp_path), 30, "the canary's first verdict")

        # ---- zero violations beside repeated rotations, until the bootstrap epoch is long expired
        wanted = schedule.expiry(bootstrap).timestamp() + EXPIRED_GRACE + 2
        runs = 0
        while time.time() < wanted or runs < 3:
            run = rs.playbook("rotate.yml", extra_vars=EXTRA)
            assert run["rc"] == 0, run["stdout"][-3000:]
            runs += 1
        clean = wait_for(lambda: (v := verdict(tmp_path)) and v["complete"] and v, 10, "a complete verdict")
        text = scrape(port)
        m = samples(text)
        seen = {k[0][1]: v for k, v in ((lab, val) for (name, lab), val in m.items() if name == "ca_trust_canary_invariant_violations_total")}
        # the trust invariants hold at every round beside the rotations; served_expiring is about the servers' own leaves
        trust = {k: v for k, v in seen.items() if k != "served_expiring"}
        assert trust and not any(trust.values()), (seen, (tmp_path / "canary.log").read_text()[-3000:])
        served_expiring_normal = seen.get("served_expiring")
        (tmp_path / "runs.json").write_text(json.dumps([{k: r.get(k) for k in ("rc", "seconds")} | {
            "activated": (r["report"] or {}).get("activated_epoch"), "epoch": (r["report"] or {}).get("epoch"),
            "renewed": {c: (v or {}).get("renewed") for c, v in ((r["report"] or {}).get("clusters") or {}).items()}}
            for r in rs.runs], indent=1, default=str))
        assert clean["ok"] and clean["default_epoch"] is not None
        default = clean["default_epoch"]
        for s in servers:
            for kind in PORTS:
                assert m[("ca_trust_canary_epoch_accepted", lab(cluster="local", epoch=str(default), port=kind, server=s["name"]))] == 1
                assert m[("ca_trust_canary_server_up", lab(cluster="local", port=kind, server=s["name"]))] == 1
                assert ("ca_trust_canary_served_certificate_expiry_seconds", lab(cluster="local", port=kind, server=s["name"])) in m
                assert m[("ca_trust_canary_handshake_seconds_count", lab(cluster="local", port=kind, server=s["name"]))] >= 1
        # the route port answers as the client port does: valid epochs accepted, expired ones refused (one tls block,
        # one ca_file); an epoch within seconds of its end may change state between the two handshakes
        states = {e["epoch"]: e for e in clean["epochs"]}
        expired_refused = set()
        for entry in clean["servers"]:
            route = entry["route"]
            assert route and route["reachable"] is True and route["port"] == rs_server(rs, entry["name"])["cluster_port"], entry
            assert route["served_epoch"] is not None and route["accepted"][str(default)] is True
            for epoch, ok in entry["accepted"].items():
                issuer = states.get(int(epoch))
                ends = datetime.datetime.fromisoformat(issuer["not_after"].replace("Z", "+00:00")).timestamp() if issuer else 0
                if issuer is None or abs(ends - checked_at(clean)) < 5:
                    continue
                assert route["accepted"].get(epoch) == ok, (entry["name"], epoch, issuer["state"], entry)
                if issuer["state"] == "expired":
                    assert ok is False
                    expired_refused.add(int(epoch))
        assert bootstrap in expired_refused, (bootstrap, clean["servers"])
        check_where_reachable(rs, tmp_path / "where-reachable", default)
        assert any(n == "ca_trust_canary_bundle_member_expiry_seconds" for n, _l in m)
        textfile = samples((tmp_path / "canary.prom").read_text())
        assert ("ca_trust_canary_verdict_ok", ()) in textfile
        page = scrape(port, "/")
        assert f'data-epoch="{default}"' in page and 'data-state="active"' in page
        if shutil.which("chromium"):  # the canary's own page, as a browser builds it
            snapshot = tmp_path / "canary-healthy.html"
            snapshot.write_text(page)
            dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                  f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", snapshot.as_uri()],
                                 capture_output=True, text=True, timeout=120, check=False)
            assert dom.returncode == 0, dom.stderr[-2000:]
            assert re.search(rf'id="epoch-{default}"[^>]*data-state="active"', dom.stdout)
            assert all(f'data-server="{s["name"]}"' in dom.stdout for s in servers) and 'id="now"' in dom.stdout

        client = rs.bao()
        int_mount = rs.info["pki"]["int_mount"]

        # ---- fault 1: the default issuer moved ahead of the servers' bundle (activated by hand)
        # the next epoch, issued by hand outside its preparation window: no rotation has put it in a bundle
        now = datetime.datetime.now(UTC)
        ahead = schedule.epoch(now) + 1
        if (schedule.start(ahead) - now).total_seconds() < LEAD + 4:
            time.sleep((schedule.start(ahead) - now).total_seconds() + 0.2)  # derived from the schedule: the next epoch
            ahead += 1
        bao_intermediate.ensure_epoch_intermediate(client, schedule, ahead, root_mount=rs.info["pki"]["root_mount"],
                                                   int_mount=int_mount, cn_prefix=rs.info["pki"]["cn_prefix"])
        injected = time.time()
        bao_intermediate.set_default_issuer(client, int_mount, f"epoch-{ahead}")
        hit = wait_for(lambda: violation_after(tmp_path, injected, "default_not_trusted"), 2 * INTERVAL + 6,
                       "default_not_trusted")
        assert at_ports(hit, "default_not_trusted") == {(s["name"], p) for s in servers for p in PORTS}
        fault1 = time.time() - injected
        assert not [e for e in hit["errors"] if e["source"] == "openbao"]
        alert = samples(scrape(port))
        for kind in PORTS:
            assert alert[("ca_trust_canary_violation", lab(cluster="local", invariant="default_not_trusted", port=kind,
                                                           server=servers[0]["name"]))] == 1
        bao_intermediate.set_default_issuer(client, int_mount, f"epoch-{default}")
        wait_for(lambda: (v := verdict(tmp_path)) and v["default_epoch"] == default and not v["violations"] and v, 10,
                 "the default issuer back, no violation")

        # ---- fault 1b: the epoch ahead delivered to every server but one; the route ports follow their CA files
        ahead_pem = client.read(f"{int_mount}/issuer/epoch-{ahead}")["data"]["certificate"].strip() + "\n"
        left_out = servers[0]
        saved = {s["name"]: Path(s["ca_file"]).read_text() for s in servers}
        for s in servers[1:]:
            Path(s["ca_file"]).write_text(saved[s["name"]] + ahead_pem)
            sighup(s)
        injected = time.time()
        want = {(s["name"], p): s is not left_out for s in servers for p in PORTS}

        def delivered():
            v = verdict(tmp_path)
            if not v or checked_at(v) < int(injected):
                return None
            got = {(x["name"], p): listener(x, p).get("accepted", {}).get(str(ahead)) for x in v["servers"] for p in PORTS}
            return v if got == want else None
        wait_for(delivered, 2 * INTERVAL + 6, f"epoch-{ahead} accepted on both ports of every server but {left_out['name']}")
        injected = time.time()
        bao_intermediate.set_default_issuer(client, int_mount, f"epoch-{ahead}")
        hit = wait_for(lambda: violation_after(tmp_path, injected, "default_not_trusted"), 2 * INTERVAL + 6,
                       "default_not_trusted on the server left out")
        assert at_ports(hit, "default_not_trusted") == {(left_out["name"], p) for p in PORTS}, hit["violations"]
        bao_intermediate.set_default_issuer(client, int_mount, f"epoch-{default}")
        for s in servers[1:]:
            Path(s["ca_file"]).write_text(saved[s["name"]])
            sighup(s)
        wait_for(lambda: (v := verdict(tmp_path)) and v["default_epoch"] == default and not v["violations"] and v, 10,
                 "the default issuer and the CA files back, no violation")

        # ---- fault 2: an expired epoch still in one server's CA file (written and reloaded on that server only)
        victim = servers[0]
        current = Path(victim["ca_file"]).read_text()
        expired_pem = old_bundle.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        Path(victim["ca_file"]).write_text(current + expired_pem)
        injected = time.time()
        sighup(victim)
        hit = wait_for(lambda: violation_after(tmp_path, injected, "expired_in_bundle", victim["name"]), 2 * INTERVAL + 4,
                       "expired_in_bundle")
        fault2 = time.time() - injected
        bad = [v for v in hit["violations"] if v["invariant"] == "expired_in_bundle"]
        assert {v["server"] for v in bad} == {victim["name"]} and bad[0]["epoch"] == bootstrap
        assert {v["port"] for v in bad} == {None}  # about the file, not a port
        # with the expired intermediate back in its ca_file, both ports still refuse that epoch's leaf
        entry = [x for x in hit["servers"] if x["name"] == victim["name"]][0]
        assert {p: listener(entry, p)["accepted"].get(str(bootstrap)) for p in PORTS} == {"client": False, "route": False}
        assert not at_ports(hit, "expired_accepted")
        Path(victim["ca_file"]).write_text(current)
        sighup(victim)

        # ---- fault 3: a server serving a certificate of an epoch about to expire
        victim = servers[1]
        now = datetime.datetime.now(UTC)
        oldest = min(n for n in schedule.valid_epochs(now) if n != ahead)
        data = client.write_data(f"{int_mount}/issuer/epoch-{oldest}/issue/{rs.info['pki']['role']}",
                                 data={"common_name": victim["name"], "alt_names": "localhost", "ip_sans": "127.0.0.1",
                                       "ttl": f"{SERVED_MIN - 1}s"})["data"]
        Path(victim["cert_file"]).write_text(data["certificate"].strip() + "\n" + data["issuing_ca"].strip() + "\n")
        Path(victim["key_file"]).write_text(data["private_key"].strip() + "\n")
        injected = time.time()
        sighup(victim)
        hit = wait_for(lambda: violation_after(tmp_path, injected, "served_expiring", victim["name"]), 2 * INTERVAL + 4,
                       "served_expiring")
        fault3 = time.time() - injected
        # the route port serves the same cert_file (one tls block): is it reloaded there too by now?
        hit = wait_for(lambda: (v := violation_after(tmp_path, injected, "served_expiring", victim["name"]))
                       and (victim["name"], "route") in at_ports(v, "served_expiring") and v, 2 * INTERVAL + 4,
                       "served_expiring on the route port")
        assert at_ports(hit, "served_expiring") == {(victim["name"], p) for p in PORTS}, hit["violations"]
        served = [s for s in hit["servers"] if s["name"] == victim["name"]][0]
        assert served["served_epoch"] == oldest and served["route"]["served_epoch"] == oldest

        m = samples(scrape(port))
        assert m[("ca_trust_canary_invariant_violations_total", (("invariant", "served_expiring"),))] >= 1
        print(f"\nfault timings (interval {INTERVAL:g}s): default ahead {fault1:.1f}s, expired in bundle {fault2:.1f}s, "
              f"served expiring {fault3:.1f}s; served_expiring seen beside the rotations: {served_expiring_normal:g}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    # ---- ca-rotate-cron links the canary's last verdict (the canary stopped on a violation)
    last = verdict(tmp_path)
    assert last["violation_count"] >= 1
    report = tmp_path / "run.json"
    cron = subprocess.run([sys.executable, str(CRON), "-i", str(rs.inventory), "--lock-file", str(tmp_path / "cron.lock"),
                           "--report-file", str(report), "--canary-verdict", str(tmp_path / "verdict.json"),
                           "-e", json.dumps(EXTRA)], env=ansible_env(), capture_output=True, text=True, timeout=240, check=False)
    doc = json.loads(report.read_text())
    assert doc["canary"]["status"] == "violation" and doc["trust_ok"] is False, doc.get("canary")
    assert "served_expiring" in doc["canary"]["invariants"]
    assert "trust canary saw" in doc["message"]
    assert "canary=violation" in cron.stderr


def test_bad_config_names_the_option(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text(yaml.safe_dump({"openbao": {"url": "http://127.0.0.1:1"}, "clusters": [{"name": "a", "servers": [{"url": "tls://h:1"}]}],
                                   "interval": "-3s"}))
    proc = subprocess.run([sys.executable, str(CANARY), "--config", str(cfg), "--once"], env=ansible_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "interval" in proc.stderr, proc.stderr


def test_unreachable_openbao_and_server_are_errors_not_violations(tmp_path):
    cfg = tmp_path / "down.yml"
    cfg.write_text(yaml.safe_dump({"openbao": {"url": f"http://127.0.0.1:{free_port()}", "retries": 0, "timeout": 2,
                                               "token_file": str(tmp_path / "tok")},
                                   "verdict_file": str(tmp_path / "v.json"),
                                   "clusters": [{"name": "a", "servers": [{"name": "s", "url": f"tls://127.0.0.1:{free_port()}"}]}]}))
    (tmp_path / "tok").write_text("not-a-real-token\n")
    proc = subprocess.run([sys.executable, str(CANARY), "--config", str(cfg), "--once"], env=ansible_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3, proc.stderr
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["ok"] is True and doc["violation_count"] == 0 and doc["openbao_ok"] is False
    assert {e["source"] for e in doc["errors"]} >= {"openbao"}


# --------------------------------------------------------------------------- deploy/: the canary's manifests and rules
CANARY_K8S = REPO / "deploy" / "kubernetes" / "canary"
CANARY_RULES = yaml.safe_load((REPO / "deploy" / "prometheus" / "ca-trust-canary-rules.yml").read_text())["groups"][0]["rules"]


def test_canary_manifests_validate_and_run_the_script_least_privileged():
    import kubernetes_validate  # pylint: disable=import-outside-toplevel
    kustomization = yaml.safe_load((CANARY_K8S / "kustomization.yaml").read_text())
    files = {p.name for p in CANARY_K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    docs = [d for name in sorted(files) for d in yaml.safe_load_all((CANARY_K8S / name).read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}  # the canary reads no Kubernetes API
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][1].endswith("/ansible_collections/securetransport/ca_rotation/scripts/ca-trust-canary")
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "subPath" not in str(container["volumeMounts"]) and volumes[mounts["/etc/nats/ca"]]["secret"]["secretName"] == "nats-ca-tls"
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["canary.yml"])
    from catools.canary.config import build_config  # pylint: disable=import-outside-toplevel
    parsed = build_config({k: v for k, v in config.items() if k not in ("verdict_file", "tls")}
                          | {"openbao": {k: v for k, v in config["openbao"].items() if k != "ca_cert"}})
    assert parsed.listen[1] == container["ports"][0]["containerPort"]


def test_canary_rules_cover_every_invariant_with_real_metric_names():
    from catools.canary.checks import INVARIANTS  # pylint: disable=import-outside-toplevel
    from catools.canary.metrics import CanaryMetrics  # pylint: disable=import-outside-toplevel
    names = [r["alert"] for r in CANARY_RULES]
    assert len(names) == len(set(names))
    covered = {m for r in CANARY_RULES for m in re.findall(r'invariant="([a-z_]+)"', r["expr"])}
    assert covered == set(INVARIANTS)
    produced = {m.name for m in CanaryMetrics().registry.collect()}
    used = {m for r in CANARY_RULES for m in re.findall(r"\b(ca_trust_canary_[a-z_]+)", r["expr"])}
    assert used <= produced | {n + "_total" for n in produced}, used - produced
    for rule in CANARY_RULES:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]

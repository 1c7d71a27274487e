"""The emulated Kubernetes API (tests/k8s_emulator) against the official `kubernetes` client.

Real nats-server processes stand behind the pods; they are started here on free ports and
stopped by PID.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")
pytest.importorskip("aiohttp")

from kubernetes import client, config  # noqa: E402  pylint: disable=wrong-import-position
from kubernetes.client.rest import ApiException  # noqa: E402  pylint: disable=wrong-import-position
from kubernetes.stream import stream  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator import (  # noqa: E402  pylint: disable=wrong-import-position
    V4_PROTOCOL, V5_PROTOCOL, ClusterSet, EmulatedCluster, PodBackend, User, start_clusters, stop_clusters,
)
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator._exec import nats_server_binary  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator._patch import (  # noqa: E402  pylint: disable=wrong-import-position
    PatchError, json_patch, strategic_merge_patch,
)
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator._selectors import (  # noqa: E402  pylint: disable=wrong-import-position
    SelectorError, match_labels, parse_label_selector,
)
from ansible_collections.securetransport.ca_rotation.tests.k8s_emulator._volumes import write_payload  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.timeout(120)

NS = "nats"
POLL_TIMEOUT = 30.0
TS_DIR = re.compile(r"^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{9}$")


# ---- helpers ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on the port any more and a new server could bind it (TIME_WAIT aside)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def poll(condition, timeout: float = POLL_TIMEOUT, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def varz(server: dict) -> dict:
    with urllib.request.urlopen(server["monitor_url"] + "/varz", timeout=5) as response:
        return json.loads(response.read().decode())


def exec_raw(api, pod: str, command: list, namespace: str = NS, post: bool = False, container: str = "nats"):
    """Run exec the way production code gets an exit code: _preload_content=False + run_forever."""
    method = api.connect_post_namespaced_pod_exec if post else api.connect_get_namespaced_pod_exec
    resp = stream(method, pod, namespace, command=command, container=container,
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=POLL_TIMEOUT)
    return resp


def exec_rc(api, pod: str, command: list, **kwargs):
    resp = exec_raw(api, pod, command, **kwargs)
    return resp.returncode, resp.read_stdout(), resp.read_stderr()


def secret_body(name: str, data: dict, labels: dict | None = None) -> dict:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
    if labels:
        body["metadata"]["labels"] = labels
    return body


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def sha_line(content: bytes, path: str) -> str:
    return "%s  %s\n" % (hashlib.sha256(content).hexdigest(), path)


# ---- fixtures: real nats-server processes and one shared cluster --------------------------------------
@pytest.fixture(scope="module")
def nats_servers(tmp_path_factory):
    """Two real nats-servers (no TLS, monitoring on, pid_file), shaped like LocalStack server entries."""
    base = tmp_path_factory.mktemp("nats-servers")
    servers, procs = [], []
    try:
        for index in range(2):
            directory = base / ("nats-%d" % index)
            ca_dir = directory / "ca"
            ca_dir.mkdir(parents=True)
            (ca_dir / "ca.crt").write_bytes(b"plain file written by the local stack\n")
            monitor = free_port()
            conf = directory / "nats.conf"
            conf.write_text('server_name: "nats-%d"\nhost: "127.0.0.1"\nport: -1\nhttp: "127.0.0.1:%d"\npid_file: "%s"\n'
                            % (index, monitor, directory / "nats.pid"))
            log_file = directory / "nats.log"
            with open(log_file, "wb") as log:
                proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            servers.append({"name": "nats-%d" % index, "pid": proc.pid, "pid_file": str(directory / "nats.pid"),
                            "config_file": str(conf), "ca_dir": str(ca_dir), "ca_file": str(ca_dir / "ca.crt"),
                            "log_file": str(log_file), "monitor_port": monitor, "monitor_url": "http://127.0.0.1:%d" % monitor})
        for server in servers:
            poll(lambda s=server: os.path.exists(s["pid_file"]) and _varz_ok(s), what="nats-server %s" % server["name"])
        yield servers
    finally:
        for proc in procs:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _varz_ok(server: dict) -> bool:
    try:
        return bool(varz(server).get("server_id"))
    except OSError:
        return False


ROTATOR = User.service_account("ops", "rotator", deny=["pods/exec"])
READER = User.service_account("ops", "reader", allow=["read secrets", "read pods"])


@pytest.fixture(scope="module")
def cluster(nats_servers, tmp_path_factory):
    pods = [PodBackend.from_localstack_server(nats_servers[0]),
            PodBackend.from_localstack_server(nats_servers[1], labels={"app": "nats", "role": "leader"}),
            PodBackend(name="ghost-0", namespace=NS, labels={"app": "ghost"},
                       pid_file=str(tmp_path_factory.mktemp("ghost") / "missing.pid")),
            # a live PID that is not a nats-server (think: stale pid file, PID reused): never signalled
            PodBackend(name="impostor-0", namespace=NS, labels={"app": "impostor"}, pid=os.getpid(), process_name="nats-server")]
    with EmulatedCluster(name="east", pods=pods, namespaces=[NS, "openbao"], secret_sync_delay=0, users=[ROTATOR, READER]) as emulated:
        yield emulated


@pytest.fixture(scope="module")
def api(cluster):
    return cluster.core_api()


# ---- pure logic -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("selector, labels, expected", [
    ("a=b,c!=d", {"a": "b"}, True),
    ("a=b,c!=d", {"a": "b", "c": "d"}, False),
    ("a==b", {"a": "b"}, True),
    ("app in (x,y)", {"app": "y"}, True),
    ("app in (x, y)", {"app": "z"}, False),
    ("app notin (x,y)", {}, True),
    ("app,!role", {"app": "nats"}, True),
    ("app,!role", {"app": "nats", "role": "leader"}, False),
    ("app in (nats),role", {"app": "nats", "role": "x"}, True),
    ("", {"anything": "goes"}, True),
])
def test_label_selector_semantics(selector, labels, expected):
    assert match_labels(parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize("selector", ["a=b,", "app in (x,y", "app in ()", "=b", "a b"])
def test_label_selector_rejects_garbage(selector):
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_patch_helpers():
    doc = {"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}, "data": {"k": "v"}}
    assert strategic_merge_patch(doc, {"metadata": {"labels": {"a": None, "c": "3"}, "finalizers": ["y"]}}) == {
        "metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": ["x", "y"]}, "data": {"k": "v"}}
    assert strategic_merge_patch(doc, {"data": {"$patch": "replace", "n": "w"}})["data"] == {"n": "w"}
    assert json_patch(doc, [{"op": "add", "path": "/data/n", "value": "w"}, {"op": "remove", "path": "/data/k"},
                            {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/z"}]) == {
        "metadata": {"labels": {"b": "2", "z": "1"}, "finalizers": ["x"]}, "data": {"n": "w"}}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/data/k", "value": "other"}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "replace", "path": "/data/missing", "value": "x"}])


def test_atomic_writer_layout(tmp_path):
    (tmp_path / "ca.crt").write_bytes(b"plain")
    (tmp_path / "server.pem").write_bytes(b"not ours")
    assert write_payload(str(tmp_path), {"ca.crt": b"one", "extra.pem": b"e"}) is True
    first = sorted(os.listdir(tmp_path))
    assert first[1:] == ["..data", "ca.crt", "extra.pem", "server.pem"] and TS_DIR.match(first[0])
    assert os.readlink(tmp_path / "ca.crt") == "..data/ca.crt" and (tmp_path / "ca.crt").read_bytes() == b"one"
    assert write_payload(str(tmp_path), {"ca.crt": b"one", "extra.pem": b"e"}) is False
    assert write_payload(str(tmp_path), {"ca.crt": b"two"}) is True
    second = sorted(os.listdir(tmp_path))
    assert second[1:] == ["..data", "ca.crt", "server.pem"] and second[0] != first[0]
    os.replace(tmp_path / "server.pem", tmp_path / "ca.crt")  # someone overwrote the key with a plain file
    assert write_payload(str(tmp_path), {"ca.crt": b"two"}) is True
    assert os.path.islink(tmp_path / "ca.crt") and (tmp_path / "ca.crt").read_bytes() == b"two"


def test_pod_backend_from_localstack_server(tmp_path):
    server = {"name": "nats-1", "pid_file": str(tmp_path / "n.pid"), "ca_dir": str(tmp_path / "ca"),
              "config_file": str(tmp_path / "conf" / "nats.conf"), "client_port": 4333, "cluster_port": 6333, "monitor_port": 8333}
    pod = PodBackend.from_localstack_server(server)
    assert (pod.name, pod.namespace, pod.labels, pod.container) == ("nats-1", "nats", {"app": "nats"}, "nats")
    assert pod.secret_volumes == {"/etc/nats/ca": ("nats", "nats-ca-tls")}
    assert pod.host_path("/etc/nats/ca/ca.crt") == str(tmp_path / "ca" / "ca.crt")
    assert pod.host_path("/etc/nats-config/nats.conf") == str(tmp_path / "conf" / "nats.conf")
    assert pod.host_path("/etc/passwd") is None
    assert pod.ports == {"client": 4333, "cluster": 6333, "monitor": 8333}


# ---- discovery, namespaces, auth ---------------------------------------------------------------------------
def test_discovery_namespaces_and_version(cluster, api):
    assert {"default", "kube-system", NS, "openbao"} <= {n.metadata.name for n in api.list_namespace().items}
    assert api.read_namespace(NS).status.phase == "Active"
    with pytest.raises(ApiException) as err:
        api.read_namespace("nope")
    assert err.value.status == 404 and status_of(err.value)["reason"] == "NotFound"
    assert "secrets" in {r.name for r in api.get_api_resources().resources}
    assert client.VersionApi(cluster.api_client()).get_code().major == "1"
    assert cluster.url.startswith("https://")


def test_unknown_token_is_401(cluster):
    configuration = client.Configuration()
    configuration.host = cluster.url
    configuration.ssl_ca_cert = cluster.ca_file
    configuration.api_key = {"BearerToken": "wrong"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(client.ApiClient(configuration)).list_namespaced_secret(NS)
    assert err.value.status == 401 and status_of(err.value)["reason"] == "Unauthorized"


def test_secret_writes_forbidden_for_read_only_user(cluster, api):
    api.create_namespaced_secret(NS, secret_body("ro-target", {"k": b"v"}))
    reader = cluster.core_api("reader")
    assert reader.read_namespaced_secret("ro-target", NS).data == {"k": base64.b64encode(b"v").decode()}
    with pytest.raises(ApiException) as err:
        reader.create_namespaced_secret(NS, secret_body("ro-new", {"k": b"v"}))
    assert err.value.status == 403
    assert status_of(err.value)["message"] == (
        'secrets is forbidden: User "system:serviceaccount:ops:reader" cannot create resource "secrets" in API group "" in the namespace "nats"')
    with pytest.raises(ApiException) as err:
        reader.patch_namespaced_secret("ro-target", NS, {"data": {"k": base64.b64encode(b"w").decode()}})
    assert err.value.status == 403 and status_of(err.value)["reason"] == "Forbidden"
    assert 'secrets "ro-target" is forbidden' in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        reader.list_namespaced_config_map(NS)
    assert err.value.status == 403


# ---- Secrets -------------------------------------------------------------------------------------------------
def test_secret_create_read_and_metadata(api):
    first = api.create_namespaced_secret(NS, secret_body("meta-a", {"ca.crt": b"A"}))
    second = api.create_namespaced_secret(NS, {"metadata": {"name": "meta-b"}, "stringData": {"note": "plain"}})
    assert first.metadata.uid and first.metadata.creation_timestamp is not None and first.type == "Opaque"
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert base64.b64decode(api.read_namespaced_secret("meta-b", NS).data["note"]) == b"plain"
    read = api.read_namespaced_secret("meta-a", NS)
    assert (read.metadata.uid, read.metadata.resource_version) == (first.metadata.uid, first.metadata.resource_version)


def test_secret_already_exists_and_not_found(api):
    api.create_namespaced_secret(NS, secret_body("dup", {"k": b"v"}))
    with pytest.raises(ApiException) as err:
        api.create_namespaced_secret(NS, secret_body("dup", {"k": b"v"}))
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "AlreadyExists"
    assert status_of(err.value)["message"] == 'secrets "dup" already exists'
    for call in (lambda: api.read_namespaced_secret("absent", NS),
                 lambda: api.replace_namespaced_secret("absent", NS, secret_body("absent", {})),
                 lambda: api.patch_namespaced_secret("absent", NS, {"metadata": {"labels": {"a": "b"}}}),
                 lambda: api.delete_namespaced_secret("absent", NS)):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 404
        assert status_of(err.value)["message"] == 'secrets "absent" not found'
    with pytest.raises(ApiException) as err:
        api.create_namespaced_secret("no-such-ns", secret_body("x", {}))
    assert err.value.status == 404 and 'namespaces "no-such-ns" not found' in status_of(err.value)["message"]


def test_secret_replace_conflicts_on_stale_resource_version(api):
    created = api.create_namespaced_secret(NS, secret_body("conflict", {"ca.crt": b"one"}))
    stale = created.metadata.resource_version
    fresh = api.read_namespaced_secret("conflict", NS)
    fresh.data = {"ca.crt": base64.b64encode(b"two").decode()}
    replaced = api.replace_namespaced_secret("conflict", NS, fresh)
    assert int(replaced.metadata.resource_version) > int(stale)
    assert replaced.metadata.uid == created.metadata.uid
    created.data = {"ca.crt": base64.b64encode(b"three").decode()}
    with pytest.raises(ApiException) as err:
        api.replace_namespaced_secret("conflict", NS, created)
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "Conflict"
    assert status_of(err.value)["message"].startswith('Operation cannot be fulfilled on secrets "conflict": the object has been modified')
    assert base64.b64decode(api.read_namespaced_secret("conflict", NS).data["ca.crt"]) == b"two"
    # no resourceVersion: unconditional update; identical content: no new resourceVersion
    unconditional = api.replace_namespaced_secret("conflict", NS, secret_body("conflict", {"ca.crt": b"four"}))
    again = api.replace_namespaced_secret("conflict", NS, secret_body("conflict", {"ca.crt": b"four"}))
    assert again.metadata.resource_version == unconditional.metadata.resource_version
    with pytest.raises(ApiException) as err:
        api.replace_namespaced_secret("conflict", NS, secret_body("other-name", {}))
    assert err.value.status == 400


def test_secret_patch_flavours(api):
    api.create_namespaced_secret(NS, secret_body("patchme", {"a": b"1", "b": b"2"}, labels={"keep": "yes", "drop": "yes"}))
    # dict body -> strategic merge patch
    patched = api.patch_namespaced_secret("patchme", NS, {"metadata": {"labels": {"drop": None, "new": "x"},
                                                                       "annotations": {"rotation.watcher.io/epoch": "7"}},
                                                          "data": {"c": base64.b64encode(b"3").decode()}})
    assert patched.metadata.labels == {"keep": "yes", "new": "x"}
    assert patched.metadata.annotations == {"rotation.watcher.io/epoch": "7"}
    assert set(patched.data) == {"a", "b", "c"}
    # list body -> JSON patch, guarded by a test on the resourceVersion
    version = patched.metadata.resource_version
    patched = api.patch_namespaced_secret("patchme", NS, [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "remove", "path": "/data/a"},
        {"op": "replace", "path": "/data/b", "value": base64.b64encode(b"22").decode()}])
    assert set(patched.data) == {"b", "c"} and base64.b64decode(patched.data["b"]) == b"22"
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_secret("patchme", NS, [{"op": "test", "path": "/metadata/resourceVersion", "value": version}])
    assert err.value.status == 422
    # a patch carrying a stale resourceVersion is a conflict
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_secret("patchme", NS, {"metadata": {"resourceVersion": version}, "data": {"d": ""}})
    assert err.value.status == 409
    # explicit merge patch
    patched = api.patch_namespaced_secret("patchme", NS, {"data": {"c": None}}, _content_type="application/merge-patch+json")
    assert set(patched.data) == {"b"}


def test_secret_delete_list_selectors_and_pagination(api, cluster):
    for epoch in (1, 2, 3):
        api.create_namespaced_secret("openbao", secret_body("nats-ca-bundle-epoch-%d" % epoch, {"ca-bundle.pem": b"x"},
                                                            labels={"epoch": str(epoch), "app": "ca-bundle"}))
    api.create_namespaced_secret("openbao", secret_body("unrelated", {"k": b"v"}))

    def names(selector=None, field=None):
        return sorted(s.metadata.name for s in api.list_namespaced_secret("openbao", label_selector=selector, field_selector=field).items)

    assert names("epoch=3") == ["nats-ca-bundle-epoch-3"]
    assert names("app=ca-bundle,epoch!=3") == ["nats-ca-bundle-epoch-1", "nats-ca-bundle-epoch-2"]
    assert names("epoch in (1,3)") == ["nats-ca-bundle-epoch-1", "nats-ca-bundle-epoch-3"]
    assert names("!epoch") == ["unrelated"]
    assert names(field="metadata.name=unrelated") == ["unrelated"]
    with pytest.raises(ApiException) as err:
        api.list_namespaced_secret("openbao", label_selector="epoch in (1")
    assert err.value.status == 400
    page = api.list_namespaced_secret("openbao", limit=2)
    rest = api.list_namespaced_secret("openbao", limit=2, _continue=page.metadata._continue)
    assert len(page.items) == 2 and [s.metadata.name for s in page.items + rest.items] == names()
    assert "openbao" in {s.metadata.namespace for s in api.list_secret_for_all_namespaces(label_selector="app=ca-bundle").items}
    status = api.delete_namespaced_secret("nats-ca-bundle-epoch-1", "openbao")  # a plain dict with client 37
    status = status if isinstance(status, dict) else status.to_dict()
    assert status["status"] == "Success" and status["details"]["name"] == "nats-ca-bundle-epoch-1"
    assert names("app=ca-bundle") == ["nats-ca-bundle-epoch-2", "nats-ca-bundle-epoch-3"]
    dry = api.create_namespaced_secret("openbao", secret_body("dry", {}), dry_run="All")
    assert dry.metadata.name == "dry" and "dry" not in names()
    assert cluster.secret_data("openbao", "nats-ca-bundle-epoch-2") == {"ca-bundle.pem": b"x"}


# ---- Pods -------------------------------------------------------------------------------------------------------
def test_pods_list_by_selector_and_read(api, nats_servers):
    def names(selector):
        return sorted(p.metadata.name for p in api.list_namespaced_pod(NS, label_selector=selector).items)

    assert names("app=nats") == ["nats-0", "nats-1"]
    assert names("app=nats,role!=leader") == ["nats-0"]
    assert names("app in (nats,ghost)") == ["ghost-0", "nats-0", "nats-1"]
    assert names("app notin (nats)") == ["ghost-0", "impostor-0"]
    assert names("role") == ["nats-1"]
    pod = api.read_namespaced_pod("nats-0", NS)
    assert pod.status.phase == "Running" and pod.status.pod_ip == "127.0.0.1"
    assert pod.spec.containers[0].name == "nats"
    assert {p.name: p.container_port for p in pod.spec.containers[0].ports}["monitor"] == nats_servers[0]["monitor_port"]
    assert pod.status.container_statuses[0].ready is True
    assert api.read_namespaced_pod("ghost-0", NS).status.container_statuses[0].ready is False
    assert any(v.secret and v.secret.secret_name == "nats-ca-tls" for v in pod.spec.volumes)
    with pytest.raises(ApiException) as err:
        api.read_namespaced_pod("nats-9", NS)
    assert err.value.status == 404
    assert "Listening for client connections" in api.read_namespaced_pod_log("nats-0", NS)


# ---- pods/exec --------------------------------------------------------------------------------------------------
def test_exec_sha256sum_cat_and_ls_follow_the_mounted_secret(cluster, api, nats_servers):
    bundle = b"-----BEGIN CERTIFICATE-----\nexec test\n-----END CERTIFICATE-----\n"
    cluster.apply_secret(NS, "nats-ca-tls", {"ca.crt": bundle})
    cluster.wait_for_volume_sync()
    out = stream(api.connect_get_namespaced_pod_exec, "nats-0", NS, command=["sha256sum", "/etc/nats/ca/ca.crt"],
                 container="nats", stderr=True, stdin=False, stdout=True, tty=False)
    assert out == sha_line(bundle, "/etc/nats/ca/ca.crt")
    assert exec_rc(api, "nats-1", ["cat", "/etc/nats/ca/ca.crt"]) == (0, bundle.decode(), "")
    code, listing = exec_rc(api, "nats-0", ["ls", "-a", "/etc/nats/ca"])[:2]
    names = listing.split()
    assert code == 0 and names[:2] == [".", ".."] and names[3:] == ["..data", "ca.crt"] and TS_DIR.match(names[2])
    assert exec_rc(api, "nats-0", ["readlink", "/etc/nats/ca/ca.crt"])[1] == "..data/ca.crt\n"
    assert exec_rc(api, "nats-0", ["sh", "-c", "test -f /etc/nats/ca/ca.crt && echo yes || echo no"])[1] == "yes\n"
    assert os.path.islink(nats_servers[0]["ca_file"])


@pytest.mark.parametrize("post", [False, True], ids=["GET", "POST"])
def test_exec_exit_codes(api, post):
    assert exec_rc(api, "nats-0", ["true"], post=post) == (0, "", "")
    code, out, err = exec_rc(api, "nats-0", ["cat", "/etc/nats/ca/missing.pem"], post=post)
    assert (code, out, err) == (1, "", "cat: /etc/nats/ca/missing.pem: No such file or directory\n")
    code, out, err = exec_rc(api, "nats-0", ["sha256sum", "/nowhere/x"], post=post)
    assert (code, err) == (1, "sha256sum: /nowhere/x: No such file or directory\n")
    assert exec_rc(api, "nats-0", ["frobnicate", "--now"], post=post) == (127, "", "sh: frobnicate: not found\n")
    assert exec_rc(api, "nats-0", ["sh", "-c", "exit 3"], post=post)[0] == 3


def test_exec_status_channel_is_kubelet_shaped(api):
    resp = exec_raw(api, "nats-0", ["frobnicate"])
    status = yaml.safe_load(resp.read_channel(3))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "127"}]
    assert status["message"].startswith("command terminated with non-zero exit code")
    resp = exec_raw(api, "nats-0", ["true"])
    assert yaml.safe_load(resp.read_channel(3)) == {"metadata": {}, "status": "Success"}


def test_exec_errors_before_the_upgrade(cluster, api):
    with pytest.raises(ApiException) as err:
        stream(cluster.core_api("rotator").connect_get_namespaced_pod_exec, "nats-0", NS, command=["true"], container="nats",
               stderr=True, stdin=False, stdout=True, tty=False)
    assert "403" in err.value.reason
    assert ('pods \\"nats-0\\" is forbidden: User \\"system:serviceaccount:ops:rotator\\" cannot create resource \\"pods/exec\\" '
            'in API group \\"\\" in the namespace \\"nats\\"') in err.value.reason
    with pytest.raises(ApiException) as err:
        exec_raw(api, "nats-7", ["true"])
    assert "404" in err.value.reason
    with pytest.raises(ApiException) as err:
        exec_raw(api, "nats-0", ["true"], container="sidecar")
    assert "400" in err.value.reason and "container sidecar is not valid" in err.value.reason
    with pytest.raises(ApiException) as err:  # a plain POST, without the WebSocket upgrade
        api.connect_post_namespaced_pod_exec("nats-0", NS, command=["true"], container="nats", stdout=True)
    assert err.value.status == 400 and "Upgrade request required" in status_of(err.value)["message"]
    assert cluster.core_api("rotator").read_namespaced_pod("nats-0", NS).metadata.name == "nats-0"


@pytest.mark.parametrize("protocol", [V4_PROTOCOL, V5_PROTOCOL])
def test_exec_subprotocols(nats_servers, protocol):
    pod = PodBackend(name="nats-0", pid_file=nats_servers[0]["pid_file"], process_name="nats-server")
    with EmulatedCluster(name="proto", pods=[pod], namespaces=[NS], secret_sync_delay=0, exec_protocols=[protocol], tls=False) as emulated:
        api = emulated.core_api()
        resp = exec_raw(api, "nats-0", ["sh", "-c", "echo out; kill -HUP 99"])
        assert resp.subprotocol == protocol
        assert (resp.returncode, resp.read_stdout(), resp.read_stderr()) == (1, "out\n", "sh: kill: (99) - No such process\n")
        assert emulated.exec_log[-1].protocol == protocol and emulated.exec_log[-1].exit_code == 1


@pytest.mark.parametrize("command", [["kill", "-HUP", "1"], ["kill", "-s", "HUP", "1"], ["nats-server", "--signal", "reload"],
                                     ["sh", "-c", "kill -SIGHUP 1"]], ids=["kill-HUP", "kill-s-HUP", "nats-server-signal", "sh-c"])
def test_sighup_through_exec_reloads_the_real_server(api, nats_servers, command):
    server = nats_servers[1]
    before = varz(server)["config_load_time"]
    assert exec_rc(api, "nats-1", command)[0] == 0
    poll(lambda: varz(server)["config_load_time"] != before, what="config_load_time of %s to move" % server["name"])
    assert varz(server)["start"] <= varz(server)["config_load_time"]


@pytest.mark.parametrize("pod", ["ghost-0", "impostor-0"])
def test_signal_to_a_pod_without_its_process_fails(api, pod):
    assert exec_rc(api, pod, ["kill", "-HUP", "1"]) == (1, "", "sh: kill: (1) - No such process\n")
    code, err = exec_rc(api, pod, ["nats-server", "--signal", "reload"])[::2]
    assert code == 1 and "no such process" in err
    assert api.read_namespaced_pod(pod, NS).status.container_statuses[0].ready is False


# ---- kubelet-like Secret volumes -----------------------------------------------------------------------------
def test_mounted_secret_appears_only_after_the_sync_delay(nats_servers, tmp_path):
    low, high = 1.0, 2.0
    old = b"plain file written by the local stack\n"
    pods = []
    for server in nats_servers:
        ca_dir = tmp_path / server["name"]
        ca_dir.mkdir()
        (ca_dir / "ca.crt").write_bytes(old)
        pods.append(PodBackend(name=server["name"], pid_file=server["pid_file"], mounts={"/etc/nats/ca": str(ca_dir)},
                               secret_volumes={"/etc/nats/ca": ("nats", "nats-ca-tls")}))
    with EmulatedCluster(name="delayed", pods=pods, namespaces=[NS], secret_sync_delay=(low, high), seed=3) as emulated:
        api = emulated.core_api()
        new = b"bundle epoch 8\n"
        started = time.monotonic()
        api.create_namespaced_secret(NS, {"metadata": {"name": "nats-ca-tls"}, "data": {"ca.crt": base64.b64encode(new).decode()}})
        seen_early = exec_rc(api, "nats-0", ["sha256sum", "/etc/nats/ca/ca.crt"])[1]
        if time.monotonic() - started < low:  # read before the earliest possible sync: must still be the old file
            assert seen_early == sha_line(old, "/etc/nats/ca/ca.crt")
        for pod in ("nats-0", "nats-1"):
            poll(lambda p=pod: exec_rc(api, p, ["sha256sum", "/etc/nats/ca/ca.crt"])[1] == sha_line(new, "/etc/nats/ca/ca.crt"),
                 interval=0.1, what="bundle in %s" % pod)
        assert time.monotonic() - started >= low
        assert all(low <= event["delay"] <= high and event["synced_at"] - event["changed_at"] >= low for event in emulated.volume_log)
        for pod in pods:
            directory = pod.mounts["/etc/nats/ca"]
            entries = sorted(os.listdir(directory))
            assert entries[1:] == ["..data", "ca.crt"] and TS_DIR.match(entries[0])
            assert os.readlink(os.path.join(directory, "..data")) == entries[0]
            assert os.readlink(os.path.join(directory, "ca.crt")) == "..data/ca.crt"
        first_dir = sorted(os.listdir(pods[0].mounts["/etc/nats/ca"]))[0]
        newer = b"bundle epoch 9\n"
        emulated.apply_secret(NS, "nats-ca-tls", {"ca.crt": newer})
        emulated.wait_for_volume_sync(timeout=POLL_TIMEOUT)
        directory = pods[0].mounts["/etc/nats/ca"]
        entries = sorted(os.listdir(directory))
        assert len(entries) == 3 and entries[0] != first_dir and TS_DIR.match(entries[0])
        with open(os.path.join(directory, "ca.crt"), "rb") as handle:
            assert handle.read() == newer


# ---- several clusters ----------------------------------------------------------------------------------------------
def test_several_clusters_with_one_kubeconfig(nats_servers, tmp_path):
    east = EmulatedCluster(name="east-1", pods=[PodBackend.from_localstack_server(nats_servers[0])], namespaces=[NS], secret_sync_delay=0,
                           users=[User.service_account("ops", "rotator", deny=["pods/exec"])])
    west = EmulatedCluster(name="west-1", pods=[PodBackend.from_localstack_server(nats_servers[1])], namespaces=[NS], secret_sync_delay=0,
                           tls=False)
    path = start_clusters([east, west], kubeconfig=str(tmp_path / "kubeconfig"))
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
        assert active["name"] == "east-1"
        assert {c["name"] for c in contexts} == {"east-1", "east-1-rotator", "west-1"}
        assert east.port != west.port
        apis = {name: client.CoreV1Api(config.new_client_from_config(config_file=path, context=name)) for name in ("east-1", "west-1")}
        assert [p.metadata.name for p in apis["east-1"].list_namespaced_pod(NS, label_selector="app=nats").items] == ["nats-0"]
        assert [p.metadata.name for p in apis["west-1"].list_namespaced_pod(NS, label_selector="app=nats").items] == ["nats-1"]
        apis["east-1"].create_namespaced_secret(NS, secret_body("only-east", {"k": b"v"}))
        assert [s.metadata.name for s in apis["west-1"].list_namespaced_secret(NS).items] == []
        rotator = client.CoreV1Api(config.new_client_from_config(config_file=path, context="east-1-rotator"))
        with pytest.raises(ApiException) as err:
            exec_rc(rotator, "nats-0", ["true"])
        assert "403" in err.value.reason
    finally:
        stop_clusters([east, west])
    assert port_is_free(east.port) and port_is_free(west.port)


def test_cluster_set_context_manager(nats_servers):
    with ClusterSet([EmulatedCluster(name="a", secret_sync_delay=0), EmulatedCluster(name="b", secret_sync_delay=0)]) as clusters:
        for name in ("a", "b"):
            api = client.CoreV1Api(config.new_client_from_config(config_file=clusters.kubeconfig, context=name))
            assert "default" in {n.metadata.name for n in api.list_namespace().items}
        port = clusters["a"].port
    assert port_is_free(port)

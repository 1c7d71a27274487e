"""An emulated cluster: API server in a background thread, pods backed by real processes, kubelet-like volumes."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import secrets as _secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time

import yaml
from aiohttp import web

from . import _volumes
from ._auth import User
from ._pods import PodBackend
from ._server import V4_PROTOCOL, V5_PROTOCOL, ApiServer
from ._store import Store
from ._tls import write_server_certs


class EmulatedCluster:
    """One emulated Kubernetes cluster (API server on 127.0.0.1, its own port and kubeconfig context).

    ``secret_sync_delay``: seconds between a Secret change and its appearance in a pod's volume, a number
    or a ``(low, high)`` range sampled per pod and change (default 1-3 s; 0 for fast tests).
    ``users``: extra :class:`User` entries (each gets a kubeconfig context ``<name>-<user.context>``);
    the admin user (context ``<name>``) may do everything. ``secrets``: Secret objects present at start
    (their volumes are materialised at once, as for a pod that starts with them). ``tls``: serve HTTPS with a
    generated CA (in the kubeconfig) or plain HTTP. ``exec_protocols``: WebSocket subprotocols offered for exec.
    """

    def __init__(self, name: str = "emulated", pods=(), namespaces=("default",), secrets=(), users=(),
                 secret_sync_delay=(1.0, 3.0), tls: bool = True, exec_protocols=(V5_PROTOCOL, V4_PROTOCOL),
                 state_dir: str | None = None, seed: int | None = None, admin_token: str | None = None):
        self.name = name
        self.pods = list(pods)
        self.secret_sync_delay = secret_sync_delay
        self.tls = tls
        self.exec_protocols = tuple(exec_protocols)
        self.admin = User(name="kubernetes-admin", token=admin_token or _secrets.token_urlsafe(24))
        self.users = list(users)
        names = {u.context for u in self.users}
        if len(names) != len(self.users):
            raise ValueError("cluster %s: users need distinct context names" % name)
        self.store = Store()
        self.pod_backends = {(p.namespace, p.name): p for p in self.pods}
        if len(self.pod_backends) != len(self.pods):
            raise ValueError("cluster %s: duplicate pod names" % name)
        self.requests: list = []
        self.exec_log: list = []
        self.volume_log: list = []
        self._rng = random.Random(seed)
        self._state_dir_arg = state_dir
        self.state_dir: str | None = None
        self._own_state_dir = False
        self._initial_namespaces = ["default", "kube-system"] + [n for n in namespaces if n not in ("default", "kube-system")]
        for pod in self.pods:
            if pod.namespace not in self._initial_namespaces:
                self._initial_namespaces.append(pod.namespace)
        self._initial_secrets = list(secrets)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sync_tasks: set = set()
        self._pending = 0
        self._pending_cond = threading.Condition()
        self._materialised: dict = {}
        self._api_clients: list = []
        self.port: int | None = None
        self.ca_file: str | None = None
        self.kubeconfig: str | None = None

    # ---- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "EmulatedCluster":
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> "EmulatedCluster":
        if self.started:
            return self
        if self._state_dir_arg:
            os.makedirs(self._state_dir_arg, exist_ok=True)
            self.state_dir = self._state_dir_arg
        else:
            self.state_dir = tempfile.mkdtemp(prefix="k8s-emu-%s-" % self.name)
            self._own_state_dir = True
        for namespace in self._initial_namespaces:
            self.store.create("namespaces", None, {"metadata": {"name": namespace}})
        for pod in self.pods:
            self.store.put_internal("pods", pod.to_object())
        self.store.renderers["pods"] = self._render_pod
        for secret in self._initial_secrets:
            self.store.create("secrets", secret.get("metadata", {}).get("namespace", "default"), secret)
        for pod in self.pods:
            for mount in pod.secret_volumes:
                self._materialise(pod, mount)
        self.store.listeners.append(self._on_change)
        ssl_context = None
        if self.tls:
            self.ca_file, cert, key = write_server_certs(self.state_dir, self.name)
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(cert, key)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="k8s-emulator-%s" % self.name, daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(sock, ssl_context), self._loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        self.kubeconfig = os.path.join(self.state_dir, "kubeconfig")
        write_kubeconfig(self.kubeconfig, self.kubeconfig_dict())
        return self

    async def _serve(self, sock: socket.socket, ssl_context):
        self._runner = web.AppRunner(ApiServer(self).make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=ssl_context).start()

    async def _shutdown(self):
        for task in list(self._sync_tasks):
            task.cancel()
        if self._sync_tasks:
            await asyncio.gather(*self._sync_tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._on_change in self.store.listeners:
            self.store.listeners.remove(self._on_change)
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            self._thread = self._loop = self._runner = None
            for api_client in self._api_clients:
                try:
                    api_client.close()
                except Exception:  # pylint: disable=broad-except
                    pass
            self._api_clients = []
            with self._pending_cond:
                self._pending = 0
                self._pending_cond.notify_all()
            if self._own_state_dir and self.state_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    # ---- kubeconfig & clients -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    @property
    def context(self) -> str:
        return self.name

    def _user(self, user) -> User:
        if user is None or user is self.admin or user == "admin":
            return self.admin
        if isinstance(user, User):
            return user
        for candidate in self.users:
            if user in (candidate.context, candidate.name):
                return candidate
        raise KeyError("cluster %s has no user %r" % (self.name, user))

    def context_for(self, user=None) -> str:
        """Kubeconfig context of ``user`` (a User, its name or context suffix; None = admin)."""
        found = self._user(user)
        return self.name if found is self.admin else "%s-%s" % (self.name, found.context)

    def token_for(self, user=None) -> str:
        """Bearer token of ``user`` (None = admin), e.g. for a client configured by host/api_key/ca_cert."""
        return self._user(user).token

    def user_for_token(self, token: str | None) -> User | None:
        if not token:
            return None
        for user in [self.admin] + self.users:
            if user.token == token:
                return user
        return None

    def kubeconfig_dict(self) -> dict:
        cluster = {"server": self.url}
        if self.tls:
            with open(self.ca_file, "rb") as handle:
                cluster["certificate-authority-data"] = base64.b64encode(handle.read()).decode()
        users, contexts = [], []
        for user in [self.admin] + self.users:
            context = self.context_for(user)
            users.append({"name": context + "-user", "user": {"token": user.token}})
            contexts.append({"name": context, "context": {"cluster": self.name, "user": context + "-user", "namespace": "default"}})
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": self.name,
                "clusters": [{"name": self.name, "cluster": cluster}], "users": users, "contexts": contexts}

    def api_client(self, user=None):
        from kubernetes import config  # pylint: disable=import-outside-toplevel
        api_client = config.new_client_from_config(config_file=self.kubeconfig, context=self.context_for(user))
        self._api_clients.append(api_client)
        return api_client

    def core_api(self, user=None):
        """``kubernetes.client.CoreV1Api`` for ``user`` (default admin), built from the kubeconfig."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel
        return client.CoreV1Api(self.api_client(user))

    # ---- direct state access for test set-up and assertions (bypasses HTTP and auth) -----------------
    def pod(self, name: str, namespace: str | None = None) -> PodBackend:
        for pod in self.pods:
            if pod.name == name and namespace in (None, pod.namespace):
                return pod
        raise KeyError(name)

    def apply_secret(self, namespace: str, name: str, data: dict, labels: dict | None = None,
                     annotations: dict | None = None, secret_type: str = "Opaque") -> dict:
        """Create or replace a Secret (values are bytes or str) and return the stored object."""
        body = {"metadata": {"name": name, "namespace": namespace}, "type": secret_type,
                "data": {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for k, v in data.items()}}
        if labels:
            body["metadata"]["labels"] = dict(labels)
        if annotations:
            body["metadata"]["annotations"] = dict(annotations)
        with self.store.lock:
            if self.store.find("secrets", namespace, name) is None:
                return self.store.create("secrets", namespace, body)
            return self.store.replace("secrets", namespace, name, body)

    def secret_data(self, namespace: str, name: str) -> dict | None:
        secret = self.store.find("secrets", namespace, name)
        if secret is None:
            return None
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def host_file(self, pod_name: str, container_path: str, namespace: str | None = None) -> str | None:
        return self.pod(pod_name, namespace).host_path(container_path)

    # ---- kubelet: Secret volumes -----------------------------------------------------------------------
    def _render_pod(self, obj: dict) -> dict:
        backend = self.pod_backends.get((obj["metadata"]["namespace"], obj["metadata"]["name"]))
        return backend.render_status(obj) if backend else obj

    def _delay(self, pod: PodBackend) -> float:
        delay = pod.secret_sync_delay if pod.secret_sync_delay is not None else self.secret_sync_delay
        if delay is None:
            return 0.0
        if isinstance(delay, (tuple, list)):
            return self._rng.uniform(float(delay[0]), float(delay[1]))
        return float(delay)

    def _on_change(self, resource: str, namespace: str, name: str, obj) -> None:
        """Store listener (any thread, inside the store lock): schedule the volume syncs of this Secret."""
        if resource != "secrets" or self._loop is None:
            return
        targets = [(pod, mount) for pod in self.pods for mount, ref in pod.secret_volumes.items() if ref == (namespace, name)]
        if not targets:
            return
        with self._pending_cond:
            self._pending += len(targets)
        for pod, mount in targets:
            self._loop.call_soon_threadsafe(self._schedule_sync, pod, mount, self._delay(pod), time.time())

    def _schedule_sync(self, pod: PodBackend, mount: str, delay: float, changed_at: float) -> None:
        task = self._loop.create_task(self._sync_later(pod, mount, delay, changed_at))
        self._sync_tasks.add(task)
        task.add_done_callback(self._sync_done)

    def _sync_done(self, task) -> None:
        self._sync_tasks.discard(task)
        with self._pending_cond:
            self._pending = max(0, self._pending - 1)
            self._pending_cond.notify_all()

    async def _sync_later(self, pod: PodBackend, mount: str, delay: float, changed_at: float) -> None:
        await asyncio.sleep(delay)
        self._materialise(pod, mount, changed_at, delay)

    def _materialise(self, pod: PodBackend, mount: str, changed_at: float | None = None, delay: float = 0.0) -> None:
        namespace, name = pod.secret_volumes[mount]
        with self.store.lock:
            secret = self.store.find("secrets", namespace, name)
        if secret is None:
            return  # like kubelet: a deleted Secret leaves the last content in place
        version = int(secret["metadata"]["resourceVersion"])
        key = (pod.namespace, pod.name, mount)
        if self._materialised.get(key, -1) >= version:
            return
        payload = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        changed = _volumes.write_payload(pod.mounts[mount], payload)
        self._materialised[key] = version
        self.volume_log.append({"pod": pod.name, "namespace": pod.namespace, "mount": mount, "secret": name,
                                "resourceVersion": str(version), "changed": changed, "changed_at": changed_at,
                                "delay": delay, "synced_at": time.time()})

    @property
    def pending_volume_syncs(self) -> int:
        with self._pending_cond:
            return self._pending

    def wait_for_volume_sync(self, timeout: float = 30.0) -> None:
        """Block until every scheduled Secret-volume sync has been written (raise TimeoutError otherwise)."""
        with self._pending_cond:
            if not self._pending_cond.wait_for(lambda: self._pending == 0, timeout):
                raise TimeoutError("cluster %s: %d volume syncs still pending after %ss" % (self.name, self._pending, timeout))


def write_kubeconfig(path: str, config: dict) -> str:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, default_flow_style=False, sort_keys=False)
    os.replace(path + ".tmp", path)
    return path


def merged_kubeconfig(clusters) -> dict:
    merged = {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [], "contexts": []}
    for cluster in clusters:
        config = cluster.kubeconfig_dict()
        for key in ("clusters", "users", "contexts"):
            merged[key].extend(config[key])
    merged["current-context"] = clusters[0].context if clusters else ""
    names = [c["name"] for c in merged["contexts"]]
    if len(set(names)) != len(names):
        raise ValueError("clusters need distinct names for one kubeconfig: %s" % names)
    return merged


def start_clusters(clusters, kubeconfig: str | None = None) -> str:
    """Start every cluster and write one kubeconfig with all their contexts; return its path.

    The first cluster's context is current. Without ``kubeconfig`` the file goes into the first cluster's
    state directory. Stop them with :func:`stop_clusters` (or use :class:`ClusterSet`).
    """
    clusters = list(clusters)
    started = []
    try:
        for cluster in clusters:
            cluster.start()
            started.append(cluster)
        path = kubeconfig or os.path.join(clusters[0].state_dir, "kubeconfig-all")
        return write_kubeconfig(path, merged_kubeconfig(clusters))
    except BaseException:
        stop_clusters(started)
        raise


def stop_clusters(clusters) -> None:
    errors = []
    for cluster in clusters:
        try:
            cluster.stop()
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)
    if errors:
        raise errors[0]


class ClusterSet:
    """``with ClusterSet([east, west]) as cs: cs.kubeconfig, cs["east"].context``"""

    def __init__(self, clusters, kubeconfig: str | None = None):
        self.clusters = list(clusters)
        self._path = kubeconfig
        self.kubeconfig: str | None = None

    def __enter__(self) -> "ClusterSet":
        self.kubeconfig = start_clusters(self.clusters, self._path)
        return self

    def __exit__(self, *exc_info):
        stop_clusters(self.clusters)

    def __getitem__(self, name: str) -> EmulatedCluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def __iter__(self):
        return iter(self.clusters)

"""Pods of an emulated cluster: each one is backed by a real local process (a nats-server)."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field


def _normpath(path: str) -> str:
    return posixpath.normpath(posixpath.join("/", path))


@dataclass
class PodBackend:
    """What a pod is made of: a real process (``pid_file`` or ``pid``) and host dirs seen at container paths.

    ``mounts`` maps container paths to host directories; ``secret_volumes`` maps some of those container
    paths to the Secret materialised there (``(namespace, name)`` or just ``name`` in the pod's namespace).
    ``ports`` (``{"client": 4222, "monitor": 8222}``) become the container's named ports, reachable on the
    pod IP 127.0.0.1. ``secret_sync_delay`` overrides the cluster's delay for this pod (seconds, or a
    ``(low, high)`` range for a random delay per sync). ``commands`` adds or overrides exec commands:
    ``{"name": fn(argv, pod) -> ExecResult | (exit_code, stdout_bytes, stderr_bytes)}`` (may be async).
    ``process_name``: when set, the PID counts as the pod's process only if ``/proc/<pid>/comm`` matches it
    (so a stale pid file never lets exec signal an unrelated process that reused the PID).
    """

    name: str
    namespace: str = "nats"
    labels: dict = field(default_factory=lambda: {"app": "nats"})
    container: str = "nats"
    pid_file: str | None = None
    pid: int | None = None
    mounts: dict = field(default_factory=dict)
    secret_volumes: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)
    log_file: str | None = None
    image: str = "nats:2.15.1-alpine"
    annotations: dict = field(default_factory=dict)
    secret_sync_delay: object = None
    commands: dict = field(default_factory=dict)
    process_name: str | None = None

    def __post_init__(self):
        self.mounts = {_normpath(path): os.path.abspath(host) for path, host in self.mounts.items()}
        volumes = {}
        for path, ref in self.secret_volumes.items():
            path = _normpath(path)
            if isinstance(ref, str):
                ref = (self.namespace, ref)
            if path not in self.mounts:
                raise ValueError("pod %s: secret volume %s has no host directory in mounts" % (self.name, path))
            volumes[path] = (ref[0], ref[1])
        self.secret_volumes = volumes

    @classmethod
    def from_localstack_server(cls, server: dict, namespace: str = "nats", labels: dict | None = None,
                               secret_name: str = "nats-ca-tls", ca_mount: str = "/etc/nats/ca",
                               config_mount: str = "/etc/nats-config", **kwargs) -> "PodBackend":
        """A pod for one server of ``LocalStack.info["clusters"][i]["servers"][j]``.

        The server's ``ca_dir`` is the pod's ``ca_mount`` and holds Secret ``secret_name``; the directory of
        its ``config_file`` is ``config_mount``; its client/cluster/monitor ports become named container ports.
        """
        mounts = {ca_mount: server["ca_dir"]}
        if server.get("config_file") and os.path.dirname(server["config_file"]) != os.path.abspath(server["ca_dir"]):
            mounts[config_mount] = os.path.dirname(server["config_file"])
        ports = {}
        for key, port_name in (("client_port", "client"), ("cluster_port", "cluster"), ("monitor_port", "monitor")):
            if server.get(key):
                ports[port_name] = int(server[key])
        params = dict(name=server["name"], namespace=namespace, labels=dict(labels or {"app": "nats"}),
                      pid_file=server.get("pid_file"), pid=server.get("pid") if not server.get("pid_file") else None,
                      mounts=mounts, secret_volumes={ca_mount: (namespace, secret_name)}, ports=ports,
                      log_file=server.get("log_file"), process_name="nats-server")
        params.update(kwargs)
        return cls(**params)

    # ---- the process behind the pod ----------------------------------------------------------
    def server_pid(self) -> int | None:
        """PID of the pod's main process (PID 1 in the container), read fresh from ``pid_file``."""
        if self.pid_file:
            try:
                with open(self.pid_file) as handle:
                    return int(handle.read().strip())
            except (OSError, ValueError):
                return None
        return self.pid

    def is_running(self) -> bool:
        pid = self.server_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            with open("/proc/%d/stat" % pid) as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
            if self.process_name:
                with open("/proc/%d/comm" % pid) as handle:
                    return handle.read().strip() == self.process_name[:15]
        except (OSError, IndexError):
            return True
        return True

    # ---- the container's file system ----------------------------------------------------------
    def host_path(self, container_path: str) -> str | None:
        """Host path for a container path under one of the mounts (longest prefix wins), else None."""
        path = _normpath(container_path)
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                rest = path[len(mount):].lstrip("/")
                return os.path.join(self.mounts[mount], rest) if rest else self.mounts[mount]
        return None

    def container_path(self, host_path: str) -> str | None:
        host_path = os.path.realpath(host_path)
        for mount, host in self.mounts.items():
            host = os.path.realpath(host)
            if host_path == host or host_path.startswith(host + os.sep):
                rel = os.path.relpath(host_path, host)
                return mount if rel == "." else posixpath.join(mount, rel)
        return None

    def virtual_children(self, container_path: str) -> list | None:
        """Entries of a directory that only exists as an ancestor of mount points (e.g. ``/etc``)."""
        path = _normpath(container_path)
        prefix = path.rstrip("/") + "/"
        children = {mount[len(prefix):].split("/")[0] for mount in self.mounts if mount.startswith(prefix)}
        return sorted(children) if children else None

    # ---- the API object -----------------------------------------------------------------------
    def to_object(self) -> dict:
        volumes, volume_mounts = [], []
        for index, (path, host) in enumerate(sorted(self.mounts.items())):
            if path in self.secret_volumes:
                name = re.sub(r"[^a-z0-9-]", "-", self.secret_volumes[path][1].lower())[:63]
                volumes.append({"name": name, "secret": {"secretName": self.secret_volumes[path][1], "defaultMode": 420}})
            else:
                name = "mount-%d" % index
                volumes.append({"name": name, "hostPath": {"path": host, "type": "Directory"}})
            volume_mounts.append({"name": name, "mountPath": path, "readOnly": path in self.secret_volumes})
        container = {"name": self.container, "image": self.image, "volumeMounts": volume_mounts,
                     "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in sorted(self.ports.items())]}
        metadata = {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": {"containers": [container], "volumes": volumes, "nodeName": "emulated-node",
                         "restartPolicy": "Always", "hostname": self.name}}

    def render_status(self, obj: dict) -> dict:
        started = obj["metadata"]["creationTimestamp"]
        running = self.is_running()
        flag = "True" if running else "False"
        conditions = [{"type": kind, "status": status, "lastTransitionTime": started}
                      for kind, status in (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag), ("Ready", flag))]
        state = {"running": {"startedAt": started}} if running else {"waiting": {"reason": "CrashLoopBackOff", "message": "process is not running"}}
        pid = self.server_pid()
        obj["status"] = {
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "startTime": started, "qosClass": "BestEffort",
            "conditions": conditions,
            "containerStatuses": [{"name": self.container, "image": self.image, "imageID": "emulated://" + self.image,
                                   "containerID": "emulated://%s" % (pid or "none"), "ready": running, "started": running,
                                   "restartCount": 0, "state": state}],
        }
        return obj

"""The HTTP side: an aiohttp application speaking the core/v1 REST API and pods/exec over WebSocket."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from . import _errors as errors
from ._exec import run_in_pod
from ._store import KINDS, NAMESPACED

V4_PROTOCOL = "v4.channel.k8s.io"
V5_PROTOCOL = "v5.channel.k8s.io"
STDOUT, STDERR, STATUS = 1, 2, 3
_CHUNK = 32 * 1024
USER_KEY = web.RequestKey("user", object) if hasattr(web, "RequestKey") else "user"


@dataclass
class ExecRecord:
    """One pods/exec call, for assertions (``cluster.exec_log``)."""

    namespace: str
    pod: str
    container: str
    command: list
    user: str
    protocol: str
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    started: float = field(default_factory=time.time)
    finished: float | None = None


def _json(obj: dict, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status, content_type="application/json")


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def exec_status(exit_code: int, command: list) -> dict:
    """The status-channel document a kubelet sends when the command ends."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command %s, exit code %d"
                       % ("[" + " ".join(command) + "]", exit_code),
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}


class ApiServer:
    def __init__(self, cluster):
        self.cluster = cluster
        self.store = cluster.store

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    # ---- cross-cutting: authentication, error rendering, request log ---------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        record = {"method": request.method, "path": request.path, "query": dict(request.query), "user": None, "status": None}
        self.cluster.requests.append(record)
        try:
            header = request.headers.get("Authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else None
            user = self.cluster.user_for_token(token)
            if user is None:
                raise errors.unauthorized()
            request[USER_KEY] = user
            record["user"] = user.name
            response = await handler(request)
        except errors.ApiError as exc:
            response = _json(exc.status(), exc.code)
        except web.HTTPException:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            response = _json(errors.ApiError(500, "InternalError", "Internal error occurred: %r" % exc, {}).status(), 500)
        record["status"] = response.status
        return response

    def _authorize(self, request: web.Request, verb: str, resource: str, subresource: str | None, namespace: str | None, name: str | None):
        user = request[USER_KEY]
        full = resource + ("/" + subresource if subresource else "")
        if not user.allowed(verb, full, namespace):
            raise errors.forbidden(user.name, verb, resource, subresource, namespace, name)

    # ---- routing ---------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET" and parts in (["healthz"], ["livez"], ["readyz"]):
            return web.Response(text="ok")
        if request.method == "GET" and parts == ["version"]:
            return _json({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "0" * 40, "gitTreeState": "clean",
                          "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"})
        if request.method == "GET" and parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if request.method == "GET" and parts == ["apis"]:
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if parts[:2] != ["api", "v1"]:
            raise errors.path_not_found()
        rest = parts[2:]
        if not rest:
            if request.method != "GET":
                raise errors.method_not_allowed()
            return _json(self._discovery())
        namespace = name = subresource = None
        if rest[0] == "namespaces" and len(rest) <= 2:
            resource = "namespaces"
            name = rest[1] if len(rest) == 2 else None
        elif rest[0] == "namespaces" and len(rest) <= 5:
            namespace, resource = rest[1], rest[2]
            name = rest[3] if len(rest) >= 4 else None
            subresource = rest[4] if len(rest) == 5 else None
            if resource not in NAMESPACED:
                raise errors.path_not_found()
        elif len(rest) == 1 and rest[0] in NAMESPACED:
            resource = rest[0]
            if request.method != "GET":
                raise errors.method_not_allowed()
        else:
            raise errors.path_not_found()
        if subresource is not None:
            if resource == "pods" and subresource == "exec" and request.method in ("GET", "POST"):
                return await self._exec(request, namespace, name)
            if resource == "pods" and subresource == "log" and request.method == "GET":
                return await self._log(request, namespace, name)
            raise errors.path_not_found()
        return await self._crud(request, resource, namespace, name)

    def _discovery(self) -> dict:
        def entry(resource, verbs):
            return {"name": resource, "singularName": KINDS[resource].lower(), "namespaced": resource in NAMESPACED,
                    "kind": KINDS[resource], "verbs": verbs}
        rw = ["create", "delete", "get", "list", "patch", "update"]
        resources = [entry("namespaces", rw), entry("secrets", rw), entry("configmaps", rw), entry("pods", ["get", "list"]),
                     {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                     {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}]
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}

    async def _body(self, request: web.Request):
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw.decode())
        except ValueError as exc:
            raise errors.bad_request("couldn't get version/kind; json parse error: %s" % exc)

    async def _crud(self, request: web.Request, resource: str, namespace: str | None, name: str | None) -> web.Response:
        query = request.query
        dry_run = query.get("dryRun") == "All"
        method = request.method
        if method == "GET" and name is None:
            verb = "watch" if _flag(query.get("watch")) else "list"
            self._authorize(request, verb, resource, None, namespace, None)
            if verb == "watch":
                raise errors.method_not_allowed("the Kubernetes emulator does not implement watch")
            try:
                limit = int(query["limit"]) if query.get("limit") else None
            except ValueError:
                raise errors.bad_request("limit must be an integer")
            return _json(self.store.list(resource, namespace, query.get("labelSelector"), query.get("fieldSelector"),
                                         limit, query.get("continue")))
        if method == "GET":
            self._authorize(request, "get", resource, None, namespace, name)
            return _json(self.store.get(resource, namespace, name))
        if method == "POST" and name is None:
            self._authorize(request, "create", resource, None, namespace, None)
            return _json(self.store.create(resource, namespace, await self._body(request), dry_run=dry_run), 201)
        if method == "PUT" and name is not None:
            self._authorize(request, "update", resource, None, namespace, name)
            return _json(self.store.replace(resource, namespace, name, await self._body(request), dry_run=dry_run))
        if method == "PATCH" and name is not None:
            self._authorize(request, "patch", resource, None, namespace, name)
            return _json(self.store.patch(resource, namespace, name, request.headers.get("Content-Type", ""), await request.read(),
                                          dry_run=dry_run, field_manager=query.get("fieldManager")))
        if method == "DELETE" and name is not None:
            self._authorize(request, "delete", resource, None, namespace, name)
            body = await self._body(request)
            return _json(self.store.delete(resource, namespace, name, body if isinstance(body, dict) else None, dry_run=dry_run))
        raise errors.method_not_allowed()

    # ---- pods/log --------------------------------------------------------------------------------
    async def _log(self, request: web.Request, namespace: str, name: str) -> web.Response:
        self._authorize(request, "get", "pods", "log", namespace, name)
        backend = self._backend(namespace, name)
        text = b""
        if backend.log_file:
            try:
                with open(backend.log_file, "rb") as handle:
                    text = handle.read()
            except OSError:
                text = b""
        tail = request.query.get("tailLines")
        if tail and tail.isdigit():
            text = b"".join(text.splitlines(keepends=True)[-int(tail):]) if int(tail) else b""
        return web.Response(body=text, content_type="text/plain")

    def _backend(self, namespace: str, name: str):
        backend = self.cluster.pod_backends.get((namespace, name))
        if backend is None:
            raise errors.not_found("pods", name)
        return backend

    # ---- pods/exec -------------------------------------------------------------------------------
    async def _exec(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        self._authorize(request, "create", "pods", "exec", namespace, name)
        backend = self._backend(namespace, name)
        query = request.query
        command = query.getall("command", [])
        container = query.get("container") or backend.container
        if container != backend.container:
            raise errors.bad_request("container %s is not valid for pod %s" % (container, name))
        if not command:
            raise errors.bad_request("you must specify at least one command for the container")
        want_stdout, want_stderr, tty = _flag(query.get("stdout")), _flag(query.get("stderr")), _flag(query.get("tty"))
        if not (want_stdout or want_stderr or _flag(query.get("stdin"))):
            raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
        ws = web.WebSocketResponse(protocols=self.cluster.exec_protocols, compress=False, timeout=10.0)
        ready = ws.can_prepare(request)
        if not ready.ok:
            raise errors.bad_request("Upgrade request required")
        if ready.protocol is None:
            raise errors.bad_request("unable to upgrade connection: none of the requested subprotocols (%s) are supported: %s"
                                     % (request.headers.get("Sec-WebSocket-Protocol", ""), ", ".join(self.cluster.exec_protocols)))
        await ws.prepare(request)
        record = ExecRecord(namespace, name, container, list(command), request[USER_KEY].name, ready.protocol)
        self.cluster.exec_log.append(record)
        # Like the API server's stream, announce the open output channels with empty frames.
        for channel, wanted in ((STDOUT, want_stdout), (STDERR, want_stderr and not tty)):
            if wanted:
                await ws.send_bytes(bytes([channel]))
        try:
            result = await run_in_pod(backend, command)
        except Exception as exc:  # pylint: disable=broad-except
            status = {"metadata": {}, "status": "Failure", "message": "Internal error occurred: %s" % exc,
                      "reason": "InternalError", "details": {"causes": [{"message": str(exc)}]}, "code": 500}
            await ws.send_bytes(bytes([STATUS]) + json.dumps(status, separators=(",", ":")).encode())
            await ws.close()
            record.finished = time.time()
            return ws
        stdout, stderr = result.stdout, result.stderr
        if tty:
            stdout, stderr = stdout + stderr, b""
        record.exit_code, record.stdout, record.stderr = result.exit_code, stdout, stderr
        for channel, data, wanted in ((STDOUT, stdout, want_stdout), (STDERR, stderr, want_stderr)):
            if wanted:
                for start in range(0, len(data), _CHUNK):
                    await ws.send_bytes(bytes([channel]) + data[start:start + _CHUNK])
        await ws.send_bytes(bytes([STATUS]) + json.dumps(exec_status(result.exit_code, command), separators=(",", ":")).encode())
        await ws.close()
        record.finished = time.time()
        return ws

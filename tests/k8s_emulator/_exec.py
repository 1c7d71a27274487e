"""The commands `pods/exec` can run in an emulated container, with coreutils-like output.

Files are read through the pod's mounts (container path -> host dir). PID 1 is the pod's real
server process. Anything unknown exits 127 with ``sh: <cmd>: not found`` on stderr.
``sh -c '<script>'`` runs a script of simple commands joined by ``;``, ``&&`` and ``||`` (plus
``exit N``); pipes and redirections are not emulated.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import inspect
import os
import posixpath
import shlex
import shutil
import signal
import stat
import sys
from dataclasses import dataclass

NATS_SIGNALS = ("reload", "stop", "quit", "reopen", "ldm", "term")


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""


def nats_server_binary() -> str:
    found = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
    return found or os.path.join(os.path.dirname(sys.executable), "nats-server")


class _ExitScript(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Shell:
    """Runs one exec request against one pod, collecting stdout and stderr."""

    def __init__(self, pod):
        self.pod = pod
        self.out = bytearray()
        self.err = bytearray()

    async def run(self, argv: list) -> ExecResult:
        try:
            code = await self.run_argv(list(argv))
        except _ExitScript as exc:
            code = exc.code
        return ExecResult(code, bytes(self.out), bytes(self.err))

    def _error(self, text: str) -> None:
        self.err += (text + "\n").encode()

    async def run_argv(self, argv: list) -> int:
        if not argv:
            return 0
        name = posixpath.basename(argv[0])
        if name in ("sh", "bash", "ash") and len(argv) >= 3 and argv[1] == "-c":
            return await self.run_script(argv[2])
        custom = self.pod.commands.get(argv[0]) or self.pod.commands.get(name)
        if custom is not None:
            result = custom(list(argv), self.pod)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, ExecResult):
                result = ExecResult(*result)
            self.out += result.stdout
            self.err += result.stderr
            return result.exit_code
        if name == "[":
            name = "test"
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None) if name and name.replace("-", "").isalnum() else None
        if handler is None:
            self._error("sh: %s: not found" % argv[0])
            return 127
        return await handler(argv[1:])

    async def run_script(self, script: str) -> int:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError as exc:
            self._error("sh: syntax error: %s" % exc)
            return 2
        code, pending_op, argv = 0, None, []
        for token in tokens + [";"]:
            if token in (";", "&&", "||"):
                if argv:
                    if pending_op is None or pending_op == ";" or (pending_op == "&&") == (code == 0):
                        if argv[0] == "exit":
                            raise _ExitScript(int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else code)
                        code = await self.run_argv(argv)
                    pending_op, argv = token, []
                continue
            if token and set(token) <= set(";&|"):
                self._error("sh: emulated shell does not support %r (only ';', '&&' and '||')" % token)
                return 2
            argv.append(token)
        return code

    # ---- file helpers ---------------------------------------------------------------------------
    def _resolve(self, path: str):
        """(host path or None, error text or None) for a container path that must exist."""
        host = self.pod.host_path(path)
        if host is None or not os.path.lexists(host):
            if self.pod.virtual_children(path) is not None:
                return None, "Is a directory"
            return None, "No such file or directory"
        if not os.path.exists(host):
            return None, "No such file or directory"
        return host, None

    def _read(self, tool: str, path: str):
        host, problem = self._resolve(path)
        if host is not None and os.path.isdir(host):
            problem = "Is a directory"
        if problem is None:
            try:
                with open(host, "rb") as handle:
                    return handle.read()
            except PermissionError:
                problem = "Permission denied"
            except OSError as exc:
                problem = exc.strerror or str(exc)
        self._error("%s: %s: %s" % (tool, path, problem))
        return None

    @staticmethod
    def _files(args: list) -> tuple:
        options, files, only_files = set(), [], False
        for arg in args:
            if only_files or arg == "-" or not arg.startswith("-"):
                files.append(arg)
            elif arg == "--":
                only_files = True
            else:
                options.update(arg.lstrip("-") if not arg.startswith("--") else [arg])
        return options, files

    # ---- commands -------------------------------------------------------------------------------
    async def cmd_sha256sum(self, args: list) -> int:
        options, files = self._files(args)
        sep = " *" if "b" in options else "  "
        code = 0
        for path in files or ["-"]:
            content = b"" if path == "-" else self._read("sha256sum", path)
            if content is None:
                code = 1
                continue
            self.out += ("%s%s%s\n" % (hashlib.sha256(content).hexdigest(), sep, path)).encode()
        return code

    async def cmd_cat(self, args: list) -> int:
        files = self._files(args)[1]
        code = 0
        for path in files:
            content = b"" if path == "-" else self._read("cat", path)
            if content is None:
                code = 1
            else:
                self.out += content
        return code

    def _long_line(self, host: str, name: str) -> str:
        info = os.lstat(host)
        when = datetime.datetime.fromtimestamp(info.st_mtime).strftime("%b %d %H:%M")
        line = "%s %d root root %d %s %s" % (stat.filemode(info.st_mode), info.st_nlink, info.st_size, when, name)
        if stat.S_ISLNK(info.st_mode):
            line += " -> " + os.readlink(host)
        return line

    async def cmd_ls(self, args: list) -> int:
        options, paths = self._files(args)
        long_format = "l" in options
        show = "all" if "a" in options else ("almost" if "A" in options else "visible")
        code, blocks = 0, []
        for path in paths or ["/"]:
            host = self.pod.host_path(path)
            virtual = self.pod.virtual_children(path)
            if host is not None and os.path.lexists(host) and not os.path.isdir(host):
                blocks.append((None, [self._long_line(host, path) if long_format else path]))
                continue
            if host is not None and os.path.isdir(host):
                names = sorted(os.listdir(host))  # C locale order, as in a busybox/alpine container
                if show == "all":
                    names = [".", ".."] + names
                elif show == "visible":
                    names = [n for n in names if not n.startswith(".")]
                lines = [self._long_line(os.path.join(host, n), n) if long_format and n not in (".", "..") else n for n in names]
                blocks.append((path, lines))
            elif virtual is not None:
                blocks.append((path, (([".", ".."] if show == "all" else []) + virtual)))
            else:
                self._error("ls: cannot access '%s': No such file or directory" % path)
                code = 2
        several = len(blocks) > 1 or code
        chunks = []
        for header, lines in blocks:
            text = "\n".join(lines) + ("\n" if lines else "")
            chunks.append(("%s:\n" % header if several and header else "") + text)
        self.out += "\n".join(chunks).encode()
        return code

    async def cmd_readlink(self, args: list) -> int:
        options, paths = self._files(args)
        code = 0
        for path in paths:
            host = self.pod.host_path(path)
            if host is None or not os.path.lexists(host):
                code = 1
            elif "f" in options or "e" in options or "m" in options:
                target = self.pod.container_path(host)
                if target is None:
                    code = 1
                else:
                    self.out += (target + "\n").encode()
            elif os.path.islink(host):
                self.out += (os.readlink(host) + "\n").encode()
            else:
                code = 1
        return code

    async def cmd_test(self, args: list) -> int:
        if args and args[-1] == "]":
            args = args[:-1]
        negate = bool(args) and args[0] == "!"
        if negate:
            args = args[1:]
        if len(args) != 2 or not args[0].startswith("-"):
            self._error("sh: test: emulator supports only 'test [!] -e|-f|-d|-s|-L|-r PATH'")
            return 2
        flag, host = args[0], self.pod.host_path(args[1])
        checks = {"-e": os.path.exists, "-f": os.path.isfile, "-d": os.path.isdir, "-L": os.path.islink, "-h": os.path.islink,
                  "-s": lambda p: os.path.isfile(p) and os.path.getsize(p) > 0, "-r": lambda p: os.access(p, os.R_OK)}
        if flag not in checks:
            self._error("sh: test: %s: unary operator expected" % flag)
            return 2
        result = host is not None and checks[flag](host)
        if host is None and flag in ("-e", "-d") and self.pod.virtual_children(args[1]) is not None:
            result = True
        return 0 if result != negate else 1

    async def cmd_echo(self, args: list) -> int:
        newline = not (args and args[0] == "-n")
        self.out += (" ".join(args[0 if newline else 1:]) + ("\n" if newline else "")).encode()
        return 0

    async def cmd_true(self, args: list) -> int:
        return 0

    async def cmd_false(self, args: list) -> int:
        return 1

    async def cmd_hostname(self, args: list) -> int:
        self.out += (self.pod.name + "\n").encode()
        return 0

    async def cmd_sleep(self, args: list) -> int:
        try:
            seconds = float(args[0].rstrip("s"))
        except (IndexError, ValueError):
            self._error("sleep: invalid time interval")
            return 1
        await asyncio.sleep(min(seconds, 60.0))
        return 0

    def _pid_for(self, spec: str):
        """Host PID for a container PID (only PID 1, the server, exists in the container)."""
        if spec != "1":
            return None
        pid = self.pod.server_pid()
        return pid if pid is not None and self.pod.is_running() else None

    async def cmd_kill(self, args: list) -> int:
        sig_name, rest = "TERM", list(args)
        if rest and rest[0] == "-l":
            self.out += (" ".join(s.name[3:] for s in sorted(signal.Signals, key=int) if s.name.startswith("SIG") and "_" not in s.name) + "\n").encode()
            return 0
        if rest and rest[0] in ("-s", "-n", "--signal") and len(rest) >= 2:
            sig_name, rest = rest[1], rest[2:]
        elif rest and rest[0].startswith("-") and len(rest[0]) > 1 and rest[0] != "--":
            sig_name, rest = rest[0][1:], rest[1:]
        if rest and rest[0] == "--":
            rest = rest[1:]
        try:
            if sig_name.isdigit():
                sig = signal.Signals(int(sig_name))
            else:
                upper = sig_name.upper()
                sig = signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
        except (KeyError, ValueError):
            self._error("sh: kill: %s: invalid signal specification" % sig_name)
            return 1
        if not rest:
            self._error("kill: usage: kill [-s sigspec | -n signum | -sigspec] pid | jobspec ... or kill -l [sigspec]")
            return 2
        code = 0
        for spec in rest:
            if not spec.lstrip("-").isdigit():
                self._error("sh: kill: %s: arguments must be process or job IDs" % spec)
                code = 1
                continue
            pid = self._pid_for(spec)
            if pid is None:
                self._error("sh: kill: (%s) - No such process" % spec)
                code = 1
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                self._error("sh: kill: (%s) - No such process" % spec)
                code = 1
        return code

    async def cmd_nats_server(self, args: list) -> int:
        value = None
        for index, arg in enumerate(args):
            if arg in ("--signal", "-sl") and index + 1 < len(args):
                value = args[index + 1]
            elif arg.startswith("--signal=") or arg.startswith("-sl="):
                value = arg.split("=", 1)[1]
        if value is None:
            if args and args[0] in ("--version", "-v", "--help", "-h", "--help_tls"):
                return await self._run_host([nats_server_binary()] + args[:1])
            self._error("nats-server: the emulated container only supports --signal and --version")
            return 1
        verb, target = value.partition("=")[::2]
        if verb not in NATS_SIGNALS:
            self._error("nats-server: unknown signal %r" % verb)
            return 1
        if target and not target.isdigit():  # a pid file path inside the container
            host = self.pod.host_path(target)
            try:
                with open(host or "", "r") as handle:
                    target = handle.read().strip()
            except OSError:
                self._error("nats-server: could not read pid file %s" % target)
                return 1
            target = "1" if str(self.pod.server_pid()) == target else target
        pid = self._pid_for(target or "1")
        if pid is None:
            self._error('nats-server: signal "%s" %s: no such process' % (verb, target or "nats-server"))
            return 1
        return await self._run_host([nats_server_binary(), "--signal", "%s=%d" % (verb, pid)])

    async def _run_host(self, argv: list) -> int:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            self._error("nats-server: timed out")
            return 124
        self.out += out
        self.err += err
        return proc.returncode


async def run_in_pod(pod, argv: list) -> ExecResult:
    return await Shell(pod).run(argv)

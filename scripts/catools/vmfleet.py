"""A fleet of SSH "VMs" next to the local stack: ``scripts/localstack up --vms N``.

Each VM is a real OpenSSH server (Debian's ``openssh-server``) on its own loopback address (``127.X.Y.10``,
``127.X.Y.11``, ... with X.Y picked per fleet) and port, with its own unprivileged user (``cafleet-<id>-<n>``,
home ``/home/<user>``, logged in only with the fleet's generated ed25519 key) that becomes root with ``sudo``, and its
own root directory (``<state>/vmfleet/vms/<name>/``: ``etc/nats``, ``var/run/nats``, ``var/log/nats``) holding
root-owned NATS files. Each VM runs one nats-server (as root, as a system service would) of one cluster, listening
on the VM's address only; the servers' leaves name the VM (its name and address).

Why loopback addresses rather than network namespaces: a namespace per VM needs a bridge (or IP forwarding)
between them, and namespaces, veth pairs and bridges are kernel objects that outlive a killed run and cannot be
stopped by PID; loopback addresses need no kernel state, work unchanged in a container and still give every VM
its own address, so its certificate names an address no other VM has.

State: ``<stack state dir>/vmfleet/fleet.json`` (pids, addresses, users; no secrets), the client key under
``secrets/`` (0600), the generated inventory ``inventory.yml``. Everything is stopped by PID (checked against the
command line); ``down`` also removes the users and their sudoers files. Needs root (sshd, users, sudoers).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .localstack import INT_MOUNT, LEAF_ROLE
from .natsconf import APP_PERMISSIONS
from .procs import (
    StackError,
    find_binary,
    http_json,
    log_tail,
    process_alive,
    spawn,
    stop_process,
    wait_for,
    write_file,
    write_secret,
)

FLEET_DIR = "vmfleet"
STATE_FILE = "fleet.json"
MAX_VMS = 32
FIRST_HOST_OCTET = 10
USER_PREFIX = "cafleet-"
DEFAULT_GROUP = "vmfleet"
DEFAULT_CLUSTER = "fleet"
SSHD = "/usr/sbin/sshd"
#: the collection's host-side module needs cryptography >= 3.4 on the VM (Ubuntu 22.04's python3-cryptography: 3.4.8)
MIN_CRYPTOGRAPHY = (3, 4)
SUDOERS_DIR = Path("/etc/sudoers.d")
AUTHORIZED_KEYS = ".ssh/fleet_authorized_keys"  # not the default name: only the fleet's sshd reads it
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


# --------------------------------------------------------------------------------------------
# pure helpers (unit tested)


def check_count(count: Any) -> int:
    """The number of VMs asked for (``--vms``), or a StackError naming the option."""
    try:
        if isinstance(count, bool):
            raise ValueError
        number = int(count)
    except (TypeError, ValueError):
        raise StackError(f"--vms must be a whole number of VMs (1 to {MAX_VMS}), got {count!r}") from None
    if not 1 <= number <= MAX_VMS:
        raise StackError(f"--vms must be 1 to {MAX_VMS}, got {number}")
    return number


def check_name(value: str, option: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise StackError(f"{option} must be lower-case letters, digits and '-', starting with a letter (at most 31), got {value!r}")
    return value


def addresses(block: tuple[int, int], count: int) -> list[str]:
    """The VMs' loopback addresses: ``127.<block>.<10 + n>``."""
    second, third = block
    if not (1 <= second <= 254 and 0 <= third <= 255):
        raise StackError(f"loopback block 127.{second}.{third}.0/24 is outside 127.1.0.0 - 127.254.255.0")
    if count > 255 - FIRST_HOST_OCTET:
        raise StackError(f"at most {255 - FIRST_HOST_OCTET} VMs fit in one loopback block")
    return [f"127.{second}.{third}.{FIRST_HOST_OCTET + n}" for n in range(count)]


def user_name(fleet_id: str, index: int) -> str:
    """The unprivileged ssh user of VM ``index`` (at most 32 characters, what useradd accepts)."""
    name = f"{USER_PREFIX}{fleet_id}-{index}"
    if len(name) > 32 or not re.match(r"^[a-z][a-z0-9-]*$", name):
        raise StackError(f"user name {name!r} is not a valid login name")
    return name


def vm_layout(root: Path, name: str) -> dict:
    """The paths of one VM under its root directory, as on a machine (``/etc/nats``, ``/var/run/nats``...)."""
    etc = root / "etc" / "nats"
    return {
        "root": str(root), "name": name,
        "config_file": str(etc / "nats.conf"), "ca_dir": str(etc / "ca"), "ca_file": str(etc / "ca" / "ca.crt"),
        "cert_file": str(etc / "tls" / "server.pem"), "key_file": str(etc / "tls" / "server-key.pem"),
        "pid_file": str(root / "var" / "run" / "nats" / "nats.pid"), "log_file": str(root / "var" / "log" / "nats" / "nats.log"),
        "sshd_config": str(root / "etc" / "ssh" / "sshd_config"), "host_key": str(root / "etc" / "ssh" / "ssh_host_ed25519_key"),
        "sshd_pid_file": str(root / "var" / "run" / "sshd.pid"), "sshd_log": str(root / "var" / "log" / "sshd.log"),
    }


def sshd_config(vm: dict) -> str:
    """The sshd configuration of one VM: its address and port only, its user only, the fleet key only."""
    return (
        "# generated by scripts/localstack up --vms - do not edit\n"
        f"ListenAddress {vm['address']}:{vm['ssh_port']}\n"
        f"HostKey {vm['host_key']}\n"
        f"PidFile {vm['sshd_pid_file']}\n"
        f"AllowUsers {vm['user']}\n"
        f"AuthorizedKeysFile {AUTHORIZED_KEYS}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin no\n"
        "UsePAM no\n"
        "StrictModes yes\n"
        "X11Forwarding no\n"
        "AllowTcpForwarding no\n"
        "PrintMotd no\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 64\n"
        "Subsystem sftp internal-sftp\n"
    )


def nats_config(vm: dict, vms: list[dict], cluster: str, passwords: dict) -> str:
    """One VM's nats-server configuration: the VM's address only, routes to the other VMs, mTLS everywhere."""
    tls = f'{{ cert_file: "{vm["cert_file"]}", key_file: "{vm["key_file"]}", ca_file: "{vm["ca_file"]}", verify: true, timeout: 5 }}'
    routes = ", ".join(f'"nats-route://{p["address"]}:{p["cluster_port"]}"' for p in vms if p["name"] != vm["name"])
    block = (f'cluster {{\n  name: "{cluster}"\n  listen: "{vm["address"]}:{vm["cluster_port"]}"\n  routes: [{routes}]\n'
             f"  tls {tls}\n}}\n") if len(vms) > 1 else ""
    return (
        "# generated by scripts/localstack up --vms - do not edit\n"
        f'server_name: "{vm["name"]}"\n'
        f'listen: "{vm["address"]}:{vm["client_port"]}"\n'
        f'http: "{vm["address"]}:{vm["monitor_port"]}"\n'
        f'pid_file: "{vm["pid_file"]}"\n'
        f"tls {tls}\n"
        f"{block}"
        "accounts {\n"
        f'  SYS {{ users: [ {{ user: "sys", password: "{passwords["sys"]}" }} ] }}\n'
        "  APP { users: [\n"
        f'    {{ user: "app", password: "{passwords["app"]}", permissions: {APP_PERMISSIONS} }}\n'
        f'    {{ user: "announcer", password: "{passwords["announcer"]}" }}\n'
        "  ] }\n"
        "}\n"
        "system_account: SYS\n"
    )


def target(vm: dict) -> dict:
    """The ``ca_rotation_nats_reload_targets`` entry of a VM's server: paths on the VM, its real names as SANs."""
    keys = ("name", "pid_file", "log_file", "ca_file", "cert_file", "key_file")
    return dict({k: vm[k] for k in keys}, url=f"tls://{vm['address']}:{vm['client_port']}",
                monitor_url=f"http://{vm['address']}:{vm['monitor_port']}", alt_names=list(vm["alt_names"]),
                ip_sans=list(vm["ip_sans"]))


def inventory(info: dict) -> dict:
    """The fleet's inventory: one host per VM in group ``info['group']`` under ``nats_clusters``, all of cluster
    ``info['cluster']`` (``ca_rotation_cluster_name``).

    Connection and become settings are host variables, so that they win over an ``ansible_connection: local`` in
    the group_vars/all of an inventory this one is combined with (``-i inventories/local -i <this file>``).
    """
    common_args = f"-o UserKnownHostsFile={info['known_hosts']} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    hosts = {}
    for vm in info["vms"]:
        hosts[vm["name"]] = {
            "ansible_connection": "ssh",
            "ansible_host": vm["address"],
            "ansible_port": vm["ssh_port"],
            "ansible_user": vm["user"],
            "ansible_ssh_private_key_file": info["client_key"],
            "ansible_ssh_common_args": common_args,
            "ansible_ssh_pipelining": True,
            "ansible_become": True,
            "ansible_become_method": "sudo",
            "ansible_become_user": "root",
            "ansible_python_interpreter": info["python"],
            # the VMs' servers are one NATS cluster: the engine judges them as one (min_success across the VMs)
            "ca_rotation_cluster_name": info["cluster"],
            "ca_rotation_nats_reload_transport": "signal",
            "ca_rotation_nats_reload_run_on": "host",
            "ca_rotation_nats_reload_renew_leaves": True,
            "ca_rotation_nats_reload_targets": [target(vm)],
        }
    return {"all": {"children": {"nats_clusters": {"children": {info["group"]: {"hosts": hosts}}}}}}


def known_hosts(vms: list[dict]) -> str:
    return "".join(f"[{vm['address']}]:{vm['ssh_port']} {vm['host_public_key']}\n" for vm in vms)


def descendants(pid: int, parents: dict[int, int]) -> list[int]:
    """Every process below ``pid`` in ``parents`` (``child -> parent``), children first listed before theirs."""
    out, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = sorted(c for c, p in parents.items() if p == current)
        out.extend(children)
        frontier.extend(children)
    return out


# --------------------------------------------------------------------------------------------
# the machine


def _process_parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b") ", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _run(argv: list[str], what: str, input_text: str | None = None) -> str:
    proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise StackError(f"{what} failed ({' '.join(argv[:2])}, exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def requirements(python: str) -> None:
    """Refuse, with what to install, when this machine cannot host the fleet."""
    if os.geteuid() != 0:
        raise StackError("--vms needs root: it starts sshd, adds one user per VM and a sudoers file for it")
    missing = []
    if not os.access(SSHD, os.X_OK):
        missing.append(f"openssh-server ({SSHD} not found)")
    if not shutil.which("sudo") or not shutil.which("visudo"):
        missing.append("sudo (the VMs' users become root with sudo)")
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        missing.append("openssh-client (ssh, ssh-keygen)")
    if not shutil.which("useradd") or not shutil.which("userdel"):
        missing.append("passwd (useradd, userdel)")
    if missing:
        raise StackError("the SSH fleet needs Debian packages that are missing: " + "; ".join(missing)
                         + " (apt-get install -y openssh-server sudo)")
    probe = subprocess.run([python, "-c", "import cryptography; print(cryptography.__version__)"], capture_output=True,
                           text=True, check=False)
    parts = probe.stdout.strip().split(".")[:2] if probe.returncode == 0 else []
    if len(parts) < 2 or not all(p.isdigit() for p in parts) or tuple(int(p) for p in parts) < MIN_CRYPTOGRAPHY:
        raise StackError(f"the VMs' Python {python} has no cryptography >= {'.'.join(map(str, MIN_CRYPTOGRAPHY))} "
                         f"({probe.stdout.strip() or probe.stderr.strip()[-200:]}); the host steps make the leaf key and CSR with it")


def _free_port(address: str, taken: set[int]) -> int:
    """A TCP port free on ``address`` (and on the wildcard address), below the ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = secrets.SystemRandom()
    for _attempt in range(500):
        port = rng.randrange(10000 if low > 12000 else 1024, low)
        if port in taken:
            continue
        try:
            for addr in (address, "0.0.0.0"):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((addr, port))
        except OSError:
            continue
        taken.add(port)
        return port
    raise StackError(f"no free TCP port found on {address}")


def _port_open(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((address, port)) == 0


class VmFleet:
    """N SSH VMs, each with one nats-server of one cluster, next to a running :class:`LocalStack`."""

    def __init__(self, stack=None, count: int = 3, *, state_dir: str | Path | None = None, group: str = DEFAULT_GROUP,
                 cluster: str = DEFAULT_CLUSTER, prefix: str = "vm", python: str | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        """``stack``: the running LocalStack (its OpenBao issues the servers' leaves); only ``state_dir`` to stop a
        recorded fleet."""
        self.stack = stack
        self.count = check_count(count)
        self.group = check_name(group, "the fleet's group")
        self.cluster = check_name(cluster, "the fleet's cluster name")
        self.prefix = check_name(prefix, "the VM name prefix")
        #: the VMs share this machine's files: they run the modules with this Python (default: this one, the venv)
        self.python = python or sys.executable
        self.dir = Path(state_dir or stack.state_dir) / FLEET_DIR
        self._log = log or (lambda msg: None)
        self.info: dict = self._load() or {}

    # ---------------------------------------------------------------- persistence
    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def _load(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def _save(self) -> None:
        write_file(self.state_file, json.dumps(self.info, indent=2, sort_keys=True) + "\n", 0o600)

    @property
    def vms(self) -> list[dict]:
        return list(self.info.get("vms", []))

    def vm(self, name: str) -> dict:
        for vm in self.vms:
            if vm["name"] == name:
                return vm
        raise StackError(f"no VM named {name!r} in the fleet ({', '.join(v['name'] for v in self.vms) or 'none'})")

    # ---------------------------------------------------------------- status
    def processes(self) -> list[dict]:
        procs = []
        for vm in self.vms:
            procs.append({"name": f"{vm['name']}/sshd", "pid": vm.get("sshd_pid"), "marker": vm["sshd_config"],
                          "port": vm["ssh_port"], "address": vm["address"]})
            procs.append({"name": f"{vm['name']}/nats", "pid": vm.get("nats_pid"), "marker": vm["config_file"],
                          "port": vm["client_port"], "address": vm["address"]})
        for proc in procs:
            proc["running"] = process_alive(proc["pid"], proc["marker"])
        return procs

    # ---------------------------------------------------------------- up
    def up(self) -> dict:
        """Start the fleet; a no-op when it already runs (with the same number of VMs)."""
        started = time.monotonic()
        if self.info:
            if len(self.vms) != self.count:
                raise StackError(f"a fleet of {len(self.vms)} VMs is recorded in {self.dir}; 'localstack down' first to "
                                 f"start one of {self.count}")
            for vm in self.vms:
                if not process_alive(vm.get("nats_pid"), vm["config_file"]):
                    self._start_nats(vm)
                if not process_alive(vm.get("sshd_pid"), vm["sshd_config"]):
                    self.start_sshd(vm["name"])
            self._wait()
            self.info["changed"] = False
            self._save()
            return self.info
        requirements(self.python)
        if self.stack is None or not self.stack.info.get("openbao"):
            raise StackError("the local stack is not up: the fleet's server leaves come from its OpenBao")
        try:
            self._prepare()
            for vm in self.vms:
                self._start_nats(vm)
                self.start_sshd(vm["name"], wait=False)
            self._save()
            self._wait()
        except BaseException:
            self._save()
            self.down()
            raise
        self.info["changed"] = True
        self.info["up_seconds"] = round(time.monotonic() - started, 3)
        self._save()
        self.write_inventory()
        return self.info

    def _prepare(self) -> None:
        fleet_id = secrets.token_hex(3)
        block = (secrets.randbelow(150) + 100, secrets.randbelow(256))
        sec = self.dir / "secrets"
        sec.mkdir(parents=True, exist_ok=True, mode=0o700)
        client_key = sec / "id_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vmfleet-{fleet_id}", "-f", str(client_key)], "ssh-keygen")
        public = (sec / "id_ed25519.pub").read_text(encoding="utf-8").strip()
        self.info = {"version": 1, "id": fleet_id, "group": self.group, "cluster": self.cluster, "python": self.python,
                     "client_key": str(client_key), "known_hosts": str(self.dir / "known_hosts"),
                     "inventory": str(self.dir / "inventory.yml"), "users": [], "sudoers": [], "vms": []}
        taken: set[int] = set()
        vms = []
        for index, address in enumerate(addresses(block, self.count)):
            name = f"{self.prefix}-{index}"
            vm = vm_layout(self.dir / "vms" / name, name)
            vm.update(address=address, user=user_name(fleet_id, index), alt_names=[name], ip_sans=[address],
                      ssh_port=_free_port(address, taken), client_port=_free_port(address, taken),
                      cluster_port=_free_port(address, taken), monitor_port=_free_port(address, taken),
                      sshd_pid=None, nats_pid=None)
            vms.append(vm)
        self.info["vms"] = vms
        self._save()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for vm in vms:
            self._add_user(vm, public)
            for sub in ("etc/ssh", "etc/nats/ca", "etc/nats/tls", "var/run/nats", "var/log/nats"):
                path = Path(vm["root"]) / sub
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o755)  # root-owned: the VM's user reads, only root writes
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", vm["name"], "-f", vm["host_key"]], "ssh-keygen (host key)")
            vm["host_public_key"] = " ".join(Path(vm["host_key"] + ".pub").read_text(encoding="utf-8").split()[:2])
            write_file(Path(vm["sshd_config"]), sshd_config(vm), 0o600)
        write_file(Path(self.info["known_hosts"]), known_hosts(vms), 0o644)
        self._issue_server_leaves(vms)
        self._save()

    def _add_user(self, vm: dict, public_key: str) -> None:
        user = vm["user"]
        home = Path("/home") / user
        _run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--user-group",
              "--password", "*", "--comment", f"ca_rotation fleet VM {vm['name']}", user], f"useradd {user}")
        self.info["users"].append(user)
        self._save()
        entry = pwd.getpwnam(user)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = home / AUTHORIZED_KEYS
        keys.write_text(public_key + "\n", encoding="utf-8")
        os.chmod(keys, 0o600)
        for path in (ssh_dir, keys):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        sudoers = SUDOERS_DIR / user
        text = f"# ca_rotation fleet VM {vm['name']}: its user becomes root (Ansible become)\n{user} ALL=(root) NOPASSWD: ALL\n"
        tmp = SUDOERS_DIR / f".{user}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o440)
        try:
            _run(["visudo", "-cqf", str(tmp)], f"visudo check of the sudoers entry of {user}")
            os.replace(tmp, sudoers)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.info["sudoers"].append(str(sudoers))
        self._save()

    def _issue_server_leaves(self, vms: list[dict]) -> None:
        client = self.stack.bao_client()
        bundle = Path(self.stack.info["pki"]["bundle_file"]).read_text(encoding="utf-8")
        sec = Path(self.stack.info["nats_auth"]["app_password_file"]).parent
        passwords = {"app": (sec / "nats-app-password").read_text(encoding="utf-8").strip(),
                     "sys": (sec / "nats-sys-password").read_text(encoding="utf-8").strip(),
                     "announcer": (sec / "nats-announcer-password").read_text(encoding="utf-8").strip()}
        for vm in vms:
            data = client.write_data(f"{INT_MOUNT}/issue/{LEAF_ROLE}", data={
                "common_name": vm["name"], "alt_names": ",".join(vm["alt_names"]), "ip_sans": ",".join(vm["ip_sans"])})["data"]
            write_file(Path(vm["cert_file"]), data["certificate"].strip() + "\n" + data["issuing_ca"].strip() + "\n")
            write_secret(Path(vm["key_file"]), data["private_key"].strip() + "\n")
            write_file(Path(vm["ca_file"]), bundle)
            write_file(Path(vm["config_file"]), nats_config(vm, vms, self.cluster, passwords), 0o600)

    def _start_nats(self, vm: dict) -> None:
        proc = spawn([find_binary("nats-server"), "-c", vm["config_file"]], Path(vm["log_file"]))
        vm["nats_pid"] = proc.pid
        self._save()

    def start_sshd(self, name: str, wait: bool = True) -> None:
        """Start the sshd of VM ``name`` (again)."""
        vm = next(v for v in self.info["vms"] if v["name"] == name)
        if process_alive(vm.get("sshd_pid"), vm["sshd_config"]):
            return
        proc = spawn([SSHD, "-D", "-e", "-f", vm["sshd_config"]], Path(vm["sshd_log"]))
        vm["sshd_pid"] = proc.pid
        self._save()
        if wait:
            self._wait_sshd(vm)

    def stop_sshd(self, name: str) -> bool:
        """Stop the sshd of VM ``name`` and its sessions (by PID): the VM is unreachable, its nats-server runs on."""
        vm = next(v for v in self.info["vms"] if v["name"] == name)
        pid = vm.get("sshd_pid")
        if not process_alive(pid, vm["sshd_config"]):
            return False
        sessions = descendants(pid, _process_parents())
        stopped = stop_process(pid, vm["sshd_config"])
        for child in sessions:
            try:
                os.kill(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
        wait_for(lambda: not _port_open(vm["address"], vm["ssh_port"]), 10, f"the sshd port of {name} to close")
        return stopped

    def _wait_sshd(self, vm: dict) -> None:
        def ready() -> bool:
            if not process_alive(vm["sshd_pid"], vm["sshd_config"]):
                raise StackError(f"sshd of {vm['name']} (pid {vm['sshd_pid']}) exited; see {vm['sshd_log']}; its last lines:"
                                 f"{log_tail(vm['sshd_log'])}")
            return _port_open(vm["address"], vm["ssh_port"])
        wait_for(ready, 30, f"sshd of {vm['name']} on {vm['address']}:{vm['ssh_port']}")

    def _wait(self) -> None:
        peers = len(self.vms) - 1

        def ready(vm: dict) -> bool:
            if not process_alive(vm["nats_pid"], vm["config_file"]):
                raise StackError(f"nats-server of {vm['name']} (pid {vm['nats_pid']}) exited; see {vm['log_file']}; its last "
                                 f"lines:{log_tail(vm['log_file'])}")
            monitor = f"http://{vm['address']}:{vm['monitor_port']}"
            if http_json(f"{monitor}/healthz")[0] != 200:
                return False
            routez = http_json(f"{monitor}/routez")[1]
            return len({r.get("remote_name") for r in (routez or {}).get("routes", [])}) >= peers

        for vm in self.vms:
            self._wait_sshd(vm)
            wait_for(lambda v=vm: ready(v), 60, f"nats-server of {vm['name']} to be healthy and routed")

    # ---------------------------------------------------------------- inventory / ssh
    def inventory(self) -> dict:
        return inventory(self.info)

    def write_inventory(self, path: str | Path | None = None) -> Path:
        """Write the fleet's inventory (YAML) to ``path`` (default ``<fleet dir>/inventory.yml``)."""
        import yaml  # pylint: disable=import-outside-toplevel

        target_path = Path(path or self.info["inventory"])
        text = ("---\n# generated by 'scripts/localstack up --vms' for the running fleet; do not edit\n"
                + yaml.safe_dump(self.inventory(), default_flow_style=False, sort_keys=True))
        write_file(target_path, text, 0o644)
        return target_path

    def ssh(self, name: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``command`` on VM ``name`` over SSH as its user (no become)."""
        vm = self.vm(name)
        argv = ["ssh", "-i", self.info["client_key"], "-p", str(vm["ssh_port"]), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.info['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes", "-o", "ControlMaster=no", "-o", "ConnectTimeout=5",
                f"{vm['user']}@{vm['address']}", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    # ---------------------------------------------------------------- down
    def down(self) -> dict:
        """Stop every process of the fleet by PID (sshd with its sessions, nats-server), remove its users, their
        sudoers files and the fleet's state."""
        stopped = []
        for vm in self.vms:
            if self.stop_sshd(vm["name"]):
                stopped.append(f"{vm['name']}/sshd")
            if stop_process(vm.get("nats_pid"), vm["config_file"]):
                stopped.append(f"{vm['name']}/nats")
        for path in self.info.get("sudoers", []):
            if Path(path).parent == SUDOERS_DIR and Path(path).name.startswith(USER_PREFIX):
                Path(path).unlink(missing_ok=True)
        for user in self.info.get("users", []):
            if not user.startswith(USER_PREFIX):
                continue
            try:
                pwd.getpwnam(user)
            except KeyError:
                continue
            proc = subprocess.run(["userdel", "--remove", user], capture_output=True, text=True, check=False)
            if proc.returncode not in (0, 12):  # 12: the home directory could not be removed (reported below)
                self._log(f"userdel {user} failed: {proc.stderr.strip()}")
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.info = {}
        return {"stopped": stopped}


def down_fleet(state_dir: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """Stop the fleet recorded under ``state_dir`` (nothing when there is none)."""
    if not (Path(state_dir) / FLEET_DIR / STATE_FILE).exists():
        return {"stopped": []}
    return VmFleet(state_dir=state_dir, log=log).down()

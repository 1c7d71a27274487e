"""The ansible-core version matrix: unit tests, the rotate smoke (tests/smoke) and sanity per supported version.

    make test-matrix                      every version: unit tests + smoke
    make test-matrix-edges                the oldest and the newest version (nox tag "edge"): smoke only
    nox -s "matrix(2.17)" -- unit         one version, some steps (unit, smoke, sanity; default: unit smoke)
    nox -t edge -- sanity                 sanity under the oldest and the newest version

Each version gets its own venv under .build/nox (reused while requirements.txt, requirements-matrix.txt and the
pinned version are unchanged) with that ansible-core, the runtime requirements of requirements.txt without its
ansible-core pin, and requirements-matrix.txt. Keep MATRIX in step with `requires_ansible` in meta/runtime.yml.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent
BUILD = REPO / ".build"

# ansible-core series -> (exact release tested, Python it runs on)
MATRIX = {
    "2.17": ("2.17.14", "3.11"),
    "2.18": ("2.18.19", "3.11"),
    "2.19": ("2.19.14", "3.11"),
    "2.20": ("2.20.10", "3.12"),
    "2.21": ("2.21.5", "3.13"),
}
EDGES = (min(MATRIX, key=lambda v: tuple(map(int, v.split(".")))), max(MATRIX, key=lambda v: tuple(map(int, v.split(".")))))
STEPS = ("unit", "smoke", "sanity")
DEFAULT_STEPS = ("unit", "smoke")

nox.options.envdir = str(BUILD / "nox")
nox.options.reuse_venv = "yes"
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["matrix"]


def _runs(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "pass"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _expose_pyenv_interpreters() -> None:
    """Put pyenv's interpreters on PATH for the Pythons of MATRIX that PATH does not run (pyenv shims of a version
    that is installed but not selected fail)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    extra = []
    for version in sorted({py for _release, py in MATRIX.values()}):
        found = shutil.which(f"python{version}")
        if found and _runs(found):
            continue
        candidates = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")))
        if candidates:
            extra.append(os.path.dirname(candidates[-1]))
    if extra:
        os.environ["PATH"] = os.pathsep.join(extra + [os.environ.get("PATH", "")])


_expose_pyenv_interpreters()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _requirements() -> list[str]:
    runtime = [f"{name}=={ver}" for name, ver in _pins(REPO / "requirements.txt").items() if name != "ansible-core"]
    test = _pins(REPO / "requirements-test.txt")
    drift = {name: (ver, test[name]) for name, ver in _pins(REPO / "requirements-matrix.txt").items()
             if name in test and test[name] != ver}
    if drift:
        raise RuntimeError(f"requirements-matrix.txt and requirements-test.txt pin different versions: {drift}")
    return runtime


def _install(session: nox.Session, release: str) -> None:
    """Install once per venv; reinstall when the pinned release or a requirements file changes."""
    runtime = _requirements()
    digest = hashlib.sha256("\n".join([release, *runtime, (REPO / "requirements-matrix.txt").read_text()]).encode()).hexdigest()
    venv = Path(session.virtualenv.location)
    stamp = venv / ".ca_rotation-installed"
    with open(venv / ".ca_rotation-install.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs of the same session (two `make test`s) install one at a time
        if stamp.exists() and stamp.read_text() == digest:
            session.log(f"requirements already installed (ansible-core {release})")
            return
        session.install("--quiet", "--upgrade", "pip")
        session.install("--quiet", f"ansible-core=={release}", *runtime, "-r", str(REPO / "requirements-matrix.txt"))
        stamp.write_text(digest)


def _sanity(session: nox.Session, python: str) -> None:
    """ansible-test sanity of this version on a copy of the files git knows about (tracked + new, not ignored;
    as `make sanity` does), with the get-pip shim ansible-test needs offline."""
    base = Path(os.environ.get("SANITY_BASE", "/tmp/securetransport-ca_rotation-sanity"))
    root = base / "ansible_collections" / "securetransport" / "ca_rotation"
    shutil.rmtree(root, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in files:
        if name and not name.startswith(".ci/") and (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    cache = Path.home() / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    # ansible-test bootstraps pip into its venvs with get-pip.py of the pip version it pins, downloaded unless cached
    for source in glob.glob(str(Path(session.virtualenv.location) / "lib" / "python*" / "site-packages" / "ansible_test"
                                / "_internal" / "python_requirements.py")):
        for pip_version in set(re.findall(r"pip='(\d+(?:\.\d+)*)'", Path(source).read_text(encoding="utf-8"))):
            shutil.copy(REPO / ".ci" / "get_pip_shim.py", cache / f"get_pip_{pip_version.replace('.', '_')}.py")
    with session.chdir(root):
        session.run("ansible-test", "sanity", "--python", python, "--color", "no", *os.environ.get("SANITY_ARGS", "").split())


@nox.session
@nox.parametrize(("python", "ansible"), [nox.param(py, ver, id=ver, tags=["edge"] if ver in EDGES else [])
                                         for ver, (_release, py) in MATRIX.items()])
def matrix(session: nox.Session, ansible: str) -> None:
    """Unit tests and the rotate smoke (posargs choose steps: unit, smoke, sanity) under one ansible-core version."""
    release, python = MATRIX[ansible]
    steps = session.posargs or list(DEFAULT_STEPS)
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        session.error(f"unknown step(s) {unknown}: choose from {list(STEPS)}")
    _install(session, release)
    session.env["ANSIBLE_COLLECTIONS_PATH"] = str(BUILD / "collections")
    # the collection must come from the source tree, not from an installed copy
    session.env.pop("ANSIBLE_COLLECTIONS_PATHS", None)
    session.run("ansible", "--version", silent=False)
    if "unit" in steps:
        session.run("python", "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider")
    if "smoke" in steps:
        session.run("python", "-m", "pytest", "tests/smoke", "-q", "-p", "no:cacheprovider", "-s")
    if "sanity" in steps:
        _sanity(session, python)

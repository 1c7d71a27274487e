"""Helpers for the test suite: run modules in-process, run playbooks as a user would."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from ansible.module_utils.common.parameters import PASS_VARS

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19: hand the arguments over the way AnsibleModule reads them there
    from ansible.module_utils import basic as _basic
    from ansible.module_utils.common.text.converters import to_bytes as _to_bytes

    @contextlib.contextmanager
    def patch_module_args(args: dict | None = None):
        saved = _basic._ANSIBLE_ARGS  # pylint: disable=protected-access
        _basic._ANSIBLE_ARGS = _to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))  # pylint: disable=protected-access
        try:
            yield
        finally:
            _basic._ANSIBLE_ARGS = saved  # pylint: disable=protected-access

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS_PATH = REPO / ".build" / "collections"
FQCN = "securetransport.ca_rotation"
MODULE_PKG = "ansible_collections.securetransport.ca_rotation.plugins.modules"


def run_module(name: str, params: dict, check_mode: bool = False, diff: bool = False) -> dict:
    """Run the real ``main()`` of module ``name`` with ``params``; return its result dict.

    A failure comes back as a dict with ``failed: True`` (it is not raised).
    """
    module = importlib.import_module(f"{MODULE_PKG}.{name}")
    args = dict(params)
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    args.setdefault("_ansible_tmpdir", None)
    if "inject_invocation" in PASS_VARS:  # ansible-core >= 2.21 returns `invocation` only when the controller asks
        args.setdefault("_ansible_inject_invocation", True)
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    text = out.getvalue()
    try:
        return json.loads(text)
    except ValueError:  # pragma: no cover - a module printed something that is not JSON
        raise AssertionError(f"module {name} did not print JSON: {text!r}") from None


def ansible_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PATH),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def ansible_playbook(playbook: str | Path, *args: str, inventory: str | Path | None = None,
                     extra_vars: dict | None = None, check: bool = False, env: dict | None = None,
                     timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``ansible-playbook`` as a user would; returns the CompletedProcess (text output)."""
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check:
        argv.append("--check")
    argv += list(args)
    return subprocess.run(argv, cwd=REPO, env=env or ansible_env(), capture_output=True, text=True, timeout=timeout, check=False)


def write_text(path: Path, text: str, mode: int = 0o644) -> str:
    """Write ``text`` (stripped, one trailing newline) to ``path`` with ``mode``; returns the path as a string."""
    path.write_text(text.strip() + "\n")
    path.chmod(mode)
    return str(path)

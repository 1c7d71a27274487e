"""The collection builds, installs offline and documents itself, as a user would see it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*argv, env=None):
    return subprocess.run([str(a) for a in argv], cwd=REPO, capture_output=True, text=True, timeout=300, env=env, check=False)


def test_build_install_offline_and_ansible_doc(tmp_path):
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    built = _run(BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", tmp_path / "dist", ".")
    assert built.returncode == 0, built.stderr
    tarball = tmp_path / "dist" / f"securetransport-ca_rotation-{version}.tar.gz"
    assert tarball.exists()
    listing = _run("tar", "-tzf", tarball).stdout.splitlines()
    assert not [p for p in listing if p.startswith((".venv", ".build", ".localstack", ".git/"))], "build must not ship local state"

    installed = _run(BIN / "ansible-galaxy", "collection", "install", "--offline", "--force", "-p", tmp_path / "coll", tarball)
    assert installed.returncode == 0, installed.stderr
    root = tmp_path / "coll" / "ansible_collections" / "securetransport" / "ca_rotation"
    assert (root / "plugins" / "modules" / "ca_epoch.py").exists()

    import os
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "coll"))
    doc = _run(BIN / "ansible-doc", "securetransport.ca_rotation.ca_epoch", env=env)
    assert doc.returncode == 0, doc.stderr
    assert "epoch_duration" in doc.stdout and "EXAMPLES" in doc.stdout
    listed = _run(BIN / "ansible-doc", "-l", "securetransport.ca_rotation", env=env)
    assert "securetransport.ca_rotation.ca_epoch" in listed.stdout

"""Offline stand-in for get-pip.py used by ansible-test when it bootstraps pip into its venvs.

ansible-test downloads get-pip.py from the internet, which this environment cannot reach.
This shim bootstraps pip from the interpreter's bundled ensurepip, then lets pip install the
requested packages from the configured package index (PIP_CONFIG_FILE, which ansible-test
points at /dev/null, is dropped so the machine's index configuration applies).
"""
import ensurepip
import os
import subprocess
import sys

os.environ.pop("PIP_CONFIG_FILE", None)
ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))

"""Offline stand-in for get-pip.py, used by ansible-test when it bootstraps pip into its venvs.

ansible-test downloads get-pip.py from the internet, which this environment cannot reach.
This shim bootstraps pip from the interpreter's bundled ensurepip, then lets that pip install
the requested packages from the configured package index. ensurepip points PIP_CONFIG_FILE at
/dev/null and drops PIP_* variables, so both are restored before pip runs.
"""
import ensurepip
import os
import subprocess
import sys

saved = {k: v for k, v in os.environ.items() if k.startswith("PIP_") and k != "PIP_CONFIG_FILE"}
ensurepip.bootstrap(upgrade=True)
env = dict(os.environ)
env.pop("PIP_CONFIG_FILE", None)
env.update(saved)
for bundle in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
    if "PIP_CERT" not in env and os.path.exists(bundle):
        env["PIP_CERT"] = bundle
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=env))

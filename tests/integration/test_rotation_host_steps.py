"""rotate.yml with the host-local steps run on the inventory host (ca_rotation_nats_reload_run_on: host), as for NATS
servers on VMs: one module call per host and step, the leaf key made where the server runs and only its CSR signed,
the trust probe from the controller. (Here the host is reached with the local connection; the module process and its
arguments are exactly those of an SSH host.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rotation_harness import RotationStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ON_HOST = {"ca_rotation_nats_reload_run_on": "host"}


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    stack = RotationStack(tmp_path_factory.mktemp("hoststeps"), epoch_duration="6h")
    yield stack
    stack.down()


def _public(path):
    text = Path(path).read_bytes()
    if b"PRIVATE KEY" in text:
        key = serialization.load_pem_private_key(text, password=None).public_key()
    else:
        key = x509.load_pem_x509_certificate(text).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _openbao_state(rs):
    client = rs.bao()
    issuers = sorted(client.list(f"{rs.info['pki']['int_mount']}/issuers")["data"]["keys"])
    try:
        kv = sorted(client.secrets.kv.v2.list_secrets(path="", mount_point="secret")["data"]["keys"])
    except Exception:  # noqa: BLE001 - nothing stored yet
        kv = []
    return issuers, kv


def test_check_mode_predicts_the_rotation_and_writes_nothing(rs):
    before_files, before_bao = rs.ca_file_sha256s(), _openbao_state(rs)
    run = rs.playbook("rotate.yml", extra_vars=ON_HOST, check=True)
    assert run["rc"] == 0, run["stdout"][-3000:] + run["stderr"][-2000:]
    assert "changed: [authority]" in run["stdout"], "the authority step predicts its changes"
    assert rs.ca_file_sha256s() == before_files, "no CA file written"
    assert _openbao_state(rs) == before_bao, "no issuer, KV bundle, state document or lock written"


def test_deliver_reload_and_prove_on_the_host(rs):
    run = rs.playbook("rotate.yml", extra_vars=ON_HOST)
    assert run["rc"] == 0, run["stdout"][-3000:] + run["stderr"][-2000:]
    report = run["report"]
    cluster = report["clusters"]["local"]
    assert report["ok"] and cluster["reloaded"] and cluster["module_calls"] >= 1, cluster
    assert rs.ca_file_sha256s() == {report["bundle_sha256"]}
    servers = cluster["servers"]
    assert len(servers) == 3 and all(s["ok"] and s["probe_ok"] and s["load_time_after"] for s in servers), servers
    again = rs.playbook("rotate.yml", extra_vars=ON_HOST)
    assert again["rc"] == 0 and again["report"]["changed"] is False, again["report"]


def test_leaf_key_is_made_on_the_host_and_only_the_csr_is_signed(rs):
    keys = {s["name"]: _public(s["key_file"]) for s in rs.servers}
    run = rs.playbook("rotate.yml", extra_vars=dict(ON_HOST, ca_rotation_nats_reload_leaf_renew_before="30d"))
    assert run["rc"] == 0, run["stdout"][-3000:] + run["stderr"][-2000:]
    cluster = run["report"]["clusters"]["local"]
    assert sorted(cluster["renewed"]) == sorted(keys), cluster
    for server in rs.servers:
        assert _public(server["key_file"]) != keys[server["name"]], "a new key"
        assert _public(server["key_file"]) == _public(server["cert_file"]), "the certificate is of the key made on the host"
        assert not Path(server["key_file"] + ".pending").exists()
        assert oct(Path(server["key_file"]).stat().st_mode & 0o777) == "0o600"
        cert = x509.load_pem_x509_certificate(Path(server["cert_file"]).read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        # the inventory's names (OpenBao adds the common name itself)
        assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", server["name"]}
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # the servers serve the new leaves (they were reloaded), and the next run keeps them
    for server in rs.servers:
        ok, detail = rs.handshake(*rs.issue_client_leaf(rs.base / f"c-{server['name']}"), server)
        assert ok, detail
    again = rs.playbook("rotate.yml", extra_vars=ON_HOST)
    assert again["rc"] == 0 and again["report"]["clusters"]["local"]["renewed"] == [], again["report"]


# The system Python of the VMs people run NATS on: Ubuntu 22.04 has python3-cryptography 3.4.8, Debian 12 has 38.0.4
# (RHEL 9: 36.0.1). The host step must work with them: no venv on the VM, only its own packages.
HOST_CRYPTOGRAPHY = ["3.4.8", "38.0.4"]


@pytest.fixture(scope="module")
def host_python(tmp_path_factory):
    """A Python per cryptography version with nothing but that package installed (from PyPI), like a VM's system
    Python; the venvs are kept under .build/hostpy between runs."""
    made = {}

    def python(version):
        if version not in made:
            root = Path(__file__).resolve().parents[2] / ".build" / "hostpy" / f"cryptography-{version}"
            exe = root / "bin" / "python"
            probe = [str(exe), "-c", "import cryptography; print(cryptography.__version__)"]
            if not exe.exists() or subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip() != version:
                subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
                subprocess.run([str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                f"cryptography=={version}"], check=True)
            made[version] = str(exe)
        return made[version]
    return python


@pytest.mark.parametrize("version", HOST_CRYPTOGRAPHY)
def test_host_step_runs_on_the_system_cryptography_of_common_vms(rs, host_python, version):
    """Leaf key and CSR made, bundle checked and written, servers reloaded and proven by a host Python whose
    cryptography predates the controller's (no not_valid_after_utc, verify_directly_issued_by or
    public_key_algorithm_oid there)."""
    keys = {s["name"]: _public(s["key_file"]) for s in rs.servers}
    extra = dict(ON_HOST, ca_rotation_nats_reload_leaf_renew_before="30d", ansible_python_interpreter=host_python(version))
    run = rs.playbook("rotate.yml", extra_vars=extra)
    assert run["rc"] == 0, run["stdout"][-3000:] + run["stderr"][-2000:]
    cluster = run["report"]["clusters"]["local"]
    assert sorted(cluster["renewed"]) == sorted(keys), cluster
    for server in rs.servers:
        assert _public(server["key_file"]) != keys[server["name"]], "a new key, made by the host's cryptography"
        assert _public(server["key_file"]) == _public(server["cert_file"])
    assert rs.ca_file_sha256s() == {run["report"]["bundle_sha256"]}

"""The SSH fleet's pure logic (scripts/catools/vmfleet.py): input checks, addresses, configurations, inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from catools.procs import StackError
from catools import vmfleet


def _vm(index: int, root: Path = Path("/fleet/vms")) -> dict:
    name = f"vm-{index}"
    vm = vmfleet.vm_layout(root / name, name)
    address = f"127.50.60.{10 + index}"
    vm.update(address=address, user=vmfleet.user_name("abc123", index), alt_names=[name], ip_sans=[address],
              ssh_port=2200 + index, client_port=4200 + index, cluster_port=6200 + index, monitor_port=8200 + index,
              host_public_key=f"ssh-ed25519 AAAAkey{index}")
    return vm


@pytest.mark.parametrize("value", [0, -1, vmfleet.MAX_VMS + 1, "three", None, True, 2.5j])
def test_a_bad_number_of_vms_is_refused_naming_the_option(value):
    with pytest.raises(StackError, match="--vms"):
        vmfleet.check_count(value)


def test_a_number_of_vms_in_range_is_taken():
    assert vmfleet.check_count("3") == 3 and vmfleet.check_count(vmfleet.MAX_VMS) == vmfleet.MAX_VMS


def test_each_vm_has_its_own_loopback_address_in_the_fleets_block():
    assert vmfleet.addresses((151, 20), 3) == ["127.151.20.10", "127.151.20.11", "127.151.20.12"]
    with pytest.raises(StackError, match="outside"):
        vmfleet.addresses((0, 1), 1)
    with pytest.raises(StackError, match="at most"):
        vmfleet.addresses((100, 1), 250)


def test_user_names_are_valid_login_names():
    assert vmfleet.user_name("3f9a2c", 9) == "cafleet-3f9a2c-9"
    with pytest.raises(StackError, match="not a valid login name"):
        vmfleet.user_name("X" * 30, 1)


@pytest.mark.parametrize("value", ["", "Fleet", "1vm", "a b", "x" * 40])
def test_a_bad_name_is_refused_naming_what_it_is(value):
    with pytest.raises(StackError, match="the VM name prefix"):
        vmfleet.check_name(value, "the VM name prefix")


def test_sshd_listens_on_the_vms_address_only_and_lets_in_its_user_with_the_fleet_key_only():
    vm = _vm(1)
    lines = vmfleet.sshd_config(vm).splitlines()
    assert "ListenAddress 127.50.60.11:2201" in lines
    assert f"AllowUsers {vm['user']}" in lines and f"AuthorizedKeysFile {vmfleet.AUTHORIZED_KEYS}" in lines
    assert "PasswordAuthentication no" in lines and "PermitRootLogin no" in lines
    assert f"HostKey {vm['host_key']}" in lines and f"PidFile {vm['sshd_pid_file']}" in lines


def test_the_nats_config_routes_to_the_other_vms_and_a_single_vm_is_standalone():
    vms = [_vm(i) for i in range(3)]
    passwords = {"app": "pa", "sys": "ps", "announcer": "pn"}
    conf = vmfleet.nats_config(vms[0], vms, "fleet", passwords)
    assert 'listen: "127.50.60.10:4200"' in conf and 'http: "127.50.60.10:8200"' in conf
    assert '"nats-route://127.50.60.11:6201", "nats-route://127.50.60.12:6202"' in conf
    assert "127.50.60.10:6200\"\n  routes" in conf and "nats-route://127.50.60.10" not in conf
    assert f'ca_file: "{vms[0]["ca_file"]}"' in conf and "verify: true" in conf
    assert "cluster {" not in vmfleet.nats_config(vms[0], vms[:1], "fleet", passwords)


def test_the_inventory_has_one_host_per_vm_with_ssh_become_and_its_targets():
    vms = [_vm(i) for i in range(2)]
    info = {"group": "vmfleet", "cluster": "fleet", "vms": vms, "client_key": "/k/id", "known_hosts": "/k/known_hosts",
            "python": "/py"}
    hosts = vmfleet.inventory(info)["all"]["children"]["nats_clusters"]["children"]["vmfleet"]["hosts"]
    assert sorted(hosts) == ["vm-0", "vm-1"]
    assert {h["ca_rotation_cluster_name"] for h in hosts.values()} == {"fleet"}, "one cluster spread over the VMs"
    host = hosts["vm-1"]
    assert (host["ansible_connection"], host["ansible_host"], host["ansible_port"], host["ansible_user"]) == (
        "ssh", "127.50.60.11", 2201, "cafleet-abc123-1")
    assert host["ansible_become"] is True and host["ansible_become_method"] == "sudo"
    assert host["ca_rotation_nats_reload_run_on"] == "host" and host["ansible_python_interpreter"] == "/py"
    assert "UserKnownHostsFile=/k/known_hosts" in host["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
    (target,) = host["ca_rotation_nats_reload_targets"]
    assert target["url"] == "tls://127.50.60.11:4201" and target["monitor_url"] == "http://127.50.60.11:8201"
    assert target["alt_names"] == ["vm-1"] and target["ip_sans"] == ["127.50.60.11"]
    assert target["ca_file"] == "/fleet/vms/vm-1/etc/nats/ca/ca.crt" and target["pid_file"].endswith("var/run/nats/nats.pid")


def test_known_hosts_pins_each_vms_host_key_at_its_address_and_port():
    assert vmfleet.known_hosts([_vm(0), _vm(1)]) == (
        "[127.50.60.10]:2200 ssh-ed25519 AAAAkey0\n[127.50.60.11]:2201 ssh-ed25519 AAAAkey1\n")


def test_descendants_follow_the_process_tree_and_nothing_else():
    parents = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20}
    assert sorted(vmfleet.descendants(10, parents)) == [11, 12, 13]
    assert vmfleet.descendants(12, parents) == []

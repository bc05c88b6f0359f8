"""The main job end to end: real guests under libvirt, reached over SSH.

One module-scoped pair of nodes is booted once (booting is the expensive part under TCG);
the tests below then check what a user relies on, each against the real guests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Lab, domain_names

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pair(lab: Lab) -> dict[str, dict]:
    """`vnode up` of two nodes at once, spelled two ways; returns the --json objects by name."""
    code, nodes = lab.run_json("up", "1", f"{lab.stem}2")
    assert code == 0, nodes
    return {node["name"]: node for node in nodes}


def test_the_network_reserves_every_pool_name_up_front(lab: Lab, pair: dict) -> None:
    network = lab.network_xml()
    for number in (0, 17, 30):
        mac = f"{_mac_prefix(lab)}:{number:02d}"
        assert f"<host mac='{mac}' name='{lab.name(number)}' ip='{lab.ip_of(number)}'/>" in network
    assert "<forward" not in network  # the test network is isolated


def test_up_reports_every_node_ready_with_its_fixed_address(lab: Lab, pair: dict) -> None:
    assert set(pair) == {lab.name(1), lab.name(2)}
    for number in (1, 2):
        node = pair[lab.name(number)]
        assert node["state"] == "ready"
        assert node["ip"] == lab.ip_of(number)
        assert node["mac"] == f"{_mac_prefix(lab)}:{number:02d}"
        assert node["distro"] == "d12"
        assert node["seconds"] > 0


def test_guest_hostname_and_address_are_the_planned_ones(lab: Lab, pair: dict) -> None:
    for number in (1, 2):
        result = lab.ssh(str(number), "hostname; ip -4 -o addr show scope global")
        assert result.returncode == 0, result.stderr
        hostname, addresses = result.stdout.split("\n", 1)
        assert hostname == lab.name(number)
        # On the NIC cloud-init renamed (network-config's set-name), whatever the distro's
        # own naming scheme called it.
        assert addresses.split()[1] == "vnode0"
        assert f"inet {lab.ip_of(number)}/24" in addresses


def test_the_address_is_static_from_network_config_not_a_dhcp_lease(lab: Lab, pair: dict) -> None:
    # The reservation would give the same address over DHCP; no DHCP client must be running,
    # which shows cloud-init applied vnode's network-config (a rejected one falls back to DHCP).
    result = lab.ssh(
        "1", "pgrep -a 'dhclient|dhcpcd|udhcpc' || echo none; cat /etc/network/interfaces.d/*"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("none"), result.stdout
    assert f"address {lab.ip_of(1)}/24" in result.stdout


def test_root_logs_in_by_key_only(lab: Lab, pair: dict) -> None:
    sshd = lab.ssh("1", "sshd -T").stdout.splitlines()
    assert "passwordauthentication no" in sshd
    root_password = lab.ssh("1", "getent shadow root | cut -d: -f2").stdout.strip()
    assert root_password.startswith(("*", "!")), "root must have no usable password"
    users = lab.ssh("1", "awk -F: '$3 >= 1000 && $3 < 65534 {print $1}' /etc/passwd").stdout
    assert users.strip() == "", "no default user with a password is expected"


def test_host_key_is_the_one_vnode_recorded_and_checked_strictly(lab: Lab, pair: dict) -> None:
    recorded = _known_host_key(lab, lab.name(1))
    served = lab.ssh("1", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    assert recorded == served
    # The same ssh, with a known_hosts that lacks the key, must refuse to connect.
    empty = lab.state / "empty_known_hosts"
    empty.write_text("")
    argv = _ssh_argv(lab, "1")
    argv = [a.replace(str(lab.known_hosts), str(empty)) for a in argv]
    refused = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "host key" in refused.stderr.lower()


def test_nodes_share_no_host_key(lab: Lab, pair: dict) -> None:
    assert _known_host_key(lab, lab.name(1)) != _known_host_key(lab, lab.name(2))


def test_siblings_resolve_and_reach_each_other_by_name(lab: Lab, pair: dict) -> None:
    # No ping in minimal images: bash's /dev/tcp reads the sibling's sshd banner instead.
    sibling = lab.name(2)
    result = lab.ssh(
        "1",
        f"getent hosts {sibling}; "
        f"timeout 10 bash -c 'exec 3<>/dev/tcp/{sibling}/22; head -c 8 <&3'",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == lab.ip_of(2)
    assert lines[1].startswith("SSH-2.0")


def test_list_shows_the_nodes(lab: Lab, pair: dict) -> None:
    code, nodes = lab.run_json("list")
    assert code == 0
    by_name = {n["name"]: n for n in nodes}
    assert set(by_name) == {lab.name(1), lab.name(2)}
    assert by_name[lab.name(2)]["state"] == "running"
    assert by_name[lab.name(2)]["ip"] == lab.ip_of(2)
    assert by_name[lab.name(2)]["network"] == f"libvirt:{lab.network}"


def test_log_shows_the_serial_console_from_boot(lab: Lab, pair: dict) -> None:
    result = lab.run("log", "2")
    assert result.returncode == 0
    assert "Linux version" in result.stdout  # the kernel's first line: captured from boot on
    assert f"{lab.name(2)} login:" in result.stdout
    # Where virtlogd may write on SELinux hosts too, not in vnode's state.
    assert Path(f"/var/log/libvirt/qemu/{lab.name(2)}-console.log").is_file()


def test_number_and_both_names_are_one_node(lab: Lab, pair: dict) -> None:
    outputs = {
        lab.ssh(spelling, "hostname").stdout.strip()
        for spelling in ("2", f"{lab.stem}2", f"{lab.stem}02")
    }
    assert outputs == {lab.name(2)}
    dup = lab.run("up", "2", f"{lab.stem}02")
    assert dup.returncode == 2
    assert "named twice" in dup.stderr


def test_ssh_passes_the_remote_command_through_options_and_all(lab: Lab, pair: dict) -> None:
    plain = lab.run("ssh", "2", "uname", "-s", "-n")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["Linux", lab.name(2)]
    separated = lab.run("ssh", "2", "--", "uname", "-n")
    assert separated.stdout.strip() == lab.name(2)
    failing = lab.run("ssh", "2", "exit 3")
    assert failing.returncode == 3  # the remote command's status is vnode ssh's


def test_recreating_a_node_gives_a_fresh_disk_and_key_without_warnings(
    lab: Lab, pair: dict
) -> None:
    assert lab.ssh("1", "touch /root/was-here").returncode == 0
    old_key = _known_host_key(lab, lab.name(1))
    code, nodes = lab.run_json("up", f"{lab.stem}01")
    assert code == 0, nodes
    assert nodes[0]["state"] == "ready"
    assert nodes[0]["ip"] == lab.ip_of(1)
    assert _known_host_key(lab, lab.name(1)) != old_key
    result = lab.ssh("1", "test -e /root/was-here && echo stale || echo fresh")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fresh"
    assert "changed" not in result.stderr.lower()
    # The sibling was not touched.
    assert lab.ssh("2", "hostname").returncode == 0


def test_bad_input_exits_2_and_creates_nothing(lab: Lab, pair: dict) -> None:
    before = domain_names(lab.stem)
    for args in (
        ["x"],
        ["3:"],
        [":d12"],
        ["99"],
        ["3:nosuchdistro"],
        ["nostem3"],
        ["3", "--memory", "-5"],
    ):
        result = lab.run("up", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert domain_names(lab.stem) == before


def test_a_foreign_domain_is_never_replaced_or_destroyed(lab: Lab, pair: dict) -> None:
    name = lab.name(9)
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    xml_file = lab.state / "foreign.xml"
    xml_file.write_text(xml)
    subprocess.run(
        ["virsh", "-c", "qemu:///system", "define", str(xml_file)], check=True, capture_output=True
    )
    try:
        up = lab.run("up", "9")
        assert up.returncode == 2
        assert "did not create" in up.stderr
        down = lab.run("destroy", "9")
        assert down.returncode == 2
        assert name in domain_names(lab.stem)
    finally:
        subprocess.run(["virsh", "-c", "qemu:///system", "undefine", name], capture_output=True)


def test_timeout_is_reported_and_leaves_nothing(lab: Lab, pair: dict) -> None:
    code, nodes = lab.run_json("up", "5", "--timeout", "3")
    assert code == 1
    assert nodes[0]["state"] == "timeout"
    assert lab.name(5) not in domain_names(lab.stem)
    assert not (lab.state / "nodes" / lab.name(5)).exists()


def test_a_kvm_crash_is_reported_as_failed_not_as_a_timeout(lab: Lab, pair: dict) -> None:
    if not Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm on this host")
    code, nodes = lab.run_json("up", "6", "--virt-type", "kvm", "--timeout", "300")
    if nodes[0]["state"] == "ready":  # KVM works on this host: nothing to report
        assert code == 0
        return
    assert code == 1
    assert nodes[0]["state"] == "failed", nodes
    assert "kvm" in nodes[0]["detail"].lower()


def test_destroy_removes_everything_and_is_idempotent(lab: Lab, pair: dict) -> None:
    result = lab.run("destroy", "1", f"{lab.stem}02")
    assert result.returncode == 0, result.stderr
    assert f"{lab.name(1)}: destroyed" in result.stdout
    remaining = domain_names(lab.stem)
    assert lab.name(1) not in remaining and lab.name(2) not in remaining
    assert not any((lab.state / "nodes").iterdir())
    for number in (1, 2):
        assert not Path(f"/var/log/libvirt/qemu/{lab.name(number)}-console.log").exists()
    assert lab.known_hosts.read_text().strip() == ""
    network = lab.network_xml()
    # The address stays reserved for the pool's name: the next vt01 gets it again.
    assert f"name='{lab.name(1)}' ip='{lab.ip_of(1)}'" in network
    again = lab.run("destroy", "1")
    assert again.returncode == 0
    assert f"{lab.name(1)}: absent" in again.stdout


def _known_host_key(lab: Lab, name: str) -> list[str]:
    for line in lab.known_hosts.read_text().splitlines():
        host, *key = line.split()
        if host == name:
            return key[:2]
    raise AssertionError(f"{name} not in {lab.known_hosts}")


def _ssh_argv(lab: Lab, node: str) -> list[str]:
    from vnode.api import ssh_argv
    from vnode.session import Session

    with Session.open([lab.config_path]) as session:
        return ssh_argv(node, [], session)


def _mac_prefix(lab: Lab) -> str:
    for line in lab.config_path.read_text().splitlines():
        if line.startswith("mac_prefix"):
            return line.split('"')[1]
    raise AssertionError("no mac_prefix")

"""Several NICs per node on each guest network stack, booted: three nodes, each with a NIC on
the lab's network and one on a second vnode-managed, isolated libvirt network ("storage"),
made by one `up` with a repeated --network. The guests are Debian 12 (ifupdown), Debian 13
with netplan + systemd-networkd (Ubuntu's stack, as Ubuntu's and Debian's own cloud images)
and Debian 13 with NetworkManager (Fedora's), the last two with cloud-init 25.x.

Over SSH: each NIC has its MAC (the node's own on vnode0, the derived one on vnode1) and its
address from the node's number on its network, only vnode0 has the resolver and the lab's
DNS; the intended renderer wrote the configuration (and no other), and cloud-init 25.x itself
accepts what vnode rendered; the nodes reach each other on the storage network. Then `vnode
list --json` shows the NICs, `vnode plan` of a lab file keeps the node whose networks match
and replaces the one whose do not, and bad input is one line that makes nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    IMAGE_STORE,
    TEST_DISTRO,
    Lab,
    cleanup_lab,
    domain_names,
    free_octet,
    make_lab,
)

pytestmark = pytest.mark.integration

IFUPDOWN, NETPLAN, NM = 1, 2, 3
DISTRO_OF = {IFUPDOWN: TEST_DISTRO, NETPLAN: "d13", NM: "d13-nm"}


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def lab(host_ready: None) -> Iterator[tuple[Lab, str, str]]:
    """The module's lab with a second network of vnode's own: (lab, its name, its /24's
    first three octets)."""
    made = make_lab("vn")
    octet = free_octet("10.232")
    storage = f"{made.network}-s"
    with made.config_path.open("a") as config:
        config.write(f'\n[libvirt_network.networks."{storage}"]\nsubnet = "10.232.{octet}.0/24"\n')
    try:
        yield made, storage, f"10.232.{octet}"
    finally:
        cleanup_lab(made)
        _virsh("net-destroy", storage)
        _virsh("net-undefine", storage)


@pytest.fixture(scope="module")
def nodes(lab: tuple[Lab, str, str]) -> dict[int, dict]:
    made, storage, _ = lab
    for distro in ("d13", "d13-nm"):
        if not (IMAGE_STORE / f"{distro}.qcow2").exists():
            pytest.fail(f"no {distro} image: `make test` builds it (vnode images build {distro})")
    specs = [f"{n}:{d}" for n, d in DISTRO_OF.items()]
    networks = ["--network", made.network, "--network", f"libvirt:{storage}"]
    # Debian 13's systemd boots slower than 12's under plain emulation: room to spare.
    code, results = made.run_json("up", *specs, *networks, "--timeout", "600", timeout=900)
    assert code == 0, [(n["name"], n["state"], n.get("detail")) for n in results]
    return {int(node["name"][-2:]): node for node in results}


def _ssh(made: Lab, number: int, command: str) -> str:
    result = made.ssh(str(number), command)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


def _further_mac(made: Lab, number: int) -> str:
    """NIC 1's MAC: the node's own with bit 2 of the first byte flipped (52: -> 56:)."""
    own = next(n for n in made.run_json("list")[1] if n["name"] == made.name(number))["mac"]
    return "56" + own[2:]


@pytest.mark.parametrize("number", [IFUPDOWN, NETPLAN, NM])
def test_each_nic_has_its_mac_and_its_address(
    lab: tuple[Lab, str, str], nodes: dict, number: int
) -> None:
    made, _, storage_prefix = lab
    own = nodes[number]["mac"]
    links = _ssh(made, number, "cat /sys/class/net/vnode0/address /sys/class/net/vnode1/address")
    assert links.split() == [own, _further_mac(made, number)]
    addresses = _ssh(made, number, "ip -4 -o addr show scope global")
    by_nic = {line.split()[1]: line.split()[3] for line in addresses.splitlines()}
    assert by_nic == {
        "vnode0": f"{made.ip_of(number)}/24",
        "vnode1": f"{storage_prefix}.{100 + number}/24",
    }
    # Only the node's own NIC carries a route out and the resolver.
    assert "default" not in _ssh(made, number, "ip -4 route")
    if number == NETPLAN:
        assert f"{storage_prefix}.1" not in _ssh(made, number, "resolvectl dns vnode1; true")
        plan = _ssh(made, number, "cat /etc/netplan/50-cloud-init.yaml")
        assert _further_mac(made, number) in plan and "vnode1" in plan
    elif number == NM:
        state = _ssh(made, number, "nmcli -g GENERAL.STATE device show vnode1")
        assert state.startswith("100"), state  # connected
        keyfile = "/etc/NetworkManager/system-connections/cloud-init-vnode1.nmconnection"
        assert _further_mac(made, number) in _ssh(made, number, f"cat {keyfile}").lower()
        assert f"{storage_prefix}.1" not in _ssh(made, number, "cat /etc/resolv.conf")
    else:
        assert f"{storage_prefix}.1" not in _ssh(made, number, "cat /etc/resolv.conf")


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_hostname_route_and_dns_are_the_planned_ones(
    lab: tuple[Lab, str, str], nodes: dict, number: int
) -> None:
    made, _, _ = lab
    assert _ssh(made, number, "hostname").strip() == made.name(number)
    dns = f"{made.subnet_prefix}.1"
    if number == NETPLAN:  # systemd-resolved holds the per-link DNS
        link = _ssh(made, number, "resolvectl dns vnode0; resolvectl domain vnode0")
        assert dns in link and "lab" in link
    else:  # NetworkManager writes resolv.conf itself
        resolv = _ssh(made, number, "cat /etc/resolv.conf")
        assert f"nameserver {dns}" in resolv and "search lab" in resolv


def test_netplan_guest_is_configured_by_netplan_and_networkd_only(
    lab: tuple[Lab, str, str], nodes: dict
) -> None:
    made, _, storage_prefix = lab
    plan = yaml.safe_load(_ssh(made, NETPLAN, "cat /etc/netplan/50-cloud-init.yaml"))
    nics = plan["network"]["ethernets"]
    assert nics["vnode0"]["set-name"] == "vnode0"
    assert nics["vnode0"]["addresses"] == [f"{made.ip_of(NETPLAN)}/24"]
    assert nics["vnode1"]["addresses"] == [f"{storage_prefix}.{100 + NETPLAN}/24"]
    generated = _ssh(made, NETPLAN, "ls /run/systemd/network").split()
    assert {"10-netplan-vnode0.network", "10-netplan-vnode1.network"} <= set(generated)
    for nic in ("vnode0", "vnode1"):
        state = _ssh(made, NETPLAN, f"networkctl status {nic} --no-pager | sed -n 's/ *State: //p'")
        assert state.startswith("routable") or state.startswith("configured"), (nic, state)
    leftovers = "ls /etc/network/interfaces.d /etc/NetworkManager/system-connections 2>/dev/null"
    assert _ssh(made, NETPLAN, f"{leftovers}; true").strip() == ""


def test_networkmanager_guest_is_configured_by_keyfiles_only(
    lab: tuple[Lab, str, str], nodes: dict
) -> None:
    made, _, _ = lab
    keyfile = _ssh(
        made, NM, "cat /etc/NetworkManager/system-connections/cloud-init-vnode0.nmconnection"
    )
    assert "method=manual" in keyfile and f"address1={made.ip_of(NM)}/24" in keyfile
    assert _ssh(made, NM, "nmcli -g GENERAL.STATE device show vnode0").startswith("100")
    leftovers = "ls /etc/netplan /etc/network/interfaces.d 2>/dev/null; true"
    assert _ssh(made, NM, leftovers).strip() == ""


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_cloud_init_25_accepts_what_vnode_rendered(
    lab: tuple[Lab, str, str], nodes: dict, number: int
) -> None:
    made, _, _ = lab
    version = _ssh(made, number, "cloud-init --version 2>&1").split()[-1]
    assert int(version.split(".")[0]) >= 25, version
    status = made.ssh(str(number), "cloud-init status --wait --long")
    assert "status: done" in status.stdout and "errors: []" in status.stdout, status.stdout
    schema = made.ssh(str(number), "cloud-init schema --system 2>&1")
    assert schema.returncode == 0, schema.stdout
    assert "Valid schema user-data" in schema.stdout
    assert "Valid schema network-config" in schema.stdout


def test_the_nodes_reach_each_other_on_the_second_network(
    lab: tuple[Lab, str, str], nodes: dict
) -> None:
    made, storage, storage_prefix = lab
    first = f"{storage_prefix}.{100 + IFUPDOWN}"
    # Node 2 finds node 1's sshd on the storage network, with the host key vnode recorded.
    scan = _ssh(made, NETPLAN, f"ssh-keyscan -T 30 -t ed25519 {first} 2>/dev/null")
    # Debian 13's ssh-keyscan also prints a comment line with the server's banner.
    scanned = next(line.split() for line in scan.splitlines() if not line.startswith("#"))
    recorded = next(
        line.split()[1:]
        for line in made.known_hosts.read_text().splitlines()
        if line.split()[0].split(",")[0] == made.name(IFUPDOWN)
    )
    assert scanned[1:] == recorded, (scanned, recorded)
    neighbour = _ssh(made, NETPLAN, f"ip neigh show {first}")
    assert _further_mac(made, IFUPDOWN) in neighbour and "vnode1" in neighbour
    # And the NetworkManager node reaches node 1's sshd there through its own vnode1.
    route = _ssh(made, NM, f"ip -4 route get {first}")
    assert "dev vnode1" in route, route
    banner = f"timeout 30 bash -c 'exec 3<>/dev/tcp/{first}/22; head -c 4 <&3'"
    assert _ssh(made, NM, banner) == "SSH-"
    # The storage network reserves node 1's further NIC under NAME-NETWORK.
    xml = _virsh("net-dumpxml", storage).stdout
    wanted = f"mac='{_further_mac(made, IFUPDOWN)}' name='{made.name(IFUPDOWN)}-{storage}'"
    assert wanted in xml.replace('"', "'"), xml


def test_list_shows_every_nic_and_plan_compares_them(
    lab: tuple[Lab, str, str], nodes: dict, tmp_path: Path
) -> None:
    made, storage, _ = lab
    shapes = {n["name"]: n["shape"] for n in made.run_json("list")[1]}
    for number in (IFUPDOWN, NETPLAN, NM):
        shape = shapes[made.name(number)]
        assert shape["networks"] == [f"libvirt:{made.network}", f"libvirt:{storage}"]
        assert shape["macs"] == [nodes[number]["mac"], _further_mac(made, number)]
    path = tmp_path / "lab.toml"
    path.write_text(
        f"""[[nodes]]
spec = "{IFUPDOWN}:{TEST_DISTRO}"
networks = ["libvirt:{made.network}", "libvirt:{storage}"]

[[nodes]]
spec = "{NETPLAN}:d13"
networks = ["libvirt:{made.network}"]
"""
    )
    result = made.run("plan", str(path), "--json")
    assert result.returncode == 0, result.stderr
    planned = {node["node"]: node for node in json.loads(result.stdout)["nodes"]}
    first, second = planned[made.name(IFUPDOWN)], planned[made.name(NETPLAN)]
    assert (first["action"], second["action"]) == ("keep", "replace"), planned
    assert second["reasons"] == [
        f"networks ['libvirt:{made.network}', 'libvirt:{storage}'] -> ['libvirt:{made.network}']"
    ]


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        (["libvirt", "libvirt"], "NICs 1 and 2 are both on libvirt:"),
        (["libvirt", "nosuchkind:x"], "unknown network 'nosuchkind:x'"),
    ],
)
def test_bad_nics_are_one_line_and_make_nothing(
    lab: tuple[Lab, str, str], networks: list[str], message: str
) -> None:
    made, _, _ = lab
    before = domain_names(made.stem)
    args = [arg for network in networks for arg in ("--network", network)]
    result = made.run("up", "9", *args, "--no-wait")
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert message in result.stderr, result.stderr
    assert domain_names(made.stem) == before


def test_destroy_removes_the_nodes_with_all_their_nics(
    lab: tuple[Lab, str, str], nodes: dict
) -> None:
    made, _, _ = lab
    result = made.run("destroy", *(made.name(number) for number in DISTRO_OF))
    assert result.returncode == 0, result.stderr
    assert domain_names(made.stem) == set()
    assert not any((made.state / "nodes").iterdir())

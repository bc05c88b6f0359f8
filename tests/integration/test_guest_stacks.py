"""Guests whose network stack is Ubuntu's and Fedora's, booted: Debian 13 images built by
vnode with netplan + systemd-networkd (as Ubuntu's and Debian's own cloud images) and with
NetworkManager (as Fedora's), both with cloud-init 25.x.

Each node gets its static address from vnode's network-config (matched by MAC, NIC renamed
to vnode0); over SSH the tests check the address, hostname, routes and DNS, that the
intended renderer wrote the configuration (and no other), and that cloud-init 25.x itself
accepts what vnode rendered.
"""

from __future__ import annotations

import pytest

from tests.conftest import IMAGE_STORE, Lab

pytestmark = pytest.mark.integration

NETPLAN, NM = 1, 2
DISTRO_OF = {NETPLAN: "d13", NM: "d13-nm"}


@pytest.fixture(scope="module")
def stacks(lab: Lab) -> dict[int, dict]:
    for distro in DISTRO_OF.values():
        if not (IMAGE_STORE / f"{distro}.qcow2").exists():
            pytest.fail(f"no {distro} image: `make test` builds it (vnode images build {distro})")
    code, nodes = lab.run_json("up", *(f"{n}:{d}" for n, d in DISTRO_OF.items()))
    assert code == 0, nodes
    return {int(node["name"][-2:]): node for node in nodes}


def _ssh(lab: Lab, number: int, command: str) -> str:
    result = lab.ssh(str(number), command)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_address_hostname_route_and_dns_are_the_planned_ones(
    lab: Lab, stacks: dict, number: int
) -> None:
    assert _ssh(lab, number, "hostname").strip() == lab.name(number)
    addresses = _ssh(lab, number, "ip -4 -o addr show scope global").split()
    assert addresses[1] == "vnode0" and f"{lab.ip_of(number)}/24" in addresses
    # The lab's network is isolated (forward = none): no default route is given.
    assert "default" not in _ssh(lab, number, "ip -4 route")
    dns = f"{lab.subnet_prefix}.1"
    if number == NETPLAN:  # systemd-resolved holds the per-link DNS
        link = _ssh(lab, number, "resolvectl dns vnode0; resolvectl domain vnode0")
        assert dns in link and "lab" in link
    else:  # NetworkManager writes resolv.conf itself
        resolv = _ssh(lab, number, "cat /etc/resolv.conf")
        assert f"nameserver {dns}" in resolv and "search lab" in resolv


def test_netplan_guest_is_configured_by_netplan_and_networkd_only(lab: Lab, stacks: dict) -> None:
    plan = _ssh(lab, NETPLAN, "cat /etc/netplan/50-cloud-init.yaml")
    assert "set-name: vnode0" in plan and lab.ip_of(NETPLAN) in plan
    assert "10-netplan-vnode0.network" in _ssh(lab, NETPLAN, "ls /run/systemd/network")
    state = _ssh(lab, NETPLAN, "networkctl status vnode0 --no-pager | sed -n 's/ *State: //p'")
    assert state.startswith("routable") or state.startswith("configured"), state
    leftovers = "ls /etc/network/interfaces.d /etc/NetworkManager/system-connections 2>/dev/null"
    assert _ssh(lab, NETPLAN, f"{leftovers}; true").strip() == ""


def test_networkmanager_guest_is_configured_by_a_keyfile_only(lab: Lab, stacks: dict) -> None:
    keyfile = _ssh(
        lab, NM, "cat /etc/NetworkManager/system-connections/cloud-init-vnode0.nmconnection"
    )
    assert "method=manual" in keyfile and f"address1={lab.ip_of(NM)}/24" in keyfile
    state = _ssh(lab, NM, "nmcli -g GENERAL.STATE device show vnode0")
    assert state.startswith("100"), state  # connected
    assert (
        _ssh(lab, NM, "ls /etc/netplan /etc/network/interfaces.d 2>/dev/null; true").strip() == ""
    )


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_cloud_init_25_accepts_what_vnode_rendered(lab: Lab, stacks: dict, number: int) -> None:
    version = _ssh(lab, number, "cloud-init --version 2>&1").split()[-1]
    assert int(version.split(".")[0]) >= 25, version
    status = lab.ssh(str(number), "cloud-init status --wait --long")
    assert "status: done" in status.stdout and "errors: []" in status.stdout, status.stdout
    schema = lab.ssh(str(number), "cloud-init schema --system 2>&1")
    assert schema.returncode == 0, schema.stdout
    assert "Valid schema user-data" in schema.stdout
    assert "Valid schema network-config" in schema.stdout

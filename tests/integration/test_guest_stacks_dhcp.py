"""Guests with Ubuntu's and Fedora's network stacks on a bridge, addressed by the site's DHCP.

The d13 (netplan + systemd-networkd) and d13-nm (NetworkManager) images of
test_guest_stacks.py, booted in one `vnode up` on the site's bridge (tests/integration/
conftest.py: a dnsmasq with a reservation per node, no router). network-config asks for DHCP
on the NIC matched by MAC; the checks read what each guest's own stack made of the lease.
"""

from __future__ import annotations

import pytest

from tests.conftest import IMAGE_STORE
from tests.integration.conftest import SITE_DOMAIN, Site, settle

pytestmark = pytest.mark.integration

NETPLAN, NM = 1, 2
DISTRO_OF = {NETPLAN: "d13", NM: "d13-nm"}


@pytest.fixture(scope="module")
def leased(bridge_site: Site) -> dict[int, dict]:
    for distro in DISTRO_OF.values():
        if not (IMAGE_STORE / f"{distro}.qcow2").exists():
            pytest.fail(f"no {distro} image: `make test` builds it (vnode images build {distro})")
    # Generous: with the 2-core host at load 12 these TCG guests took 8-11 min to answer SSH
    # (a timeout, not a delay: a quieter host returns as soon as they answer).
    code, nodes = bridge_site.lab.run_json(
        "up", *(f"{n}:{d}" for n, d in DISTRO_OF.items()), "--timeout", "900", timeout=1200
    )
    assert code == 0, nodes
    settle(bridge_site.lab, list(DISTRO_OF))
    return {int(node["name"][-2:]): node for node in nodes}


def _ssh(site: Site, number: int, command: str) -> str:
    result = site.lab.ssh(str(number), command)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_the_nic_holds_the_reserved_lease_and_the_node_its_name(
    bridge_site: Site, leased: dict, number: int
) -> None:
    host = bridge_site.reservation(number)
    assert leased[number]["ip"] == host.ip  # node 1 through the site's DNS, node 2 without
    assert _ssh(bridge_site, number, "hostname").strip() == host.name
    addresses = _ssh(bridge_site, number, "ip -4 -o addr show scope global").split()
    assert addresses[1] == "vnode0" and f"{host.ip}/24" in addresses
    # The site hands out no router: no default route may appear.
    assert "default" not in _ssh(bridge_site, number, "ip -4 route")


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_dns_server_and_domain_come_from_the_lease(
    bridge_site: Site, leased: dict, number: int
) -> None:
    if number == NETPLAN:  # networkd hands the lease's DNS to resolved, per link
        dns = _ssh(bridge_site, number, "resolvectl dns vnode0; resolvectl domain vnode0")
    else:  # NetworkManager writes resolv.conf itself
        dns = _ssh(bridge_site, number, "cat /etc/resolv.conf")
    assert bridge_site.server in dns, dns
    if number == NM:
        assert SITE_DOMAIN in dns, dns
    # networkd (and so netplan, on Ubuntu too) ignores the lease's domain by default
    # (UseDomains=no): a netplan guest gets the site's DNS server but no search domain.


def test_each_stack_rendered_dhcp_for_the_nic(bridge_site: Site, leased: dict) -> None:
    plan = _ssh(bridge_site, NETPLAN, "cat /etc/netplan/50-cloud-init.yaml")
    assert "dhcp4: true" in plan and "set-name:" in plan and "vnode0" in plan, plan
    assert "DHCP=ipv4" in _ssh(bridge_site, NETPLAN, "cat /run/systemd/network/*vnode0.network")
    keyfile = _ssh(
        bridge_site, NM, "cat /etc/NetworkManager/system-connections/cloud-init-vnode0.nmconnection"
    )
    assert "method=auto" in keyfile, keyfile
    assert _ssh(bridge_site, NM, "nmcli -g GENERAL.STATE device show vnode0").startswith("100")

"""vnode's own libvirt network: addresses from pool numbers, the network it creates."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vnode.errors import UsageError
from vnode.model import NodeIdentity, StaticAddress
from vnode.pools import Pool
from vnode_plugins.libvirt_network import LibvirtNetwork, LibvirtNetworkSettings

POOLS = (Pool(stem="vnode"), Pool(stem="lab", mac_prefix="52:54:00:00:01", last=9))


def _network(**settings: object) -> LibvirtNetwork:
    return LibvirtNetwork(
        name="vnode",
        settings=LibvirtNetworkSettings(**settings),
        pools=POOLS,
        state_dir=Path("/nonexistent"),
        connection=None,
    )


def _node(pool: Pool, number: int) -> NodeIdentity:
    return NodeIdentity(name=pool.name(number), number=number, pool=pool.stem, mac=pool.mac(number))


def test_a_nodes_address_is_the_pool_offset_plus_its_number() -> None:
    network = _network(subnet="10.9.0.0/24", address_offsets={"lab": 200})
    assert network.static_address(_node(POOLS[0], 18)) == StaticAddress(
        ip="10.9.0.118", prefix=24, gateway="10.9.0.1", dns=("10.9.0.1",), search=("vnode",)
    )
    assert network.static_address(_node(POOLS[1], 3)).ip == "10.9.0.203"


def test_an_isolated_network_gives_no_gateway_route() -> None:
    address = _network(forward="none").static_address(_node(POOLS[0], 1))
    assert address.gateway is None and address.dns == ("192.168.150.1",)


def test_a_number_beyond_the_subnet_is_bad_input() -> None:
    network = _network(subnet="10.9.0.0/27", address_offsets={"vnode": 2, "lab": 20})
    with pytest.raises(UsageError, match=r"vnode30: no address for it in 10\.9\.0\.0/27"):
        network.static_address(_node(POOLS[0], 30))


def test_offsets_for_pools_that_do_not_exist_are_bad_input() -> None:
    with pytest.raises(UsageError, match="address_offsets names no pool: nosuch"):
        _network(address_offsets={"nosuch": 150})


def test_the_created_network_reserves_every_pool_name_below_its_dhcp_range() -> None:
    root = ET.fromstring(_network(subnet="10.9.0.0/24", address_offsets={"lab": 200}).network_xml())
    ip = root.find("ip")
    assert (ip.get("address"), ip.get("prefix") or ip.get("netmask")) in (
        ("10.9.0.1", "24"),
        ("10.9.0.1", "255.255.255.0"),
    )
    dhcp_range = ip.find("dhcp/range")
    assert (dhcp_range.get("start"), dhcp_range.get("end")) == ("10.9.0.2", "10.9.0.99")
    hosts = {h.get("name"): (h.get("mac"), h.get("ip")) for h in ip.findall("dhcp/host")}
    assert len(hosts) == 31 + 10
    assert hosts["vnode18"] == ("52:54:00:00:00:18", "10.9.0.118")
    assert hosts["lab09"] == ("52:54:00:00:01:09", "10.9.0.209")
    names = {n.text: h.get("ip") for h in root.findall("dns/host") for n in h.findall("hostname")}
    assert names["vnode18"] == "10.9.0.118"
    assert root.find("domain").get("name") == "vnode"
    assert root.find("forward").get("mode") == "nat"


def test_an_isolated_network_has_no_forward() -> None:
    assert ET.fromstring(_network(forward="none").network_xml()).find("forward") is None


def test_dual_stack_gives_each_node_an_ipv6_address_from_its_number() -> None:
    network = _network(subnet="10.9.0.0/24", subnet6="fd52:5400:150::/64")
    address = network.static_address(_node(POOLS[0], 18))
    assert (address.ip, address.ip6, address.prefix6) == ("10.9.0.118", "fd52:5400:150::118", 64)
    root = ET.fromstring(network.network_xml())
    [v6] = root.findall("ip[@family='ipv6']")
    assert (v6.get("address"), v6.get("prefix")) == ("fd52:5400:150::1", "64")
    named = {(h.get("ip"), h.findtext("hostname")) for h in root.findall("dns/host")}
    assert {("10.9.0.118", "vnode18"), ("fd52:5400:150::118", "vnode18")} <= named
    # IPv4 only unless asked: no IPv6 anywhere.
    plain = _network(subnet="10.9.0.0/24")
    assert plain.static_address(_node(POOLS[0], 18)).ip6 is None
    assert ET.fromstring(plain.network_xml()).find("ip[@family='ipv6']") is None


def test_another_host_takes_the_next_ipv6_subnet() -> None:
    from vnode_plugins.libvirt_network import nth_subnet

    assert nth_subnet("fd52:5400:150::/64", 1) == "fd52:5400:150:1::/64"
    assert nth_subnet("192.168.150.0/24", 2) == "192.168.152.0/24"
    assert nth_subnet("192.168.150.0/24", 0) == "192.168.150.0/24"


@pytest.mark.parametrize(
    ("subnet6", "message"),
    [
        ("10.0.0.0/24", "not an IPv6 network"),
        ("fd00::/32", "/48 to /112"),
        ("fd00::1/64", "host bits"),
    ],
)
def test_a_bad_ipv6_subnet_is_bad_input(subnet6: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LibvirtNetworkSettings(subnet6=subnet6)

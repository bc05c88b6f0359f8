"""Several NICs per node: the MACs of further NICs, and a node planned with two NICs (domain
XML, shape record, each NIC's address) exactly as ``up`` plans it, less libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vnode import hypervisor, planning
from vnode.errors import UsageError
from vnode.model import NodeIdentity
from vnode.network import NetworkBackend
from vnode.nics import HostNetworks, nic_views, recorded_views
from vnode.pools import MAX_NICS, Pool, check_nic_macs, nic_mac, nic_owners
from vnode.session import Session
from vnode.spec import parse_spec

POOL = Pool(stem="vnode")


def test_further_nics_flip_bits_of_the_first_byte_only() -> None:
    own = POOL.mac(18)
    macs = [nic_mac(own, index) for index in range(MAX_NICS)]
    assert macs[:3] == ["52:54:00:00:00:18", "56:54:00:00:00:18", "5a:54:00:00:00:18"]
    assert len(set(macs)) == MAX_NICS
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 1 == 0 and first & 2  # unicast, locally administered, as the first
        assert (mac[2:] == own[2:] and not mac.startswith("52:54:00")) or mac == own
    # One-to-one: each MAC says whose NIC it is.
    assert [nic_owners(mac, (POOL,)) for mac in macs] == [[("vnode18", i)] for i in range(8)]
    with pytest.raises(UsageError, match="at most 8 NICs"):
        nic_mac(own, MAX_NICS)


def test_pools_of_distinct_prefixes_never_share_a_further_nic() -> None:
    pools = (POOL, Pool(stem="lab", mac_prefix="52:54:00:00:01"))
    seen = {nic_mac(p.mac(n), i) for p in pools for n in p.numbers() for i in range(MAX_NICS)}
    assert len(seen) == 2 * 31 * MAX_NICS
    check_nic_macs("vnode03", tuple(nic_mac(POOL.mac(3), i) for i in range(3)), pools)


def test_a_further_nic_that_is_another_pools_node_is_bad_input() -> None:
    # A pool whose prefix differs only in bit 2 of the first byte: its nodes' own MACs are
    # the first pool's NIC 1 MACs.
    pools = (POOL, Pool(stem="other", mac_prefix="56:54:00:00:00"))
    macs = (POOL.mac(3), nic_mac(POOL.mac(3), 1))
    with pytest.raises(
        UsageError, match="NIC 2 would have MAC 56:54:00:00:00:03, which is NIC 1's"
    ):
        check_nic_macs("vnode03", macs, pools)


def _session(tmp_path: Path, pools: str = "") -> Session:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[paths]
state = "{tmp_path / "state"}"
{pools}
[libvirt_network]
subnet = "10.7.0.0/24"
[libvirt_network.networks.storage]
subnet = "10.8.0.0/24"
"""
    )
    return Session.open([config])


def _plan(tmp_path: Path, networks: tuple[str, ...], spec: str = "3:d12", pools: str = ""):
    """A node planned as ``up`` plans it on one host, with a NIC on each network."""
    session = _session(tmp_path, pools)
    context = session.plugin_context(connect=False)
    backends = [session.plugins.network_backend(n, context) for n in networks]
    ref = parse_spec(spec, session.config.pools)
    plan = planning.plan_node(
        session,
        ref,
        session.config.defaults,
        backends[0],
        "qemu",
        further=backends[1:],
        networks=networks,
    )
    return plan, backends


def test_a_node_with_two_nics_gets_each_its_mac_network_and_address(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, ("libvirt", "libvirt:storage"))
    (nic,) = plan.nics
    assert (plan.mac, plan.network, plan.address.ip) == (
        "52:54:00:00:00:03",
        "libvirt:vnode",
        "10.7.0.103",
    )
    assert (nic.mac, nic.network, nic.address.ip, nic.interface.source) == (
        "56:54:00:00:00:03",
        "libvirt:storage",
        "10.8.0.103",
        {"network": "storage"},
    )
    # The further network is isolated unless asked: no gateway route on it.
    assert nic.address.gateway is None and plan.address.gateway == "10.7.0.1"
    devices = ET.fromstring(plan.domain_xml).find("devices")
    interfaces = [
        (i.find("mac").get("address"), i.find("source").get("network"))
        for i in devices.findall("interface")
    ]
    assert interfaces == [("52:54:00:00:00:03", "vnode"), ("56:54:00:00:00:03", "storage")]
    # The NICs follow every disk (a device's place decides nothing but PCI order).
    tags = [child.tag for child in devices]
    assert tags.index("interface") == len(devices.findall("disk"))


def test_the_shape_record_names_every_nic_and_reads_back(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, ("libvirt", "libvirt:storage"))
    ns = hypervisor.NAMESPACE
    mark = ET.fromstring(plan.domain_xml).find(f"metadata/{{{ns}}}node")
    shape = hypervisor.parse_shape(ET.tostring(_strip(mark), encoding="unicode"))
    assert shape is not None
    assert shape.networks == ("libvirt", "libvirt:storage")
    assert shape.macs == ("52:54:00:00:00:03", "56:54:00:00:00:03")
    # destroy's view of the further NICs, from the record alone
    identity = NodeIdentity(name="vnode03", number=3, pool="vnode", mac=shape.macs[0])
    ((network, view),) = recorded_views(identity, shape.networks, shape.macs)
    assert (network, view.mac, view.nic) == ("libvirt:storage", "56:54:00:00:00:03", 1)


def _strip(element: ET.Element) -> ET.Element:
    """The element as libvirt's metadata call hands it back: tags without their namespace."""
    copy = ET.fromstring(ET.tostring(element))
    for child in copy.iter():
        child.tag = child.tag.split("}", 1)[-1]
    return copy


def test_a_shape_with_a_bad_nic_record_is_unknown() -> None:
    base = "<node><shape><memory>1</memory><vcpus>1</vcpus><disk>1</disk>{}</shape></node>"
    assert hypervisor.parse_shape(base.format("")).networks == ()
    bad = "<networks>libvirt</networks><macs>52:54:00:00:00:03 56:54:00:00:00:03</macs>"
    assert hypervisor.parse_shape(base.format(bad)) is None  # two MACs, one network
    assert hypervisor.parse_shape(base.format("<macs>not-a-mac</macs>")) is None


def test_two_nics_on_one_network_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="NICs 1 and 2 are both on libvirt:vnode"):
        _plan(tmp_path, ("libvirt", "libvirt:vnode"))


def test_a_further_mac_of_another_pools_node_stops_the_plan(tmp_path: Path) -> None:
    pools = """
[[pools]]
stem = "vnode"
[[pools]]
stem = "odd"
mac_prefix = "56:54:00:00:00"
"""
    with pytest.raises(UsageError, match="which is NIC 1's of odd03"):
        _plan(tmp_path, ("libvirt", "libvirt:storage"), pools=pools)


def test_each_nic_is_reserved_and_released_by_its_own_networks_backend(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, ("libvirt", "libvirt:storage"))
    calls: list[tuple[str, str, int]] = []

    class Recording(NetworkBackend):
        def __init__(self, name: str) -> None:
            self.name = name

        def describe(self) -> str:
            return self.name

        def reserve(self, node: NodeIdentity) -> None:
            calls.append(("reserve", self.name, node.nic))

        def release(self, node: NodeIdentity) -> None:
            calls.append(("release", self.name, node.mac[:2]))

    first, second = Recording("libvirt:vnode"), Recording("libvirt:storage")
    host = HostNetworks({"libvirt:vnode": first, "libvirt:storage": second}, first)
    host.reserve(plan)
    host.release(plan)
    assert calls == [
        ("reserve", "libvirt:vnode", 0),
        ("reserve", "libvirt:storage", 1),
        ("release", "libvirt:vnode", "52"),
        ("release", "libvirt:storage", "56"),
    ]
    # destroy has no plan: the further NICs come from the node's shape record.
    calls.clear()
    identity = NodeIdentity(name="vnode03", number=3, pool="vnode", mac=plan.mac)
    further = recorded_views(identity, ("libvirt", "libvirt:storage"), plan.macs)
    HostNetworks(host.backends, first, {"vnode03": further}).release(identity)
    assert calls == [("release", "libvirt:vnode", "52"), ("release", "libvirt:storage", "56")]
    assert [view.nic for view in nic_views(plan)] == [0, 1]


def test_the_libvirt_plugin_names_a_further_nic_after_its_network(tmp_path: Path) -> None:
    plan, (own, storage) = _plan(tmp_path, ("libvirt", "libvirt:storage"))
    first, second = nic_views(plan)
    assert own.is_ours and storage.is_ours  # both vnode's: created on first use, reserved
    assert (own.host_name(first), storage.host_name(second)) == ("vnode03", "vnode03-storage")
    assert storage.dns_domain() == "storage"
    network = ET.fromstring(storage.network_xml())
    assert network.find("forward") is None  # a further network is isolated by default
    assert network.find("ip").get("address") == "10.8.0.1"


def test_a_node_with_several_nics_boots_cold_and_says_why(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, ("libvirt", "libvirt:storage"))
    assert "several NICs boot cold" in (planning._cold_only(plan) or "")
    single, _ = _plan(tmp_path, ("libvirt",))
    assert planning._cold_only(single) is None


def test_a_lab_nodes_networks_win_over_the_commands(tmp_path: Path) -> None:
    session = _session(tmp_path)
    refs = [parse_spec(spec, session.config.pools) for spec in ("1", "2")]
    options = planning.UpOptions(extra_networks=("storage",))
    shapes = {"vnode02": planning.NodeShape(networks=("bridge:br0", "libvirt:storage"))}
    chosen = planning.node_networks(session, refs, "libvirt", options, shapes)
    # A bare name is what its plugin says (a libvirt network); the first is the node's own.
    assert chosen == {
        "vnode01": ("libvirt", "libvirt:storage"),
        "vnode02": ("bridge:br0", "libvirt:storage"),
    }
    too_many = planning.UpOptions(extra_networks=tuple(f"n{i}" for i in range(8)))
    with pytest.raises(UsageError, match="at most 8 NICs"):
        planning.node_networks(session, refs, "libvirt", too_many, {})

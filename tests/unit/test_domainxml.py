"""A node's domain XML: the core's template, the NIC its backend described (attributes
checked), and whether a plugin changed it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

from vnode.domainxml import core_domain, domain_xml, interface_element, plugin_adjusted
from vnode.errors import EnvironmentProblem
from vnode.model import ConsoleSetup, Distro, Interface, NodePlan
from vnode.plugin import hookimpl
from vnode.plugins import PluginHost, PluginSource

PLAN = NodePlan(
    name="vnode03",
    number=3,
    pool="vnode",
    mac="52:54:00:00:00:03",
    distro=Distro(name="d12", family="debian", release="12", title="Debian 12", osinfo="x"),
    memory_mib=1024,
    vcpus=2,
    disk_gb=10,
    network="bridge:br0",
    virt_type="qemu",
    node_dir=Path("/var/lib/vnode/nodes/vnode03"),
    interface=Interface(type="bridge", source={"bridge": "br0"}),
    console=ConsoleSetup(log_path=Path("/var/log/libvirt/qemu/vnode03-console.log")),
)


class _Watchdog:
    @staticmethod
    @hookimpl
    def vnode_domain_xml(node: NodePlan, domain: ET.Element) -> None:
        ET.SubElement(domain.find("devices"), "watchdog", model="i6300esb")


def test_the_nic_carries_the_nodes_mac_and_the_backends_source() -> None:
    nic = interface_element(PLAN)
    assert nic.get("type") == "bridge"
    assert nic.find("source").attrib == {"bridge": "br0"}
    assert nic.find("mac").get("address") == PLAN.mac
    devices = core_domain(PLAN, "2026-01-01T00:00:00+00:00").find("devices")
    assert [n.find("mac").get("address") for n in devices.findall("interface")] == [PLAN.mac]


def test_a_source_attribute_that_is_no_xml_name_is_refused() -> None:
    bad = attrs.evolve(PLAN, interface=Interface(type="bridge", source={'x" y="': "br0"}))
    with pytest.raises(EnvironmentProblem, match="not a libvirt <source> attribute"):
        interface_element(bad)


def test_a_plugins_change_is_in_the_domain_and_is_seen_as_one() -> None:
    plain = PluginHost([])
    adjusting = PluginHost([PluginSource("watchdog", lambda: _Watchdog)])
    unchanged = attrs.evolve(PLAN, domain_xml=domain_xml(plain, PLAN))
    changed = attrs.evolve(PLAN, domain_xml=domain_xml(adjusting, PLAN))
    assert ET.fromstring(changed.domain_xml).find("devices/watchdog") is not None
    assert not plugin_adjusted(plain, unchanged)
    assert plugin_adjusted(plain, changed)


def test_a_node_with_room_to_grow_has_its_maxima_and_a_balloon() -> None:
    roomy = core_domain(attrs.evolve(PLAN, max_memory=4096, max_vcpus=4), "now")
    assert (roomy.findtext("memory"), roomy.findtext("currentMemory")) == ("4096", "1024")
    assert (roomy.findtext("vcpu"), roomy.find("vcpu").get("current")) == ("4", "2")
    assert roomy.find("devices/memballoon").get("model") == "virtio"
    plain = core_domain(PLAN, "now")  # no headroom: no balloon, nothing reserved
    assert (plain.findtext("memory"), plain.findtext("currentMemory")) == ("1024", "1024")
    assert (plain.findtext("vcpu"), plain.find("vcpu").get("current")) == ("2", "2")
    assert plain.find("devices/memballoon").get("model") == "none"

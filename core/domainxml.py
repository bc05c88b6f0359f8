"""A node's libvirt domain XML: the core's template, the NIC its network backend described,
then every plugin's adjustments (``vnode_domain_xml``)."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from vnode import hypervisor
from vnode.errors import EnvironmentProblem
from vnode.model import NodePlan

if TYPE_CHECKING:
    from vnode.plugins import PluginHost

_INTERFACE_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_-]*")


def domain_xml(plugins: PluginHost, plan: NodePlan) -> str:
    """The domain as libvirt will get it."""
    root = core_domain(plan, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    plugins.adjust_domain(plan, root)
    return ET.tostring(root, encoding="unicode")


def core_domain(plan: NodePlan, created: str) -> ET.Element:
    """The domain before plugins adjust it: the core's template and the NICs, in order."""
    from vnode.templating import render_xml

    rendered = render_xml(
        "domain.xml.j2", node=plan, namespace=hypervisor.NAMESPACE, created=created
    )
    root = ET.fromstring(rendered)
    devices = root.find("devices")
    assert devices is not None and plan.interface is not None
    from vnode.nics import nic_views

    # After the disks (the root disk, extra disks and seed come first in the template).
    after = len(devices.findall("disk"))
    for index, view in enumerate(nic_views(plan)):
        devices.insert(after + index, interface_element(view))
    return root


def plugin_adjusted(plugins: PluginHost, plan: NodePlan) -> bool:
    """Whether a plugin's vnode_domain_xml changed the node's domain (a warm template, saved
    from the core's domain, would lack the change)."""
    ns = hypervisor.NAMESPACE
    created = ET.fromstring(plan.domain_xml).findtext(f"metadata/{{{ns}}}node/{{{ns}}}created")
    core = ET.tostring(core_domain(plan, created or ""), encoding="unicode")
    return core != plan.domain_xml


def interface_element(plan: NodePlan) -> ET.Element:
    """The ``<interface>`` the plan's Interface describes, its attributes checked."""
    interface = plan.interface
    assert interface is not None
    for attribute in interface.source:
        if not _INTERFACE_ATTRIBUTE.fullmatch(attribute):
            raise EnvironmentProblem(
                f"network {plan.network}: {attribute!r} is not a libvirt <source> attribute"
            )
    element = ET.Element("interface", type=interface.type)
    ET.SubElement(element, "source", dict(interface.source))
    ET.SubElement(element, "mac", address=plan.mac)
    ET.SubElement(element, "model", type=interface.model)
    return element

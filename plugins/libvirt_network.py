"""vnode's own libvirt network (the default), or any existing libvirt network by name.

On a network vnode created, each node gets a DHCP host reservation and a DNS entry, so its
address is fixed and known before boot and is handed to the guest statically. On a network
vnode did not create, nothing is changed: nodes take DHCP and the lease tells the address.
"""

from __future__ import annotations

import ipaddress
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vnode import hypervisor
from vnode.errors import EnvironmentProblem, UsageError
from vnode.hookspecs import hookimpl
from vnode.model import Interface, NodeIdentity, NodePlan, StaticAddress
from vnode.network import NetworkBackend
from vnode.templating import render_xml

if TYPE_CHECKING:
    from vnode.config import Config

KIND = "libvirt"
_prepare_lock = threading.Lock()


@hookimpl(trylast=True)
def vnode_network_kinds() -> list[str]:
    return [KIND]


@hookimpl(trylast=True)
def vnode_network_backend(kind: str, arg: str | None, config: Config) -> NetworkBackend | None:
    if kind != KIND:
        return None
    return LibvirtNetwork(config, arg or config.libvirt_network.name)


class LibvirtNetwork(NetworkBackend):
    kind = KIND

    def __init__(self, config: Config, name: str) -> None:
        self.name = name
        self.uri = config.defaults.uri
        self.settings = config.libvirt_network
        self.subnet = ipaddress.IPv4Network(self.settings.subnet)
        self.offsets = {pool.stem: pool.address_offset for pool in config.pools}
        self.marker = config.paths.state / "networks" / f"{name}.uuid"

    def describe(self) -> str:
        return f"{KIND}:{self.name}"

    @property
    def is_ours(self) -> bool:
        """vnode manages the network named in [libvirt_network], and only once it created it."""
        return self.name == self.settings.name

    def check(self, nodes: list[NodePlan]) -> None:
        network = self._lookup()
        if not self.is_ours and network is None:
            raise UsageError(f"libvirt network {self.name!r} does not exist")
        if self.is_ours:
            if network is not None and not self._created_by_vnode(network):
                raise UsageError(
                    f"libvirt network {self.name!r} exists but vnode did not create it; "
                    "set [libvirt_network] name to another name, or use --network libvirt:"
                    f"{self.name} to attach without reservations"
                )
            for node in nodes:
                self._address_for(node)

    def prepare(self, nodes: list[NodePlan]) -> None:
        with _prepare_lock:
            network = self._lookup()
            if network is None and self.is_ours:
                network = self._create()
            if network is not None and not network.isActive():
                network.create()

    def reserve(self, node: NodeIdentity) -> None:
        if not self.is_ours:
            return
        address = self._address_for(node)
        network = self._require()
        self._drop_entries(network, node, address)
        libvirt = _libvirt()
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        values = {"mac": node.mac, "name": node.name, "ip": address}
        for section, template in (
            (libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, "dhcp-host.xml.j2"),
            (libvirt.VIR_NETWORK_SECTION_DNS_HOST, "dns-host.xml.j2"),
        ):
            network.update(
                libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                section,
                -1,
                render_xml(template, **values),
                flags,
            )

    def release(self, node: NodeIdentity) -> None:
        if not self.is_ours:
            return
        network = self._lookup()
        if network is not None:
            self._drop_entries(network, node, self._address_for(node))

    def interface(self, node: NodePlan) -> Interface:
        return Interface(type="network", source=self.name)

    def static_address(self, node: NodeIdentity) -> StaticAddress | None:
        if not self.is_ours:
            return None
        gateway = str(self.subnet.network_address + 1)
        return StaticAddress(
            ip=self._address_for(node),
            prefix=self.subnet.prefixlen,
            gateway=gateway if self.settings.forward == "nat" else None,
            dns=(gateway,),
            search=(self.settings.domain,),
        )

    def discover_address(self, node: NodeIdentity) -> str | None:
        if self.is_ours:
            return self._address_for(node)
        network = self._lookup()
        if network is None:
            return None
        for lease in network.DHCPLeases(node.mac):
            if lease.get("ipaddr") and lease.get("type") == 0:  # IPv4
                return lease["ipaddr"]
        return None

    def _address_for(self, node: NodeIdentity) -> str:
        offset = self.offsets.get(node.pool)
        host = (offset or 0) + node.number
        if offset is None or host >= self.subnet.num_addresses - 1:
            raise UsageError(
                f"{node.name}: no address for it in {self.subnet} (pool address_offset too high?)"
            )
        return str(self.subnet.network_address + host)

    def _lookup(self) -> Any | None:
        libvirt = _libvirt()
        try:
            return hypervisor.connect(self.uri).networkLookupByName(self.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise

    def _require(self) -> Any:
        network = self._lookup()
        if network is None:
            raise EnvironmentProblem(f"libvirt network {self.name!r} vanished")
        return network

    def _created_by_vnode(self, network: Any) -> bool:
        try:
            return self.marker.read_text().strip() == network.UUIDString()
        except FileNotFoundError:
            return False

    def _create(self) -> Any:
        lowest_offset = min(self.offsets.values())
        gateway = self.subnet.network_address + 1
        xml = render_xml(
            "libvirt-network.xml.j2",
            name=self.name,
            forward=self.settings.forward,
            domain=self.settings.domain,
            gateway=str(gateway),
            prefix=self.subnet.prefixlen,
            dhcp_start=str(gateway + 1),
            dhcp_end=str(self.subnet.network_address + lowest_offset - 1),
        )
        conn = hypervisor.connect(self.uri)
        network = conn.networkDefineXML(xml)
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(network.UUIDString() + "\n")
        network.setAutostart(True)
        network.create()
        return network

    def _drop_entries(self, network: Any, node: NodePlan, address: str) -> None:
        """Remove this node's reservation and DNS entry, or any left at its MAC, name or IP."""
        libvirt = _libvirt()
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        root = ET.fromstring(network.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
        for host in root.findall("ip/dhcp/host"):
            if node.mac == (host.get("mac") or "").lower() or address == host.get("ip"):
                network.update(
                    libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                    libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                    -1,
                    ET.tostring(host, "unicode"),
                    flags,
                )
        for host in root.findall("dns/host"):
            if host.get("ip") == address or node.name in [h.text for h in host.findall("hostname")]:
                network.update(
                    libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                    libvirt.VIR_NETWORK_SECTION_DNS_HOST,
                    -1,
                    ET.tostring(host, "unicode"),
                    flags,
                )


def _libvirt() -> Any:
    import libvirt

    return libvirt


def forget_network(state_dir: Path, name: str) -> None:
    """Drop the ownership marker (used when a test or user removes vnode's network)."""
    (state_dir / "networks" / f"{name}.uuid").unlink(missing_ok=True)

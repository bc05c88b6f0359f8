"""vnode's own libvirt network (the default), or any existing libvirt network by name.

On a network vnode created, every name of every pool has a DHCP host reservation and a DNS
entry, made once with the network, so a node's address is fixed and known before boot and is
handed to the guest statically. On a network
vnode did not create, nothing is changed: nodes take DHCP and the lease tells the address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from vnode.plugin import (
    EnvironmentProblem,
    Interface,
    NetworkBackend,
    NodeIdentity,
    NodePlan,
    PluginContext,
    StaticAddress,
    UsageError,
    Verdict,
    file_lock,
    hookimpl,
    render_xml,
    write_atomic,
)

KIND = "libvirt"
DEFAULT_ADDRESS_OFFSET = 100


def _check_subnet(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise UsageError(
            f"libvirt_network.subnet {value!r} is not an IPv4 network: {exc}"
        ) from None
    if net.num_addresses < 16:
        raise UsageError(f"libvirt_network.subnet {value!r} is too small")


def _check_subnet6(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value:
        return
    try:
        net = ipaddress.IPv6Network(value)
    except ValueError as exc:
        raise UsageError(
            f"libvirt_network.subnet6 {value!r} is not an IPv6 network: {exc}"
        ) from None
    if not 48 <= net.prefixlen <= 112:
        raise UsageError(f"libvirt_network.subnet6 {value!r}: the prefix must be /48 to /112")


def _check_offsets(instance: Any, attribute: attrs.Attribute, value: dict[str, int]) -> None:
    for stem, offset in value.items():
        if offset < 2:
            raise UsageError(f"libvirt_network.address_offsets.{stem} = {offset} is below 2")


@attrs.frozen
class OwnNetworkSettings:
    """``[libvirt_network.networks.NAME]``: a further libvirt network vnode creates and keeps
    its reservations on (a storage or cluster network for nodes' further NICs), like its own.
    Its subnet is given, never guessed: it must not collide with the site's."""

    subnet: str = attrs.field(validator=_check_subnet)
    subnet6: str = attrs.field(default="", validator=_check_subnet6)
    # A node's further network is usually private to the lab: isolated unless asked.
    forward: str = attrs.field(default="none", validator=attrs.validators.in_(("nat", "none")))
    # The DNS domain of its own DNS server (dnsmasq on its gateway); "": the network's name.
    domain: str = attrs.field(default="", validator=attrs.validators.matches_re(r"^[a-z0-9.-]*$"))


def _check_networks(
    instance: Any, attribute: attrs.Attribute, value: dict[str, OwnNetworkSettings]
) -> None:
    for name in value:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise UsageError(f"libvirt_network.networks.{name}: not a libvirt network name")


@attrs.frozen
class LibvirtNetworkSettings:
    """``[libvirt_network]``: vnode's own libvirt network, created on first use."""

    name: str = attrs.field(
        default="vnode", validator=attrs.validators.matches_re(r"^[A-Za-z0-9_.-]+$")
    )
    subnet: str = attrs.field(default="192.168.150.0/24", validator=_check_subnet)
    # Dual-stack: an IPv6 subnet (e.g. a ULA, "fd52:5400:150::/64") gives every node an IPv6
    # address from its number as the IPv4 one (::118 for vnode18), in DNS too. "": IPv4 only.
    subnet6: str = attrs.field(default="", validator=_check_subnet6)
    # "nat" gives nodes the outside world through the host; "none" keeps the network isolated.
    forward: str = attrs.field(default="nat", validator=attrs.validators.in_(("nat", "none")))
    domain: str = attrs.field(
        default="vnode", validator=attrs.validators.matches_re(r"^[a-z0-9.-]+$")
    )
    # Per pool stem, the host index of number 0 in the subnet (default 100: vnode18 -> .118).
    address_offsets: dict[str, int] = attrs.field(
        factory=dict, validator=_check_offsets, hash=False
    )
    # Further libvirt networks vnode creates and reserves addresses on, by name (nodes' further
    # NICs: `--network libvirt:storage`, a lab's `networks`). A node has the same host index in
    # each (vnode18 is .118 in every subnet).
    networks: dict[str, OwnNetworkSettings] = attrs.field(
        factory=dict, validator=_check_networks, hash=False
    )

    def own(self, name: str) -> LibvirtNetworkSettings | None:
        """These settings as they apply to the network ``name`` if vnode manages it, else None."""
        if name == self.name:
            return self
        further = self.networks.get(name)
        if further is None:
            return None
        return attrs.evolve(
            self,
            name=name,
            subnet=further.subnet,
            subnet6=further.subnet6,
            forward=further.forward,
            domain=further.domain or name.lower(),
            networks={},
        )


@attrs.frozen
class Reservation:
    mac: str
    name: str
    ip: str
    ip6: str | None = attrs.field(default=None, eq=False)


_prepare_lock = threading.Lock()


@hookimpl(trylast=True)
def vnode_network_kinds() -> list[str]:
    return [KIND]


@hookimpl(trylast=True)
def vnode_network_bare_name(name: str) -> str | None:
    # A bare name is a libvirt network: `--network default` attaches to libvirt's own.
    return f"{KIND}:{name}"


@hookimpl(trylast=True)
def vnode_config_sections() -> dict[str, type]:
    return {"libvirt_network": LibvirtNetworkSettings}


@hookimpl(trylast=True)
def vnode_network_backend(
    kind: str, arg: str | None, context: PluginContext
) -> NetworkBackend | None:
    if kind != KIND:
        return None
    configured = context.section("libvirt_network")
    name = arg or configured.name
    settings = configured.own(name) or configured
    if context.host_subnet or context.host_index:
        # Another hypervisor host: its own network, on a subnet no other host uses ([[hosts]]
        # subnet is that of vnode's first network; a further one's is derived alike).
        own_subnet = context.host_subnet if settings.name == configured.name else None
        subnet = own_subnet or nth_subnet(settings.subnet, context.host_index)
        subnet6 = settings.subnet6 and nth_subnet(settings.subnet6, context.host_index)
        settings = attrs.evolve(settings, subnet=subnet, subnet6=subnet6)
    return LibvirtNetwork(
        name=name,
        settings=settings,
        pools=context.pools,
        state_dir=context.state_dir,
        connection=context.connection,
    )


def nth_subnet(base: str, index: int) -> str:
    """The index-th subnet of the base's size after it (192.168.150.0/24, 1 -> .151.0/24;
    fd52:5400:150::/64, 1 -> fd52:5400:150:1::/64)."""
    net = ipaddress.ip_network(base)
    start = int(net.network_address) + index * net.num_addresses
    return str(ipaddress.ip_network((start, net.prefixlen)))


class LibvirtNetwork(NetworkBackend):
    kind = KIND
    reached_through_host = True  # private to its host: not routable from elsewhere

    def __init__(
        self,
        *,
        name: str,
        settings: LibvirtNetworkSettings,
        pools: Sequence[Any],
        state_dir: Path,
        connection: Any,
    ) -> None:
        self.name = name
        self.settings = settings
        self.subnet = ipaddress.IPv4Network(settings.subnet)
        self.subnet6 = ipaddress.IPv6Network(settings.subnet6) if settings.subnet6 else None
        self.pools = tuple(pools)
        self.offsets = {
            pool.stem: settings.address_offsets.get(pool.stem, DEFAULT_ADDRESS_OFFSET)
            for pool in self.pools
        }
        unknown = set(settings.address_offsets) - set(self.offsets)
        if unknown:
            raise UsageError(
                f"config: [libvirt_network] address_offsets names no pool: {', '.join(unknown)}"
            )
        self.marker = state_dir / "networks" / f"{name}.uuid"
        self.conn = connection

    def describe(self) -> str:
        return f"{KIND}:{self.name}"

    @property
    def _lock_path(self) -> Path:
        return self.marker.with_name(self.marker.name + ".lock")

    @property
    def is_ours(self) -> bool:
        """vnode manages the network named in [libvirt_network] (or one of its networks
        tables), and only once it created it."""
        return self.name == self.settings.name

    def diagnose(self, nodes: Sequence[NodeIdentity]) -> list[Verdict]:
        # Another first `up` may be between defining the network and writing its marker
        # (prepare holds this lock over both): its outcome is waited for, never judged
        # half-made as a network someone else created.
        with file_lock(self._lock_path, shared=True):
            network = self._lookup()
            created = network is not None and self._created_by_vnode(network)
        if not self.is_ours and network is None:
            return [
                Verdict("network input", "fail", f"libvirt network {self.name!r} does not exist")
            ]
        if self.is_ours and network is not None and not created:
            return [
                Verdict(
                    "network input",
                    "fail",
                    f"libvirt network {self.name!r} exists but vnode did not create it; "
                    "set [libvirt_network] name to another name, or use --network libvirt:"
                    f"{self.name} to attach without reservations",
                )
            ]
        for node in nodes:
            try:
                self._address_for(node)
            except UsageError as exc:
                return [Verdict("network input", "fail", str(exc))]
        if network is None:
            return [
                Verdict("network", "ok", f"{self.name} is created on first use ({self.subnet})")
            ]
        state = "active" if network.isActive() else "defined, started on first use"
        owner = "vnode's own" if self.is_ours else "not vnode's: nodes take DHCP"
        return [Verdict("network", "ok", f"{self.name} ({owner}) is {state}")]

    def dns_domain(self) -> str | None:
        return self.settings.domain if self.is_ours else None

    def prepare(self, nodes: Sequence[NodePlan]) -> None:
        # Threads of this process, and other vnode processes: two first `up`s must not both
        # find no network and both define it.
        with _prepare_lock, file_lock(self._lock_path):
            self._libvirt_call(lambda: self._prepare(nodes), "preparing")

    def _prepare(self, nodes: Sequence[NodePlan]) -> None:
        network = self._lookup()
        if network is None and self.is_ours:
            network = self._create()
        if network is None:
            return
        if not network.isActive():
            network.create()
        if self.is_ours:
            self._ensure_reserved(network, nodes)

    def reserve(self, node: NodePlan) -> None:
        """Nothing per node: the whole pool was reserved when the network was made (prepare)."""

    def release(self, node: NodeIdentity) -> None:
        """Nothing: a reservation belongs to the pool's name, not to one incarnation of it."""

    def interface(self, node: NodeIdentity) -> Interface:
        return Interface(type="network", source={"network": self.name})

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
            ip6=self._address6_for(node),
            prefix6=self.subnet6.prefixlen if self.subnet6 else 64,
        )

    def discover_address(self, node: NodeIdentity, console: Path | None) -> str | None:
        if self.is_ours:
            return self._address_for(node)
        network = self._lookup()
        if network is None:
            return None
        for lease in self._libvirt_call(lambda: network.DHCPLeases(node.mac), "reading leases"):
            if lease.get("ipaddr") and lease.get("type") == 0:  # IPv4
                return lease["ipaddr"]
        return None

    def host_name(self, node: NodeIdentity) -> str:
        """The node's name in this network's DHCP and DNS: its own on its first NIC's network,
        NAME-NETWORK on a further NIC's (the node's hostname is its first NIC's)."""
        return node.name if not node.nic else f"{node.name}-{self.name}"

    def _address_for(self, node: NodeIdentity) -> str:
        offset = self.offsets.get(node.pool)
        host = (offset or 0) + node.number
        if offset is None or host >= self.subnet.num_addresses - 1:
            raise UsageError(
                f"{node.name}: no address for it in {self.subnet} (pool address_offset too high?)"
            )
        return str(self.subnet.network_address + host)

    def _address6_for(self, node: NodeIdentity) -> str | None:
        """The node's IPv6 address: its IPv4 host index written as the address's last digits
        (vnode18 at .118 is ::118), so the two read alike."""
        if self.subnet6 is None:
            return None
        host = int(str((self.offsets.get(node.pool) or 0) + node.number), 16)
        if host >= self.subnet6.num_addresses - 1:
            raise UsageError(f"{node.name}: no address for it in {self.subnet6}")
        return str(self.subnet6.network_address + host)

    def _lookup(self) -> Any | None:
        libvirt = _libvirt()
        if self.conn is None:
            raise EnvironmentProblem("libvirt is not reachable")
        try:
            return self.conn.networkLookupByName(self.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise EnvironmentProblem(f"network {self.name}: {exc.get_error_message()}") from None

    def _libvirt_call(self, call: Any, doing: str) -> Any:
        libvirt = _libvirt()
        try:
            return call()
        except libvirt.libvirtError as exc:
            raise EnvironmentProblem(
                f"network {self.name}: {doing}: {exc.get_error_message()}"
            ) from None

    def _created_by_vnode(self, network: Any) -> bool:
        try:
            return self.marker.read_text().strip() == network.UUIDString()
        except FileNotFoundError:
            return False

    def network_xml(self) -> str:
        """The network vnode creates: a gateway at .1, a DHCP range from .2 up to the lowest
        pool's first address, and every pool name reserved (MAC, address, DNS name)."""
        lowest_offset = min(self.offsets.values())
        gateway = self.subnet.network_address + 1
        return render_xml(
            "libvirt-network.xml.j2",
            package=__name__,
            hosts=self._pool_hosts(),
            name=self.name,
            forward=self.settings.forward,
            domain=self.settings.domain,
            gateway=str(gateway),
            prefix=self.subnet.prefixlen,
            dhcp_start=str(gateway + 1),
            dhcp_end=str(self.subnet.network_address + max(lowest_offset - 1, 2)),
            gateway6=str(self.subnet6.network_address + 1) if self.subnet6 else None,
            prefix6=self.subnet6.prefixlen if self.subnet6 else None,
        )

    def _create(self) -> Any:
        network = self.conn.networkDefineXML(self.network_xml())
        write_atomic(self.marker, network.UUIDString() + "\n")
        network.setAutostart(True)
        network.create()
        return network

    def _pool_hosts(self) -> list[Reservation]:
        """Every name of every pool, with its MAC and address: fixed, so reserved up front."""
        hosts = []
        for pool in self.pools:
            for number in pool.numbers():
                identity = NodeIdentity(
                    name=pool.name(number), number=number, pool=pool.stem, mac=pool.mac(number)
                )
                with contextlib.suppress(UsageError):  # numbers beyond the subnet stay out
                    hosts.append(
                        Reservation(
                            identity.mac,
                            identity.name,
                            self._address_for(identity),
                            self._address6_for(identity),
                        )
                    )
        return hosts

    def _ensure_reserved(self, network: Any, nodes: Sequence[NodePlan]) -> None:
        """Add what is missing, e.g. after a pool was added to the config; usually nothing.

        Updating a live network is slow (libvirt rewrites dnsmasq's files each time), which
        is why reservations are made once, not per node and per boot.
        """
        libvirt = _libvirt()
        root = ET.fromstring(network.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
        present = {
            Reservation((h.get("mac") or "").lower(), h.get("name") or "", h.get("ip") or "")
            for h in root.findall("ip/dhcp/host")
        }
        named = {
            (h.get("ip"), n.text) for h in root.findall("dns/host") for n in h.findall("hostname")
        }
        for node in nodes:
            wanted = Reservation(
                node.mac, self.host_name(node), self._address_for(node), self._address6_for(node)
            )
            missing6 = wanted.ip6 is not None and (wanted.ip6, wanted.name) not in named
            if wanted not in present or (wanted.ip, wanted.name) not in named or missing6:
                self._replace_entries(network, root, wanted)

    def _replace_entries(self, network: Any, root: ET.Element, wanted: Reservation) -> None:
        """Drop entries at the node's MAC, name or IP, then add the node's own."""
        libvirt = _libvirt()
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        dhcp, dns = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, libvirt.VIR_NETWORK_SECTION_DNS_HOST
        delete, add = (
            libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        )
        for host in root.findall("ip/dhcp/host"):
            if wanted.mac == (host.get("mac") or "").lower() or wanted.ip == host.get("ip"):
                network.update(delete, dhcp, -1, ET.tostring(host, "unicode"), flags)
        for host in root.findall("dns/host"):
            names = [h.text for h in host.findall("hostname")]
            if host.get("ip") in (wanted.ip, wanted.ip6) or wanted.name in names:
                network.update(delete, dns, -1, ET.tostring(host, "unicode"), flags)
        values = {"mac": wanted.mac, "name": wanted.name, "ip": wanted.ip}
        network.update(
            add, dhcp, -1, render_xml("dhcp-host.xml.j2", package=__name__, **values), flags
        )
        for ip in filter(None, (wanted.ip, wanted.ip6)):
            host = render_xml("dns-host.xml.j2", package=__name__, **{**values, "ip": ip})
            network.update(add, dns, -1, host, flags)


def _libvirt() -> Any:
    import libvirt

    return libvirt

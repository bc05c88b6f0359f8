"""Attach nodes to an existing host bridge (``bridge:br0``): they join the site's network.

The site, not vnode, owns the addresses there: its DHCP gives them (keyed on the node's MAC)
and its DNS names them. vnode reserves nothing and learns each address without guessing, in
this order:

1. the node's name in the site's DNS (``[site] dns`` asked directly, else the host's
   resolver); the site defines the name, so this is the answer meant to be used;
2. the guest's own report: cloud-init prints its network device table (device, address,
   MAC) on the serial console, which vnode captures; the row with the node's MAC counts;
3. the host's neighbour table, by MAC (only filled once the node talked to the host).

Leases are not an option: the site's DHCP server is not ours to read.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from vnode import hypervisor
from vnode.dnsquery import DnsError, query_a
from vnode.errors import EnvironmentProblem, UsageError
from vnode.hookspecs import hookimpl
from vnode.hostbridge import check_ifname, host_device, ip_json
from vnode.logs import get_logger
from vnode.model import Interface, NodeIdentity, NodePlan
from vnode.network import NetworkBackend

if TYPE_CHECKING:
    from vnode.config import Config

KIND = "bridge"
DEFAULT_BRIDGE = "br0"
log = get_logger("vnode.bridge")


@hookimpl(trylast=True)
def vnode_network_kinds() -> list[str]:
    return [KIND]


@hookimpl(trylast=True)
def vnode_network_backend(kind: str, arg: str | None, config: Config) -> NetworkBackend | None:
    if kind != KIND:
        return None
    bridge = check_ifname(arg or DEFAULT_BRIDGE, "bridge")
    return BridgeNetwork(bridge, SiteAddresses.from_config(config, neighbour_device=bridge))


class BridgeNetwork(NetworkBackend):
    kind = KIND

    def __init__(self, bridge: str, addresses: SiteAddresses) -> None:
        self.bridge = bridge
        self.addresses = addresses

    def describe(self) -> str:
        return f"{KIND}:{self.bridge}"

    def check(self, nodes: list[NodePlan]) -> None:
        device = host_device(self.bridge)
        if not device.exists:
            raise UsageError(
                f"host bridge {self.bridge!r} does not exist: create it once with "
                f"`vnode bridge create --iface NIC --name {self.bridge}`"
            )
        if not device.is_bridge:
            raise UsageError(
                f"{self.bridge!r} is not a bridge: use --direct {self.bridge} (macvtap), or "
                f"`vnode bridge create --iface {self.bridge}` to put it into one"
            )
        if not device.is_up:
            raise EnvironmentProblem(
                f"host bridge {self.bridge!r} is down: `ip link set {self.bridge} up`"
            )

    def interface(self, node: NodePlan) -> Interface:
        return Interface(type="bridge", source=self.bridge)

    def discover_address(self, node: NodeIdentity) -> str | None:
        return self.addresses.find(node)


@attrs.frozen
class SiteAddresses:
    """Where a node on the site's network is, learned from the site and the guest."""

    uri: str  # libvirt, to find the node's console log
    dns: str  # the site's DNS server; "" means the host's resolver
    dns_port: int
    domain: str  # the site's DNS domain; "" means bare names
    neighbour_device: str | None  # None: any device of the host

    @classmethod
    def from_config(cls, config: Config, neighbour_device: str | None) -> SiteAddresses:
        site = config.site
        return cls(
            uri=config.defaults.uri,
            dns=site.dns,
            dns_port=site.dns_port,
            domain=site.domain,
            neighbour_device=neighbour_device,
        )

    def find(self, node: NodeIdentity) -> str | None:
        return (
            self.from_dns(node.name)
            or self.from_guest_report(node)
            or neighbour_address(node.mac, self.neighbour_device)
        )

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.domain}" if self.domain else name

    def from_dns(self, name: str) -> str | None:
        fqdn = self.fqdn(name)
        if not self.dns:
            return resolve_name(fqdn)
        try:
            addresses = query_a(fqdn, self.dns, self.dns_port)
        except (DnsError, OSError, ValueError) as exc:
            log.debug("site DNS gave no answer", name=fqdn, server=self.dns, error=str(exc))
            return None
        return addresses[0] if addresses else None

    def from_guest_report(self, node: NodeIdentity) -> str | None:
        console = console_of(self.uri, node)
        return guest_reported_address(console, node.mac) if console else None


def resolve_name(name: str) -> str | None:
    """The name's IPv4 address through the host's resolver (files, DNS, ...)."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


def console_of(uri: str, node: NodeIdentity) -> Path | None:
    """The console log of the domain vnode made for ``node`` (the console plugin chose where)."""
    try:
        domain = hypervisor.lookup(hypervisor.connect(uri), node.name)
        mark = hypervisor.read_mark(domain) if domain is not None else None
    except (EnvironmentProblem, hypervisor.libvirt_error()):
        return None
    if mark is None or mark.mac.lower() != node.mac.lower() or not mark.console:
        return None
    return Path(mark.console)


def guest_reported_address(console: Path, mac: str) -> str | None:
    """The IPv4 address the guest reported for ``mac`` in cloud-init's device table.

    cloud-init prints, once the network is up, rows like
    ``ci-info: | eth0 | True | 10.0.0.5 | 255.255.255.0 | global | 52:54:00:.. |``
    after a header naming the columns; the latest report wins.
    """
    try:
        text = console.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None
    mac = mac.lower()
    columns: dict[str, int] = {}
    found = None
    for line in text.splitlines():
        if "ci-info:" not in line or "|" not in line:
            continue
        cells = [cell.strip() for cell in line.split("|")]
        if "Hw-Address" in cells and "Address" in cells:
            columns = {"address": cells.index("Address"), "mac": cells.index("Hw-Address")}
            continue
        if not columns or len(cells) <= max(columns.values()):
            continue
        if cells[columns["mac"]].lower() == mac and _usable_ipv4(cells[columns["address"]]):
            found = cells[columns["address"]]
    return found


def _usable_ipv4(text: str) -> bool:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_link_local or address.is_unspecified)


_DEAD_NEIGHBOUR = {"FAILED", "INCOMPLETE"}


def neighbour_address(mac: str, device: str | None) -> str | None:
    """The IPv4 address the host's neighbour table holds for ``mac`` (on ``device``)."""
    args = ["-4", "neigh", "show", *(("dev", device) if device else ())]
    for entry in ip_json(*args):
        if entry.get("lladdr", "").lower() != mac.lower():
            continue
        if _DEAD_NEIGHBOUR & set(entry.get("state", [])):
            continue
        if _usable_ipv4(entry.get("dst", "")):
            return str(entry["dst"])
    return None

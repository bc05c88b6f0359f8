"""What the bridge and direct plugins share: the host's network devices, and where a node on
the site's network is (the site's DNS, the guest's own report, the host's neighbour table).

A private helper module of vnode's plugins package (the leading underscore): no entry point,
no hooks; each plugin that needs it imports it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs

from vnode.plugin import Interface, NetworkBackend, NodeIdentity, UsageError, Verdict, get_logger

SYS_NET = Path("/sys/class/net")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
log = get_logger("vnode.site")


def check_ifname(name: str, what: str) -> str:
    """``name`` if it can name a Linux network device, else a UsageError (before any /sys path
    is built from it)."""
    if not _IFNAME.match(name) or name in (".", ".."):
        raise UsageError(f"{what} {name!r} is not a network device name")
    return name


@attrs.frozen
class HostDevice:
    """A network device of the host, read from /sys/class/net."""

    name: str
    exists: bool
    mac: str | None = None
    is_bridge: bool = False
    is_up: bool = False  # administratively; a bridge without ports is up yet has no carrier
    is_loopback: bool = False
    master: str | None = None  # the bridge (or bond) the device is a port of
    ports: tuple[str, ...] = ()
    carrier: bool | None = None  # None: the kernel cannot tell (device down)
    is_wireless: bool = False


def host_device(name: str) -> HostDevice:
    base = SYS_NET / check_ifname(name, "network device")
    if not base.exists():
        return HostDevice(name=name, exists=False)
    flags = int(_read(base / "flags") or "0", 16)
    master = base / "master"
    ports = base / "brif"
    return HostDevice(
        name=name,
        exists=True,
        mac=(_read(base / "address") or "").lower() or None,
        is_bridge=(base / "bridge").is_dir(),
        is_up=bool(flags & _IFF_UP),
        is_loopback=bool(flags & _IFF_LOOPBACK),
        master=master.resolve().name if master.exists() else None,
        ports=tuple(sorted(p.name for p in ports.iterdir())) if ports.is_dir() else (),
        carrier={"1": True, "0": False}.get(_read(base / "carrier") or ""),
        is_wireless=(base / "wireless").is_dir() or (base / "phy80211").exists(),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def host_macvlans(parent: str) -> list[str]:
    """The host's bridge-mode macvlan devices on ``parent`` that hold an IPv4 address.

    macvtap nodes on ``parent`` are unreachable for the host through ``parent`` itself, but a
    sibling macvlan in bridge mode is switched to them inside the kernel.
    """
    found = []
    for link in ip_json("-d", "addr", "show"):
        info = link.get("linkinfo", {})
        if (
            link.get("link") == parent
            and info.get("info_kind") == "macvlan"
            and info.get("info_data", {}).get("mode") == "bridge"
            and any(a.get("family") == "inet" for a in link.get("addr_info", []))
        ):
            found.append(link["ifname"])
    return found


def ip_json(*args: str) -> list[dict]:
    try:
        out = subprocess.run(
            ["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        return json.loads(out or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []


def _check_dns_server(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise UsageError(f"site.dns {value!r} is not an IP address") from None


_DNS_DOMAIN = r"^$|^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


@attrs.frozen
class SiteSettings:
    """``[site]``: the site's network that bridge and direct nodes join, whose DNS names them."""

    # The host's resolver may not know the site's names (a lab DNS on the bridge); empty means
    # ask the host's resolver.
    dns: str = attrs.field(default="", validator=_check_dns_server)
    dns_port: int = attrs.field(
        default=53, validator=[attrs.validators.ge(1), attrs.validators.le(65535)]
    )
    # Names are looked up as NAME.DOMAIN when set, else as NAME.
    domain: str = attrs.field(default="", validator=attrs.validators.matches_re(_DNS_DOMAIN))


class SiteDnsError(Exception):
    """The site's DNS server gave no usable answer."""


def query_a(name: str, server: str, port: int = 53, timeout: float = 1.0) -> list[str]:
    """The A records the site's DNS server ``server`` gives for ``name``; [] if it has none.

    dnspython (imported here, on first use) retries over TCP when the answer is truncated.
    """
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    question = dns.message.make_query(name, dns.rdatatype.A)
    try:
        answer, _ = dns.query.udp_with_fallback(question, server, timeout=timeout, port=port)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        raise SiteDnsError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    if answer.rcode() == dns.rcode.NXDOMAIN:
        return []
    if answer.rcode() != dns.rcode.NOERROR:
        raise SiteDnsError(f"server answered {dns.rcode.to_text(answer.rcode())}")
    return [
        record.address
        for rrset in answer.answer
        if rrset.rdtype == dns.rdatatype.A
        for record in rrset
    ]


@attrs.frozen
class SiteAddresses:
    """Where a node on the site's network is, learned from the site and the guest."""

    dns: str  # the site's DNS server; "" means the host's resolver
    dns_port: int
    domain: str  # the site's DNS domain; "" means bare names
    neighbour_device: str | None  # None: any device of the host

    @classmethod
    def from_settings(cls, site: SiteSettings, neighbour_device: str | None) -> SiteAddresses:
        return cls(
            dns=site.dns,
            dns_port=site.dns_port,
            domain=site.domain,
            neighbour_device=neighbour_device,
        )

    def find(self, name: str, mac: str, console: Path | None) -> str | None:
        return (
            self.from_dns(name)
            or (guest_reported_address(console, mac) if console else None)
            or neighbour_address(mac, self.neighbour_device)
        )

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.domain}" if self.domain else name

    def from_dns(self, name: str) -> str | None:
        fqdn = self.fqdn(name)
        if not self.dns:
            return resolve_name(fqdn)
        try:
            addresses = query_a(fqdn, self.dns, self.dns_port)
        except SiteDnsError as exc:
            log.debug("site DNS gave no answer", name=fqdn, server=self.dns, error=str(exc))
            return None
        return addresses[0] if addresses else None

    def diagnose(self, example: str) -> list[Verdict]:
        """Does the site's DNS server answer? (``example``: a node name to ask for.)"""
        if not self.dns:
            return []
        name = self.fqdn(example)
        server = f"{self.dns}:{self.dns_port}"
        try:
            addresses = query_a(name, self.dns, self.dns_port, timeout=2.0)
        except SiteDnsError as exc:
            return [
                Verdict(
                    "site dns",
                    "warn",
                    f"{server} gives no answer ({exc}): addresses are learned from the guests' "
                    "own reports instead, later",
                )
            ]
        known = f"{name} is {addresses[0]}" if addresses else f"{name} is not defined there"
        return [Verdict("site dns", "ok", f"{server} answers ({known})")]


class SiteNetwork(NetworkBackend):
    """A network kind that puts nodes on the site's own network through a host device (a
    bridge, a macvtap parent): the site's DHCP gives the addresses, :class:`SiteAddresses`
    finds them. Subclasses say how the device is checked and how the NIC attaches."""

    kind = ""

    def __init__(self, device: str, addresses: SiteAddresses, example: str = "vnode00") -> None:
        self.device = device
        self.addresses = addresses
        self.example = example  # a node name to ask the site's DNS about

    def describe(self) -> str:
        return f"{self.kind}:{self.device}"

    def diagnose(self, nodes: Sequence[NodeIdentity]) -> list[Verdict]:
        return [self.device_verdict(), *self.addresses.diagnose(self.example)]

    def device_verdict(self) -> Verdict:
        """Whether the host device can carry nodes, with the exact fix when not."""
        raise NotImplementedError

    def interface(self, node: NodeIdentity) -> Interface:
        raise NotImplementedError

    def discover_address(self, node: NodeIdentity, console: Path | None) -> str | None:
        return self.addresses.find(node.name, node.mac, console)


def resolve_name(name: str) -> str | None:
    """The name's IPv4 address through the host's resolver (files, DNS, ...)."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


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

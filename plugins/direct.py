"""Attach nodes through macvtap on a host NIC (``direct:eth0``), without a host bridge.

Caveat (a property of macvtap, not of vnode): frames between the host and its macvtap guests
never cross the NIC, so the host cannot reach these nodes through that NIC, and neither can
nodes on the host's other networks. Nodes on the same NIC reach each other ("bridge" mode),
and other machines on the link reach them. The host does reach them through a macvlan of its
own on the same NIC (bridge mode, with an address); without one, vnode warns, because its
wait for SSH will then time out.

Addresses come from the site's DHCP and are learned as for bridges (see ``bridge.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vnode.errors import EnvironmentProblem, UsageError
from vnode.hookspecs import hookimpl
from vnode.hostbridge import check_ifname, host_device, host_macvlans
from vnode.logs import get_logger
from vnode.model import Interface, NodeIdentity, NodePlan
from vnode.network import NetworkBackend
from vnode_plugins.bridge import SiteAddresses

if TYPE_CHECKING:
    from vnode.config import Config

KIND = "direct"
log = get_logger("vnode.direct")


@hookimpl(trylast=True)
def vnode_network_kinds() -> list[str]:
    return [KIND]


@hookimpl(trylast=True)
def vnode_network_backend(kind: str, arg: str | None, config: Config) -> NetworkBackend | None:
    if kind != KIND:
        return None
    if not arg:
        raise UsageError("direct network needs a parent device: --direct eth0")
    parent = check_ifname(arg, "direct parent device")
    # The host's neighbour entries for macvtap nodes, if any, sit on a macvlan, not the parent.
    return DirectNetwork(parent, SiteAddresses.from_config(config, neighbour_device=None))


class DirectNetwork(NetworkBackend):
    kind = KIND

    def __init__(self, parent: str, addresses: SiteAddresses) -> None:
        self.parent = parent
        self.addresses = addresses

    def describe(self) -> str:
        return f"{KIND}:{self.parent}"

    def check(self, nodes: list[NodePlan]) -> None:
        device = host_device(self.parent)
        if not device.exists:
            raise UsageError(f"host device {self.parent!r} for direct (macvtap) does not exist")
        if device.is_bridge:
            raise UsageError(f"{self.parent!r} is a bridge: use --bridge {self.parent}")
        if device.is_loopback:
            raise UsageError(f"{self.parent!r} is the loopback device; name a NIC")
        if not device.is_up:
            raise EnvironmentProblem(f"host device {self.parent!r} is down")
        warn_if_unreachable(self.parent)

    def interface(self, node: NodePlan) -> Interface:
        return Interface(type="direct", source=self.parent, mode="bridge")

    def discover_address(self, node: NodeIdentity) -> str | None:
        return self.addresses.find(node)


def warn_if_unreachable(parent: str) -> None:
    shims = host_macvlans(parent)
    if shims:
        log.info("the host reaches macvtap nodes through its macvlan", parent=parent, via=shims)
        return
    log.warning(
        f"macvtap on {parent}: neither this host nor its other nodes can reach these nodes "
        f"(only machines on {parent}'s link can), so the wait for SSH will likely time out; "
        f"use --no-wait, or give the host a bridge-mode macvlan on {parent} with an address"
    )

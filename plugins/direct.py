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

from vnode.plugin import (
    Interface,
    NetworkBackend,
    NodeIdentity,
    PluginContext,
    UsageError,
    Verdict,
    hookimpl,
)
from vnode_plugins._hostnet import (
    SiteAddresses,
    SiteNetwork,
    SiteSettings,
    check_ifname,
    host_device,
    host_macvlans,
)

KIND = "direct"


@hookimpl(trylast=True)
def vnode_network_kinds() -> list[str]:
    return [KIND]


@hookimpl(trylast=True)
def vnode_config_sections() -> dict[str, type]:
    return {"site": SiteSettings}


@hookimpl(trylast=True)
def vnode_network_backend(
    kind: str, arg: str | None, context: PluginContext
) -> NetworkBackend | None:
    if kind != KIND:
        return None
    if not arg:
        raise UsageError("direct network needs a parent device: --direct eth0")
    parent = check_ifname(arg, "direct parent device")
    # The host's neighbour entries for macvtap nodes, if any, sit on a macvlan, not the parent.
    site = SiteAddresses.from_settings(context.section("site"), neighbour_device=None)
    pool = context.pools[0]
    return DirectNetwork(parent, site, example=pool.name(pool.first))


class DirectNetwork(SiteNetwork):
    kind = KIND

    def device_verdict(self) -> Verdict:
        device = host_device(self.device)
        parent = self.device
        if not device.exists:
            return Verdict(
                "direct input",
                "fail",
                f"host device {parent!r} for direct (macvtap) does not exist",
            )
        if device.is_bridge:
            return Verdict("direct input", "fail", f"{parent!r} is a bridge: use --bridge {parent}")
        if device.is_loopback:
            return Verdict("direct input", "fail", f"{parent!r} is the loopback device; name a NIC")
        if not device.is_up:
            return Verdict("direct", "fail", f"host device {parent!r} is down")
        if shims := host_macvlans(parent):
            return Verdict("direct", "ok", f"{parent} is up; the host reaches nodes via {shims[0]}")
        return Verdict(
            "direct",
            "warn",
            f"macvtap on {parent}: neither this host nor its other nodes can reach these nodes "
            f"(only machines on {parent}'s link can), so the wait for SSH will likely time out; "
            f"use --no-wait, or give the host a bridge-mode macvlan on {parent} with an address",
        )

    def interface(self, node: NodeIdentity) -> Interface:
        return Interface(type="direct", source={"dev": self.device, "mode": "bridge"})

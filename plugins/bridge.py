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

from typing import Any

from vnode.plugin import (
    Interface,
    NetworkBackend,
    NodeIdentity,
    PluginContext,
    Verdict,
    hookimpl,
)
from vnode_plugins._hostnet import (
    SiteAddresses,
    SiteNetwork,
    SiteSettings,
    check_ifname,
    host_device,
)

KIND = "bridge"
DEFAULT_BRIDGE = "br0"


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
    bridge = check_ifname(arg or DEFAULT_BRIDGE, "bridge")
    site = SiteAddresses.from_settings(context.section("site"), neighbour_device=bridge)
    return BridgeNetwork(bridge, site, example=_example_name(context))


@hookimpl(trylast=True)
def vnode_cli_commands() -> list[Any]:
    return [_bridge_commands()]


def _bridge_commands() -> Any:
    """``vnode bridge create``: the one-time host set-up this network kind needs."""
    from cyclopts import App

    app = App(name="bridge", help="One-time host set-up of a bridge for --bridge nodes.")

    @app.command(name="create")
    def create(
        *, iface: str, name: str = "br0", zone: str | None = None, dry_run: bool = False
    ) -> int:
        """Make a host bridge out of a NIC with NetworkManager; the host keeps its address.

        Parameters
        ----------
        iface
            The host NIC to put into the bridge, e.g. eno1.
        name
            The bridge's name.
        zone
            The firewalld zone of the bridge (default: firewalld's default zone).
        dry_run
            Print the commands (a shell script) instead of running them.
        """
        from vnode_plugins._bridge_setup import AlreadyBridged, apply_plan, plan_for_host

        try:
            plan = plan_for_host(iface, name, zone)
        except AlreadyBridged as done:
            print(done)
            return 0
        if dry_run:
            print(plan.script(), end="")
            return 0
        apply_plan(plan, lambda step, outcome: print(f"{outcome}: {step.shell}", flush=True))
        print(f"bridge {plan.bridge} is up; undo with: {plan.undo}")
        return 0

    return app


def _example_name(context: PluginContext) -> str:
    pool = context.pools[0]
    return pool.name(pool.first)


class BridgeNetwork(SiteNetwork):
    kind = KIND

    def device_verdict(self) -> Verdict:
        device = host_device(self.device)
        name = self.device
        if not device.exists:
            return Verdict(
                "bridge input",
                "fail",
                f"host bridge {name!r} does not exist: create it once with "
                f"`vnode bridge create --iface NIC --name {name}`",
            )
        if not device.is_bridge:
            return Verdict(
                "bridge input",
                "fail",
                f"{name!r} is not a bridge: use --direct {name} (macvtap), or "
                f"`vnode bridge create --iface {name}` to put it into one",
            )
        if not device.is_up:
            return Verdict(
                "bridge", "fail", f"host bridge {name!r} is down: `ip link set {name} up`"
            )
        if not device.ports:
            return Verdict(
                "bridge", "warn", f"{name} is up but has no ports: nodes reach only the host"
            )
        return Verdict("bridge", "ok", f"{name} is up, ports: {', '.join(device.ports)}")

    def interface(self, node: NodeIdentity) -> Interface:
        return Interface(type="bridge", source={"bridge": self.device})

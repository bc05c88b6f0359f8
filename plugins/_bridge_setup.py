"""The one-time host bridge set-up behind `vnode bridge create` (nmcli, firewalld).

``vnode bridge create --iface eno1`` puts the host's NIC into a new bridge so that nodes can
join the site's network as peers of the host. The plan is a list of commands, printed exactly
by ``--dry-run`` and run one by one otherwise:

- the bridge takes the NIC's MAC, so the site's DHCP (keyed on that MAC) gives the host the
  address it had; the bridge takes over the NIC's DHCP configuration (``ipv4.method auto``);
- the NIC gets a port profile with a higher autoconnect priority than its old profile, which
  is left untouched: deleting the two new profiles restores the old set-up exactly;
- forwarding on the bridge is allowed through firewalld (intra-zone forwarding of the
  bridge's zone), not by turning bridge netfilter off: with ``br_netfilter`` loaded, bridged
  frames traverse the host's IP firewall, and ``net.bridge.bridge-nf-call-iptables=0`` would
  take *every* bridge on the host (libvirt's, containers') out of the firewall at once.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable

import attrs

from vnode.plugin import EnvironmentProblem, UsageError
from vnode_plugins._hostnet import check_ifname, host_device

_ZONE = re.compile(r"^[A-Za-z0-9_-]{1,17}$")


@attrs.frozen
class Step:
    """One command of the set-up, and why it is there."""

    argv: tuple[str, ...]
    why: str
    # Steps for firewalld run only where firewalld runs; elsewhere there is nothing to open.
    needs_firewalld: bool = False

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)


@attrs.frozen
class BridgePlan:
    iface: str
    bridge: str
    mac: str
    zone: str | None
    steps: tuple[Step, ...]

    @property
    def port_profile(self) -> str:
        return f"{self.bridge}-port-{self.iface}"

    @property
    def undo(self) -> str:
        return shlex.join(["nmcli", "connection", "delete", self.port_profile, self.bridge])

    def script(self) -> str:
        """The plan as a shell script: what ``--dry-run`` prints."""
        lines = [
            f"# vnode bridge create: {self.iface} becomes a port of bridge {self.bridge} "
            f"(MAC {self.mac})",
        ]
        for step in self.steps:
            lines.append(f"# {step.why}")
            lines.append(step.shell)
        lines.append(f"# undo: {self.undo}")
        return "\n".join(lines) + "\n"


def plan_bridge(iface: str, mac: str, bridge: str = "br0", zone: str | None = None) -> BridgePlan:
    """The nmcli (and firewall-cmd) commands that make ``bridge`` out of ``iface``; pure."""
    check_ifname(iface, "--iface")
    check_ifname(bridge, "--name")
    if zone is not None and not _ZONE.match(zone):
        raise UsageError(f"--zone {zone!r} is not a firewalld zone name")
    port = f"{bridge}-port-{iface}"
    zone_setting = ("connection.zone", zone) if zone else ()
    zone_arg = (f"--zone={zone}",) if zone else ()
    where = f"zone {zone}" if zone else "the default zone"
    steps = (
        Step(
            argv=(
                *("nmcli", "connection", "add", "type", "bridge"),
                *("con-name", bridge, "ifname", bridge),
                *("ethernet.cloned-mac-address", mac),
                *("bridge.stp", "no"),
                *("ipv4.method", "auto", "ipv6.method", "auto"),
                *zone_setting,
            ),
            why=(
                f"the bridge, with {iface}'s MAC so the site's DHCP gives the host its address "
                "again; no STP (one uplink, and STP's 30 s delay would miss guests' DHCP)"
            ),
        ),
        Step(
            argv=(
                *("nmcli", "connection", "add", "type", "ethernet"),
                *("con-name", port, "ifname", iface),
                *("master", bridge, "slave-type", "bridge"),
                *("connection.autoconnect-priority", "10"),
            ),
            why=f"{iface} as the bridge's port; it outranks {iface}'s old profile, kept for undo",
        ),
        Step(
            argv=("nmcli", "connection", "up", port),
            why=f"switch over: activating the port brings up {bridge}, which asks DHCP",
        ),
        Step(
            argv=("firewall-cmd", *zone_arg, "--add-forward"),
            why=(
                f"bridged frames pass the host firewall (br_netfilter): allow forwarding within "
                f"{where} now, instead of bridge-nf-call-iptables=0 for all bridges"
            ),
            needs_firewalld=True,
        ),
        Step(
            argv=("firewall-cmd", "--permanent", *zone_arg, "--add-forward"),
            why="and across reboots",
            needs_firewalld=True,
        ),
    )
    return BridgePlan(iface=iface, bridge=bridge, mac=mac, zone=zone, steps=steps)


def plan_for_host(iface: str, bridge: str = "br0", zone: str | None = None) -> BridgePlan:
    """The plan for this host's ``iface``; bad input is a UsageError, found before anything."""
    nic = host_device(check_ifname(iface, "--iface"))
    check_ifname(bridge, "--name")
    if not nic.exists:
        raise UsageError(f"--iface {iface!r}: no such network device on this host")
    if nic.is_bridge:
        raise UsageError(f"--iface {iface!r} is a bridge already: use `vnode up --bridge {iface}`")
    if nic.is_loopback or not nic.mac:
        raise UsageError(f"--iface {iface!r} is not an Ethernet device")
    if nic.master:
        raise UsageError(f"--iface {iface!r} is already a port of {nic.master}")
    if host_device(bridge).exists:
        raise UsageError(f"--name {bridge!r}: a network device of that name exists already")
    return plan_bridge(iface, nic.mac, bridge, zone)


def apply_plan(plan: BridgePlan, on_step: Callable[[Step, str], None]) -> None:
    """Run the plan's commands in order; ``on_step(step, outcome)`` reports each one."""
    _require_networkmanager()
    firewalld = _firewalld_running()
    for step in plan.steps:
        if step.needs_firewalld and not firewalld:
            on_step(step, "skipped: firewalld is not running")
            continue
        result = subprocess.run(step.argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            reason = " ".join((result.stderr or result.stdout).split()) or "no output"
            raise EnvironmentProblem(
                f"`{step.shell}` failed ({reason}); to undo what ran: {plan.undo}"
            )
        on_step(step, "done")


def _require_networkmanager() -> None:
    if shutil.which("nmcli") is None:
        raise EnvironmentProblem(
            "nmcli not found: `vnode bridge create` sets the bridge up with NetworkManager; "
            "install and start it, or see the commands with --dry-run"
        )
    state = subprocess.run(
        ["nmcli", "-t", "-f", "RUNNING", "general"], capture_output=True, text=True, check=False
    )
    if state.stdout.strip() != "running":
        raise EnvironmentProblem(
            "NetworkManager is not running: start it (systemctl start NetworkManager), "
            "or see the commands with --dry-run"
        )


def _firewalld_running() -> bool:
    if shutil.which("firewall-cmd") is None:
        return False
    state = subprocess.run(["firewall-cmd", "--state"], capture_output=True, check=False)
    return state.returncode == 0

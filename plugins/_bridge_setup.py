"""The one-time host bridge set-up behind `vnode bridge create` (nmcli, firewalld).

``vnode bridge create --iface eno1`` puts the host's NIC into a new bridge so that nodes can
join the site's network as peers of the host. The plan is a list of commands, printed exactly
by ``--dry-run`` and run one by one otherwise:

- the bridge takes the NIC's MAC, so the site's DHCP (keyed on that MAC) gives the host the
  address it had; the bridge takes over the addressing of the NIC's active profile (DHCP, or
  its static addresses, gateway and DNS, so a remote admin keeps SSH), and its firewalld
  zone, MTU and IPv6 settings;
- the NIC gets a port profile whose autoconnect priority is one above the highest of the
  profiles that could claim the NIC (cloud-init 24.x writes 120), so it still wins after a
  reboot; the old profiles are left untouched: deleting the two new profiles restores the
  old set-up exactly;
- a Wi-Fi NIC is refused (an 802.11 station cannot bridge other MACs), as is a NIC without
  carrier or already a port;
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
# The NIC's settings the bridge takes over, as nmcli names them.
CARRIED = (
    "ipv4.method",
    "ipv4.addresses",
    "ipv4.gateway",
    "ipv4.dns",
    "ipv4.dns-search",
    "ipv6.method",
    "ipv6.addresses",
    "ipv6.gateway",
    "ipv6.dns",
    "ipv6.dns-search",
    "connection.zone",
    "802-3-ethernet.mtu",
)
_METHODS = {
    "ipv4.method": ("auto", "manual", "disabled"),
    "ipv6.method": ("auto", "manual", "dhcp", "ignore", "disabled", "link-local"),
}


class AlreadyBridged(Exception):
    """The NIC is a port of the wanted bridge already: running the set-up again changes
    nothing."""


@attrs.frozen
class NicProfile:
    """What NetworkManager holds for the NIC: its active profile's settings (nmcli names,
    empty values left out) and the highest autoconnect priority of any profile that could
    claim the NIC."""

    name: str | None = None
    settings: dict[str, str] = attrs.field(factory=dict)
    highest_priority: int = 0
    type: str = "802-3-ethernet"


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


def plan_bridge(
    iface: str,
    mac: str,
    bridge: str = "br0",
    zone: str | None = None,
    profile: NicProfile | None = None,
) -> BridgePlan:
    """The nmcli (and firewall-cmd) commands that make ``bridge`` out of ``iface``; pure."""
    check_ifname(iface, "--iface")
    check_ifname(bridge, "--name")
    if zone is not None and not _ZONE.match(zone):
        raise UsageError(f"--zone {zone!r} is not a firewalld zone name")
    profile = profile or NicProfile()
    if profile.type == "802-11-wireless":
        raise UsageError(
            f"--iface {iface!r} is a Wi-Fi NIC: an 802.11 station cannot bridge other MACs; "
            "use a wired NIC, or vnode's own libvirt network (NAT)"
        )
    carried = _carried_settings(profile, iface)
    zone = zone or carried.pop("connection.zone", None)
    carried.pop("connection.zone", None)
    mtu = carried.pop("802-3-ethernet.mtu", None)
    port = f"{bridge}-port-{iface}"
    zone_setting = ("connection.zone", zone) if zone else ()
    zone_arg = (f"--zone={zone}",) if zone else ()
    mtu_setting = ("ethernet.mtu", mtu) if mtu else ()
    where = f"zone {zone}" if zone else "the default zone"
    addressing = tuple(item for key_value in carried.items() for item in key_value)
    how = "its static addresses" if carried["ipv4.method"] == "manual" else "DHCP"
    priority = str(profile.highest_priority + 1)
    steps = (
        Step(
            argv=(
                *("nmcli", "connection", "add", "type", "bridge"),
                *("con-name", bridge, "ifname", bridge),
                *("ethernet.cloned-mac-address", mac),
                *("bridge.stp", "no"),
                *addressing,
                *mtu_setting,
                *zone_setting,
            ),
            why=(
                f"the bridge, with {iface}'s MAC and {iface}'s addressing ({how}) so the host "
                "keeps its address; no STP (one uplink, and STP's 30 s delay would miss "
                "guests' DHCP)"
            ),
        ),
        Step(
            argv=(
                *("nmcli", "connection", "add", "type", "ethernet"),
                *("con-name", port, "ifname", iface),
                *("master", bridge, "slave-type", "bridge"),
                *("connection.autoconnect-priority", priority),
                *mtu_setting,
            ),
            why=(
                f"{iface} as the bridge's port; priority {priority} outranks every profile "
                f"that could claim {iface} (kept for undo), after a reboot too"
            ),
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


def _carried_settings(profile: NicProfile, iface: str) -> dict[str, str]:
    """The NIC profile's settings the bridge takes, checked; DHCP where the NIC had none."""
    # nmcli shows unset values as "" or "--", and an MTU left to the driver as "auto".
    settings = {
        k: v
        for k, v in profile.settings.items()
        if k in CARRIED and v not in ("", "--") and not (k == "802-3-ethernet.mtu" and v == "auto")
    }
    settings.setdefault("ipv4.method", "auto")
    settings.setdefault("ipv6.method", "auto")
    for key, allowed in _METHODS.items():
        if settings[key] not in allowed:
            raise UsageError(
                f"--iface {iface!r}: its profile {profile.name!r} has {key} {settings[key]}, "
                "which a bridge cannot take over; set the bridge up by hand (see --dry-run)"
            )
    if settings["ipv4.method"] == "manual" and not settings.get("ipv4.addresses"):
        raise UsageError(f"--iface {iface!r}: ipv4.method manual without addresses")
    for key in (
        "ipv4.addresses",
        "ipv6.addresses",
        "ipv4.dns",
        "ipv6.dns",
        "ipv4.dns-search",
        "ipv6.dns-search",
    ):
        if key in settings:  # nmcli lists with ", "; it reads them back with ","
            settings[key] = ",".join(part.strip() for part in settings[key].split(","))
    return dict(sorted(settings.items(), key=lambda kv: CARRIED.index(kv[0])))


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
    if nic.is_wireless:
        raise UsageError(
            f"--iface {iface!r} is a Wi-Fi NIC: an 802.11 station cannot bridge other MACs; "
            "use a wired NIC, or vnode's own libvirt network (NAT)"
        )
    if nic.master == bridge:
        raise AlreadyBridged(f"{bridge} already bridges {iface}: nothing to do")
    if nic.master:
        raise UsageError(f"--iface {iface!r} is already a port of {nic.master}")
    if nic.carrier is False:
        raise UsageError(f"--iface {iface!r} has no carrier (no cable or link): nothing to bridge")
    if host_device(bridge).exists:
        raise UsageError(f"--name {bridge!r}: a network device of that name exists already")
    return plan_bridge(iface, nic.mac, bridge, zone, read_nic_profile(iface, nic.mac))


def read_nic_profile(iface: str, mac: str) -> NicProfile:
    """What NetworkManager has for ``iface`` (empty where nmcli is missing: the plan is then
    DHCP, as for a NIC NetworkManager does not manage)."""
    if not _networkmanager_running():
        return NicProfile()
    # A device NetworkManager does not know has no profile: nmcli then fails, plainly.
    shown = subprocess.run(
        ["nmcli", "-g", "GENERAL.CONNECTION", "device", "show", iface],
        capture_output=True,
        text=True,
        check=False,
    )
    active = shown.stdout.strip() if shown.returncode == 0 else ""
    highest = 0
    for line in _nmcli("-t", "-f", "NAME,TYPE", "connection", "show").splitlines():
        name, _, kind = line.rpartition(":")
        name = name.replace("\\:", ":")
        if kind not in ("802-3-ethernet", "ethernet"):
            continue
        bound_name, bound_mac, priority = _nmcli_fields(
            name,
            (
                "connection.interface-name",
                "802-3-ethernet.mac-address",
                "connection.autoconnect-priority",
            ),
        )
        if bound_name not in ("", iface) or bound_mac.lower() not in ("", mac.lower()):
            continue
        highest = max(highest, int(priority or "0"))
    if not active or active == "--":
        return NicProfile(highest_priority=highest)
    kind, *values = _nmcli_fields(active, ("connection.type", *CARRIED))
    return NicProfile(
        name=active,
        settings=dict(zip(CARRIED, values, strict=True)),
        highest_priority=highest,
        type=kind,
    )


def _nmcli_fields(profile: str, fields: tuple[str, ...]) -> list[str]:
    # -g prints one value per line, in the order asked, with ":" and "\\" escaped.
    out = _nmcli("-g", ",".join(fields), "connection", "show", profile).splitlines()
    values = [line.replace("\\:", ":").replace("\\\\", "\\") for line in out]
    return (values + [""] * len(fields))[: len(fields)]


def _nmcli(*args: str) -> str:
    result = subprocess.run(["nmcli", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EnvironmentProblem(f"`nmcli {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


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


def _networkmanager_running() -> bool:
    if shutil.which("nmcli") is None:
        return False
    state = subprocess.run(
        ["nmcli", "-t", "-f", "RUNNING", "general"], capture_output=True, text=True, check=False
    )
    return state.stdout.strip() == "running"


def _require_networkmanager() -> None:
    if shutil.which("nmcli") is None:
        raise EnvironmentProblem(
            "nmcli not found: `vnode bridge create` sets the bridge up with NetworkManager; "
            "install and start it, or see the commands with --dry-run"
        )
    if not _networkmanager_running():
        raise EnvironmentProblem(
            "NetworkManager is not running: start it (systemctl start NetworkManager), "
            "or see the commands with --dry-run"
        )


def _firewalld_running() -> bool:
    if shutil.which("firewall-cmd") is None:
        return False
    state = subprocess.run(["firewall-cmd", "--state"], capture_output=True, check=False)
    return state.returncode == 0

"""The bridge plan of `vnode bridge create`: the exact commands, quoting, names."""

from __future__ import annotations

import pytest

from vnode.errors import UsageError
from vnode_plugins._bridge_setup import NicProfile, plan_bridge
from vnode_plugins._hostnet import check_ifname

MAC = "52:54:00:ab:cd:01"

# --- vnode bridge create: the plan -------------------------------------------------------


def test_plan_is_the_exact_nmcli_and_firewalld_commands() -> None:
    plan = plan_bridge("eno1", "3c:ec:ef:00:11:22", "br0")
    assert [step.shell for step in plan.steps] == [
        "nmcli connection add type bridge con-name br0 ifname br0 "
        "ethernet.cloned-mac-address 3c:ec:ef:00:11:22 bridge.stp no "
        "ipv4.method auto ipv6.method auto",
        "nmcli connection add type ethernet con-name br0-port-eno1 ifname eno1 "
        "master br0 slave-type bridge connection.autoconnect-priority 1",
        "nmcli connection up br0-port-eno1",
        "firewall-cmd --add-forward",
        "firewall-cmd --permanent --add-forward",
    ]
    assert [s.needs_firewalld for s in plan.steps] == [False, False, False, True, True]
    assert plan.undo == "nmcli connection delete br0-port-eno1 br0"


# What nmcli reports for a server NIC set up by hand with a static address (remote admin).
STATIC = NicProfile(
    name="Wired connection 1",
    settings={
        "ipv4.method": "manual",
        "ipv4.addresses": "192.0.2.10/24, 192.0.2.11/24",
        "ipv4.gateway": "192.0.2.1",
        "ipv4.dns": "192.0.2.53",
        "ipv4.dns-search": "lab.example",
        "ipv6.method": "disabled",
        "ipv6.addresses": "",
        "ipv6.gateway": "--",
        "connection.zone": "internal",
        "802-3-ethernet.mtu": "9000",
    },
    highest_priority=120,
)


def test_a_static_nic_keeps_its_addresses_gateway_dns_zone_and_mtu_on_the_bridge() -> None:
    plan = plan_bridge("eno1", MAC, "br0", profile=STATIC)
    bridge, port = plan.steps[0].shell, plan.steps[1].shell
    assert bridge == (
        f"nmcli connection add type bridge con-name br0 ifname br0 "
        f"ethernet.cloned-mac-address {MAC} bridge.stp no "
        "ipv4.method manual ipv4.addresses 192.0.2.10/24,192.0.2.11/24 ipv4.gateway 192.0.2.1 "
        "ipv4.dns 192.0.2.53 ipv4.dns-search lab.example ipv6.method disabled "
        "ethernet.mtu 9000 connection.zone internal"
    )
    assert port.endswith("connection.autoconnect-priority 121 ethernet.mtu 9000")
    assert plan.steps[3].argv == ("firewall-cmd", "--zone=internal", "--add-forward")
    assert "its static addresses" in plan.steps[0].why


def test_an_explicit_zone_wins_over_the_nics() -> None:
    plan = plan_bridge("eno1", MAC, "br0", zone="trusted", profile=STATIC)
    assert plan.steps[0].argv[-2:] == ("connection.zone", "trusted")


def test_a_cloud_init_profile_at_priority_120_is_outranked() -> None:
    dhcp = NicProfile(
        name="cloud-init eno1", settings={"ipv4.method": "auto"}, highest_priority=120
    )
    plan = plan_bridge("eno1", MAC, profile=dhcp)
    assert "connection.autoconnect-priority 121" in plan.steps[1].shell
    assert "ipv4.method auto ipv6.method auto" in plan.steps[0].shell


def test_wifi_and_untakeable_methods_are_refused() -> None:
    with pytest.raises(UsageError, match="is a Wi-Fi NIC"):
        plan_bridge("wlp2s0", MAC, profile=NicProfile(name="home", type="802-11-wireless"))
    shared = NicProfile(name="hotspot", settings={"ipv4.method": "shared"})
    with pytest.raises(UsageError, match=r"ipv4\.method shared, which a bridge cannot take over"):
        plan_bridge("eno1", MAC, profile=shared)
    empty = NicProfile(name="odd", settings={"ipv4.method": "manual"})
    with pytest.raises(UsageError, match="manual without addresses"):
        plan_bridge("eno1", MAC, profile=empty)


def test_plan_never_turns_bridge_netfilter_off() -> None:
    commands = " ".join(step.shell for step in plan_bridge("eno1", MAC).steps)
    assert "sysctl" not in commands
    assert "bridge-nf-call" not in commands


def test_plan_with_a_zone_puts_the_bridge_there_and_opens_that_zone() -> None:
    plan = plan_bridge("eno1", MAC, "lan0", zone="internal")
    assert plan.steps[0].argv[-2:] == ("connection.zone", "internal")
    assert plan.steps[3].argv == ("firewall-cmd", "--zone=internal", "--add-forward")
    assert plan.steps[4].argv == ("firewall-cmd", "--permanent", "--zone=internal", "--add-forward")


def test_plan_script_is_comments_and_commands_in_order() -> None:
    plan = plan_bridge("eno1", MAC)
    lines = plan.script().splitlines()
    commands = [line for line in lines if not line.startswith("#")]
    assert commands == [step.shell for step in plan.steps]
    assert lines[-1] == f"# undo: {plan.undo}"
    assert all(line.startswith("# ") for line in lines if line not in commands)


def test_plan_quotes_what_the_shell_would_split() -> None:
    # Names are validated, but the printed script must stay exact even for odd-but-valid ones.
    plan = plan_bridge("en-p1.5", MAC, "br_lab")
    assert "con-name br_lab-port-en-p1.5 ifname en-p1.5" in plan.steps[1].shell


@pytest.mark.parametrize(
    ("iface", "bridge", "zone"),
    [
        ("", "br0", None),
        ("eno1", "a/b", None),
        ("../etc", "br0", None),
        ("a-very-long-ifname", "br0", None),
        ("eno1", "br0", "bad zone"),
        ("eno1", "..", None),
    ],
)
def test_plan_refuses_bad_names(iface: str, bridge: str, zone: str | None) -> None:
    with pytest.raises(UsageError):
        plan_bridge(iface, MAC, bridge, zone)


def test_check_ifname_accepts_ordinary_names() -> None:
    for name in ("eth0", "enp1s0", "br0", "eno1.100", "vtbr_1-a"):
        assert check_ifname(name, "x") == name

"""Pure logic of the site networks: the bridge plan, doctor verdicts, the DNS wire format,
the guest's console report and the [site] config."""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from vnode.config import build_config
from vnode.dnsquery import DnsError, build_query, encode_name, parse_reply
from vnode.doctor import (
    FAIL,
    OK,
    WARN,
    Verdict,
    bridge_verdict,
    domain_types,
    healthy,
    kvm_device_verdict,
    reaper_verdict,
    virt_type_verdict,
)
from vnode.errors import UsageError
from vnode.hostbridge import HostDevice, check_ifname, plan_bridge
from vnode_plugins.bridge import guest_reported_address

MAC = "52:54:00:ab:cd:01"

# --- vnode bridge create: the plan -------------------------------------------------------


def test_plan_is_the_exact_nmcli_and_firewalld_commands() -> None:
    plan = plan_bridge("eno1", "3c:ec:ef:00:11:22", "br0")
    assert [step.shell for step in plan.steps] == [
        "nmcli connection add type bridge con-name br0 ifname br0 "
        "ethernet.cloned-mac-address 3c:ec:ef:00:11:22 bridge.stp no "
        "ipv4.method auto ipv6.method auto",
        "nmcli connection add type ethernet con-name br0-port-eno1 ifname eno1 "
        "master br0 slave-type bridge connection.autoconnect-priority 10",
        "nmcli connection up br0-port-eno1",
        "firewall-cmd --add-forward",
        "firewall-cmd --permanent --add-forward",
    ]
    assert [s.needs_firewalld for s in plan.steps] == [False, False, False, True, True]
    assert plan.undo == "nmcli connection delete br0-port-eno1 br0"


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


# --- vnode doctor: verdicts ----------------------------------------------------------------


def _kvm(mode: int, gid: int = 993) -> os.stat_result:
    return os.stat_result((stat.S_IFCHR | mode, 0, 0, 1, 0, gid, 0, 0, 0, 0))


def test_kvm_device_with_group_kvm_and_0660_is_ok() -> None:
    verdict = kvm_device_verdict(_kvm(0o660), lambda gid: "kvm")
    assert verdict.status == OK


@pytest.mark.parametrize(("mode", "group"), [(0o600, "root"), (0o600, "kvm"), (0o660, "root")])
def test_kvm_device_without_udev_permissions_warns_about_slow_defines(
    mode: int, group: str
) -> None:
    verdict = kvm_device_verdict(_kvm(mode), lambda gid: group)
    assert verdict.status == WARN
    assert "30-90 s" in verdict.message
    assert "chmod 0660 /dev/kvm" in verdict.message


def test_no_kvm_device_is_fine_for_emulation() -> None:
    assert kvm_device_verdict(None).status == OK


@pytest.mark.parametrize(
    ("wanted", "offered", "status"),
    [
        ("auto", {"qemu", "kvm"}, OK),
        ("auto", {"qemu"}, WARN),
        ("kvm", {"qemu"}, FAIL),
        ("kvm", {"qemu", "kvm"}, OK),
        ("qemu", {"qemu"}, OK),
        ("qemu", set(), FAIL),
    ],
)
def test_virt_type_verdicts(wanted: str, offered: set[str], status: str) -> None:
    assert virt_type_verdict(wanted, offered).status == status


def test_domain_types_are_read_from_capabilities() -> None:
    caps = """<capabilities><host/>
      <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/></arch></guest>
      <guest><os_type>hvm</os_type>
        <arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>
    </capabilities>"""
    assert domain_types(caps) == {"qemu", "kvm"}


@pytest.mark.parametrize(
    ("device", "status"),
    [
        (HostDevice(name="br0", exists=False), FAIL),
        (HostDevice(name="br0", exists=True, is_up=True), FAIL),  # not a bridge
        (HostDevice(name="br0", exists=True, is_bridge=True), FAIL),  # down
        (HostDevice(name="br0", exists=True, is_bridge=True, is_up=True), WARN),  # no ports
        (HostDevice(name="br0", exists=True, is_bridge=True, is_up=True, ports=("eno1",)), OK),
    ],
)
def test_bridge_verdicts(device: HostDevice, status: str) -> None:
    assert bridge_verdict(device).status == status


def test_healthy_means_no_fail() -> None:
    assert healthy([Verdict("a", OK, "x"), Verdict("b", WARN, "y")])
    assert not healthy([Verdict("a", OK, "x"), Verdict("b", FAIL, "y")])


# --- the site's DNS, on the wire -----------------------------------------------------------


def _reply(ident: int, rcode: int, answers: list[bytes], question: str = "vb01.site.test") -> bytes:
    header = struct.pack(">HHHHHH", ident, 0x8180 | rcode, 1, len(answers), 0, 0)
    return header + encode_name(question) + struct.pack(">HH", 1, 1) + b"".join(answers)


def _a_record(ip: str, name: bytes = b"\xc0\x0c") -> bytes:
    # \xc0\x0c: a compression pointer to the question's name at offset 12
    return name + struct.pack(">HHIH", 1, 1, 300, 4) + socket.inet_aton(ip)


def test_query_is_a_recursive_a_question() -> None:
    query = build_query("vb01.site.test", 0x1234)
    assert query[:12] == struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert query[12:] == b"\x04vb01\x04site\x04test\x00\x00\x01\x00\x01"


def test_reply_addresses_are_read_through_compressed_names() -> None:
    cname = (
        b"\xc0\x0c"
        + struct.pack(">HHIH", 5, 1, 300, 6)
        + b"\x03web\xc0\x11"  # web.site.test, pointing into the question
    )
    reply = _reply(7, 0, [cname, _a_record("10.1.2.3", b"\x03web\xc0\x11"), _a_record("10.1.2.4")])
    assert parse_reply(reply, 7) == ["10.1.2.3", "10.1.2.4"]


def test_nxdomain_and_nodata_mean_no_address() -> None:
    assert parse_reply(_reply(9, 3, []), 9) == []
    assert parse_reply(_reply(9, 0, []), 9) == []


@pytest.mark.parametrize(
    "reply",
    [
        _reply(1, 2, []),  # SERVFAIL
        _reply(1, 5, []),  # REFUSED
        _reply(2, 0, [_a_record("10.0.0.1")]),  # another question's reply
        _reply(1, 0, [_a_record("10.0.0.1")])[:-3],  # cut short
        b"\x00\x01",
    ],
)
def test_unusable_replies_are_errors(reply: bytes) -> None:
    with pytest.raises(DnsError):
        parse_reply(reply, 1)


@pytest.mark.parametrize("name", ["", "a..b", "x" * 64 + ".test", "é.test"])
def test_bad_names_are_not_sent(name: str) -> None:
    with pytest.raises(ValueError):
        encode_name(name)


# --- the guest's own report on the console ---------------------------------------------------

CONSOLE = """\
[    2.1] cloud-init[180]: Cloud-init v. 22.4.2 running 'init-local'
ci-info: ++++++++++++++++++++++++++++++++++++Net device info++++++++++++++++++++++++++++++++++++
ci-info: +--------+-------+---------------------------+---------------+--------+-------------------+
ci-info: | Device |   Up  |          Address          |      Mask     | Scope  |     Hw-Address    |
ci-info: +--------+-------+---------------------------+---------------+--------+-------------------+
ci-info: | vnode0 |  True |        10.232.7.51        | 255.255.255.0 | global | 52:54:00:ab:cd:01 |
ci-info: | vnode0 |  True |  fe80::5054:ff:fe00:1/64  |       .       |  link  | 52:54:00:ab:cd:01 |
ci-info: |   lo   |  True |         127.0.0.1         |   255.0.0.0   |  host  |         .         |
ci-info: | other0 |  True |        10.232.7.99        | 255.255.255.0 | global | 52:54:00:ab:cd:02 |
ci-info: +--------+-------+---------------------------+---------------+--------+-------------------+
ci-info: ++++++++++++++++++++++++++++Route IPv4 info++++++++++++++++++++++++++++
ci-info: | Route | Destination |  Gateway  |    Genmask    | Interface | Flags |
ci-info: |   0   |  10.232.7.0 |  0.0.0.0  | 255.255.255.0 |   vnode0  |   U   |
"""


def test_the_guest_report_gives_the_address_of_its_mac(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text(CONSOLE)
    assert guest_reported_address(console, MAC) == "10.232.7.51"
    assert guest_reported_address(console, MAC.upper()) == "10.232.7.51"
    assert guest_reported_address(console, "52:54:00:ab:cd:02") == "10.232.7.99"
    assert guest_reported_address(console, "52:54:00:ab:cd:03") is None


def test_the_latest_report_wins_and_no_address_is_no_answer(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    early = CONSOLE.replace("|        10.232.7.51        |", "|             .             |")
    console.write_text(early)
    assert guest_reported_address(console, MAC) is None
    console.write_text(early + CONSOLE.replace("10.232.7.51", "10.232.7.61"))
    assert guest_reported_address(console, MAC) == "10.232.7.61"


def test_a_missing_console_is_no_answer(tmp_path: Path) -> None:
    assert guest_reported_address(tmp_path / "absent.log", MAC) is None


# --- [site] in the config ------------------------------------------------------------------


def test_site_settings_are_read() -> None:
    config = build_config({"site": {"dns": "10.0.0.1", "dns_port": 5353, "domain": "lab.test"}})
    assert (config.site.dns, config.site.dns_port, config.site.domain) == (
        "10.0.0.1",
        5353,
        "lab.test",
    )
    assert build_config({}).site.dns == ""


@pytest.mark.parametrize(
    "site",
    [
        {"dns": "ns.example"},
        {"dns": 10},
        {"dns_port": 0},
        {"dns_port": "53"},
        {"domain": "Lab_Test"},
        {"domain": ".lab"},
        {"server": "10.0.0.1"},
    ],
)
def test_bad_site_settings_are_usage_errors(site: dict) -> None:
    with pytest.raises(UsageError):
        build_config({"site": site})


def test_a_known_init_as_libvirtds_parent_is_a_prompt_reaper() -> None:
    verdict = reaper_verdict("tini", 4242, None)
    assert verdict.status == OK
    assert "tini (pid 4242)" in verdict.message


def test_a_late_reaper_warns_with_the_delay_and_the_fix() -> None:
    verdict = reaper_verdict("process_api", 1, 1.64)
    assert verdict.status == WARN
    assert "after 1.6 s" in verdict.message
    assert "tini -s" in verdict.message


def test_the_reaper_verdict_names_a_modular_daemon() -> None:
    verdict = reaper_verdict("systemd", 1, None, "virtqemud")
    assert verdict.status == OK
    assert verdict.message.startswith("virtqemud's parent systemd (pid 1)")

"""Nodes on a host bridge, with addresses from the site's DHCP and names from its DNS.

The site is a dnsmasq on a test bridge (see conftest.py). Node 1 has a DHCP reservation and a
DNS name; node 2 only a DHCP reservation, so vnode has to learn its address without DNS.
One pair is booted for the module, with Ubuntu's and Fedora's network stacks: node 1 is
Debian 13 with netplan + systemd-networkd, node 2 Debian 13 with NetworkManager (Debian 12's
ifupdown takes the site's DHCP in test_direct.py and as a warm clone in test_warm.py);
network-config asks for DHCP on the NIC matched by MAC, and the checks read what each guest's
own stack made of the lease. `vnode bridge create` and `vnode doctor` need no guest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IMAGE_STORE, domain_names
from tests.integration.conftest import SITE_DOMAIN, Site, TokenServer, ip, settle
from vnode_plugins._hostnet import guest_reported_address, neighbour_address

pytestmark = pytest.mark.integration


NETPLAN, NM = 1, 2
DISTRO_OF = {NETPLAN: "d13", NM: "d13-nm"}


@pytest.fixture(scope="module")
def pair(bridge_site: Site) -> dict[str, dict]:
    """`vnode up 1:d13 2:d13-nm` on the bridge (the lab's default network); the --json
    objects by name."""
    for distro in DISTRO_OF.values():
        if not (IMAGE_STORE / f"{distro}.qcow2").exists():
            pytest.fail(f"no {distro} image: `make test` builds it (vnode images build {distro})")
    # Generous: Debian 13's systemd boots slower than 12's under plain emulation, and a
    # loaded 2-core host slows it more (a timeout, not a delay).
    code, nodes = bridge_site.lab.run_json(
        "up", *(f"{n}:{d}" for n, d in DISTRO_OF.items()), "--timeout", "900", timeout=1200
    )
    assert code == 0, nodes
    settle(bridge_site.lab, [1, 2])
    return {node["name"]: node for node in nodes}


def test_nodes_are_ready_at_the_addresses_the_site_reserved(bridge_site: Site, pair: dict) -> None:
    for host in bridge_site.reservations:
        node = pair[host.name]
        assert node["state"] == "ready", node
        assert node["mac"] == host.mac
        assert node["ip"] == host.ip  # node 1 through DNS, node 2 without it


def test_each_node_holds_its_reserved_address_and_its_name(bridge_site: Site, pair: dict) -> None:
    for host in bridge_site.reservations:
        result = bridge_site.lab.ssh(str(host.number), "hostname; ip -4 -o addr show scope global")
        assert result.returncode == 0, result.stderr
        hostname, addresses = result.stdout.split("\n", 1)
        assert hostname == host.name
        assert f"inet {host.ip}/24" in addresses
        assert addresses.count("inet ") == 1


def _ssh(site: Site, number: int, command: str) -> str:
    result = site.lab.ssh(str(number), command)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_the_lease_is_on_vnode0_and_gives_no_route(
    bridge_site: Site, pair: dict, number: int
) -> None:
    host = bridge_site.reservation(number)
    addresses = _ssh(bridge_site, number, "ip -4 -o addr show scope global").split()
    assert addresses[1] == "vnode0" and f"{host.ip}/24" in addresses
    # The site hands out no router: no default route may appear.
    assert "default" not in _ssh(bridge_site, number, "ip -4 route")


@pytest.mark.parametrize("number", [NETPLAN, NM])
def test_dns_server_and_domain_come_from_the_lease(
    bridge_site: Site, pair: dict, number: int
) -> None:
    if number == NETPLAN:  # networkd hands the lease's DNS to resolved, per link
        dns = _ssh(bridge_site, number, "resolvectl dns vnode0; resolvectl domain vnode0")
    else:  # NetworkManager writes resolv.conf itself
        dns = _ssh(bridge_site, number, "cat /etc/resolv.conf")
    assert bridge_site.server in dns, dns
    if number == NM:
        assert SITE_DOMAIN in dns, dns
    # networkd (and so netplan, on Ubuntu too) ignores the lease's domain by default
    # (UseDomains=no): a netplan guest gets the site's DNS server but no search domain.


def test_each_stack_rendered_dhcp_for_the_nic(bridge_site: Site, pair: dict) -> None:
    plan = _ssh(bridge_site, NETPLAN, "cat /etc/netplan/50-cloud-init.yaml")
    assert "dhcp4: true" in plan and "set-name:" in plan and "vnode0" in plan, plan
    assert "DHCP=ipv4" in _ssh(bridge_site, NETPLAN, "cat /run/systemd/network/*vnode0.network")
    keyfile = _ssh(
        bridge_site, NM, "cat /etc/NetworkManager/system-connections/cloud-init-vnode0.nmconnection"
    )
    assert "method=auto" in keyfile, keyfile
    assert _ssh(bridge_site, NM, "nmcli -g GENERAL.STATE device show vnode0").startswith("100")


def test_nodes_reach_each_other_and_the_host_on_the_bridge(
    bridge_site: Site, pair: dict, token_server: TokenServer
) -> None:
    first, second = bridge_site.reservation(1), bridge_site.reservation(2)
    # Node 2 resolves node 1's short name through the site's DNS (dnsmasq told it where and
    # the search domain, by DHCP: NetworkManager takes both, networkd only the server).
    result = bridge_site.lab.ssh(
        "2",
        f"getent hosts {first.name}; "
        f"timeout 10 bash -c 'exec 3<>/dev/tcp/{first.name}/22; head -c 7 <&3'; echo; "
        f"timeout 10 bash -c 'exec 3<>/dev/tcp/{bridge_site.host_address}/{token_server.port}; "
        "head -n 1 <&3'",
    )
    assert result.returncode == 0, result.stderr
    resolved, banner, token = result.stdout.splitlines()
    assert resolved.split()[0] == first.ip
    assert banner == "SSH-2.0"
    assert token == token_server.token
    # Node 1 reaches node 2 by address: the site's DNS does not know node 2.
    result = bridge_site.lab.ssh(
        "1",
        f"timeout 10 bash -c 'exec 3<>/dev/tcp/{second.ip}/22; head -c 7 <&3'; echo; "
        f"timeout 10 bash -c 'exec 3<>/dev/tcp/{bridge_site.host_address}/{token_server.port}; "
        "head -n 1 <&3'",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["SSH-2.0", token_server.token]


def test_list_shows_the_learned_addresses_and_ssh_uses_them(bridge_site: Site, pair: dict) -> None:
    code, nodes = bridge_site.lab.run_json("list")
    assert code == 0
    by_name = {n["name"]: n for n in nodes}
    for host in bridge_site.reservations:
        assert by_name[host.name]["ip"] == host.ip
        assert by_name[host.name]["network"] == f"bridge:{bridge_site.device}"
        spelled = f"{bridge_site.lab.stem}{host.number}"
        result = bridge_site.lab.ssh(spelled, "hostname")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == host.name


def test_the_guest_reports_its_address_or_the_host_saw_it(bridge_site: Site, pair: dict) -> None:
    # The fallbacks for names the site's DNS lacks. networkd has its lease by the time
    # cloud-init prints its device table on the serial console; NetworkManager may take its
    # lease later, and the host's neighbour table has the node.
    netplan, nm = bridge_site.reservation(NETPLAN), bridge_site.reservation(NM)
    console = Path(f"/var/log/libvirt/qemu/{netplan.name}-console.log")
    assert guest_reported_address(console, netplan.mac) == netplan.ip
    assert neighbour_address(nm.mac, bridge_site.device) == nm.ip


def test_the_site_dns_answered_vnode_by_name(bridge_site: Site, pair: dict) -> None:
    log = bridge_site.leases.with_suffix(".log").read_text()
    first = bridge_site.reservation(1)
    assert f"query[A] {first.name}.{SITE_DOMAIN}" in log
    assert f"{first.name}.{SITE_DOMAIN} is {first.ip}" in log


def test_doctor_checks_the_configured_bridge(bridge_site: Site, pair: dict) -> None:
    result = bridge_site.lab.run("doctor", "--json")
    verdicts = {v["check"]: v for v in json.loads(result.stdout)}
    assert verdicts["bridge"]["status"] == "ok", verdicts["bridge"]
    assert bridge_site.device in verdicts["bridge"]["message"]
    assert verdicts["site dns"]["status"] == "ok", verdicts["site dns"]
    failed = [v for v in verdicts.values() if v["status"] == "fail"]
    assert result.returncode == (1 if failed else 0)
    table = bridge_site.lab.run("doctor")
    assert any(line.split()[:2] == ["ok", "bridge"] for line in table.stdout.splitlines())


def test_doctor_fails_for_a_missing_bridge(bridge_site: Site) -> None:
    result = bridge_site.lab.run("doctor", "--network", "bridge:vtnobr0")
    assert result.returncode == 1
    bridge_line = [ln for ln in result.stdout.splitlines() if ln.split()[1:2] == ["bridge"]]
    assert bridge_line and bridge_line[0].startswith("fail")


def test_up_refuses_what_is_not_a_usable_bridge(bridge_site: Site) -> None:
    before = domain_names(bridge_site.lab.stem)
    for args, words in (
        (["--bridge", "vtnobr0"], "does not exist"),
        (["--bridge", "lo"], "not a bridge"),
        (["--bridge", "../etc"], "not a network device name"),
        (["--network", "bridge:a b"], "not a network device name"),
    ):
        result = bridge_site.lab.run("up", "5", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert words in result.stderr
    assert domain_names(bridge_site.lab.stem) == before


def test_bridge_create_dry_run_prints_the_exact_commands(
    bridge_site: Site, veth: tuple[str, str]
) -> None:
    nic, mac = veth
    result = bridge_site.lab.run("bridge", "create", "--iface", nic, "--name", "br7", "--dry-run")
    assert result.returncode == 0, result.stderr
    commands = [ln for ln in result.stdout.splitlines() if not ln.startswith("#")]
    assert commands == [
        "nmcli connection add type bridge con-name br7 ifname br7 "
        f"ethernet.cloned-mac-address {mac} bridge.stp no ipv4.method auto ipv6.method auto",
        f"nmcli connection add type ethernet con-name br7-port-{nic} ifname {nic} "
        # No NetworkManager on this machine: no profile claims the NIC yet, DHCP is kept.
        "master br7 slave-type bridge connection.autoconnect-priority 1",
        f"nmcli connection up br7-port-{nic}",
        "firewall-cmd --add-forward",
        "firewall-cmd --permanent --add-forward",
    ]
    assert f"# undo: nmcli connection delete br7-port-{nic} br7" in result.stdout
    assert "bridge-nf-call-iptables=0" in result.stdout  # says why it is not done
    zoned = bridge_site.lab.run(
        "bridge", "create", "--iface", nic, "--name", "br7", "--zone", "lab", "--dry-run"
    )
    assert "ipv6.method auto connection.zone lab\n" in zoned.stdout
    assert "\nfirewall-cmd --permanent --zone=lab --add-forward\n" in zoned.stdout
    # The wrapper script prints the same.
    script = Path(__file__).resolve().parents[2] / "install" / "create-bridge.sh"
    wrapped = subprocess.run(
        ["sh", str(script), "--iface", nic, "--name", "br7", "--dry-run"],
        capture_output=True,
        text=True,
        env=bridge_site.lab.env(),
        check=False,
    )
    assert wrapped.stdout == result.stdout


def test_bridge_create_without_networkmanager_fails_clearly(
    bridge_site: Site, veth: tuple[str, str], tmp_path: Path
) -> None:
    nic, _ = veth
    env = {**bridge_site.lab.env(), "PATH": str(tmp_path)}  # no nmcli on this PATH
    result = subprocess.run(
        [sys.executable, "-m", "vnode.cli", "bridge", "create", "--iface", nic, "--name", "br7"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("vnode: nmcli not found")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not Path("/sys/class/net/br7").exists()


def test_bridge_create_refuses_bad_input(bridge_site: Site, veth: tuple[str, str]) -> None:
    nic, _ = veth
    for args, words in (
        (["--iface", "vtnonic0"], "no such network device"),
        (["--iface", bridge_site.device], "is a bridge already"),
        (["--iface", "lo"], "not an Ethernet device"),
        (["--iface", nic, "--name", bridge_site.device], "exists already"),
        (["--iface", nic, "--name", "x/y"], "not a network device name"),
        (["--iface", nic, "--zone", "bad zone"], "not a firewalld zone"),
    ):
        result = bridge_site.lab.run("bridge", "create", *args, "--dry-run")
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr, result.stderr
    # A port of a bridge already belongs to one.
    ip("link", "set", nic, "master", bridge_site.device)
    try:
        result = bridge_site.lab.run("bridge", "create", "--iface", nic, "--dry-run")
        assert result.returncode == 2
        assert f"already a port of {bridge_site.device}" in result.stderr
    finally:
        ip("link", "set", nic, "nomaster")


def test_destroy_leaves_the_site_alone(bridge_site: Site, pair: dict) -> None:
    result = bridge_site.lab.run("destroy", "1", "2")
    assert result.returncode == 0, result.stderr
    remaining = domain_names(bridge_site.lab.stem)
    assert not any(host.name in remaining for host in bridge_site.reservations)
    assert Path(f"/sys/class/net/{bridge_site.device}/bridge").is_dir()
    assert not list(Path(f"/sys/class/net/{bridge_site.device}/brif").iterdir())

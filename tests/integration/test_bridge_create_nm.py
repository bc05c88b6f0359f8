"""`vnode bridge create` on a real NetworkManager (and firewalld), as on a Fedora host.

The "host" is a network + mount namespace (tests/harness/hostns.py) running dbus,
NetworkManager and, where a test wants it, firewalld. Its NIC `eno1` is a veth whose other
end is in a "site" namespace running dnsmasq with a DHCP reservation for eno1's MAC. vnode
runs inside the host namespace, as an admin would run it on the host. Nothing leaves the
machine: the site has no uplink and dnsmasq no upstream.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.harness.hostns import HostNamespace

pytestmark = pytest.mark.integration

MAC = "52:54:00:5e:00:01"
HOST_DIRS = (
    "/run",
    "/var/lib/NetworkManager",
    "/etc/NetworkManager/system-connections",
    "/etc/firewalld",
    "/var/log",  # firewalld logs to /var/log/firewalld: this host's file otherwise
)


@attrs.frozen
class NmHost:
    host: HostNamespace
    site_netns: str
    prefix: str  # "10.234.N"
    logs: Path

    @property
    def reserved(self) -> str:
        return f"{self.prefix}.50"

    def vnode(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.host.run(sys.executable, "-m", "vnode.cli", *args, check=False)

    def nmcli(self, *args: str) -> str:
        return self.host.run("nmcli", *args).stdout

    def addresses(self, device: str) -> list[str]:
        out = self.host.run("ip", "-4", "-o", "addr", "show", "dev", device, check=False).stdout
        return [line.split()[3] for line in out.splitlines()]

    def sys(self, path: str) -> str:
        return self.host.run("cat", f"/sys/class/net/{path}").stdout.strip()


def _free_prefix() -> str:
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    return f"10.234.{random.choice([n for n in range(16, 250) if f'10.234.{n}.' not in used])}"


@pytest.fixture
def nm_host(tmp_path: Path) -> Iterator[NmHost]:
    token = uuid.uuid4().hex[:5]
    site, host_end, site_end = f"nmsite{token}", f"nme{token}", f"nms{token}"
    prefix = _free_prefix()
    subprocess.run(["ip", "netns", "add", site], check=True)
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        with HostNamespace(HOST_DIRS) as host:
            subprocess.run(
                ["ip", "link", "add", host_end, "type", "veth", "peer", "name", site_end],
                check=True,
            )
            subprocess.run(["ip", "link", "set", site_end, "netns", site], check=True)
            host.move_link_in(host_end, "eno1")
            host.run("ip", "link", "set", "eno1", "address", MAC)
            for argv in (
                ["addr", "add", f"{prefix}.1/24", "dev", site_end],
                ["link", "set", site_end, "up"],
                ["link", "set", "lo", "up"],
            ):
                subprocess.run(["ip", "-n", site, *argv], check=True)
            dnsmasq = subprocess.Popen(
                [
                    *("ip", "netns", "exec", site, "dnsmasq", "--keep-in-foreground"),
                    *("--no-resolv", "--port=0", f"--interface={site_end}", "--bind-interfaces"),
                    f"--dhcp-range={prefix}.100,{prefix}.200,255.255.255.0,1h",
                    f"--dhcp-host={MAC},{prefix}.50",
                    f"--dhcp-leasefile={tmp_path / 'leases'}",
                    "--log-dhcp",
                ],
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "dnsmasq.log").open("wb"),
            )
            host.run("mkdir", "-p", "/run/dbus")
            dbus_pid = host.run("dbus-daemon", "--system", "--fork", "--print-pid").stdout
            host.adopt_daemon("dbus", int(dbus_pid.split()[0]))
            host.start_daemon(
                "NetworkManager", "NetworkManager", "--no-daemon", log=tmp_path / "nm.log"
            )
            made = NmHost(host=host, site_netns=site, prefix=prefix, logs=tmp_path)
            host.wait_for(
                "eno1's address from the site's DHCP",
                lambda: f"{made.reserved}/24" in made.addresses("eno1"),
            )
            yield made
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", site], check=False)


def _start_firewalld(nm: NmHost) -> None:
    nm.host.start_daemon("firewalld", "firewalld", "--nofork", log=nm.logs / "firewalld.log")
    nm.host.wait_for(
        "firewalld",
        lambda: nm.host.run("firewall-cmd", "--state", check=False).returncode == 0,
        timeout=60,
    )


def _bridge_nf(nm: NmHost) -> str:
    return nm.host.run(
        "sh", "-c", "cat /proc/sys/net/bridge/bridge-nf-call-* 2>/dev/null || true"
    ).stdout


def test_bridge_create_keeps_the_hosts_address_and_mac_and_undo_undoes(nm_host: NmHost) -> None:
    nm = nm_host
    before_profiles = nm.nmcli("-t", "-f", "NAME", "connection", "show").split()
    result = nm.vnode("bridge", "create", "--iface", "eno1")
    assert result.returncode == 0, result.stderr
    assert "skipped: firewalld is not running: firewall-cmd --add-forward" in result.stdout
    nm.host.wait_for("br0's address", lambda: f"{nm.reserved}/24" in nm.addresses("br0"))
    assert nm.sys("br0/address") == MAC
    assert nm.sys("br0/bridge/stp_state") == "0"
    assert nm.host.run("readlink", "/sys/class/net/eno1/master").stdout.strip().endswith("/br0")
    assert nm.addresses("eno1") == []
    # The host still reaches the site from its address, now through the bridge.
    assert nm.host.run("ping", "-c1", "-W2", f"{nm.prefix}.1", check=False).returncode == 0

    again = nm.vnode("bridge", "create", "--iface", "eno1")
    assert (again.returncode, again.stdout.strip()) == (
        0,
        "br0 already bridges eno1: nothing to do",
    )

    undo = result.stdout.strip().splitlines()[-1].split("undo with: ", 1)[1]
    nm.host.run(*undo.split())
    nm.host.wait_for("eno1's address back", lambda: f"{nm.reserved}/24" in nm.addresses("eno1"))
    nm.host.wait_for(
        "br0 gone", lambda: nm.host.run("test", "-e", "/sys/class/net/br0", check=False).returncode
    )
    assert nm.nmcli("-t", "-f", "NAME", "connection", "show").split() == before_profiles


def test_a_static_address_and_a_high_priority_profile_carry_over(nm_host: NmHost) -> None:
    nm = nm_host
    static = f"{nm.prefix}.60/24"
    nm.nmcli(
        "connection",
        "add",
        "type",
        "ethernet",
        "con-name",
        "cloud-init eno1",
        "ifname",
        "eno1",
        "ipv4.method",
        "manual",
        "ipv4.addresses",
        static,
        "ipv4.gateway",
        f"{nm.prefix}.1",
        "ipv4.dns",
        f"{nm.prefix}.1",
        "connection.autoconnect-priority",
        "120",
    )
    nm.nmcli("connection", "up", "cloud-init eno1")
    result = nm.vnode("bridge", "create", "--iface", "eno1")
    assert result.returncode == 0, result.stderr
    nm.host.wait_for("br0's static address", lambda: static in nm.addresses("br0"))
    bridge = nm.nmcli("-g", "ipv4.method,ipv4.addresses,ipv4.gateway", "connection", "show", "br0")
    assert bridge.split() == ["manual", static, f"{nm.prefix}.1"]
    priority = nm.nmcli(
        "-g", "connection.autoconnect-priority", "connection", "show", "br0-port-eno1"
    )
    assert priority.strip() == "121"


def test_firewalld_forwarding_off_before_is_on_after_and_bridge_nf_untouched(
    nm_host: NmHost,
) -> None:
    nm = nm_host
    _start_firewalld(nm)
    nm.host.run("firewall-cmd", "--remove-forward")
    assert nm.host.run("firewall-cmd", "--query-forward", check=False).stdout.strip() == "no"
    netfilter = _bridge_nf(nm)
    result = nm.vnode("bridge", "create", "--iface", "eno1")
    assert result.returncode == 0, result.stderr
    assert "done: firewall-cmd --add-forward" in result.stdout
    assert nm.host.run("firewall-cmd", "--query-forward").stdout.strip() == "yes"
    permanent = nm.host.run("firewall-cmd", "--permanent", "--query-forward").stdout
    assert permanent.strip() == "yes"
    assert _bridge_nf(nm) == netfilter


def test_a_nic_without_carrier_or_a_bridge_port_is_refused_and_nothing_changes(
    nm_host: NmHost,
) -> None:
    nm = nm_host
    # The far end stays down outside the host, where NetworkManager cannot bring it up: no
    # carrier. It goes away with the host's end when the namespace does.
    near, far = f"nme{uuid.uuid4().hex[:6]}", f"nmp{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", near, "type", "veth", "peer", "name", far], check=True)
    nm.host.move_link_in(near, "eno2")
    nm.host.run("ip", "link", "set", "eno2", "up")
    no_carrier = nm.vnode("bridge", "create", "--iface", "eno2")
    assert no_carrier.returncode == 2
    assert no_carrier.stderr.strip() == (
        "vnode: --iface 'eno2' has no carrier (no cable or link): nothing to bridge"
    )
    nm.host.run("ip", "link", "add", "lab0", "type", "bridge")
    nm.host.run("ip", "link", "add", "eno3", "type", "veth", "peer", "name", "eno3b")
    # A port someone else made: NetworkManager must not claim it back meanwhile.
    for device in ("lab0", "eno3", "eno3b"):
        nm.host.wait_for(
            f"{device} known to NetworkManager",
            lambda d=device: (
                nm.host.run("nmcli", "device", "set", d, "managed", "no", check=False).returncode
                == 0
            ),
        )
    nm.host.run("ip", "link", "set", "eno3", "master", "lab0")
    port = nm.vnode("bridge", "create", "--iface", "eno3")
    assert port.returncode == 2 and "is already a port of lab0" in port.stderr
    # NetworkManager makes "Wired connection N" for new NICs itself; vnode made nothing.
    profiles = nm.nmcli("-t", "-f", "NAME", "connection", "show").splitlines()
    assert not [name for name in profiles if name.startswith("br0")]

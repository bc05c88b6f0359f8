"""`vnode bridge create` on a real NetworkManager (and firewalld), as on a Fedora host.

The "host" is a network + mount namespace (tests/harness/hostns.py) running dbus,
NetworkManager and, where a test wants it, firewalld. Its NIC `eno1` is a veth whose other
end is in a "site" namespace running dnsmasq with a DHCP reservation for eno1's MAC. vnode
runs inside the host namespace, as an admin would run it on the host. Nothing leaves the
machine: the site has no uplink and dnsmasq no upstream.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.conftest import IMAGE_STORE, LAB_PREFIX, TEST_DISTRO, VIRT_TYPE, free_octet
from tests.harness.hostns import HostNamespace

pytestmark = pytest.mark.integration

MAC = "52:54:00:5e:00:01"
NODE_STEM = f"{LAB_PREFIX}nmn"
NODE_NAME = f"{NODE_STEM}01"
NODE_MAC_PREFIX = "52:54:00:5e:01"  # the lab pool's: node 1 is 52:54:00:5e:01:01
HOST_DIRS = (
    # A libvirtd of the host's own, for the test that boots a node on the bridge.
    "/var/lib/libvirt",
    "/var/cache/libvirt",
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

    @property
    def node_ip(self) -> str:
        return f"{self.prefix}.71"

    def vnode(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "VNODE_CONFIG": str(config)} if config else None
        return self.host.run(
            sys.executable, "-m", "vnode.cli", *args, check=False, env=env, timeout=600
        )

    def nmcli(self, *args: str) -> str:
        return self.host.run("nmcli", *args).stdout

    def addresses(self, device: str) -> list[str]:
        out = self.host.run("ip", "-4", "-o", "addr", "show", "dev", device, check=False).stdout
        return [line.split()[3] for line in out.splitlines()]

    def sys(self, path: str) -> str:
        return self.host.run("cat", f"/sys/class/net/{path}").stdout.strip()


def _free_prefix() -> str:
    return f"10.234.{free_octet('10.234')}"


@pytest.fixture
def nm_host(tmp_path: Path) -> Iterator[NmHost]:
    token = uuid.uuid4().hex[:5]
    site, host_end, site_end = f"nmsite{token}", f"nme{token}", f"nms{token}"
    prefix = _free_prefix()
    subprocess.run(["ip", "netns", "add", site], check=True)
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        with HostNamespace(HOST_DIRS, copies=("/etc/libvirt",)) as host:
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
                    *("--no-resolv", "--no-hosts", f"--interface={site_end}", "--bind-interfaces"),
                    f"--dhcp-range={prefix}.100,{prefix}.200,255.255.255.0,1h",
                    f"--dhcp-host={MAC},{prefix}.50",
                    f"--dhcp-host={NODE_MAC_PREFIX}:01,{prefix}.71",
                    f"--host-record={NODE_NAME},{prefix}.71",
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
            try:
                yield made
            finally:
                _destroy_domains(host)
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", site], check=False)


def _destroy_domains(host: HostNamespace) -> None:
    """QEMU outlives its libvirtd (and would hold the namespace): stop every domain first."""
    if host.run("test", "-S", "/run/libvirt/libvirt-sock", check=False).returncode != 0:
        return
    names = host.run(
        "virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name", check=False
    ).stdout.split()
    for name in names:
        host.run("virsh", "-c", "qemu:///system", "destroy", name, check=False)
        host.run("virsh", "-c", "qemu:///system", "undefine", name, check=False)


def _start_libvirt(nm: NmHost) -> None:
    host = nm.host
    host.run("mkdir", "-p", "/var/log/libvirt/qemu", "/var/lib/libvirt/qemu", "/run/libvirt")
    host.start_daemon("virtlogd", "virtlogd", log=nm.logs / "virtlogd.log")
    host.start_daemon("libvirtd", "tini", "-s", "--", "libvirtd", log=nm.logs / "libvirtd.log")
    host.wait_for(
        "libvirtd",
        lambda: (
            host.run("virsh", "-q", "-c", "qemu:///system", "version", check=False).returncode == 0
        ),
    )


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


@pytest.fixture
def node_state() -> Iterator[Path]:
    """A state dir the qemu user can reach (pytest's tmp_path is 0700 root)."""
    state = Path(f"/var/lib/vnode-test-{uuid.uuid4().hex[:6]}")
    state.mkdir(mode=0o755)
    try:
        yield state
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_a_node_on_the_networkmanager_bridge_gets_its_reserved_address_through_firewalld(
    nm_host: NmHost, host_ready: None, node_state: Path
) -> None:
    nm = nm_host
    _start_firewalld(nm)
    made = nm.vnode("bridge", "create", "--iface", "eno1")
    assert made.returncode == 0, made.stderr
    nm.host.wait_for("br0's address", lambda: f"{nm.reserved}/24" in nm.addresses("br0"))
    _start_libvirt(nm)  # after dbus and firewalld, as on a host: libvirt sees firewalld
    state = node_state
    config = node_state / "config.toml"
    config.write_text(
        f"""
[defaults]
distro = "{TEST_DISTRO}"
virt_type = "{VIRT_TYPE}"
network = "bridge:br0"
memory = 768
timeout = 300

[paths]
state = "{state}"
image_store = "{IMAGE_STORE}"

[images]
auto_refresh = false

[[pools]]
stem = "{NODE_STEM}"
width = 2
mac_prefix = "{NODE_MAC_PREFIX}"

[site]
dns = "{nm.prefix}.1"
"""
    )
    up = nm.vnode("up", "1", "--json", config=config)
    assert up.returncode == 0, up.stderr
    [node] = json.loads(up.stdout)
    assert (node["name"], node["state"], node["ip"]) == (NODE_NAME, "ready", nm.node_ip)
    # The site saw the node's own MAC and gave it the reserved address...
    leases = (nm.logs / "leases").read_text()
    assert f"{NODE_MAC_PREFIX}:01 {nm.node_ip}" in leases
    # ...and reaches it through the host's bridge, with firewalld forwarding on br0's zone.
    ping = subprocess.run(
        ["ip", "netns", "exec", nm.site_netns, "ping", "-c1", "-W3", nm.node_ip],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ping.returncode == 0, ping.stdout
    # Host and node reach each other: ssh from the host; from the node, a web server on the
    # host's bridge address (its port opened in firewalld, as a host service would be).
    nm.host.start_daemon(
        "web",
        sys.executable,
        "-m",
        "http.server",
        "8000",
        "--bind",
        nm.reserved,
        "--directory",
        str(node_state),
        log=nm.logs / "web.log",
    )
    nm.host.run("firewall-cmd", "--add-port=8000/tcp")
    probe = (
        f"exec 3<>/dev/tcp/{nm.reserved}/8000; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; "
        "head -n1 <&3"
    )
    answer = nm.vnode("ssh", NODE_NAME, f'timeout 10 bash -c "{probe}"', config=config)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("HTTP/1.0 200"), answer.stdout
    assert nm.host.run("firewall-cmd", "--query-forward").stdout.strip() == "yes"
    gone = nm.vnode("destroy", "--all", config=config)
    assert gone.returncode == 0, gone.stderr

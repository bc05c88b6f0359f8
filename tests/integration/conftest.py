"""The site's network, played on this machine: a bridge (or a veth link into a network
namespace) with a dnsmasq as the site's DHCP and DNS server.

Nothing leaves the machine: the bridge has no uplink, the veth's far end is in a namespace of
our own, dnsmasq has no upstream (--no-resolv) and hands out no router, and libvirt gets no
<forward>. Everything made here is removed afterwards, even when tests fail.
"""

from __future__ import annotations

import os
import random
import socket
import string
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.conftest import Lab, cleanup_lab, free_octet, make_lab
from vnode_plugins._hostnet import SiteDnsError, query_a

SITE_DOMAIN = "site.test"  # .test is reserved: it can never be a real name


@attrs.frozen
class Reservation:
    """What the site's DHCP/DNS knows about one node."""

    number: int
    mac: str
    ip: str
    name: str
    in_dns: bool  # False: DHCP only, so vnode must learn the address another way


@attrs.frozen
class Site:
    """The site's network as the tests see it."""

    lab: Lab
    device: str  # the bridge, or the host end of the veth (the macvtap parent)
    server: str  # dnsmasq's address: DHCP and DNS
    host_address: str  # the host's own address on the site's link
    reservations: tuple[Reservation, ...]
    leases: Path
    namespace: str | None = None

    def reservation(self, number: int) -> Reservation:
        return next(r for r in self.reservations if r.number == number)


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    result = subprocess.run(
        [*prefix, "ip", *args], capture_output=True, text=True, check=False, timeout=30
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def unique_stem(kind: str) -> str:
    """A pool stem no other lab or bench on this libvirtd uses: domain names are global, and
    vnode replaces a node of the same name."""
    return kind + "".join(random.choices(string.ascii_lowercase, k=4))


def free_prefix() -> str:
    """A 10.232.N that no route or address of this host uses yet."""
    return f"10.232.{free_octet('10.232')}"


def pool_mac(lab: Lab, number: int) -> str:
    for line in lab.config_path.read_text().splitlines():
        if line.startswith("mac_prefix"):
            prefix = line.split('"')[1]
            return f"{prefix}:{number:02d}"
    raise AssertionError("no mac_prefix in the lab config")


def reservations(lab: Lab, prefix: str, in_dns: dict[int, bool]) -> tuple[Reservation, ...]:
    return tuple(
        Reservation(
            number=n,
            mac=pool_mac(lab, n),
            ip=f"{prefix}.{50 + n}",
            name=lab.name(n),
            in_dns=dns,
        )
        for n, dns in in_dns.items()
    )


def dnsmasq_argv(
    interface: str, server: str, prefix: str, leases: Path, hosts: tuple[Reservation, ...]
) -> list[str]:
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",  # not the host's /etc/dnsmasq.conf
        "--no-hosts",
        "--no-resolv",  # no upstream: unknown names are not forwarded anywhere
        "--pid-file=",
        "--user=root",
        f"--interface={interface}",
        "--except-interface=lo",
        "--bind-interfaces",
        "--port=53",
        f"--domain={SITE_DOMAIN}",
        f"--local=/{SITE_DOMAIN}/",
        # Only reserved MACs get an address: the address proves the reservation was used.
        f"--dhcp-range={prefix}.0,static,255.255.255.0,1h",
        "--dhcp-option=option:router",  # no default route: guests cannot send anything away
        "--dhcp-authoritative",
        # Names come from the reservations only, never from what the client calls itself.
        "--dhcp-ignore-names",
        f"--dhcp-leasefile={leases}",
        f"--log-facility={leases.with_suffix('.log')}",
        "--log-dhcp",
        "--log-queries",
    ]
    for host in hosts:
        argv.append(f"--dhcp-host={host.mac},{host.ip}")
        if host.in_dns:
            argv.append(f"--host-record={host.name}.{SITE_DOMAIN},{host.name},{host.ip}")
    return argv


def start_dnsmasq(argv: list[str], netns: str | None, probe: Reservation, server: str):
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen(
        [*prefix, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if query_a(f"{probe.name}.{SITE_DOMAIN}", server, timeout=0.5):
                return proc
        except (SiteDnsError, OSError):
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError("dnsmasq did not answer DNS in 15 s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def site_config(lab: Lab, network: str, dns: str) -> None:
    """Point the lab's config at the site: its network by default, its DNS for names."""
    text = lab.config_path.read_text().replace(
        "[defaults]\n", f'[defaults]\nnetwork = "{network}"\n', 1
    )
    text += f'\n[site]\ndns = "{dns}"\ndomain = "{SITE_DOMAIN}"\n'
    lab.config_path.write_text(text)


@pytest.fixture(scope="module")
def bridge_site(host_ready: None) -> Iterator[Site]:
    """A host bridge with the host at .1 and the site's dnsmasq on it; node 1 is in DNS,
    node 2 only has a DHCP reservation."""
    lab = make_lab(unique_stem("sb"))
    bridge = f"vtbr{uuid.uuid4().hex[:6]}"
    prefix = free_prefix()
    server = f"{prefix}.1"
    hosts = reservations(lab, prefix, {1: True, 2: False})
    leases = lab.state / "site.leases"
    proc = None
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{server}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        site_config(lab, f"bridge:{bridge}", server)
        proc = start_dnsmasq(
            dnsmasq_argv(bridge, server, prefix, leases, hosts), None, hosts[0], server
        )
        yield Site(
            lab=lab,
            device=bridge,
            server=server,
            host_address=server,
            reservations=hosts,
            leases=leases,
        )
    finally:
        cleanup_lab(lab)  # domains first: their taps hang on the bridge
        stop(proc)
        ip("link", "del", bridge, check=False)


@pytest.fixture(scope="module")
def direct_site(host_ready: None) -> Iterator[Site]:
    """A veth link: its far end in a network namespace running the site's dnsmasq, its host
    end the macvtap parent. The host reaches macvtap nodes through a macvlan of its own."""
    lab = make_lab(unique_stem("sd"))
    token = uuid.uuid4().hex[:6]
    parent, far, shim, netns = f"vtdp{token}", f"vtdn{token}", f"vtdm{token}", f"vtns{token}"
    prefix = free_prefix()
    server, host_address = f"{prefix}.1", f"{prefix}.2"
    hosts = reservations(lab, prefix, {1: True})
    leases = lab.state / "site.leases"
    proc = None
    try:
        ip("netns", "add", netns)
        ip("link", "add", parent, "type", "veth", "peer", "name", far)
        ip("link", "set", far, "netns", netns)
        ip("addr", "add", f"{server}/24", "dev", far, netns=netns)
        ip("link", "set", far, "up", netns=netns)
        ip("link", "set", "lo", "up", netns=netns)
        ip("link", "set", parent, "up")
        ip("link", "add", "link", parent, "name", shim, "type", "macvlan", "mode", "bridge")
        ip("addr", "add", f"{host_address}/24", "dev", shim)
        ip("link", "set", shim, "up")
        site_config(lab, f"direct:{parent}", server)
        proc = start_dnsmasq(
            dnsmasq_argv(far, server, prefix, leases, hosts), netns, hosts[0], server
        )
        yield Site(
            lab=lab,
            device=parent,
            server=server,
            host_address=host_address,
            reservations=hosts,
            leases=leases,
            namespace=netns,
        )
    finally:
        cleanup_lab(lab)
        stop(proc)
        ip("link", "del", parent, check=False)  # takes the shim and the far end with it
        ip("netns", "del", netns, check=False)


@pytest.fixture
def veth(host_ready: None) -> Iterator[tuple[str, str]]:
    """A spare veth pair with a known MAC on its first end; no addresses, nothing attached."""
    token = uuid.uuid4().hex[:6]
    first, second = f"vtva{token}", f"vtvb{token}"
    mac = "02:00:5e:" + ":".join(token[i : i + 2] for i in (0, 2, 4))
    ip("link", "add", first, "address", mac, "type", "veth", "peer", "name", second)
    try:
        yield first, mac
    finally:
        ip("link", "del", first, check=False)


class TokenServer:
    """A TCP listener on the host that hands every caller a token: proof a guest reached it."""

    def __init__(self, address: str) -> None:
        self.token = uuid.uuid4().hex
        self.sock = socket.create_server((address, 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(f"{self.token}\n".encode())

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def token_server(bridge_site: Site) -> Iterator[TokenServer]:
    server = TokenServer(bridge_site.host_address)
    try:
        yield server
    finally:
        server.close()


def settle(lab: Lab, numbers: list[int]) -> None:
    """Wait until cloud-init has finished on the nodes.

    vnode calls a node ready once an authenticated SSH command ran; cloud-init's later stages
    may still restart sshd (ssh_pwauth), which refuses connections for a moment. Tests that
    run many SSH commands wait for cloud-init so that this window cannot hit them.
    """
    for number in numbers:
        for _ in range(20):
            result = lab.run("ssh", str(number), "cloud-init status --wait", timeout=300)
            if result.returncode != 255:  # 255: ssh itself failed (sshd restarting)
                break
            time.sleep(2)
        assert "status: done" in result.stdout, result.stdout + result.stderr


def in_namespace(netns: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )

"""``vnode doctor``: is this host ready for vnode? One verdict per check, each with one sentence.

A check never raises: whatever goes wrong becomes its verdict, so the doctor always finishes
and every problem is on the list. ``fail`` means ``up`` would fail (or not start); ``warn``
means it works, but slowly or with a limitation worth knowing.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import attrs

from vnode.config import Config, load_config
from vnode.errors import VnodeError
from vnode.hostbridge import HostDevice, host_device, host_macvlans

OK, WARN, FAIL = "ok", "warn", "fail"
KVM_DEVICE = Path("/dev/kvm")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")


@attrs.frozen
class Verdict:
    check: str
    status: str  # ok, warn or fail
    message: str  # one sentence

    def to_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


def healthy(verdicts: list[Verdict]) -> bool:
    return all(v.status != FAIL for v in verdicts)


def run_checks(config: Config | None = None, network: str | None = None) -> list[Verdict]:
    """Every check, in the order a user would fix things."""
    verdicts: list[Verdict] = []
    if config is None:
        try:
            config = load_config()
            verdicts.append(Verdict("config", OK, _sources(config)))
        except VnodeError as exc:
            verdicts.append(Verdict("config", FAIL, f"{exc}; the checks below use the defaults"))
            config = Config()
    conn = _connect(config, verdicts)
    checks: list[Callable[[], Iterator[Verdict]]] = [
        lambda: check_virt_type(conn, config.defaults.virt_type),
        lambda: iter([kvm_device_verdict(_kvm_stat())]),
        lambda: check_virtlogd(config.defaults.uri),
        lambda: check_reaper(config.defaults.uri),
        lambda: check_network(config, network or config.defaults.network),
        lambda: check_images(config.paths.images),
        lambda: check_paths(config),
        check_plugins,
    ]
    for check in checks:
        try:
            verdicts.extend(check())
        except Exception as exc:  # a doctor that crashes tells nothing
            verdicts.append(
                Verdict("doctor", FAIL, f"a check crashed: {type(exc).__name__}: {exc}")
            )
    return verdicts


def _sources(config: Config) -> str:
    if not config.sources:
        return "no config file; built-in defaults"
    return "read " + ", ".join(str(p) for p in config.sources)


def _connect(config: Config, verdicts: list[Verdict]) -> Any | None:
    from vnode import hypervisor

    uri = config.defaults.uri
    try:
        conn = hypervisor.connect(uri)
    except VnodeError as exc:
        verdicts.append(Verdict("libvirtd", FAIL, str(exc)))
        return None
    version = _version(conn.getLibVersion())
    verdicts.append(Verdict("libvirtd", OK, f"libvirtd {version} answers at {uri}"))
    return conn


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def check_virt_type(conn: Any | None, wanted: str) -> Iterator[Verdict]:
    if conn is None:
        yield Verdict("virt type", WARN, "not checked: libvirtd is unreachable")
        return
    offered = domain_types(conn.getCapabilities())
    yield virt_type_verdict(wanted, offered)


def domain_types(capabilities_xml: str) -> set[str]:
    """The domain types (kvm, qemu) libvirt offers for x86_64 guests."""
    import xml.etree.ElementTree as ET

    for guest in ET.fromstring(capabilities_xml).findall("guest"):
        arch = guest.find("arch")
        if arch is not None and arch.get("name") == "x86_64":
            return {d.get("type") or "" for d in arch.findall("domain")}
    return set()


def virt_type_verdict(wanted: str, offered: set[str]) -> Verdict:
    name = "virt type"
    if "qemu" not in offered and "kvm" not in offered:
        return Verdict(name, FAIL, "libvirt offers no x86_64 guests: is qemu-system-x86 installed?")
    if wanted == "kvm" and "kvm" not in offered:
        return Verdict(name, FAIL, "virt_type is kvm but libvirt offers no KVM here")
    if wanted == "auto" and "kvm" not in offered:
        return Verdict(name, WARN, "no KVM: auto means plain emulation (qemu), which is slow")
    if wanted == "qemu" and "qemu" not in offered:
        return Verdict(name, FAIL, "virt_type is qemu but libvirt offers no emulation")
    effective = "kvm" if wanted == "auto" else wanted
    return Verdict(name, OK, f"virt_type {wanted} runs guests as {effective}")


def _kvm_stat() -> os.stat_result | None:
    try:
        return KVM_DEVICE.stat()
    except OSError:
        return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def kvm_device_verdict(
    st: os.stat_result | None, group_name: Callable[[int], str] = _group_name
) -> Verdict:
    name = "/dev/kvm"
    if st is None:
        return Verdict(name, OK, "absent; guests run under plain emulation")
    group = group_name(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    if group != "kvm" or mode & 0o060 != 0o060:
        return Verdict(
            name,
            WARN,
            f"is group {group} mode {mode:04o}: libvirtd re-probes QEMU on every call (each "
            "define takes 30-90 s); `chgrp kvm /dev/kvm; chmod 0660 /dev/kvm`",
        )
    return Verdict(name, OK, f"group kvm, mode {mode:04o}")


def check_virtlogd(uri: str) -> Iterator[Verdict]:
    name = "virtlogd"
    if urlparse(uri).hostname:
        yield Verdict(name, WARN, f"not checked: {uri} is on another host")
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(VIRTLOGD_SOCKET))
    except OSError as exc:
        yield Verdict(
            name,
            FAIL,
            f"not answering on {VIRTLOGD_SOCKET} ({exc.strerror or exc}): nodes cannot start; "
            "`virtlogd -d` or `systemctl start virtlogd`",
        )
        return
    yield Verdict(name, OK, f"answers on {VIRTLOGD_SOCKET}; consoles are captured")


# Parents known to reap exited children at once (libvirtd's QEMU processes end up with them).
PROMPT_REAPERS = frozenset({"systemd", "init", "tini", "dumb-init", "s6-svscan", "runit"})


def check_reaper(uri: str) -> Iterator[Verdict]:
    if urlparse(uri).hostname:
        return
    # The daemon that starts QEMU: virtqemud where libvirt runs as modular daemons.
    found = _process_named(("libvirtd", "virtqemud"))
    if found is None:
        yield Verdict("reaper", WARN, "not checked: no local libvirtd or virtqemud process")
        return
    daemon, pid = found
    parent = _parent_of(pid)
    parent_name = _comm(parent)
    delay = None if parent_name in PROMPT_REAPERS else _orphan_reap_delay()
    yield reaper_verdict(parent_name, parent, delay, daemon)


def reaper_verdict(
    parent_name: str, parent_pid: int, delay: float | None, daemon: str = "libvirtd"
) -> Verdict:
    """``delay``: seconds an orphan stayed a zombie (None when the parent is a known init)."""
    who = f"{daemon}'s parent {parent_name} (pid {parent_pid})"
    if delay is None or delay < 0.1:
        return Verdict("reaper", OK, f"{who} reaps exited QEMU processes at once")
    return Verdict(
        "reaper",
        WARN,
        f"{who} reaps exited processes after {delay:.1f} s, so every destroy waits that long; "
        "run libvirtd under `tini -s -- libvirtd` (make setup does)",
    )


def _process_named(names: tuple[str, ...]) -> tuple[str, int] | None:
    """The first process found (one pass over /proc) whose name is one of ``names``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (name := _comm(int(entry.name))) in names:
            return name, int(entry.name)
    return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _parent_of(pid: int) -> int:
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return int(stat_line.rsplit(")", 1)[1].split()[1])


def _orphan_reap_delay(limit: float = 3.0) -> float:
    """How long an orphaned process stays a zombie here: a double fork, then polling."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        grandchild = os.fork()
        if grandchild == 0:
            os._exit(0)
        os.write(write_end, str(grandchild).encode())
        os._exit(0)
    os.waitpid(child, 0)
    grandchild = int(os.read(read_end, 32))
    os.close(read_end)
    os.close(write_end)
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    return time.monotonic() - started


def check_network(config: Config, network: str) -> Iterator[Verdict]:
    kind, _, arg = network.partition(":")
    if kind not in ("bridge", "direct"):
        return
    try:
        device = host_device(arg or ("br0" if kind == "bridge" else ""))
    except VnodeError as exc:
        yield Verdict(kind, FAIL, str(exc))
        return
    yield (bridge_verdict if kind == "bridge" else direct_verdict)(device)
    if config.site.dns:
        yield _site_dns_verdict(config)


def bridge_verdict(device: HostDevice) -> Verdict:
    name = "bridge"
    bridge = device.name
    if not device.exists:
        return Verdict(name, FAIL, f"{bridge} does not exist: `vnode bridge create --iface NIC`")
    if not device.is_bridge:
        return Verdict(name, FAIL, f"{bridge} is not a bridge")
    if not device.is_up:
        return Verdict(name, FAIL, f"{bridge} is down: `ip link set {bridge} up`")
    if not device.ports:
        return Verdict(name, WARN, f"{bridge} is up but has no ports: nodes reach only the host")
    return Verdict(name, OK, f"{bridge} is up, ports: {', '.join(device.ports)}")


def direct_verdict(device: HostDevice) -> Verdict:
    name = "direct"
    parent = device.name
    if not device.exists:
        return Verdict(name, FAIL, f"{parent} does not exist")
    if device.is_bridge or device.is_loopback:
        return Verdict(name, FAIL, f"{parent} cannot carry macvtap: it is a bridge or loopback")
    if not device.is_up:
        return Verdict(name, FAIL, f"{parent} is down")
    if shims := host_macvlans(parent):
        return Verdict(name, OK, f"{parent} is up; the host reaches nodes via {shims[0]}")
    return Verdict(
        name, WARN, f"{parent} is up, but the host cannot reach macvtap nodes on it (no macvlan)"
    )


def _site_dns_verdict(config: Config) -> Verdict:
    from vnode.dnsquery import DnsError, query_a

    site = config.site
    pool = config.pools[0]
    name = pool.name(pool.first) + (f".{site.domain}" if site.domain else "")
    server = f"{site.dns}:{site.dns_port}"
    try:
        addresses = query_a(name, site.dns, site.dns_port, timeout=2.0)
    except (DnsError, OSError) as exc:
        return Verdict(
            "site dns", FAIL, f"{server} gives no answer ({exc}): node addresses stay unknown"
        )
    known = f"{name} is {addresses[0]}" if addresses else f"{name} is not defined there"
    return Verdict("site dns", OK, f"{server} answers ({known})")


def check_images(images: Path) -> Iterator[Verdict]:
    from vnode.disks import unreadable_by_qemu

    name = "images"
    found = sorted(images.glob("*.qcow2")) if images.is_dir() else []
    if not found:
        yield Verdict(name, WARN, f"none in {images}: `vnode images build d12`")
        return
    problems = [p for path in found if (p := unreadable_by_qemu(path))]
    if problems:
        yield Verdict(name, FAIL, f"the qemu user cannot read them: {problems[0]}")
        return
    names = ", ".join(p.stem for p in found)
    yield Verdict(name, OK, f"{len(found)} in {images}, readable by the qemu user ({names})")


def check_paths(config: Config) -> Iterator[Verdict]:
    root = Path("/root")
    under = [
        f"{label} {path}"
        for label, path in (("paths.state", config.paths.state), ("images", config.paths.images))
        if path.resolve() == root or root in path.resolve().parents
    ]
    if under:
        yield Verdict("paths", FAIL, f"{', '.join(under)} under /root, which qemu cannot read")
    else:
        yield Verdict("paths", OK, f"state in {config.paths.state}, outside /root")


def check_plugins() -> Iterator[Verdict]:
    from vnode.plugins import load_plugins

    infos = load_plugins().infos
    broken = [i for i in infos if i.status != "ok"]
    if broken:
        listed = "; ".join(f"{i.name} ({i.reason})" for i in broken)
        yield Verdict("plugins", FAIL, f"broken: {listed}")
    else:
        yield Verdict("plugins", OK, f"{len(infos)} loaded: {', '.join(i.name for i in infos)}")

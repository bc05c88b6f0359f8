"""The libvirt side: connecting, the virt type, and vnode's own domains (marked in <metadata>)."""

from __future__ import annotations

import contextlib
import functools
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from vnode.errors import EnvironmentProblem, UsageError

NAMESPACE = "urn:x-vnode:node:1"

_STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
# Why a domain paused (VIR_DOMAIN_PAUSED_*); an emulation failure under KVM shows as IOERROR
# or UNKNOWN, a crash as CRASHED.
_PAUSE_REASONS = {
    0: "unknown",
    1: "user",
    2: "migration",
    3: "save",
    4: "dump",
    5: "I/O error",
    6: "watchdog",
    7: "from snapshot",
    8: "shutting down",
    9: "snapshot",
    10: "crashed",
    11: "starting up",
    12: "post-copy",
    13: "post-copy failed",
}


@functools.cache
def _libvirt() -> Any:
    import libvirt

    # libvirt prints every error to stderr by default; vnode reports them itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


class HypervisorError(EnvironmentProblem):
    """libvirt said no; the message is libvirt's own. Callers never see libvirt's exceptions."""


@contextlib.contextmanager
def libvirt_errors(doing: str) -> Iterator[None]:
    """Turn a libvirt error into a HypervisorError saying what vnode was doing."""
    try:
        yield
    except _libvirt().libvirtError as exc:
        raise HypervisorError(f"{doing}: {exc.get_error_message()}") from None


def connect(uri: str) -> Any:
    """A new libvirt connection (thread-safe; the session keeps one per host)."""
    libvirt = _libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(
            f"cannot reach libvirt at {uri} ({exc.get_error_message()}): start it with "
            "`systemctl start virtqemud.socket virtnetworkd.socket virtstoraged.socket "
            "virtlogd.socket` (modular daemons), `systemctl start libvirtd`, or, without "
            "systemd, `virtlogd -d; libvirtd -d`"
        ) from None


def resolve_virt_type(conn: Any, wanted: str) -> str:
    """auto means kvm where libvirt offers it for x86_64, plain emulation (TCG) elsewhere."""
    if wanted in ("kvm", "qemu"):
        if wanted == "kvm" and not _kvm_offered(conn):
            raise EnvironmentProblem(
                "--virt-type kvm: libvirt offers no KVM here (is /dev/kvm present and "
                "group kvm, mode 0660?); use --virt-type qemu"
            )
        return wanted
    if wanted != "auto":
        raise UsageError(f"unknown virt type {wanted!r}: use auto, kvm or qemu")
    return "kvm" if _kvm_offered(conn) else "qemu"


def _kvm_offered(conn: Any) -> bool:
    caps = ET.fromstring(conn.getCapabilities())
    for guest in caps.findall("guest"):
        arch = guest.find("arch")
        if arch is not None and arch.get("name") == "x86_64":
            return any(d.get("type") == "kvm" for d in arch.findall("domain"))
    return False


@attrs.frozen
class DomainMark:
    """What vnode wrote into a domain's <metadata>; its presence means vnode made the domain."""

    name: str
    distro: str
    mac: str
    ip: str
    network: str
    node_dir: str
    console: str
    created: str
    pool: str
    number: int


_MARK_FIELDS = ("distro", "mac", "ip", "network", "dir", "console", "created", "pool", "number")


def read_mark(domain: Any) -> DomainMark | None:
    """The mark vnode left on a domain, or None (not vnode's, or gone meanwhile).

    Read through libvirt's metadata call: one element, not the whole domain XML.
    """
    libvirt = _libvirt()
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        name = domain.name()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_METADATA):
            return None
        raise HypervisorError(f"reading {domain.name()}'s metadata: {exc}") from None
    # libvirt hands the element back without its namespace prefix: plain tags.
    node = ET.fromstring(text)
    if node.findtext("created-by") != "vnode":
        return None

    def text_of(tag: str) -> str:
        return node.findtext(tag, default="")

    return DomainMark(
        name=name,
        distro=text_of("distro"),
        mac=text_of("mac"),
        ip=text_of("ip"),
        network=text_of("network"),
        node_dir=text_of("dir"),
        console=text_of("console"),
        created=text_of("created"),
        pool=text_of("pool"),
        number=int(text_of("number") or -1),
    )


def record_address(domain: Any, ip: str) -> None:
    """Keep the address the wait learned on the domain itself, so `list` and `ssh` need not
    learn it again."""
    libvirt = _libvirt()
    text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    node = ET.fromstring(text)
    field = node.find("ip")
    if field is None:
        field = ET.SubElement(node, "ip")
    field.text = ip
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    with libvirt_errors(f"recording {domain.name()}'s address"):
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            ET.tostring(node, encoding="unicode"),
            "vnode",
            NAMESPACE,
            flags,
        )


def lookup(conn: Any, name: str) -> Any | None:
    libvirt = _libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise HypervisorError(f"looking up {name}: {exc.get_error_message()}") from None


def define(conn: Any, xml: str, name: str) -> Any:
    with libvirt_errors(f"defining {name}"):
        return conn.defineXML(xml)


def owned_mark(domain: Any, nodes_dir: Path) -> DomainMark | None:
    """The mark, if vnode made the domain with this state directory.

    Another vnode installation's nodes (another state directory, e.g. a test lab) are
    someone else's: never replaced or destroyed from here.
    """
    mark = read_mark(domain)
    return mark if mark is not None and Path(mark.node_dir).parent == nodes_dir else None


def vnode_domains(conn: Any, nodes_dir: Path) -> list[tuple[Any, DomainMark]]:
    """The domains vnode made with this state directory."""
    found = []
    with libvirt_errors("listing domains"):
        domains = conn.listAllDomains(0)
    for domain in domains:
        mark = owned_mark(domain, nodes_dir)
        if mark is not None:
            found.append((domain, mark))
    return sorted(found, key=lambda pair: pair[1].name)


def state_of(domain: Any) -> tuple[str, str | None]:
    """The domain's state name and, when paused, why."""
    with libvirt_errors(f"reading {domain.name()}'s state"):
        state, reason = domain.state()
    name = _STATE_NAMES.get(state, str(state))
    return name, _PAUSE_REASONS.get(reason) if name == "paused" else None


def start(domain: Any, *, paused: bool) -> None:
    """Start the domain's QEMU; ``paused`` keeps its vCPUs stopped until :func:`resume`."""
    libvirt = _libvirt()
    with libvirt_errors(f"starting {domain.name()}"):
        domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)


def resume(domain: Any) -> None:
    """Let a domain started paused run. Only a pause vnode asked for is lifted: a guest that
    stopped on an error (a KVM emulation failure) stays as it is, for the wait to report."""
    libvirt = _libvirt()
    # Gone or already running: the wait reports what became of it.
    with _tolerating(libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
        if domain.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER]:
            domain.resume()


def remove_domain(domain: Any) -> None:
    """Power off (if running) and undefine; a domain already gone is fine."""
    libvirt = _libvirt()
    with _tolerating(libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
        if domain.isActive():
            domain.destroy()
    with _tolerating(libvirt.VIR_ERR_NO_DOMAIN):
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


@contextlib.contextmanager
def _tolerating(*codes: int) -> Iterator[None]:
    """Ignore libvirt errors with these codes (the state asked for is already there); any
    other is a HypervisorError."""
    try:
        yield
    except _libvirt().libvirtError as exc:
        if exc.get_error_code() not in codes:
            raise HypervisorError(exc.get_error_message()) from None


# -- power (vnode start|stop|reboot) ---------------------------------------------------------


def is_active(domain: Any) -> bool:
    with libvirt_errors(f"reading {domain.name()}'s state"):
        return bool(domain.isActive())


def power_on(domain: Any) -> bool:
    """Start a stopped domain; False if it was running already."""
    libvirt = _libvirt()
    if is_active(domain):
        return False
    with _tolerating(libvirt.VIR_ERR_OPERATION_INVALID):  # started meanwhile
        domain.create()
    return True


def shutdown(domain: Any, timeout: float, poll: float = 0.5) -> str:
    """ACPI power button, then forced off if the guest has not stopped within ``timeout``:
    "stopped", "forced off", or "already stopped"."""
    import time

    libvirt = _libvirt()
    if not is_active(domain):
        return "already stopped"
    with _tolerating(libvirt.VIR_ERR_OPERATION_INVALID):  # stopped meanwhile
        domain.shutdown()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_active(domain):
            return "stopped"
        time.sleep(poll)
    with _tolerating(libvirt.VIR_ERR_OPERATION_INVALID):
        domain.destroy()
    return "forced off"


def reboot(domain: Any, timeout: float) -> str:
    """A clean shutdown (forced off after ``timeout``), then a start, as Vagrant's reload:
    unlike an ACPI reboot request, which a guest without a power-button handler (no logind)
    silently ignores, this always reboots. "rebooted", "rebooted (forced off)", or "started"
    for a stopped domain."""
    if power_on(domain):
        return "started"
    stopped = shutdown(domain, timeout)
    power_on(domain)
    return "rebooted (forced off)" if stopped == "forced off" else "rebooted"

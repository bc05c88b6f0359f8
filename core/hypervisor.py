"""The libvirt side: connecting, the virt type, and vnode's own domains (marked in <metadata>)."""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode.errors import EnvironmentProblem, UsageError
from vnode.firmware import FIRMWARES
from vnode.hosts import LOCAL
from vnode.logs import get_logger

if TYPE_CHECKING:
    from vnode.model import NodeInfo

NAMESPACE = "urn:x-vnode:node:1"
log = get_logger("vnode.hypervisor")

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


def libvirt_module() -> Any:
    """libvirt-python, imported on first use, quiet (for its constants and error type)."""
    return _libvirt()


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


def domain_capabilities(conn: Any, virt_type: str, machine: str | None) -> str:
    """libvirt's domain capabilities of the host for an x86_64 guest (firmware it finds)."""
    with libvirt_errors("reading the host's domain capabilities"):
        return conn.getDomainCapabilities(None, "x86_64", machine, virt_type, 0)


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
    # What was wrong with the mark as read (its bad fields are blanked: "" or -1), or None.
    damage: str | None = None


# Any libvirt client (and a remote host's) can write a domain's metadata: every field is
# checked here, where it is read, before it becomes a path, an address or ssh configuration.
_POOL = re.compile(r"[a-z][a-z0-9-]*[a-z-]|[a-z]")  # as config's [[pools]] stem
_NUMBER = re.compile(r"\d{1,6}")
_DISTRO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@+=,-]{0,255}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_path(text: str) -> bool:
    return text.startswith("/") and not _UNSAFE.search(text) and len(text) < 4096


def _is_date(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


_CHECKS = {
    "distro": lambda v: bool(_DISTRO.fullmatch(v)),
    "mac": lambda v: bool(_MAC.fullmatch(v)),
    "ip": _is_address,
    "network": lambda v: bool(_NETWORK.fullmatch(v)),
    "dir": _is_path,
    "console": _is_path,
    "created": _is_date,
    "pool": lambda v: bool(_POOL.fullmatch(v)),
    "number": lambda v: bool(_NUMBER.fullmatch(v)),
}


def _checked_fields(name: str, node: ET.Element) -> tuple[dict[str, str], list[str]]:
    """The mark's fields, each one that fails its check blanked, and what failed."""
    fields, problems = {}, []
    for tag in _CHECKS:
        value = node.findtext(tag, default="").strip()
        if value and not _CHECKS[tag](value):
            problems.append(f"{tag} {value[:40]!r} is not valid")
            value = ""
        fields[tag] = value
    pool, number = fields["pool"], fields["number"]
    if (
        pool
        and number
        and not (
            name.startswith(pool)
            and name[len(pool) :].isdigit()
            and int(name[len(pool) :]) == int(number)
        )
    ):
        problems.append(f"the name does not match pool {pool!r} and number {number}")
        fields["pool"] = fields["number"] = ""
    return fields, problems


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
    try:
        node = ET.fromstring(text)
    except ET.ParseError:
        return None
    if node.findtext("created-by") != "vnode":
        return None
    fields, problems = _checked_fields(name, node)
    if problems:
        fields["ip"] = ""  # nothing vouches that it is this node's: ssh and Ansible skip it
    return DomainMark(
        name=name,
        distro=fields["distro"],
        mac=fields["mac"].lower(),
        ip=str(ipaddress.ip_address(fields["ip"])) if fields["ip"] else "",
        network=fields["network"],
        node_dir=fields["dir"],
        console=fields["console"],
        created=fields["created"],
        pool=fields["pool"],
        number=int(fields["number"] or -1),
        damage="; ".join(problems) or None,
    )


@attrs.frozen
class AppliedShape:
    """The shape vnode recorded when it made a domain (``<vnode:shape>``), checked as read:
    a field that is not what vnode writes makes the whole shape unknown (None)."""

    memory_mib: int
    vcpus: int
    disk_gb: int
    extra_disks: tuple[int, ...]
    image_sha256: str
    lab: str
    tpm: bool = False
    # Every NIC's network as asked for and its MAC, the node's own first; empty: made before
    # vnode recorded them (one NIC, on the mark's network).
    networks: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    firmware: str = "bios"  # a node recorded before firmware was: BIOS, all there was


_SHA256 = re.compile(r"[0-9a-f]{64}")
_LAB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def read_shape(domain: Any) -> AppliedShape | None:
    """The shape recorded on a domain vnode made; None for a domain made before vnode
    recorded shapes, or whose record is not vnode's form (a plan then replaces it)."""
    libvirt = _libvirt()
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    except libvirt.libvirtError:
        return None
    return parse_shape(text)


def parse_shape(text: str) -> AppliedShape | None:
    """:func:`read_shape` of the metadata element's text."""
    try:
        shape = ET.fromstring(text).find("shape")
    except ET.ParseError:
        return None
    if shape is None:
        return None
    fields = {tag: (shape.findtext(tag) or "").strip() for tag in _SHAPE_TAGS}
    numbers = [fields["memory"], fields["vcpus"], fields["disk"]]
    disks = [d for d in fields["disks"].split(",") if d]
    if not all(_whole(n) for n in [*numbers, *disks]):
        return None
    if fields["image"] and not _SHA256.fullmatch(fields["image"]):
        return None
    if fields["lab"] and not _LAB.fullmatch(fields["lab"]):
        return None
    if fields["tpm"] not in ("", "yes", "no"):
        return None
    networks, macs = fields["networks"].split(), fields["macs"].split()
    if not all(_NETWORK.fullmatch(n) for n in networks) or not all(_MAC.fullmatch(m) for m in macs):
        return None
    if macs and len(macs) != len(networks):
        return None
    if fields["firmware"] not in ("", *FIRMWARES):
        return None
    return AppliedShape(
        memory_mib=int(fields["memory"]),
        vcpus=int(fields["vcpus"]),
        disk_gb=int(fields["disk"]),
        extra_disks=tuple(int(d) for d in disks),
        image_sha256=fields["image"],
        lab=fields["lab"],
        tpm=fields["tpm"] == "yes",
        networks=tuple(networks),
        macs=tuple(m.lower() for m in macs),
        firmware=fields["firmware"] or "bios",
    )


_SHAPE_TAGS = (
    "memory",
    "vcpus",
    "disk",
    "disks",
    "image",
    "lab",
    "tpm",
    "networks",
    "macs",
    "firmware",
)


def _whole(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 9 and int(text) > 0


def record_grown_shape(
    domain: Any, *, memory_mib: int, vcpus: int, extra_disks: tuple[int, ...]
) -> None:
    """Rewrite the shape recorded on a domain after it grew in place (``vnode apply``): one
    metadata write, live and persistent at once, so a later plan compares with what runs."""
    libvirt = _libvirt()
    with libvirt_errors(f"reading {domain.name()}'s metadata"):
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    node = ET.fromstring(text)
    shape = node.find("shape")
    if shape is None:
        raise HypervisorError(f"{domain.name()} has no recorded shape to update")
    for tag, value in (
        ("memory", str(memory_mib)),
        ("vcpus", str(vcpus)),
        ("disks", ",".join(str(size) for size in extra_disks)),
    ):
        field = shape.find(tag)
        if field is None:
            field = ET.SubElement(shape, tag)
        field.text = value
    _write_metadata(domain, node, f"recording the shape of {domain.name()}")


def _write_metadata(domain: Any, node: ET.Element, doing: str) -> None:
    libvirt = _libvirt()
    with libvirt_errors(doing):
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            ET.tostring(node, encoding="unicode"),
            "vnode",
            NAMESPACE,
            _live_flags(domain),
        )


def _live_flags(domain: Any) -> int:
    """Change the persistent definition, and the running guest too when it runs."""
    libvirt = _libvirt()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags


def grow_memory(domain: Any, memory_mib: int) -> None:
    """Let the guest have ``memory_mib`` (up to the domain's maximum: the balloon gives back
    what it held), running and persistent."""
    with libvirt_errors(f"growing {domain.name()}'s memory to {memory_mib} MiB"):
        domain.setMemoryFlags(memory_mib * 1024, _live_flags(domain))


def grow_vcpus(domain: Any, vcpus: int) -> None:
    """Plug vCPUs in up to ``vcpus`` (at most the domain's maximum), running and persistent."""
    with libvirt_errors(f"growing {domain.name()} to {vcpus} vCPUs"):
        domain.setVcpusFlags(vcpus, _live_flags(domain))


def attach_disk(domain: Any, xml: str) -> None:
    """Plug a disk in, running and persistent."""
    with libvirt_errors(f"attaching a disk to {domain.name()}"):
        domain.attachDeviceFlags(xml, _live_flags(domain))


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
    _write_metadata(domain, node, f"recording {domain.name()}'s address")


def lookup(conn: Any, name: str) -> Any | None:
    libvirt = _libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise HypervisorError(f"looking up {name}: {exc.get_error_message()}") from None


def domain_xml(domain: Any) -> str:
    """The domain's definition as libvirt holds it (the running one while it runs)."""
    with libvirt_errors(f"reading {domain.name()}'s definition"):
        return domain.XMLDesc(0)


def define(conn: Any, xml: str, name: str) -> Any:
    with libvirt_errors(f"defining {name}"):
        return conn.defineXML(xml)


def owned_mark(domain: Any, nodes_dir: Path) -> DomainMark | None:
    """The mark, if vnode made the domain with this state directory.

    Another vnode installation's nodes (another state directory, e.g. a test lab) are
    someone else's: never replaced or destroyed from here.
    """
    mark = read_mark(domain)
    if mark is None or not mark.node_dir:
        return None
    return mark if Path(mark.node_dir).parent == nodes_dir else None


def vnode_domains(conn: Any, nodes_dir: Path) -> list[tuple[Any, DomainMark]]:
    """The domains vnode made with this state directory."""
    found = []
    with libvirt_errors("listing domains"):
        domains = conn.listAllDomains(0)
    for domain in domains:
        mark = owned_mark(domain, nodes_dir)
        if mark is not None:
            # Every command surveys the lab: a damaged mark is said where its node is used
            # (`list` shows it damaged, a command naming it says why), not by every command.
            if mark.damage:
                log.debug("damaged vnode mark", domain=mark.name, problem=mark.damage)
            found.append((domain, mark))
    return sorted(found, key=lambda pair: pair[1].name)


def state_of(domain: Any) -> tuple[str, str | None]:
    """The domain's state name and, when paused, why."""
    with libvirt_errors(f"reading {domain.name()}'s state"):
        state, reason = domain.state()
    name = _STATE_NAMES.get(state, str(state))
    return name, _PAUSE_REASONS.get(reason) if name == "paused" else None


def node_info(domain: Any, mark: DomainMark, host: str = LOCAL) -> NodeInfo:
    """What ``vnode list`` shows of one node; a domain gone meanwhile is "gone"."""
    from vnode.model import NodeInfo

    try:
        state, _ = state_of(domain)
    except HypervisorError:
        state = "gone"
    if mark.damage:
        state = "damaged"  # `destroy` removes it; nothing else trusts its mark
    return NodeInfo(
        name=mark.name,
        distro=mark.distro,
        state=state,
        mac=mark.mac,
        ip=mark.ip or None,
        network=mark.network,
        created=mark.created,
        host=host,
        shape=attrs.asdict(shape) if (shape := read_shape(domain)) is not None else None,
        damage=mark.damage,
    )


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


# -- storage: vnode's pool on each host, through libvirt's storage API --------------------
#
# Nothing below touches a local file of the hypervisor: images go up with volume upload
# streams, overlays and seeds are volumes, console logs come back with volume downloads. A
# remote host (qemu+ssh://) and the local one take the same path.

_CHUNK = 4 * 1024 * 1024


def ensure_pool(conn: Any, name: str, target: str) -> Any:
    """vnode's directory pool on this host, defined, built and started when missing."""
    libvirt = _libvirt()
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise HypervisorError(f"looking up pool {name}: {exc.get_error_message()}") from None
        root = ET.Element("pool", type="dir")
        ET.SubElement(root, "name").text = name
        target_element = ET.SubElement(root, "target")
        ET.SubElement(target_element, "path").text = target
        # The qemu user reads overlays and seeds; only root writes.
        permissions = ET.SubElement(target_element, "permissions")
        ET.SubElement(permissions, "mode").text = "0755"
        with libvirt_errors(f"defining pool {name} at {target}"):
            pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
            pool.build(0)
    with libvirt_errors(f"starting pool {name}"):
        if not pool.isActive():
            pool.create(0)
        pool.refresh(0)
    return pool


def refresh_pool(pool: Any) -> None:
    """Let libvirt see files made in the pool's directory by others (virtlogd's logs)."""
    with libvirt_errors(f"refreshing pool {pool.name()}"):
        pool.refresh(0)


def pool_path(pool: Any) -> str:
    """The pool's directory on its host."""
    return ET.fromstring(pool.XMLDesc(0)).findtext("target/path", default="")


def find_volume(pool: Any, name: str) -> Any | None:
    libvirt = _libvirt()
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise HypervisorError(f"looking up volume {name}: {exc.get_error_message()}") from None


def delete_volume(pool: Any, name: str) -> None:
    """Delete a volume; one already gone is fine."""
    libvirt = _libvirt()
    volume = find_volume(pool, name)
    if volume is not None:
        with _tolerating(libvirt.VIR_ERR_NO_STORAGE_VOL):
            volume.delete(0)


def volume_backings(pool: Any) -> dict[str, tuple[str, str | None]]:
    """Every volume of the pool: {name: (its path, the path of its backing file or None)}."""
    refresh_pool(pool)
    found = {}
    with libvirt_errors(f"listing the volumes of pool {pool.name()}"):
        for volume in pool.listAllVolumes(0):
            desc = ET.fromstring(volume.XMLDesc(0))
            found[volume.name()] = (volume.path(), desc.findtext("backingStore/path"))
    return found


def _volume_xml(
    name: str, capacity: int, fmt: str, backing: str | None = None, mode: str = "0644"
) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=fmt)
    permissions = ET.SubElement(target, "permissions")
    ET.SubElement(permissions, "mode").text = mode
    if backing is not None:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", type="qcow2")
    return ET.tostring(root, encoding="unicode")


def upload_bytes(conn: Any, pool: Any, name: str, data: bytes, *, mode: str = "0644") -> Any:
    """A raw volume holding ``data`` (a seed ISO, a small record), replacing one of that name."""
    delete_volume(pool, name)
    xml = _volume_xml(name, max(len(data), 1), "raw", mode=mode)
    with libvirt_errors(f"creating volume {name}"):
        volume = pool.createXML(xml, 0)
    with libvirt_errors(f"uploading volume {name}"):
        stream = conn.newStream(0)
        volume.upload(stream, 0, len(data), 0)
        view = memoryview(data)
        for start in range(0, len(data), _CHUNK):
            stream.send(bytes(view[start : start + _CHUNK]))
        stream.finish()
    return volume


def upload_file(conn: Any, pool: Any, name: str, path: Path, fmt: str = "qcow2") -> str:
    """Upload a local file as a volume with a stream; returns the sha256 of what was sent."""
    import hashlib

    size = path.stat().st_size
    delete_volume(pool, name)
    with libvirt_errors(f"creating volume {name}"):
        volume = pool.createXML(_volume_xml(name, size, fmt), 0)
    digest = hashlib.sha256()
    with libvirt_errors(f"uploading {path} as volume {name}"):
        stream = conn.newStream(0)
        volume.upload(stream, 0, size, 0)
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                stream.send(chunk)
        stream.finish()
    return digest.hexdigest()


def download(conn: Any, volume: Any, *, offset: int = 0, length: int = 0) -> bytes:
    """A volume's bytes (all of them with ``length`` 0) through a download stream."""
    chunks: list[bytes] = []
    with libvirt_errors(f"downloading volume {volume.name()}"):
        stream = conn.newStream(0)
        volume.download(stream, offset, length, 0)
        while True:
            chunk = stream.recv(_CHUNK)
            if isinstance(chunk, int) or not chunk:  # -2: would block; b"": the end
                if chunk == -2:
                    continue
                break
            chunks.append(chunk)
        stream.finish()
    return b"".join(chunks)


def download_sha256(conn: Any, volume: Any) -> str:
    """The sha256 of a volume's bytes as its host holds them (streamed, never kept whole)."""
    import hashlib

    digest = hashlib.sha256()
    with libvirt_errors(f"verifying volume {volume.name()}"):
        stream = conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        while True:
            chunk = stream.recv(_CHUNK)
            if chunk == -2:
                continue
            if isinstance(chunk, int) or not chunk:
                break
            digest.update(chunk)
        stream.finish()
    return digest.hexdigest()


def ensure_image(conn: Any, pool: Any, name: str, path: Path, sha256: str) -> tuple[Any, bool]:
    """The base image as a volume on this host, uploaded only when the host has none or an
    older one; returns (volume, whether it was uploaded now).

    The sha256 of what the host holds is recorded beside it (``NAME.sha256``, a volume), and
    an upload counts only once the host's copy, read back, hashes to what was sent.
    """
    record_name = f"{name}.sha256"
    volume = find_volume(pool, name)
    record = find_volume(pool, record_name)
    if volume is not None and record is not None:
        recorded = download(conn, record).decode(errors="replace").split()
        if recorded[:1] == [sha256]:
            return volume, False
    delete_volume(pool, record_name)
    sent = upload_file(conn, pool, name, path)
    if sent != sha256:
        delete_volume(pool, name)
        raise HypervisorError(f"{path} changed while it was uploaded as {name}; try again")
    volume = pool.storageVolLookupByName(name)
    held = download_sha256(conn, volume)
    if held != sha256:
        delete_volume(pool, name)
        raise HypervisorError(f"volume {name} does not hash to what was uploaded")
    upload_bytes(conn, pool, record_name, f"{sha256}  {path.stat().st_size}\n".encode())
    return volume, True


def copy_volume(pool: Any, source: Any, name: str, *, mode: str = "0600") -> Any:
    """A raw copy of ``source`` made by its host (nothing crosses the connection)."""
    _, capacity, _ = source.info()
    delete_volume(pool, name)
    with libvirt_errors(f"copying volume {source.name()} to {name}"):
        return pool.createXMLFrom(_volume_xml(name, capacity, "raw", mode=mode), source, 0)


def overwrite_volume(conn: Any, volume: Any, data: bytes, offset: int = 0) -> None:
    """Write ``data`` over the volume's bytes from ``offset`` on (the rest is kept: an
    upload with a length writes in place)."""
    with libvirt_errors(f"writing into volume {volume.name()}"):
        stream = conn.newStream(0)
        volume.upload(stream, offset, len(data), 0)
        view = memoryview(data)
        for start in range(0, len(data), _CHUNK):
            stream.send(bytes(view[start : start + _CHUNK]))
        stream.finish()


def create_overlay_volume(pool: Any, name: str, base: Any, size: int) -> Any:
    """A qcow2 volume backed by the base image's volume: the base stays pristine."""
    _, capacity, _ = base.info()
    delete_volume(pool, name)
    with libvirt_errors(f"creating overlay volume {name}"):
        # 0600: a node's disk is the guest's (libvirt chowns it to qemu at start).
        xml = _volume_xml(name, max(size, capacity), "qcow2", base.path(), mode="0600")
        return pool.createXML(xml, 0)


def create_blank_volume(pool: Any, name: str, size: int) -> Any:
    """An empty qcow2 volume (a node's extra disk)."""
    delete_volume(pool, name)
    with libvirt_errors(f"creating volume {name}"):
        return pool.createXML(_volume_xml(name, size, "qcow2", mode="0600"), 0)


def volume_tail(conn: Any, pool: Any, name: str, limit: int = 64 * 1024) -> bytes | None:
    """The last ``limit`` bytes of a volume (a console log virtlogd writes in the pool's
    directory), or None when there is none."""
    refresh_pool(pool)
    volume = find_volume(pool, name)
    if volume is None:
        return None
    _, capacity, _ = volume.info()
    offset = max(0, capacity - limit)
    return download(conn, volume, offset=offset, length=capacity - offset)


def host_resources(conn: Any) -> tuple[int, int]:
    """The host's memory (MiB) and CPUs, as libvirt sees them."""
    with libvirt_errors("reading the host's resources"):
        info = conn.getInfo()
    return int(info[1]), int(info[2])

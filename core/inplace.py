"""Changes ``vnode apply`` makes to a running node in place, without a reboot.

What libvirt can do to a running guest without losing its state: more memory up to the
domain's maximum (a virtio balloon lets it go), more vCPUs up to the domain's maximum
(hot-plugged; the guest onlines them), and extra disks added after the node's own. Anything
else a lab file changes (less memory, fewer vCPUs, a disk removed or resized, growth past a
maximum, another maximum, a NIC, firmware, distro, image) makes the node anew.

:func:`growth` decides from the domain's recorded shape and its live maxima, and
:func:`apply_growth` carries out what was decided, calling no plugin.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from vnode import hypervisor
from vnode.disks import GIB
from vnode.model import NodeResult, extra_disk_volume

if TYPE_CHECKING:
    from vnode.session import Session

# Virtio disk names the guest's domain may use, after the root disk vda.
_TARGETS = tuple(f"vd{letter}" for letter in "bcdefghijklmnopqrstuvwxyz")


@attrs.frozen
class Maxima:
    """What a domain can grow to in place, as libvirt defines it."""

    memory_mib: int
    vcpus: int
    # Every disk target the domain uses ("vda", "vdb", ...).
    targets: tuple[str, ...] = ()


def domain_maxima(xml: str) -> Maxima:
    """The maxima of a domain's XML (``XMLDesc``): ``<memory>`` and ``<vcpu>``."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    units = {"KiB": 1, "k": 1, "K": 1, "MiB": 1024, "M": 1024, "GiB": 1024**2, "G": 1024**2}
    kib = 0
    if memory is not None:
        kib = int((memory.text or "0").strip()) * units.get(memory.get("unit", "KiB"), 1)
    vcpus = int((root.findtext("vcpu") or "0").strip())
    targets = tuple(
        dev for target in root.iterfind("devices/disk/target") if (dev := target.get("dev"))
    )
    return Maxima(memory_mib=kib // 1024, vcpus=vcpus, targets=targets)


@attrs.frozen
class AddedDisk:
    """An extra disk added in place: its size, its number (serial ``vnode-dataN``), its
    device on the domain and its file (a volume of the host's pool when ``volume``)."""

    size_gb: int
    index: int
    target: str
    path: str
    volume: str = ""

    @property
    def serial(self) -> str:
        return f"vnode-data{self.index}"


@attrs.frozen
class Growth:
    """What ``apply`` changes on a running node, all decided when planned."""

    memory_mib: int  # the node's memory afterwards (the same when not grown)
    vcpus: int
    extra_disks: tuple[int, ...]  # every extra disk afterwards, as recorded
    grow_memory: bool = False
    grow_vcpus: bool = False
    disks: tuple[AddedDisk, ...] = ()
    pool: str = ""  # the host's pool the added disks are volumes of; "": files

    @property
    def changes(self) -> bool:
        return self.grow_memory or self.grow_vcpus or bool(self.disks)


@attrs.frozen
class Difference:
    """One attribute that differs: said as the plan says it, and whether it is in place."""

    text: str
    in_place: bool = False


@attrs.frozen
class Wanted:
    """The part of a node's asked-for shape that can change in place."""

    memory_mib: int
    vcpus: int
    extra_disks: tuple[int, ...]
    max_memory: int = 0  # asked for explicitly; 0: not asked (not compared)
    max_vcpus: int = 0


def growth(
    recorded: hypervisor.AppliedShape,
    maxima: Maxima,
    want: Wanted,
    *,
    node: str,
    pool: str = "",
    volume_dir: Path | None = None,
    node_dir: Path | None = None,
) -> tuple[list[Difference], Growth]:
    """The differences in memory, vCPUs, maxima and extra disks, each in place or not, and
    what ``apply`` does in place when nothing else differs. Added disks are volumes of
    ``pool`` in ``volume_dir`` on a host with a pool, else files in ``node_dir``."""
    found: list[Difference] = []
    for label, asked, maximum, unit in (
        ("max_memory", want.max_memory, maxima.memory_mib, " MiB"),
        ("max_vcpus", want.max_vcpus, maxima.vcpus, ""),
    ):
        if asked and asked != maximum:
            found.append(Difference(f"{label} {maximum} -> {asked}{unit}"))
    grow_memory = _grow(
        found, "memory", recorded.memory_mib, want.memory_mib, maxima.memory_mib, " MiB"
    )
    # QEMU stops a Secure Boot guest (SMM) at a vCPU hot-plug its OVMF did not negotiate.
    vcpu_room = recorded.vcpus if recorded.firmware == "uefi-secure" else maxima.vcpus
    grow_vcpus = _grow(found, "vcpus", recorded.vcpus, want.vcpus, vcpu_room, "")
    old, new = recorded.extra_disks, want.extra_disks
    added: list[AddedDisk] = []
    if new[: len(old)] != old:
        found.append(Difference(f"disks {list(old)} -> {list(new)}"))
    elif len(new) > len(old):
        free = [target for target in _TARGETS if target not in maxima.targets]
        for offset, size in enumerate(new[len(old) :]):
            index = len(old) + offset + 1
            if offset >= len(free):
                found.append(Difference(f"extra disk {size} GiB added (no free disk slot)"))
                continue
            if pool and volume_dir is not None:
                volume = extra_disk_volume(node, index)
                path, name = str(volume_dir / volume), volume
            else:
                path, name = str((node_dir or Path(".")) / f"data{index}.qcow2"), ""
            added.append(AddedDisk(size, index, free[offset], path, name))
            found.append(Difference(f"extra disk {size} GiB added (in place)", in_place=True))
    return found, Growth(
        memory_mib=want.memory_mib if grow_memory else recorded.memory_mib,
        vcpus=want.vcpus if grow_vcpus else recorded.vcpus,
        extra_disks=(*old, *(disk.size_gb for disk in added)),
        grow_memory=grow_memory,
        grow_vcpus=grow_vcpus,
        disks=tuple(added),
        pool=pool if added and volume_dir is not None else "",
    )


def _grow(found: list[Difference], label: str, old: int, new: int, maximum: int, unit: str) -> bool:
    if new == old:
        return False
    said = f"{label} {old} -> {new}{unit}"
    if new < old:
        found.append(Difference(said))
        return False
    if new > maximum:
        found.append(Difference(f"{said} (above the domain's maximum {maximum}{unit})"))
        return False
    found.append(Difference(f"{said} (in place)", in_place=True))
    return True


def disk_xml(disk: AddedDisk) -> str:
    """The ``<disk>`` of an extra disk, as vnode makes extra disks at creation."""
    root = ET.Element("disk", type="file", device="disk")
    ET.SubElement(root, "driver", name="qemu", type="qcow2", discard="unmap")
    ET.SubElement(root, "source", file=disk.path)
    ET.SubElement(root, "target", dev=disk.target, bus="virtio")
    ET.SubElement(root, "serial").text = disk.serial
    return ET.tostring(root, encoding="unicode")


def apply_growth(session: Session, changes: list[tuple[str, Growth]]) -> list[NodeResult]:
    """Grow each node as planned, under its lock, without a reboot; then record its new
    shape on its domain. A node that could not be grown is a failed result (what was done
    is recorded); the others go on."""
    import time

    from vnode import lab
    from vnode.locks import file_lock, node_lock_path

    views = lab.survey(session)
    results = []
    for name, change in changes:
        started = time.monotonic()
        hit = lab.find_node(views, name)
        if hit is None:
            results.append(NodeResult(name, "", "", None, "failed", None, "gone since planned"))
            continue
        view, domain, mark = hit
        with file_lock(node_lock_path(session.config.paths.locks, name)):
            detail, state = _grow_node(view, domain, change)
        results.append(
            NodeResult(
                name=name,
                distro=mark.distro,
                mac=mark.mac,
                ip=mark.ip or None,
                state=state,
                seconds=round(time.monotonic() - started, 1),
                detail=detail,
            )
        )
    return results


def _grow_node(view: object, domain: object, change: Growth) -> tuple[str, str]:
    from vnode.disks import create_blank
    from vnode.errors import EnvironmentProblem

    recorded = hypervisor.read_shape(domain)
    assert recorded is not None  # planned from it
    memory, vcpus, disks = recorded.memory_mib, recorded.vcpus, list(recorded.extra_disks)
    done: list[str] = []
    try:
        if change.grow_memory:
            hypervisor.grow_memory(domain, change.memory_mib)
            memory = change.memory_mib
            done.append(f"memory {memory} MiB")
        if change.grow_vcpus:
            hypervisor.grow_vcpus(domain, change.vcpus)
            vcpus = change.vcpus
            done.append(f"{vcpus} vCPUs")
        pool = view.conn.storagePoolLookupByName(change.pool) if change.pool else None  # type: ignore[attr-defined]
        for disk in change.disks:
            if pool is not None:
                hypervisor.create_blank_volume(pool, disk.volume, disk.size_gb * GIB)
            else:
                create_blank(Path(disk.path), disk.size_gb)
            try:
                hypervisor.attach_disk(domain, disk_xml(disk))
            except EnvironmentProblem:
                if pool is not None:
                    hypervisor.delete_volume(pool, disk.volume)
                else:
                    Path(disk.path).unlink(missing_ok=True)
                raise
            disks.append(disk.size_gb)
            done.append(f"disk {disk.serial} {disk.size_gb} GiB")
    except Exception as exc:  # libvirt's refusal, the pool gone: this node only
        hypervisor.record_grown_shape(
            domain, memory_mib=memory, vcpus=vcpus, extra_disks=tuple(disks)
        )
        return f"grown in place: {', '.join(done) or 'nothing'}; then: {exc}", "failed"
    hypervisor.record_grown_shape(domain, memory_mib=memory, vcpus=vcpus, extra_disks=tuple(disks))
    return f"grown in place: {', '.join(done)}", "ready"

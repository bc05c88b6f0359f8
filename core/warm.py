"""Warm clones (issue 15, in progress): a node restored from a template's saved state.

libvirt 9.0 refuses to restore a save image under another UUID, so each clone gets its own
save image: libvirt's header rewritten with the clone's XML, then the template's QEMU
migration stream unchanged. The NIC (with the clone's MAC) and an identity disk are
hot-plugged after the restore; the template's agent applies the identity. The findings and
the reasons are in docs/warm-clones.md; ``spike/warm_spike.py`` drives all of it end to end.

This module holds the pieces that do not need a guest: the save-image layout, the clone's
domain XML and its identity archive.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import tarfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import attrs

from vnode.errors import EnvironmentProblem

# libvirt's save-image header (src/qemu/qemu_saveimage.h, version 2), little-endian: magic,
# version, data_len, was_running, compressed (later "format"), cookieOffset, 14 unused u32.
_HEADER = struct.Struct("<16sIIIII14I")
_MAGIC = b"LibvirtQemudSave"
_PARTIAL = b"LibvirtQemudPart"  # libvirt writes this until the image is complete
_SUPPORTED_VERSION = 2
# The room libvirt leaves after the XML so it can be edited in place; vnode does the same when
# a clone's XML is longer than the template's room.
_PAD = 64 * 1024
IDENTITY_SERIAL = "vnode-identity"


@attrs.frozen
class SaveImage:
    """What libvirt's header of a save image says."""

    version: int
    data_len: int
    was_running: int
    compressed: int
    xml: str
    cookie: str | None

    @property
    def body_offset(self) -> int:
        """Where QEMU's migration stream begins."""
        return _HEADER.size + self.data_len


def read_save_image(path: Path) -> SaveImage:
    """Parse libvirt's header of a save image (the migration stream is not read)."""
    with path.open("rb") as handle:
        raw = handle.read(_HEADER.size)
        if len(raw) < _HEADER.size:
            raise EnvironmentProblem(f"{path}: too short for a libvirt save image")
        magic, version, data_len, was_running, compressed, cookie_offset, *_ = _HEADER.unpack(raw)
        if magic == _PARTIAL:
            raise EnvironmentProblem(f"{path}: an incomplete libvirt save image")
        if magic != _MAGIC:
            raise EnvironmentProblem(f"{path}: not a libvirt save image")
        if version != _SUPPORTED_VERSION:
            raise EnvironmentProblem(f"{path}: save image version {version} (vnode reads 2)")
        if compressed:
            raise EnvironmentProblem(f"{path}: a compressed save image (vnode needs raw)")
        data = handle.read(data_len)
    if len(data) < data_len:
        raise EnvironmentProblem(f"{path}: save image header cut short")
    xml_end = cookie_offset or data_len
    xml = data[:xml_end].split(b"\0", 1)[0].decode()
    cookie = data[cookie_offset:].split(b"\0", 1)[0].decode() if cookie_offset else None
    return SaveImage(version, data_len, was_running, compressed, xml, cookie)


def write_clone_save_image(template: Path, dest: Path, xml: str) -> None:
    """A save image that restores as the domain ``xml`` describes: the template's header with
    the clone's XML, then the template's migration stream copied unchanged (0600: it is the
    guest's memory)."""
    image = read_save_image(template)
    xml_bytes = xml.encode() + b"\0"
    cookie = image.cookie.encode() + b"\0" if image.cookie is not None else b""
    used = len(xml_bytes) + len(cookie)
    data_len = image.data_len if used <= image.data_len else used + _PAD
    header = _HEADER.pack(
        _MAGIC,
        image.version,
        data_len,
        image.was_running,
        image.compressed,
        len(xml_bytes) if cookie else 0,
        *([0] * 14),
    )
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out, template.open("rb") as source:
        out.write(header + xml_bytes + cookie + b"\0" * (data_len - used))
        out.flush()
        source.seek(image.body_offset)
        remaining = os.fstat(source.fileno()).st_size - image.body_offset
        # In the kernel, without passing through Python (a reflink where the file system can).
        while remaining > 0:
            copied = os.copy_file_range(source.fileno(), out.fileno(), remaining)
            if copied == 0:
                raise EnvironmentProblem(f"{template}: shorter than its header says")
            remaining -= copied


def clone_domain_xml(
    template_xml: str,
    *,
    name: str,
    disk: Path,
    console: Path,
    title: str | None = None,
    metadata: ET.Element | None = None,
) -> str:
    """The clone's domain: the template's saved definition (its machine type and device
    layout are what the migration stream needs) under a new name, UUID and VM generation ID,
    with its own disk and console log."""
    root = ET.fromstring(template_xml)
    _set_child(root, "name", name)
    _set_child(root, "uuid", str(uuid.uuid4()))
    # A new generation ID makes a vmgenid-aware kernel reseed its RNG on restore.
    _set_child(root, "genid", str(uuid.uuid4()))
    if title is not None:
        _set_child(root, "title", title)
    if metadata is not None:
        old = root.find("metadata")
        if old is not None:
            root.remove(old)
        root.insert(2, metadata)
    devices = root.find("devices")
    if devices is None:
        raise EnvironmentProblem("template domain has no <devices>")
    disks = [d for d in devices.findall("disk") if d.get("device", "disk") == "disk"]
    if len(disks) != 1:
        raise EnvironmentProblem(f"template domain has {len(disks)} disks, expected 1")
    source = disks[0].find("source")
    if source is None:
        raise EnvironmentProblem("template disk has no <source>")
    source.set("file", str(disk))
    # libvirt probes the clone's chain (overlay -> template disk -> image) itself.
    for backing in disks[0].findall("backingStore"):
        disks[0].remove(backing)
    for serial in devices.findall("serial"):
        log = serial.find("log")
        if log is not None:
            log.set("file", str(console))
    return ET.tostring(root, encoding="unicode")


def _set_child(root: ET.Element, tag: str, text: str) -> None:
    element = root.find(tag)
    if element is None:
        element = ET.SubElement(root, tag)
    element.text = text


def identity_archive(values: Mapping[str, str | bytes], apply_script: str) -> bytes:
    """The identity disk's content: a tar archive (the guest reads it with plain ``tar``) of
    one file per value plus the script that applies them, padded to whole MiB."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        entries: dict[str, str | bytes] = {"apply": apply_script, **values}
        entries.setdefault("random-seed", secrets.token_bytes(512))
        for path, content in entries.items():
            data = content if isinstance(content, bytes) else content.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return raw + b"\0" * (-len(raw) % (1 << 20))

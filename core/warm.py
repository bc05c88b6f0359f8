"""Warm clones: a node restored from a template's saved state.

libvirt 9.0 refuses to restore a save image under another UUID, so each clone gets its own
save image: libvirt's header rewritten with the clone's XML, then the template's QEMU
migration stream unchanged. The NIC (with the clone's MAC) and an identity disk are
hot-plugged after the restore; the template's agent applies the identity. The findings and
the reasons are in docs/warm-clones.md; ``docs/warm_spike.py`` drives all of it end to end.

This module holds the pieces that do not need a guest: the save-image layout, the clone's
domain XML and its identity archive. :mod:`vnode.warmstore` keeps the templates;
:func:`create_clone` makes a node from one.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import struct
import tarfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import attrs

from vnode.errors import EnvironmentProblem
from vnode.logs import get_logger

if TYPE_CHECKING:
    from vnode.keys import ClientKey, KeyPair
    from vnode.model import NodePlan
    from vnode.network import NetworkBackend
    from vnode.nodes import CreatedNode, NodeStore
    from vnode.warmstorage import TemplateStorage
    from vnode.warmstore import TemplateRecord

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

log = get_logger("vnode.warm")


class _Steps:
    """Each step of making a clone, timed (``-v`` shows them; bench/run.py --warm-sizes
    reads them): where a clone's seconds go, on the host's side."""

    def __init__(self, node: str) -> None:
        self._log = log.bind(node=node)
        self._last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self._log.debug("clone step", step=step, seconds=round(now - self._last, 3))
        self._last = now


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
        if len(raw) == _HEADER.size:
            data_len = _HEADER.unpack(raw)[2]
            raw += handle.read(data_len)
    return parse_save_header(raw, where=str(path))


def parse_save_header(raw: bytes, *, where: str) -> SaveImage:
    """libvirt's header of a save image from its first bytes (at least the fixed header;
    the XML and cookie too for them to be read: ``body_offset`` says how many are needed)."""
    if len(raw) < _HEADER.size:
        raise EnvironmentProblem(f"{where}: too short for a libvirt save image")
    magic, version, data_len, was_running, compressed, cookie_offset, *_ = _HEADER.unpack(
        raw[: _HEADER.size]
    )
    if magic == _PARTIAL:
        raise EnvironmentProblem(f"{where}: an incomplete libvirt save image")
    if magic != _MAGIC:
        raise EnvironmentProblem(f"{where}: not a libvirt save image")
    if version != _SUPPORTED_VERSION:
        raise EnvironmentProblem(f"{where}: save image version {version} (vnode reads 2)")
    if compressed:
        raise EnvironmentProblem(f"{where}: a compressed save image (vnode needs raw)")
    data = raw[_HEADER.size : _HEADER.size + data_len]
    if len(data) < data_len:
        # Not all of it yet: the caller reads up to body_offset and parses again.
        return SaveImage(version, data_len, was_running, compressed, "", None)
    xml_end = cookie_offset or data_len
    xml = data[:xml_end].split(b"\0", 1)[0].decode()
    cookie = data[cookie_offset:].split(b"\0", 1)[0].decode() if cookie_offset else None
    return SaveImage(version, data_len, was_running, compressed, xml, cookie)


def clone_header(image: SaveImage, xml: str, *, grow: bool) -> bytes:
    """The clone's header: the template's, with the clone's XML and the template's cookie,
    padded to the template's room (``data_len``) so the migration stream stays where it is;
    with ``grow``, a longer XML gets more room (the stream then follows it), else it is
    refused."""
    if not image.xml:
        raise EnvironmentProblem("the template's save image header was not read whole")
    xml_bytes = xml.encode() + b"\0"
    cookie = image.cookie.encode() + b"\0" if image.cookie is not None else b""
    used = len(xml_bytes) + len(cookie)
    if used <= image.data_len:
        data_len = image.data_len
    elif grow:
        data_len = used + _PAD
    else:
        raise EnvironmentProblem(
            f"the clone's domain XML ({used} bytes) does not fit the template's save image "
            f"header ({image.data_len} bytes)"
        )
    header = _HEADER.pack(
        _MAGIC,
        image.version,
        data_len,
        image.was_running,
        image.compressed,
        len(xml_bytes) if cookie else 0,
        *([0] * 14),
    )
    return header + xml_bytes + cookie + b"\0" * (data_len - used)


def write_clone_save_image(template: Path, out: BinaryIO, xml: str) -> None:
    """Write to ``out`` a save image that restores as the domain ``xml`` describes: the
    template's header with the clone's XML, then the template's migration stream unchanged,
    copied in the kernel (``out`` may be a pipe: nothing is written to disk then)."""
    image = read_save_image(template)
    out.write(clone_header(image, xml, grow=True))
    out.flush()
    with template.open("rb") as source:
        offset = image.body_offset
        end = os.fstat(source.fileno()).st_size
        while offset < end:
            sent = os.sendfile(out.fileno(), source.fileno(), offset, min(end - offset, 1 << 30))
            if sent == 0:
                raise EnvironmentProblem(f"{template}: shorter than its header says")
            offset += sent


def restore_clone(conn: Any, template: Path, xml: str, fifo: Path, flags: int) -> None:
    """Restore the domain ``xml`` from the template's saved state, fed to libvirt through a
    FIFO: libvirt reads the header, QEMU the stream, and no per-clone copy of the guest's
    memory (hundreds of MB) is ever written (docs/warm-clones.md)."""
    from vnode import hypervisor

    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            with fifo.open("wb") as out:
                write_clone_save_image(template, out, xml)
        except BrokenPipeError:
            pass  # libvirt stopped reading: its own error says why
        except BaseException as exc:  # reported by the restore's caller
            failure.append(exc)

    feeder = threading.Thread(target=feed, name=f"feed {fifo}", daemon=True)
    feeder.start()
    try:
        with hypervisor.libvirt_errors(f"restoring {ET.fromstring(xml).findtext('name')}"):
            conn.restoreFlags(str(fifo), None, flags)
    finally:
        if feeder.is_alive():
            # libvirt never opened the FIFO (or left early): a reader of our own lets the
            # feeder's open return, and its next write fails, so the thread ends.
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            feeder.join(timeout=30)
        fifo.unlink(missing_ok=True)
    if failure:
        raise EnvironmentProblem(f"feeding the template's state: {failure[0]}") from failure[0]


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


# -- making a node from a template ----------------------------------------------------------

IDENTITY_TARGET = "vdc"


def identity_values(
    plan: NodePlan, *, authorized_key: str, host_key: KeyPair
) -> dict[str, str | bytes]:
    """The clone's identity, one file per value (the guest never parses one as shell); its
    network files are the plan's (``vnode_guest_network_files``, asked while planning)."""
    fqdn = f"{plan.name}.{plan.dns_domain}" if plan.dns_domain else plan.name
    values: dict[str, str | bytes] = {
        "hostname": plan.name,
        "fqdn": fqdn,
        "machine-id": uuid.uuid4().hex + "\n",
        "boot-id": str(uuid.uuid4()) + "\n",
        "random-seed": secrets.token_bytes(512),
        "authorized_keys": authorized_key.strip() + "\n",
        "ssh_host_ed25519_key": host_key.private_openssh,
        "ssh_host_ed25519_key.pub": host_key.public_openssh.strip() + "\n",
        "mac": plan.mac,
    }
    values.update({f"net/{name}": text for name, text in plan.guest_network_files.items()})
    return values


def apply_script() -> str:
    from importlib.resources import files

    return files("vnode.templates").joinpath("warm-apply.sh").read_text()


def create_clone(
    store: NodeStore,
    plan: NodePlan,
    source: WarmSource,
    backend: NetworkBackend,
    client: ClientKey,
    *,
    paused: bool = False,
) -> CreatedNode:
    """Make the node from the template's saved state instead of booting it: what
    :func:`vnode.nodes.create_node` does for a cold node, with the same outcome (a node whole
    or absent, the same metadata, known_hosts entry, console log and files), on whichever
    host the template and the node are (``source.storage`` keeps the clone's files there)."""
    from vnode.nodes import remove_node

    if store.owned(plan.name) is not None:
        remove_node(store, plan, backend)
    try:
        return _build_clone(store, plan, source, backend, client, paused)
    except BaseException:
        remove_node(store, plan, backend, quiet=True)
        raise


@attrs.frozen
class WarmSource:
    """What a warm node is made from: the template, and the storage of its host."""

    template: TemplateRecord
    storage: TemplateStorage = attrs.field(eq=False)


def _build_clone(
    store: NodeStore,
    plan: NodePlan,
    source: WarmSource,
    backend: NetworkBackend,
    client: ClientKey,
    paused: bool,
) -> CreatedNode:
    from vnode import hypervisor
    from vnode.keys import generate_keypair
    from vnode.nodes import CreatedNode

    libvirt = hypervisor.libvirt_module()
    steps = _Steps(plan.name)
    template, storage = source.template, source.storage
    storage.clone_disk(template, plan)
    host_key = generate_keypair(f"{plan.name} host key")
    values = identity_values(plan, authorized_key=client.public_openssh, host_key=host_key)
    identity = storage.identity_disk(plan, identity_archive(values, apply_script()))
    planned = ET.fromstring(plan.domain_xml)
    interface = planned.find("devices/interface")
    if interface is None:
        raise EnvironmentProblem(f"{plan.name}: the plan has no NIC to plug in")
    assert plan.console is not None
    xml = clone_domain_xml(
        storage.saved_xml(template),
        name=plan.name,
        disk=plan.disk_path,
        console=plan.console.log_path,
        title=planned.findtext("title"),
        metadata=planned.find("metadata"),
    )
    steps.done("files")
    backend.reserve(plan)
    # The host key is trusted before the guest exists, so the first connection is verified.
    store.known_hosts.set(plan.name, host_key.public_openssh)
    steps.done("reserve")
    # On the template's host, the way its storage can (a FIFO fed from the file, or a copy
    # the host makes in its pool).
    storage.restore(store.conn, template, plan, xml, libvirt.VIR_DOMAIN_SAVE_PAUSED)
    steps.done("restore")
    domain = hypervisor.lookup(store.conn, plan.name)
    if domain is None:
        raise EnvironmentProblem(f"{plan.name}: restored, then gone")
    with hypervisor.libvirt_errors(f"defining {plan.name}"):
        # A restored domain is transient; vnode's nodes are persistent, as cold ones are.
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
        domain = store.conn.defineXML(domain.XMLDesc(flags))
    with hypervisor.libvirt_errors(f"plugging {plan.name}'s NIC and identity"):
        domain.attachDeviceFlags(
            ET.tostring(interface, encoding="unicode"),
            libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG,
        )
        # Live only: the identity is applied once; a reboot keeps what was applied.
        domain.attachDeviceFlags(_identity_disk_xml(identity), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    steps.done("define and hot-plug")
    if not paused:
        resume_clone(domain)
    return CreatedNode(plan=plan, domain=domain, host_key=host_key.public_openssh)


def _identity_disk_xml(path: Path) -> str:
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="raw")
    ET.SubElement(disk, "source", file=str(path))
    ET.SubElement(disk, "target", dev=IDENTITY_TARGET, bus="virtio")
    ET.SubElement(disk, "serial").text = IDENTITY_SERIAL
    ET.SubElement(disk, "readonly")
    return ET.tostring(disk, encoding="unicode")


def resume_clone(domain: Any) -> None:
    """Let a clone restored paused run. libvirt reports a domain restored paused with its
    own pause reason (not the user's), which :func:`vnode.hypervisor.resume` leaves alone."""
    from vnode import hypervisor

    libvirt = hypervisor.libvirt_module()
    with hypervisor.libvirt_errors(f"resuming {domain.name()}"):
        state, reason = domain.state()
        bad = (libvirt.VIR_DOMAIN_PAUSED_IOERROR, libvirt.VIR_DOMAIN_PAUSED_CRASHED)
        if state == libvirt.VIR_DOMAIN_PAUSED and reason not in bad:
            domain.resume()

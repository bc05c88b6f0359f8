"""Warm clones: libvirt's save-image header, the clone's XML and its identity archive."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vnode import warm
from vnode.errors import EnvironmentProblem

TEMPLATE_XML = """<domain type="qemu">
  <name>tpl</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <genid>66666666-2222-3333-4444-555555555555</genid>
  <title>template</title>
  <metadata><old/></metadata>
  <memory unit="KiB">524288</memory>
  <os><type arch="x86_64" machine="pc-i440fx-7.2">hvm</type></os>
  <devices>
    <disk type="file" device="disk">
      <source file="/t/disk.qcow2"/>
      <backingStore type="file"><source file="/images/d12.qcow2"/></backingStore>
      <target dev="vda" bus="virtio"/>
    </disk>
    <serial type="pty"><log file="/t/console.log" append="off"/><target port="0"/></serial>
  </devices>
</domain>"""


def _fake_save(path: Path, xml: str, cookie: str | None, body: bytes, pad: int = 64) -> None:
    xml_b = xml.encode() + b"\0"
    cookie_b = cookie.encode() + b"\0" if cookie is not None else b""
    data_len = len(xml_b) + len(cookie_b) + pad
    header = struct.pack(
        "<16sIIIII14I",
        b"LibvirtQemudSave",
        2,
        data_len,
        1,
        0,
        len(xml_b) if cookie is not None else 0,
        *([0] * 14),
    )
    path.write_bytes(header + xml_b + cookie_b + b"\0" * pad + body)


def test_header_is_libvirt_9_layout() -> None:
    assert warm._HEADER.size == 92


@pytest.mark.parametrize("cookie", ["<cookie><cpu/></cookie>", None])
def test_clone_save_image_keeps_stream_and_cookie(tmp_path: Path, cookie: str | None) -> None:
    body = bytes(range(256)) * 40
    template = tmp_path / "tpl.save"
    _fake_save(template, TEMPLATE_XML, cookie, body)
    image = warm.read_save_image(template)
    assert image.xml == TEMPLATE_XML and image.cookie == cookie and image.was_running == 1
    clone = tmp_path / "clone.save"
    # Longer than the template's room: the header grows, the stream follows it unchanged.
    new_xml = TEMPLATE_XML.replace("tpl", "clone" * 100)
    with clone.open("wb") as out:
        warm.write_clone_save_image(template, out, new_xml)
    again = warm.read_save_image(clone)
    assert again.xml == new_xml and again.cookie == cookie and again.was_running == 1
    assert clone.read_bytes()[again.body_offset :] == body
    # Shorter: the template's data_len is kept.
    with clone.open("wb") as out:
        warm.write_clone_save_image(template, out, "<domain/>")
    short = warm.read_save_image(clone)
    assert short.data_len == image.data_len
    assert clone.read_bytes()[short.body_offset :] == body


def test_a_clone_save_image_streams_through_a_pipe(tmp_path: Path) -> None:
    # What restore_clone does: libvirt reads from a FIFO, so no copy is written to disk.
    body = bytes(range(256)) * 4096
    template = tmp_path / "tpl.save"
    _fake_save(template, TEMPLATE_XML, None, body)
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            while chunk := pipe.read(1 << 16):
                received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_end, "wb") as out:
        warm.write_clone_save_image(template, out, TEMPLATE_XML.replace("tpl", "clone"))
    reader.join()
    streamed = tmp_path / "streamed.save"
    streamed.write_bytes(bytes(received))
    image = warm.read_save_image(streamed)
    assert "clone" in image.xml and bytes(received)[image.body_offset :] == body


def test_incomplete_or_foreign_save_image_refused(tmp_path: Path) -> None:
    partial = tmp_path / "p.save"
    _fake_save(partial, "<domain/>", None, b"")
    raw = bytearray(partial.read_bytes())
    raw[:16] = b"LibvirtQemudPart"
    partial.write_bytes(bytes(raw))
    with pytest.raises(EnvironmentProblem, match="incomplete"):
        warm.read_save_image(partial)
    other = tmp_path / "o.save"
    other.write_bytes(b"\0" * 200)
    with pytest.raises(EnvironmentProblem, match="not a libvirt save image"):
        warm.read_save_image(other)


def test_clone_xml_has_its_own_identity() -> None:
    metadata = ET.fromstring("<metadata><mine/></metadata>")
    xml = warm.clone_domain_xml(
        TEMPLATE_XML,
        name="lab03",
        disk=Path("/n/lab03/disk.qcow2"),
        console=Path("/n/lab03/console.log"),
        title="lab03 (d12)",
        metadata=metadata,
    )
    root = ET.fromstring(xml)
    assert root.findtext("name") == "lab03"
    assert root.findtext("uuid") != "11111111-2222-3333-4444-555555555555"
    assert root.findtext("genid") != "66666666-2222-3333-4444-555555555555"
    assert root.findtext("title") == "lab03 (d12)"
    assert root.find("metadata/mine") is not None and root.find("metadata/old") is None
    disk = root.find("devices/disk")
    assert disk is not None and disk.find("backingStore") is None
    assert disk.find("source").get("file") == "/n/lab03/disk.qcow2"  # type: ignore[union-attr]
    assert root.find("devices/serial/log").get("file") == "/n/lab03/console.log"  # type: ignore[union-attr]
    # The machine type (what the migration stream needs) is the template's.
    assert root.find("os/type").get("machine") == "pc-i440fx-7.2"  # type: ignore[union-attr]
    other = warm.clone_domain_xml(TEMPLATE_XML, name="lab04", disk=Path("/d"), console=Path("/c"))
    assert ET.fromstring(other).findtext("uuid") != root.findtext("uuid")


def test_identity_archive_is_plain_tar_in_whole_mib() -> None:
    data = warm.identity_archive({"hostname": "lab03", "net/mode": "static"}, "#!/bin/sh\n")
    assert len(data) % (1 << 20) == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert {"apply", "hostname", "net/mode", "random-seed"} <= set(names)
        member = tar.extractfile("hostname")
        assert member is not None and member.read() == b"lab03"
        assert all(m.mode == 0o600 for m in tar.getmembers())

"""The image store's records: what vouches for an image, and what `images list` says."""

from __future__ import annotations

import json
from pathlib import Path

from vnode.images import image_status, read_record, record_path, recorded_sha256


def _record(image: Path, **changes: object) -> None:
    stat = image.stat()
    data = {
        "status": "verified",
        "source": "https://dl.example/d12.qcow2",
        "sha256": "ab" * 32,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "recorded": "2026-12-07T09:00:00+00:00",
        **changes,
    }
    record_path(image).write_text(json.dumps(data))


def test_a_record_vouches_for_the_file_it_describes_only(tmp_path: Path) -> None:
    image = tmp_path / "d12.qcow2"
    image.write_bytes(b"QFI\xfb")
    assert record_path(image) == tmp_path / "d12.qcow2.json"
    assert read_record(image) is None and recorded_sha256(image) == ""
    _record(image)
    assert recorded_sha256(image) == "ab" * 32
    image.write_bytes(b"QFI\xfb changed")  # another size: the record no longer describes it
    assert recorded_sha256(image) == ""
    assert image_status(image) == ("unverified", None)


def test_status_says_how_the_image_came(tmp_path: Path) -> None:
    image = tmp_path / "d12.qcow2"
    assert image_status(image) == ("-", None)
    image.write_bytes(b"QFI\xfb")
    _record(image)
    assert image_status(image) == ("unsigned", "https://dl.example/d12.qcow2")
    _record(image, signed_by="A" * 40)
    assert image_status(image)[0] == "signed"
    _record(image, status="built", source="mmdebstrap")
    assert image_status(image) == ("built", "mmdebstrap")


def test_a_record_that_is_not_one_is_none(tmp_path: Path) -> None:
    image = tmp_path / "d12.qcow2"
    image.write_bytes(b"QFI\xfb")
    for text in ("{", "[]", '{"status": "verified"}'):
        record_path(image).write_text(text)
        assert read_record(image) is None, text

"""Executing a plan: what is uploaded to a host is hashed once, from the record that vouches
for the image where there is one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vnode import execute


def test_an_images_digest_comes_from_its_record_while_it_describes_it(tmp_path: Path) -> None:
    image = tmp_path / "d12.qcow2"
    image.write_bytes(b"QFI\xfb image")
    assert execute._sha256(image) == hashlib.sha256(b"QFI\xfb image").hexdigest()
    stat = image.stat()
    record = {
        "status": "built",
        "source": "x",
        "sha256": "cd" * 32,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "recorded": "now",
    }
    (tmp_path / "d12.qcow2.json").write_text(json.dumps(record))
    assert execute._sha256(image) == "cd" * 32  # not read again: 500 MiB
    image.write_bytes(b"QFI\xfb other")
    assert execute._sha256(image) == hashlib.sha256(b"QFI\xfb other").hexdigest()

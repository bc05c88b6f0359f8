"""Node disks: the overlay qemu-img makes (a real qemu-img), and what the qemu user can read."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vnode.disks import GIB, create_overlay, qcow2_virtual_size, unreadable_by_qemu
from vnode.errors import EnvironmentProblem

needs_qemu_img = pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img missing")


def _base(path: Path, size: str = "1G") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


@needs_qemu_img
def test_an_overlay_is_at_least_as_large_as_asked_and_as_its_base(tmp_path: Path) -> None:
    base = _base(tmp_path / "base.qcow2", "3G")
    assert qcow2_virtual_size(base) == 3 * GIB
    create_overlay(base, tmp_path / "bigger.qcow2", 5)
    assert qcow2_virtual_size(tmp_path / "bigger.qcow2") == 5 * GIB
    create_overlay(base, tmp_path / "smaller.qcow2", 1)  # never smaller than the image
    assert qcow2_virtual_size(tmp_path / "smaller.qcow2") == 3 * GIB


def test_a_file_that_is_no_qcow2_is_a_clear_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\0" * 64)
    with pytest.raises(EnvironmentProblem, match="is not a qcow2 image"):
        qcow2_virtual_size(raw)
    header = b"QFI\xfb" + b"\0" * 20 + struct.pack(">Q", 7)
    raw.write_bytes(header)
    assert qcow2_virtual_size(raw) == 7


def test_what_the_qemu_user_cannot_read_is_named(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    image = private / "d12.qcow2"
    image.write_bytes(b"x")
    image.chmod(0o644)
    assert "is not searchable by the qemu user" in (unreadable_by_qemu(image) or "")
    private.chmod(0o755)
    tmp_path.chmod(0o755)
    image.chmod(0o600)
    assert "is not world-readable" in (unreadable_by_qemu(image) or "")
    assert "does not exist" in (unreadable_by_qemu(private / "nope") or "")

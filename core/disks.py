"""Node disks: a qcow2 overlay on the distro's base image, and checks that qemu can read it."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
from pathlib import Path

from vnode.errors import EnvironmentProblem

GIB = 1024**3
MAX_EXTRA_DISKS = 8  # vdb .. vdi, before the seed
_QCOW2_MAGIC = b"QFI\xfb"


def qcow2_virtual_size(path: Path) -> int:
    """Read the virtual size from the qcow2 header (bytes 24..32), without a qemu-img call."""
    with path.open("rb") as handle:
        header = handle.read(32)
    if len(header) < 32 or header[:4] != _QCOW2_MAGIC:
        raise EnvironmentProblem(f"{path} is not a qcow2 image")
    return struct.unpack(">Q", header[24:32])[0]


def create_overlay(base: Path, overlay: Path, size_gb: int) -> None:
    """A copy-on-write disk: the base image stays pristine, so every node starts fresh."""
    size = max(size_gb * GIB, qcow2_virtual_size(base))
    _create_qcow2(overlay, size, "-F", "qcow2", "-b", str(base))


def create_blank(path: Path, size_gb: int) -> None:
    """An empty qcow2 (an extra disk): sparse, so its size costs nothing until written."""
    _create_qcow2(path, size_gb * GIB)


def _create_qcow2(path: Path, size: int, *backing: str) -> None:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(path), str(size)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        path.unlink(missing_ok=True)
        raise EnvironmentProblem(f"qemu-img could not create {path}: {result.stderr.strip()}")
    # The guest's own data (host keys, whatever it writes) is for root and the qemu user
    # libvirt chowns the disk to, as libvirt's own pools make volumes.
    path.chmod(0o600)


def unreadable_by_qemu(path: Path) -> str | None:
    """Why the qemu user (not root, not the file's owner) could not read ``path``, or None.

    libvirt's qemu runs as an unprivileged user; a file under /root or in a 0700 directory
    makes the guest fail at start with a cryptic permission error.
    """
    path = path.resolve()
    if not path.is_file():
        return f"{path} does not exist"
    if not os.stat(path).st_mode & stat.S_IROTH:
        return f"{path} is not world-readable (chmod o+r)"
    for parent in path.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return f"directory {parent} is not searchable by the qemu user (chmod o+x)"
    return None

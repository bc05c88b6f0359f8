"""Writing files so that a reader sees the old content or the new, never half of either."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a private temporary file beside it, then rename.

    The temporary file has ``mode`` from its first byte (a secret is never world-readable,
    not even briefly), is flushed to disk, and is removed if anything fails; the directory
    is flushed after the rename, so a crash leaves the old file or the new one.
    """
    import tempfile  # only here: quick commands that write nothing do not load it

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or creation in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_atomic(staging: Path, dest: Path, mode: int = 0o644) -> None:
    """Move a finished file (e.g. an image written elsewhere) into place at once."""
    with staging.open("rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(staging, mode)
    os.replace(staging, dest)
    fsync_dir(dest.parent)

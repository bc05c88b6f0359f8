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


def untrusted(path: Path) -> str | None:
    """Why ``path`` (a directory vnode keeps state, images or disks in) could be changed by
    someone other than root, or None.

    It and every directory above it must belong to root (or to the user running vnode) and
    not be writable by group or others; a directory above may be writable by all when it is
    sticky (``/tmp``: no one removes or renames another's entries there). A path not made
    yet is judged by the directories that will hold it.
    """
    import stat

    trusted_owners = {0, os.geteuid()}
    current = Path(os.path.abspath(path))
    first = True
    for directory in (current, *current.parents):
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            info = os.stat(directory)  # judged where it leads; its own parents are above
        if info.st_uid not in trusted_owners:
            return f"{directory} belongs to uid {info.st_uid}, not root"
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (first or not info.st_mode & stat.S_ISVTX):
            return f"{directory} is writable by {'others' if info.st_mode & 0o002 else 'its group'}"
        first = False
    return None

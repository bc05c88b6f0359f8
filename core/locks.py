"""File locks: per node, so two vnode processes never make one node at once, and per file."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; another holder waits until the first is done."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_lock(locks_dir: Path, name: str) -> contextlib.AbstractContextManager[None]:
    return file_lock(locks_dir / f"{name}.lock")

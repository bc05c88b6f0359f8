"""File locks: per node, so two vnode processes never work on one node at once, and per file.

A node's lock is held from the moment ``up`` starts making it until its wait is over, and by
``destroy``: a second ``vnode up`` of the same node waits for the first to finish, then
replaces the node whole. The kernel drops the lock if the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


class FileLock:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._handle = path.open("a")

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; another holder waits until the first is done."""
    lock = FileLock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def node_lock_path(locks_dir: Path, name: str) -> Path:
    return locks_dir / f"{name}.lock"

"""File locks: per node, so two vnode processes never work on one node at once, and per file.

A node's lock is held from the moment ``up`` starts making it until its wait is over, and by
``destroy``: a second ``vnode up`` of the same node waits for the first to finish, then
replaces the node whole. The kernel drops the lock if the process dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from vnode.errors import EnvironmentProblem


class FileLock:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Never through a symlink: one planted in the state directory would have root
        # create or lock whatever file it points at.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise EnvironmentProblem(
                    f"lock file {path} is a symlink; not following it (remove it)"
                ) from None
            raise
        self._handle = os.fdopen(fd, "a")

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self, *, shared: bool = False) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; another holder waits until the first is done.
    ``shared``: many holders at once, none while an exclusive one holds it."""
    lock = FileLock(path)
    lock.acquire(shared=shared)
    try:
        yield
    finally:
        lock.release()


def node_lock_path(locks_dir: Path, name: str) -> Path:
    return locks_dir / f"{name}.lock"

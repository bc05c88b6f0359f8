"""Per-node file locks: one holder at a time, across processes (flock)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vnode.locks import FileLock, file_lock, node_lock_path


def test_a_held_node_lock_is_not_taken_twice(tmp_path: Path) -> None:
    path = node_lock_path(tmp_path / "locks", "vnode03")
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()  # flock is per open file: a second vnode is refused
    first.release()
    assert second.try_acquire()
    second.release()


def test_another_process_waits_for_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "template.lock"
    probe = (
        "import sys; from pathlib import Path; from vnode.locks import FileLock; "
        "print(FileLock(Path(sys.argv[1])).try_acquire())"
    )
    with file_lock(path):
        held = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True)
    free = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True)
    assert held.stdout.strip() == b"False" and free.stdout.strip() == b"True"

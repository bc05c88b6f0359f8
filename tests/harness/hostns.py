"""A "host in a namespace": a network namespace and a mount namespace of its own, where the
test runs the daemons of another kind of host (NetworkManager and firewalld of a Fedora
host, a second libvirtd) without touching this machine's.

The namespaces are held by a ``sleep`` started by ``unshare``; commands and daemons enter
them with ``nsenter``. In the mount namespace, tmpfs covers the directories the daemons
write (their state starts empty and vanishes with the host), and ``/sys`` is a fresh sysfs
of the new network namespace, read-only, so NetworkManager sees the namespace's devices and
does not wait for udev. Daemons are tracked by their own PIDs and stopped on close, which
also runs when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

_HOLDER = """
set -e
copies=$1
shift
for dir in "$@"; do
    mkdir -p "$dir"
    mount -t tmpfs -o mode=0755 tmpfs "$dir"
done
# Directories the host's daemons would write (libvirt's /etc/libvirt): a private copy, kept
# in /run (a tmpfs of this namespace), bound over the original.
n=0
for dir in $copies; do
    n=$((n + 1))
    mkdir -p "/run/hostns-copy-$n"
    cp -a "$dir/." "/run/hostns-copy-$n/"
    mount --bind "/run/hostns-copy-$n" "$dir"
done
# The fresh sysfs hides the cgroup mounts below it; libvirt's QEMU needs them back.
mkdir -p /run/hostns-cgroup
mount --rbind /sys/fs/cgroup /run/hostns-cgroup
mount -t sysfs -o ro sysfs /sys
mount --rbind /run/hostns-cgroup /sys/fs/cgroup
ip link set lo up
echo ready
exec sleep infinity
"""


class HostNamespace:
    """One namespaced host; use as a context manager."""

    def __init__(self, tmpfs: Iterable[str] = ("/run",), copies: Iterable[str] = ()) -> None:
        """``tmpfs``: directories that start empty; ``copies``: directories that start as a
        private copy of this host's (needs ``/run`` among ``tmpfs``)."""
        self.tmpfs = tuple(tmpfs)
        self.copies = tuple(copies)
        self._holder: subprocess.Popen[str] | None = None
        self._daemons: list[tuple[str, int]] = []

    @property
    def pid(self) -> int:
        assert self._holder is not None, "the host is not started"
        return self._holder.pid

    def __enter__(self) -> HostNamespace:
        self._holder = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                _HOLDER,
                "holder",
                " ".join(self.copies),
                *self.tmpfs,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "ready":
            error = self._holder.stderr.read() if self._holder.stderr else ""
            self.close()
            raise RuntimeError(f"the namespace did not start: {error.strip()}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "--", *argv]

    def run(
        self, *argv: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(argv),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
        return result

    def start_daemon(self, name: str, *argv: str, log: Path) -> int:
        """A daemon that stays in the foreground, tracked by its PID."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.command(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._daemons.append((name, process.pid))
        return process.pid

    def adopt_daemon(self, name: str, pid: int) -> None:
        """A daemon that forked itself away (it printed its PID)."""
        self._daemons.append((name, pid))

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready within {timeout:.0f} s")
            time.sleep(0.2)

    def move_link_in(self, link: str, name: str) -> None:
        """Move a host link into this namespace under ``name`` (e.g. a veth end as eno1)."""
        subprocess.run(["ip", "link", "set", link, "netns", str(self.pid)], check=True)
        self.run("ip", "link", "set", link, "name", name)

    def close(self) -> None:
        for _, pid in reversed(self._daemons):
            _stop(pid)
        self._daemons.clear()
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait(timeout=10)
            self._holder = None


def _stop(pid: int, grace: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:  # not our child (it forked away): poll for it
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)

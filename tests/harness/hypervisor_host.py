"""A second hypervisor host on this machine: libvirtd (under tini), virtlogd and sshd in a
host namespace of their own (tests/harness/hostns.py), reached over a veth pair with
``qemu+ssh://``.

tmpfs covers the directories libvirt and vnode write, and /etc/libvirt is a private copy
with the main host's domains, networks and pools taken out: the main libvirtd sees nothing
of what happens there, and this host starts empty. sshd has its own host key and accepts the
harness's own client key (authorized_keys lives in /run, a 0755 tmpfs: sshd's StrictModes
refuses a fresh 1777 one). libvirt's ssh transport runs the URI's ``command``: a wrapper that
checks the host key strictly against the harness's own known_hosts file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.hostns import HostNamespace

STATE_DIRS = (
    "/run",
    "/var/lib/libvirt",
    "/var/cache/libvirt",
    "/var/log/libvirt",
    "/var/lib/vnode",
)
# What the copy of /etc/libvirt must not carry over: the main host's definitions.
_MAIN_HOST_DEFINITIONS = (
    "rm -f /etc/libvirt/qemu/*.xml /etc/libvirt/qemu/networks/*.xml"
    " /etc/libvirt/qemu/networks/autostart/*.xml /etc/libvirt/storage/*.xml"
    " /etc/libvirt/storage/autostart/*.xml"
)
_SSHD_DIR = "/run/hypervisor-sshd"


class HypervisorHost:
    """``with HypervisorHost(prefix, octet) as host``: :attr:`uri` reaches its libvirtd."""

    def __init__(self, prefix: str, octet: int) -> None:
        self.outer = f"{prefix}hv0"  # the veth end on this side
        self.inner = f"{prefix}hv1"
        self.host_ip = f"10.232.{octet}.1"
        self.address = f"10.232.{octet}.2"
        self.work = Path(tempfile.mkdtemp(prefix=f"{prefix}-hypervisor-"))
        self.key = self.work / "id_ed25519"
        self.known_hosts = self.work / "known_hosts"
        self.ssh_wrapper = self.work / "ssh"
        self.namespace = HostNamespace(STATE_DIRS, copies=("/etc/libvirt",))
        self._libvirtd = 0

    @property
    def uri(self) -> str:
        return f"qemu+ssh://root@{self.address}/system?command={self.ssh_wrapper}&no_tty=1"

    def __enter__(self) -> HypervisorHost:
        try:
            self.namespace.__enter__()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        host = self.namespace
        host.run("sh", "-c", _MAIN_HOST_DEFINITIONS)
        os.chmod(self.work, 0o755)
        subprocess.run(
            ["ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner],
            check=True,
        )
        subprocess.run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.outer], check=True)
        subprocess.run(["ip", "link", "set", self.outer, "up"], check=True)
        host.move_link_in(self.inner, self.inner)
        host.run("ip", "addr", "add", f"{self.address}/30", "dev", self.inner)
        host.run("ip", "link", "set", self.inner, "up")

        host.run("mkdir", "-m", "0700", "-p", _SSHD_DIR, "/run/sshd")
        host.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{_SSHD_DIR}/host_key")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        host.run("cp", f"{self.key}.pub", f"{_SSHD_DIR}/authorized_keys")
        algorithm, blob = host.run("cat", f"{_SSHD_DIR}/host_key.pub").stdout.split()[:2]
        self.known_hosts.write_text(f"{self.address} {algorithm} {blob}\n")
        config = self.work / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}\n"
            f"HostKey {_SSHD_DIR}/host_key\n"
            f"AuthorizedKeysFile {_SSHD_DIR}/authorized_keys\n"
            f"PidFile {_SSHD_DIR}/sshd.pid\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "AllowTcpForwarding yes\n"
        )
        self.ssh_wrapper.write_text(
            "#!/bin/sh\n"
            f"exec ssh -i {self.key} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            '-o ConnectTimeout=5 "$@"\n'
        )
        self.ssh_wrapper.chmod(0o755)
        host.start_daemon(
            "sshd", "/usr/sbin/sshd", "-D", "-e", "-f", str(config), log=self._log("sshd")
        )
        host.start_daemon("virtlogd", "virtlogd", log=self._log("virtlogd"))
        self._libvirtd = host.start_daemon(
            "libvirtd", "tini", "-s", "--", "libvirtd", log=self._log("libvirtd")
        )
        host.wait_for("the namespace's libvirtd over qemu+ssh", self._answers, timeout=60)

    def _log(self, daemon: str) -> Path:
        return self.work / f"{daemon}.log"

    def _answers(self) -> bool:
        probe = ["virsh", "-c", self.uri, "version"]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    def stop_libvirtd(self) -> None:
        """Kill the host's libvirtd (and tini above it), as a host whose daemon died: QEMU and
        dnsmasq keep running, as they would there."""
        for pid in reversed(_descendants(self._libvirtd)):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() in ("tini", "libvirtd"):
                    os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the daemons by PID, kill what libvirtd started in the namespace (QEMU,
        dnsmasq), remove the veth and the namespace; safe after a failed start."""
        try:
            if self.namespace._holder is not None:
                held = {
                    os.readlink(f"/proc/{self.namespace.pid}/ns/{kind}") for kind in ("mnt", "net")
                }
                if held & {os.readlink(f"/proc/self/ns/{kind}") for kind in ("mnt", "net")}:
                    raise RuntimeError("the host namespace shares a namespace with this process")
                self.namespace.close()
                _kill_namespaces(held)
        finally:
            self.namespace.close()
            subprocess.run(["ip", "link", "del", self.outer], capture_output=True, check=False)
            shutil.rmtree(self.work, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first."""
    found = [pid]
    for parent in found:
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _kill_namespaces(held: set[str]) -> None:
    """SIGKILL every process left in those namespaces (its daemons are stopped already; what
    is left is what they started: dnsmasq, and QEMU, which libvirtd puts in a mount namespace
    of its own, but which stays in the host's network namespace)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if {os.readlink(entry / "ns" / kind) for kind in ("mnt", "net")} & held:
                os.kill(int(entry.name), signal.SIGKILL)
    time.sleep(0.2)

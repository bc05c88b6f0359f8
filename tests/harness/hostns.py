"""A second hypervisor host on this machine: libvirtd (under tini), virtlogd and sshd in their
own network and mount namespace, reached over a veth pair.

Inside, tmpfs covers /run, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and
/var/lib/vnode, and a copy of /etc/libvirt is bind-mounted over it: the main libvirtd sees
nothing of what happens there. sshd runs with its own host key and the test's own client key
(its authorized_keys file lives in /run, away from the 1777 tmpfs root that StrictModes
refuses). Every daemon is tracked by its PID and stopped by it; :meth:`HostNS.close` removes
everything even after a failure.

libvirt's ssh transport runs ``ssh`` from the URI's ``command``: a wrapper that checks the
namespace's host key strictly against the harness's own known_hosts file.
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

TMPFS = ("/run", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/var/lib/vnode")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first."""
    found = [pid]
    for parent in found:
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                found.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


class HostNS:
    """``HostNS(prefix, octet).start()``; the URI is :attr:`uri`; :meth:`close` undoes all."""

    def __init__(self, prefix: str, octet: int) -> None:
        self.prefix = prefix
        self.outer = f"{prefix}hv0"  # the veth end on this side
        self.inner = f"{prefix}hv1"
        self.host_ip = f"10.232.{octet}.1"
        self.address = f"10.232.{octet}.2"
        self.work = Path(tempfile.mkdtemp(prefix=f"{prefix}-hostns-"))
        self.holder: subprocess.Popen[bytes] | None = None
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.key = self.work / "id_ed25519"
        self.known_hosts = self.work / "known_hosts"
        self.ssh_wrapper = self.work / "ssh"

    @property
    def uri(self) -> str:
        return f"qemu+ssh://root@{self.address}/system?command={self.ssh_wrapper}&no_tty=1"

    @property
    def pid(self) -> int:
        assert self.holder is not None
        return self.holder.pid

    def inside(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("nsenter", "-t", str(self.pid), "-n", "-m", *argv, check=check)

    def _spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        log = (self.work / f"{Path(argv[0]).name}.log").open("wb")
        proc = subprocess.Popen(
            ["nsenter", "-t", str(self.pid), "-n", "-m", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.daemons.append(proc)
        return proc

    def start(self) -> HostNS:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
            start_new_session=True,
        )
        time.sleep(0.3)
        for path in TMPFS:
            self.inside("mkdir", "-p", path)
            self.inside("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", path)
        etc = self.work / "etc-libvirt"
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        # The copy keeps the daemons' settings, not the main host's domains, networks, pools.
        for kept in (
            "qemu",
            "qemu/networks",
            "qemu/networks/autostart",
            "storage",
            "storage/autostart",
            "nwfilter",
        ):
            for entry in (etc / kept).glob("*.xml"):
                if kept != "nwfilter":
                    entry.unlink()
        self.inside("mount", "--bind", str(etc), "/etc/libvirt")
        os.chmod(self.work, 0o755)
        _run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _run("ip", "link", "set", self.inner, "netns", str(self.pid))
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.outer)
        _run("ip", "link", "set", self.outer, "up")
        self.inside("ip", "link", "set", "lo", "up")
        self.inside("ip", "addr", "add", f"{self.address}/30", "dev", self.inner)
        self.inside("ip", "link", "set", self.inner, "up")
        # sshd: own host key, the test's key, authorized_keys under /run (mode 0700 dirs).
        sshd_dir = "/run/hostns-sshd"
        self.inside("mkdir", "-m", "0700", "-p", sshd_dir)
        self.inside("mkdir", "-p", "/run/sshd")
        self.inside("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{sshd_dir}/host_key")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        self.inside("cp", f"{self.key}.pub", f"{sshd_dir}/authorized_keys")
        host_pub = self.inside("cat", f"{sshd_dir}/host_key.pub").stdout.split()
        self.known_hosts.write_text(f"{self.address} {host_pub[0]} {host_pub[1]}\n")
        config = self.work / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}\n"
            f"HostKey {sshd_dir}/host_key\n"
            f"AuthorizedKeysFile {sshd_dir}/authorized_keys\n"
            f"PidFile {sshd_dir}/sshd.pid\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "AllowTcpForwarding yes\n"
            "StrictModes yes\n"
        )
        self.ssh_wrapper.write_text(
            "#!/bin/sh\n"
            f"exec ssh -i {self.key} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            '-o ConnectTimeout=5 "$@"\n'
        )
        self.ssh_wrapper.chmod(0o755)
        self._spawn("/usr/sbin/sshd", "-D", "-e", "-f", str(config))
        self._spawn("virtlogd")
        self._spawn("tini", "-s", "--", "libvirtd")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = _run("virsh", "-c", self.uri, "version", check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the namespace's libvirtd does not answer: {probe.stderr.strip()}")

    @property
    def libvirtd(self) -> subprocess.Popen[bytes]:
        return self.daemons[-1]

    def stop_libvirtd(self) -> None:
        """Stop the host's libvirtd (tini and every process under it, whatever their process
        group: tini gives its child one of its own), as a host lost mid-way."""
        for pid in reversed(_descendants(self.libvirtd.pid)):
            # Only the daemon: QEMU and dnsmasq (also under tini, a subreaper) keep running,
            # as on a host whose libvirtd died.
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() in ("nsenter", "tini", "libvirtd"):
                    os.kill(pid, signal.SIGKILL)
        self.libvirtd.wait(timeout=10)

    def close(self) -> list[str]:
        """Stop every daemon by PID, kill what QEMU runs inside, remove the veth and the
        namespace; returns what could not be cleaned."""
        problems = []
        if self.holder is not None:
            # QEMU processes libvirtd started live in the namespace's mount namespace.
            mine = os.readlink(f"/proc/{self.pid}/ns/mnt") if self.holder.poll() is None else ""
            for proc in reversed(self.daemons):
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                        proc.wait(timeout=10)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        os.killpg(proc.pid, signal.SIGKILL)
            if mine:
                for entry in Path("/proc").iterdir():
                    if not entry.name.isdigit() or int(entry.name) == self.pid:
                        continue
                    try:
                        if os.readlink(entry / "ns" / "mnt") == mine:
                            os.kill(int(entry.name), signal.SIGKILL)
                    except OSError:
                        continue
            self.holder.kill()
            self.holder.wait()
        if _run("ip", "link", "show", self.outer, check=False).returncode == 0:
            _run("ip", "link", "del", self.outer, check=False)
        shutil.rmtree(self.work, ignore_errors=True)
        return problems

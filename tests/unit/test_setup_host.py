"""install/setup-host.sh's plan (`--plan`) for the hosts vnode's users run, from os-release
samples: what it would install and start, and what it must never do there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "install" / "setup-host.sh"

OS_RELEASES = {
    "fedora43": 'NAME="Fedora Linux"\nVERSION="43 (Cloud Edition)"\nID=fedora\nVERSION_ID=43\n',
    "fedora44": 'NAME="Fedora Linux"\nVERSION="44 (Server Edition)"\nID=fedora\nVERSION_ID=44\n'
    'PLATFORM_ID="platform:f44"\n',
    "alma9": 'NAME="AlmaLinux"\nID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.5"\n',
    "debian12": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
    "debian13": 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_ID="13"\n',
    "ubuntu2404": 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n'
    "VERSION_CODENAME=noble\n",
    "arch": 'NAME="Arch Linux"\nID=arch\nPRETTY_NAME="Arch Linux"\n',
}


def plan(
    tmp_path: Path, host: str, init: str = "systemd", sudo_user: str | None = None
) -> subprocess.CompletedProcess[str]:
    os_release = tmp_path / f"{host}.os-release"
    os_release.write_text(OS_RELEASES[host])
    env = {**os.environ, "VNODE_OS_RELEASE": str(os_release), "VNODE_INIT": init}
    env.pop("SUDO_USER", None)
    if sudo_user:
        env["SUDO_USER"] = sudo_user
    return subprocess.run(
        ["sh", str(SCRIPT), "--plan"], env=env, capture_output=True, text=True, check=False
    )


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("host", ["fedora43", "fedora44", "alma9"])
def test_fedora_like_hosts_use_dnf_and_the_modular_daemons_sockets(
    tmp_path: Path, host: str
) -> None:
    lines = _lines(plan(tmp_path, host))
    [install] = [line for line in lines if line.startswith("dnf install")]
    packages = set(install.split()[4:])
    assert {"qemu-kvm-core", "libvirt-daemon-driver-qemu", "libvirt-daemon-driver-network"} <= (
        packages
    )
    assert {"libvirt-client", "libvirt-devel", "policycoreutils-python-utils"} <= packages
    assert "gnupg2" in packages  # gpgv and gpg check the checksum files' signatures
    # UEFI nodes' firmware; the image builder's EFI system partition
    assert {"edk2-ovmf", "dosfstools", "mtools"} <= packages and "ovmf" not in packages
    assert (
        "systemctl enable --now virtqemud.socket virtnetworkd.socket virtstoraged.socket "
        "virtlogd.socket"
    ) in lines
    words = " ".join(lines).split()
    assert "libvirtd" not in words and "libvirtd.service" not in words  # never monolithic
    assert not [line for line in lines if "/dev/kvm" in line]  # Fedora's 0666 stays
    assert not [line for line in lines if line.startswith("apt")]
    assert lines[-2:] == [
        "virsh -c qemu:///system version",
        "install -d -m 0755 /var/lib/vnode /var/lib/vnode/images /var/lib/vnode/nodes",
    ]


@pytest.mark.parametrize("host", ["debian12", "debian13", "ubuntu2404"])
def test_debian_and_ubuntu_hosts_with_systemd_use_apt_and_libvirtd(
    tmp_path: Path, host: str
) -> None:
    lines = _lines(plan(tmp_path, host))
    assert lines[0] == "apt-get update -qq"
    install = lines[1].split()
    assert install[:4] == ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install"]
    assert {"qemu-system-x86", "libvirt-daemon-system", "mmdebstrap", "libvirt-dev"} <= set(install)
    assert {"gpgv", "gpg"} <= set(install)  # they check the checksum files' signatures
    assert {"ovmf", "dosfstools", "mtools"} <= set(install) and "edk2-ovmf" not in install
    assert "systemctl enable --now virtlogd.socket libvirtd.service" in lines
    assert not [line for line in lines if "/dev/kvm" in line]  # udev's rule does it


def test_a_debian_host_without_an_init_starts_the_daemons_itself(tmp_path: Path) -> None:
    lines = _lines(plan(tmp_path, "debian12", init="none"))
    daemons = lines.index("chgrp kvm /dev/kvm")
    assert lines[daemons : daemons + 4] == [
        "chgrp kvm /dev/kvm",
        "chmod 0660 /dev/kvm",
        "virtlogd -d",
        "setsid tini -s -- libvirtd",
    ]
    assert not [line for line in lines if line.startswith("systemctl")]
    # KSM by hand too: nothing would write it at boot.
    assert "echo 1 > /sys/kernel/mm/ksm/run" in lines


def test_ksm_is_enabled_for_good_through_tmpfiles_on_systemd_hosts(tmp_path: Path) -> None:
    lines = _lines(plan(tmp_path, "fedora44"))
    assert "systemd-tmpfiles --create /etc/tmpfiles.d/vnode-ksm.conf" in lines
    assert not [line for line in lines if "> /sys/kernel/mm/ksm" in line]


def test_the_sudo_user_joins_libvirt_and_kvm(tmp_path: Path) -> None:
    lines = _lines(plan(tmp_path, "fedora44", sudo_user="alice"))
    assert "usermod -a -G libvirt,kvm alice" in lines


def test_unsupported_hosts_are_refused_clearly(tmp_path: Path) -> None:
    result = plan(tmp_path, "arch")
    assert result.returncode == 1
    assert result.stderr.startswith("setup: unsupported host (Arch Linux)")
    assert plan(tmp_path, "fedora44", init="none").stderr.strip() == (
        "setup: a Fedora-like host without systemd is not supported"
    )


def test_ksm_is_left_alone_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VNODE_KSM", "off")
    lines = _lines(plan(tmp_path, "debian12", init="none"))
    assert not [line for line in lines if "ksm" in line]

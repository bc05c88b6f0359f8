"""The core's doctor verdicts: KVM, virt type, the reaper, and what healthy means."""

from __future__ import annotations

import os
import stat

import pytest

from vnode.doctor import (
    FAIL,
    OK,
    WARN,
    domain_types,
    healthy,
    is_fedora_like,
    kvm_device_verdict,
    read_os_release,
    reaper_verdict,
    start_hint,
    virt_type_verdict,
)
from vnode.model import Verdict


def _kvm(mode: int, gid: int = 993) -> os.stat_result:
    return os.stat_result((stat.S_IFCHR | mode, 0, 0, 1, 0, gid, 0, 0, 0, 0))


def test_kvm_device_with_group_kvm_and_0660_is_ok() -> None:
    verdict = kvm_device_verdict(_kvm(0o660), lambda gid: "kvm")
    assert verdict.status == OK


@pytest.mark.parametrize(("mode", "group"), [(0o600, "root"), (0o600, "kvm"), (0o660, "root")])
def test_kvm_device_without_udev_permissions_warns_about_slow_defines(
    mode: int, group: str
) -> None:
    verdict = kvm_device_verdict(_kvm(mode), lambda gid: group)
    assert verdict.status == WARN
    assert "30-90 s" in verdict.message
    assert "chmod 0660 /dev/kvm" in verdict.message


def test_fedoras_world_usable_kvm_device_is_ok() -> None:
    verdict = kvm_device_verdict(_kvm(0o666), lambda gid: "kvm")
    assert verdict.status == OK and "usable by everyone" in verdict.message


FEDORA_44 = 'NAME="Fedora Linux"\nVERSION_ID=44\nID=fedora\nPLATFORM_ID="platform:f44"\n'
ALMA_9 = 'ID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.5"\n'
DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


@pytest.mark.parametrize(
    ("text", "systemd", "words"),
    [
        (FEDORA_44, True, "systemctl enable --now virtqemud.socket virtnetworkd.socket"),
        (ALMA_9, True, "dnf install qemu-kvm-core libvirt-daemon-driver-qemu"),
        (DEBIAN_12, True, "systemctl start virtlogd libvirtd"),
        (DEBIAN_12, False, "`tini -s -- libvirtd`"),
        ("", False, "`virtlogd -d`"),
    ],
)
def test_start_hint_follows_the_hosts_os(tmp_path, text: str, systemd: bool, words: str) -> None:
    path = tmp_path / "os-release"
    path.write_text(text)
    hint = start_hint(read_os_release(path), systemd)
    assert words in hint
    assert ("libvirtd" in hint) != is_fedora_like(read_os_release(path))


def test_no_kvm_device_is_fine_for_emulation() -> None:
    assert kvm_device_verdict(None).status == OK


@pytest.mark.parametrize(
    ("wanted", "offered", "status"),
    [
        ("auto", {"qemu", "kvm"}, OK),
        ("auto", {"qemu"}, WARN),
        ("kvm", {"qemu"}, FAIL),
        ("kvm", {"qemu", "kvm"}, OK),
        ("qemu", {"qemu"}, OK),
        ("qemu", set(), FAIL),
    ],
)
def test_virt_type_verdicts(wanted: str, offered: set[str], status: str) -> None:
    assert virt_type_verdict(wanted, offered).status == status


def test_domain_types_are_read_from_capabilities() -> None:
    caps = """<capabilities><host/>
      <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/></arch></guest>
      <guest><os_type>hvm</os_type>
        <arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>
    </capabilities>"""
    assert domain_types(caps) == {"qemu", "kvm"}


def test_healthy_means_no_fail() -> None:
    assert healthy([Verdict("a", OK, "x"), Verdict("b", WARN, "y")])
    assert not healthy([Verdict("a", OK, "x"), Verdict("b", FAIL, "y")])


def test_a_known_init_as_libvirtds_parent_is_a_prompt_reaper() -> None:
    verdict = reaper_verdict("tini", 4242, None)
    assert verdict.status == OK
    assert "tini (pid 4242)" in verdict.message


def test_a_late_reaper_warns_with_the_delay_and_the_fix() -> None:
    verdict = reaper_verdict("process_api", 1, 1.64)
    assert verdict.status == WARN
    assert "after 1.6 s" in verdict.message
    assert "tini -s" in verdict.message


def test_the_reaper_verdict_names_a_modular_daemon() -> None:
    verdict = reaper_verdict("systemd", 1, None, "virtqemud")
    assert verdict.status == OK
    assert verdict.message.startswith("virtqemud's parent systemd (pid 1)")


def test_tpm_needs_swtpm_and_its_setup_tool() -> None:
    from vnode.doctor import tpm_verdict

    assert tpm_verdict("/usr/bin/swtpm", "/usr/bin/swtpm_setup").status == "ok"
    missing = tpm_verdict("/usr/bin/swtpm", None)
    assert missing.status == "warn" and missing.message.startswith("swtpm_setup not found")


def test_a_local_ca_left_to_root_is_said_before_a_tpm_node_fails() -> None:
    from vnode.doctor import tpm_verdict

    lock = "/var/lib/swtpm-localca/.lock.swtpm-localca"
    verdict = tpm_verdict("/usr/bin/swtpm", "/usr/bin/swtpm_setup", [lock])
    assert verdict.status == "warn"
    assert verdict.message.startswith(f"{lock} is not owned by tss")


def test_ksm_says_whether_clones_share_memory_and_how_much() -> None:
    from vnode.doctor import PAGE_MIB, ksm_verdict

    assert ksm_verdict(None).status == "warn"
    off = ksm_verdict({"run": 0, "pages_to_scan": 100, "pages_shared": 0, "pages_sharing": 0})
    assert off.status == "warn" and off.message.startswith("off:")
    sharing = int(512 / PAGE_MIB)
    on = ksm_verdict(
        {"run": 1, "pages_to_scan": 1000, "pages_shared": 10, "pages_sharing": sharing}
    )
    assert on.status == "ok" and "saves 512 MiB now" in on.message


def test_firmware_verdict_says_what_uefi_nodes_can_boot() -> None:
    from vnode.doctor import firmware_verdict
    from vnode.firmware import Descriptor

    plain = Descriptor("60.json", "/ovmf/CODE.fd", "/ovmf/VARS.fd", frozenset(), ("pc-*",))
    secure = Descriptor("40.json", "/ovmf/CODE.ms.fd", "/ovmf/VARS.ms.fd", frozenset(), ("q35",))
    both = firmware_verdict({"uefi": plain, "uefi-secure": secure})
    assert both.status == "ok" and "uefi-secure: /ovmf/CODE.ms.fd (40.json)" in both.message
    half = firmware_verdict({"uefi": plain, "uefi-secure": None})
    assert half.status == "warn" and "none for uefi-secure" in half.message
    none = firmware_verdict({"uefi": None, "uefi-secure": None})
    assert none.status == "warn" and "install ovmf" in none.message

"""The console plugin: where consoles go, and the doctor's SELinux verdict for that place."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode.config import build_config
from vnode.errors import UsageError
from vnode.plugins import PluginHost
from vnode_plugins.serial_console import console_verdict, selinux_label


def test_consoles_go_to_libvirts_log_dir_by_default_or_the_configured_one() -> None:
    host = PluginHost.discover()
    sections = build_config({}, host.config_sections()).sections
    assert sections["console"].log_dir == Path("/var/log/libvirt/qemu")
    configured = build_config({"console": {"log_dir": "/srv/consoles"}}, host.config_sections())
    assert configured.sections["console"].log_dir == Path("/srv/consoles")
    with pytest.raises(UsageError, match=r"\[console\] log_dir = 'rel' must be an absolute"):
        build_config({"console": {"log_dir": "rel"}}, host.config_sections())


@pytest.mark.parametrize(
    ("mode", "label", "status", "words"),
    [
        ("disabled", None, "ok", "SELinux is not enabled"),
        ("enforcing", "virt_log_t", "ok", "is virt_log_t: virtlogd may write there"),
        ("permissive", "var_lib_t", "warn", "is var_lib_t, SELinux permissive"),
        ("enforcing", "var_lib_t", "fail", "is var_lib_t, SELinux enforcing"),
        ("enforcing", None, "fail", "is unlabelled"),
    ],
)
def test_selinux_verdict(
    tmp_path: Path, mode: str, label: str | None, status: str, words: str
) -> None:
    verdict = console_verdict(tmp_path, mode, label)
    assert (verdict.check, verdict.status) == ("console log", status)
    assert words in verdict.message
    if status != "ok":
        fix = f"semanage fcontext -a -t virt_log_t '{tmp_path}(/.*)?' && restorecon -Rv {tmp_path}"
        assert verdict.message.endswith(f"fix: {fix}")


def test_a_missing_log_dir_fails(tmp_path: Path) -> None:
    verdict = console_verdict(tmp_path / "gone", "disabled", None)
    assert verdict.status == "fail" and "does not exist" in verdict.message


def test_label_of_a_file_without_selinux_is_none(tmp_path: Path) -> None:
    assert selinux_label(tmp_path) is None

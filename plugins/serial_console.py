"""Capture each node's serial console to a file from boot on (virtlogd writes it).

The file is ``<log_dir>/<node>-console.log``, by default beside libvirt's own QEMU logs in
``/var/log/libvirt/qemu``: virtlogd, not QEMU, creates it, and on SELinux hosts (Fedora,
enforcing) virtlogd may create files only where the policy allows, labelled ``virt_log_t``.
In vnode's ``/var/lib/vnode/nodes/NAME/`` (``var_lib_t``) every start would be denied. The
file is removed with the node.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from vnode.plugin import ConsoleSetup, NodePlan, PluginContext, UsageError, Verdict, hookimpl

DEFAULT_LOG_DIR = Path("/var/log/libvirt/qemu")
SELINUX_ENFORCE = Path("/sys/fs/selinux/enforce")
# Labels virtlogd_t may create files under (Fedora's policy: libvirt's log directories).
VIRTLOGD_WRITABLE = ("virt_log_t", "virt_qemu_log_t")


def _absolute(instance: object, attribute: attrs.Attribute, value: Path) -> None:
    if not value.is_absolute():
        raise UsageError(f"config: [console] log_dir = {str(value)!r} must be an absolute path")


@attrs.frozen
class ConsoleSettings:
    """``[console]``: where node consoles are captured (a directory virtlogd may write)."""

    log_dir: Path = attrs.field(default=DEFAULT_LOG_DIR, converter=Path, validator=_absolute)


@hookimpl(trylast=True)
def vnode_config_sections() -> dict[str, type]:
    return {"console": ConsoleSettings}


@hookimpl(trylast=True)
def vnode_console_setup(node: NodePlan, context: PluginContext) -> ConsoleSetup | None:
    if node.volume_dir is not None:
        # In the host's vnode pool, where vnode reads it back as a volume (the host may be
        # another machine).
        return ConsoleSetup(log_path=node.volume_dir / node.console_volume)
    settings = context.section("console")
    return ConsoleSetup(log_path=settings.log_dir / f"{node.name}-console.log")


@hookimpl(trylast=True)
def vnode_doctor_checks(context: PluginContext) -> list[Verdict]:
    log_dir = context.section("console").log_dir
    return [console_verdict(log_dir, selinux_mode(), selinux_label(log_dir))]


def selinux_mode() -> str:
    """ "enforcing", "permissive" or "disabled" (no SELinux in this kernel)."""
    try:
        return "enforcing" if SELINUX_ENFORCE.read_text().strip() == "1" else "permissive"
    except OSError:
        return "disabled"


def selinux_label(path: Path) -> str | None:
    """The SELinux type of ``path`` (``virt_log_t``), None if it has no label or is absent."""
    try:
        context = os.getxattr(path, "security.selinux").decode().rstrip("\0")
    except OSError:
        return None
    parts = context.split(":")
    return parts[2] if len(parts) > 2 else None


def console_verdict(log_dir: Path, mode: str, label: str | None) -> Verdict:
    """Whether virtlogd may create console logs in ``log_dir``, with the exact fix if not."""
    check = "console log"
    if not log_dir.is_dir():
        return Verdict(
            check,
            "fail",
            f"{log_dir} does not exist: libvirt's packages make it (or set [console] log_dir)",
        )
    if mode == "disabled":
        return Verdict(check, "ok", f"{log_dir} (SELinux is not enabled: no label needed)")
    if label in VIRTLOGD_WRITABLE:
        return Verdict(check, "ok", f"{log_dir} is {label}: virtlogd may write there ({mode})")
    fix = f"semanage fcontext -a -t virt_log_t '{log_dir}(/.*)?' && restorecon -Rv {log_dir}"
    status = "fail" if mode == "enforcing" else "warn"
    return Verdict(
        check,
        status,
        f"{log_dir} is {label or 'unlabelled'}, SELinux {mode}: virtlogd may not create "
        f"consoles there; fix: {fix}",
    )

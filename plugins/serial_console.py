"""Capture each node's serial console to a file from boot on (virtlogd writes it)."""

from __future__ import annotations

from vnode.plugin import ConsoleSetup, NodePlan, hookimpl


@hookimpl(trylast=True)
def vnode_console_setup(node: NodePlan) -> ConsoleSetup | None:
    if node.volume_dir is not None:
        # In the host's vnode pool, where vnode reads it back as a volume (the host may be
        # another machine).
        return ConsoleSetup(log_path=node.volume_dir / node.console_volume)
    return ConsoleSetup(log_path=node.node_dir / "console.log")

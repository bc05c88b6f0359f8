"""Capture each node's serial console to a file from boot on (virtlogd writes it)."""

from __future__ import annotations

from vnode.plugin import ConsoleSetup, NodePlan, hookimpl


@hookimpl(trylast=True)
def vnode_console_setup(node: NodePlan) -> ConsoleSetup | None:
    return ConsoleSetup(log_path=node.node_dir / "console.log")

"""Attach nodes through macvtap on a host NIC (``direct:eth0``).

Caveat (a property of macvtap, not of vnode): the host cannot reach the nodes through that
NIC, and in "bridge" mode nodes reach each other but not the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from vnode.errors import UsageError
from vnode.hookspecs import hookimpl
from vnode.model import Interface, NodeIdentity, NodePlan
from vnode.network import NetworkBackend
from vnode_plugins.bridge import neighbour_address, resolve_name

if TYPE_CHECKING:
    from vnode.config import Config

KIND = "direct"
log = structlog.get_logger("vnode.direct")


@hookimpl(trylast=True)
def vnode_network_kinds() -> list[str]:
    return [KIND]


@hookimpl(trylast=True)
def vnode_network_backend(kind: str, arg: str | None, config: Config) -> NetworkBackend | None:
    if kind != KIND:
        return None
    if not arg:
        raise UsageError("direct network needs a parent device: --network direct:eth0")
    return DirectNetwork(arg)


class DirectNetwork(NetworkBackend):
    kind = KIND

    def __init__(self, parent: str) -> None:
        self.parent = parent

    def describe(self) -> str:
        return f"{KIND}:{self.parent}"

    def check(self, nodes: list[NodePlan]) -> None:
        if not (Path("/sys/class/net") / self.parent).exists():
            raise UsageError(f"host device {self.parent!r} for direct (macvtap) does not exist")
        log.warning(
            "macvtap: the host cannot reach these nodes through its own NIC", parent=self.parent
        )

    def interface(self, node: NodePlan) -> Interface:
        return Interface(type="direct", source=self.parent, mode="bridge")

    def discover_address(self, node: NodeIdentity) -> str | None:
        return resolve_name(node.name) or neighbour_address(node.mac, self.parent)

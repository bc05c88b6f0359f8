"""Attach nodes to an existing host bridge (e.g. ``br0``): the site's DHCP/DNS gives addresses.

The address is learned without guessing: the node's name in DNS first (the site defines it),
then the host's neighbour table by MAC.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from vnode.errors import UsageError
from vnode.hookspecs import hookimpl
from vnode.model import Interface, NodeIdentity, NodePlan
from vnode.network import NetworkBackend

if TYPE_CHECKING:
    from vnode.config import Config

KIND = "bridge"


@hookimpl(trylast=True)
def vnode_network_kinds() -> list[str]:
    return [KIND]


@hookimpl(trylast=True)
def vnode_network_backend(kind: str, arg: str | None, config: Config) -> NetworkBackend | None:
    if kind != KIND:
        return None
    return BridgeNetwork(arg or "br0")


class BridgeNetwork(NetworkBackend):
    kind = KIND

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge

    def describe(self) -> str:
        return f"{KIND}:{self.bridge}"

    def check(self, nodes: list[NodePlan]) -> None:
        if not (Path("/sys/class/net") / self.bridge / "bridge").is_dir():
            raise UsageError(
                f"host bridge {self.bridge!r} does not exist (see `vnode bridge create --help`)"
            )

    def interface(self, node: NodePlan) -> Interface:
        return Interface(type="bridge", source=self.bridge)

    def discover_address(self, node: NodeIdentity) -> str | None:
        return resolve_name(node.name) or neighbour_address(node.mac, self.bridge)


def resolve_name(name: str) -> str | None:
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return infos[0][4][0] if infos else None


def neighbour_address(mac: str, device: str) -> str | None:
    """The IPv4 address the host's neighbour table holds for ``mac`` on ``device``."""
    try:
        out = subprocess.run(
            ["ip", "-4", "neigh", "show", "dev", device],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        fields = line.split()
        if "lladdr" not in fields or "FAILED" in fields or "INCOMPLETE" in fields:
            continue
        if fields[fields.index("lladdr") + 1].lower() == mac.lower():
            return fields[0]
    return None

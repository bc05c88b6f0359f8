"""The hooks plugins implement. Call order and precedence are documented in CONTRIBUTING.md.

Every built-in implementation is marked ``trylast`` so that a third-party plugin answering the
same question wins (e.g. a site's own Fedora mirror).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from vnode.config import Config
    from vnode.model import ConsoleSetup, Distro, NodePlan
    from vnode.network import NetworkBackend

PROJECT = "vnode"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def vnode_distro_resolve(name: str) -> Distro | None:
    """Return the :class:`~vnode.model.Distro` for a short name or alias (``f43``, ``ubuntu``),
    or ``None`` if this plugin does not know it. The first non-None answer wins."""


@hookspec
def vnode_distro_names() -> list[str]:
    """Return the names this plugin resolves, for listings and error messages."""


@hookspec(firstresult=True)
def vnode_image_build(distro: Distro, dest: Path, config: Config) -> bool | None:
    """Build ``distro``'s image at ``dest`` without downloading it; return True if done,
    None if this plugin cannot build it."""


@hookspec
def vnode_network_kinds() -> list[str]:
    """Return the network kinds this plugin attaches nodes to (``libvirt``, ``bridge``...)."""


@hookspec(firstresult=True)
def vnode_network_backend(kind: str, arg: str | None, config: Config) -> NetworkBackend | None:
    """Return a :class:`~vnode.network.NetworkBackend` for ``KIND[:ARG]``, or None."""


@hookspec(firstresult=True)
def vnode_console_setup(node: NodePlan) -> ConsoleSetup | None:
    """Return where the node's serial console is captured from boot on."""

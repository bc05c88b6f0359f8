"""Everything a plugin may import from vnode: this module is the plugin API.

Plugins (ours and third parties') import from here and nowhere else in vnode, so the core can
change behind this surface. The hooks themselves are documented in :mod:`vnode.hookspecs`.

>>> from vnode.plugin import hookimpl, Distro
"""

from __future__ import annotations

from vnode.catalog import Catalog, catalog
from vnode.errors import EnvironmentProblem, UsageError, VnodeError
from vnode.hookspecs import hookimpl
from vnode.logs import get_logger
from vnode.model import (
    ConsoleSetup,
    Distro,
    ImageBuilder,
    Interface,
    NodeIdentity,
    NodePlan,
    PluginContext,
    StaticAddress,
    Verdict,
)
from vnode.network import NetworkBackend
from vnode.templating import render_xml

__all__ = [
    "Catalog",
    "ConsoleSetup",
    "Distro",
    "EnvironmentProblem",
    "ImageBuilder",
    "Interface",
    "NetworkBackend",
    "NodeIdentity",
    "NodePlan",
    "PluginContext",
    "StaticAddress",
    "UsageError",
    "Verdict",
    "VnodeError",
    "catalog",
    "get_logger",
    "hookimpl",
    "render_xml",
]

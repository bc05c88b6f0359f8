"""Everything a plugin may import from vnode: this module is the plugin API.

Plugins (ours and third parties') import from here and nowhere else in vnode, so the core can
change behind this surface. The hooks themselves are documented in :mod:`vnode.hookspecs`.

>>> from vnode.plugin import hookimpl, Distro
"""

from __future__ import annotations

from vnode.catalog import MAX_RELEASES, Catalog, CatalogError, MetadataReader, catalog
from vnode.errors import EnvironmentProblem, UsageError, VnodeError
from vnode.files import write_atomic
from vnode.hookspecs import hookimpl
from vnode.locks import file_lock
from vnode.logs import get_logger
from vnode.model import (
    ConsoleSetup,
    Distro,
    ImageBuilder,
    Interface,
    Location,
    Nic,
    NodeIdentity,
    NodePlan,
    PluginContext,
    StaticAddress,
    Verdict,
)
from vnode.network import NetworkBackend
from vnode.templating import render_xml


def index_links(html: str) -> list[str]:
    """The file names an HTML directory index (Apache, nginx, Python's) links to."""
    from vnode.fetch import index_links as links

    return links(html)


__all__ = [
    "MAX_RELEASES",
    "Catalog",
    "CatalogError",
    "ConsoleSetup",
    "Distro",
    "EnvironmentProblem",
    "ImageBuilder",
    "Interface",
    "Location",
    "MetadataReader",
    "NetworkBackend",
    "Nic",
    "NodeIdentity",
    "NodePlan",
    "PluginContext",
    "StaticAddress",
    "UsageError",
    "Verdict",
    "VnodeError",
    "catalog",
    "file_lock",
    "get_logger",
    "hookimpl",
    "index_links",
    "render_xml",
    "write_atomic",
]

"""Finding plugins through the ``vnode.plugins`` entry point group, ours included."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

import attrs
import pluggy
from vnode import hookspecs
from vnode.errors import UsageError

ENTRY_POINT_GROUP = "vnode.plugins"

_KIND_OF_HOOK = {
    "vnode_distro_resolve": "distro",
    "vnode_distro_names": "distro",
    "vnode_image_build": "distro",
    "vnode_network_kinds": "network",
    "vnode_network_backend": "network",
    "vnode_console_setup": "console",
}


@attrs.frozen
class PluginInfo:
    """One entry point, loaded or not, as ``vnode plugins list`` shows it."""

    name: str
    kinds: tuple[str, ...]
    version: str
    distribution: str
    entry_point: str
    status: str  # "ok" or "broken"
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Plugins:
    manager: pluggy.PluginManager
    infos: tuple[PluginInfo, ...]

    @property
    def hook(self) -> Any:
        return self.manager.hook


@functools.cache
def load_plugins() -> Plugins:
    """Load every plugin once per process; a broken plugin is recorded, never fatal."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    infos = [_register(manager, ep) for ep in _entry_points()]
    return Plugins(manager=manager, infos=tuple(infos))


def _entry_points() -> list[metadata.EntryPoint]:
    points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    # Distributions installed twice (e.g. editable and regular) would register twice.
    unique = {(ep.name, ep.value): ep for ep in points}
    return sorted(unique.values(), key=lambda ep: ep.name)


def _register(manager: pluggy.PluginManager, ep: metadata.EntryPoint) -> PluginInfo:
    dist = ep.dist
    base = {
        "name": ep.name,
        "version": dist.version if dist else "?",
        "distribution": dist.name if dist else "?",
        "entry_point": f"{ep.name} = {ep.value}",
    }
    try:
        module = ep.load()
        manager.register(module, name=ep.name)
        manager.check_pending()
    except Exception as exc:  # a third party's bug must not break vnode
        if manager.is_registered(locals().get("module")):
            manager.unregister(module)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return PluginInfo(kinds=(), status="broken", reason=reason, **base)
    kinds = sorted(
        {
            _KIND_OF_HOOK[impl.name]
            for impl in manager.get_hookcallers(module) or []
            if impl.name in _KIND_OF_HOOK
        }
    )
    return PluginInfo(kinds=tuple(kinds), status="ok", **base)


def resolve_distro(name: str) -> Any:
    """The Distro for a short name, or a UsageError listing what the plugins know."""
    plugins = load_plugins()
    distro = plugins.hook.vnode_distro_resolve(name=name.lower())
    if distro is None:
        known = sorted({n for names in plugins.hook.vnode_distro_names() for n in names})
        raise UsageError(f"unknown distro {name!r}; known: {', '.join(known) or 'none'}")
    return distro


def network_backend(network: str, config: Any) -> Any:
    """The backend for ``KIND[:ARG]``, or a UsageError listing the kinds plugins provide."""
    plugins = load_plugins()
    kind, _, arg = network.partition(":")
    backend = plugins.hook.vnode_network_backend(kind=kind, arg=arg or None, config=config)
    if backend is None:
        kinds = sorted({k for ks in plugins.hook.vnode_network_kinds() for k in ks})
        raise UsageError(f"unknown network {network!r}; kinds: {', '.join(kinds) or 'none'}")
    return backend

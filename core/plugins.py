"""Finding plugins through the ``vnode.plugins`` entry point group, ours included.

A third party's plugin must never break vnode: one that fails to import, does not match the
hook specifications, or answers a listing hook with the wrong type is recorded as broken and
left out. Hooks that answer with one result are called plugin by plugin, so a plugin that
raises is skipped (and named) instead of failing the command.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from vnode import hookspecs
from vnode.errors import UsageError
from vnode.logs import get_logger
from vnode.model import Distro

ENTRY_POINT_GROUP = "vnode.plugins"
log = get_logger("vnode.plugins")

_KIND_OF_HOOK = {
    "vnode_distro_resolve": "distro",
    "vnode_distro_names": "distro",
    "vnode_image_build": "distro",
    "vnode_network_kinds": "network",
    "vnode_network_backend": "network",
    "vnode_console_setup": "console",
}
# Hooks whose answers name what a plugin provides; checked when the plugin loads.
_LISTING_HOOKS = ("vnode_distro_names", "vnode_network_kinds")


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
    provides: tuple[str, ...] = ()  # distro names and network kinds it answers for
    notes: tuple[str, ...] = ()  # precedence conflicts with other plugins

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
    """Load every plugin once per process."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    infos = [_register(manager, ep) for ep in _entry_points()]
    return Plugins(manager=manager, infos=tuple(_with_conflicts(manager, infos)))


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
    plugin = None
    try:
        plugin = ep.load()
        manager.register(plugin, name=ep.name)
        manager.check_pending()
        provides = _listings(manager, ep.name)
    except Exception as exc:  # a third party's bug must not break vnode
        if plugin is not None and manager.is_registered(plugin):
            manager.unregister(plugin)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        return PluginInfo(kinds=(), status="broken", reason=reason, **base)
    callers = manager.get_hookcallers(plugin) or []
    kinds = sorted({_KIND_OF_HOOK[c.name] for c in callers if c.name in _KIND_OF_HOOK})
    return PluginInfo(kinds=tuple(kinds), status="ok", provides=tuple(provides), **base)


def _listings(manager: pluggy.PluginManager, name: str) -> list[str]:
    """What the plugin says it provides; a wrong answer makes it broken."""
    provided: list[str] = []
    for hook_name in _LISTING_HOOKS:
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            if impl.plugin_name != name:
                continue
            answer = impl.function()
            if not isinstance(answer, list) or not all(isinstance(a, str) for a in answer):
                raise TypeError(f"{hook_name} returned {answer!r}, expected list[str]")
            provided.extend(answer)
    return provided


def _with_conflicts(manager: pluggy.PluginManager, infos: list[PluginInfo]) -> list[PluginInfo]:
    """Note where two plugins answer for the same distro name: the first in call order wins."""
    notes: dict[str, list[str]] = {info.name: [] for info in infos}
    for name in sorted({p for info in infos for p in info.provides}):
        answering = [
            impl.plugin_name
            for impl in _call_order(manager.hook.vnode_distro_resolve)
            if _safe_resolve(impl, name) is not None
        ]
        winner, *shadowed = answering or [None]
        for loser in shadowed:
            notes[winner].append(f"overrides {loser} for {name}")
            notes[loser].append(f"{name} overridden by {winner}")
    return [attrs.evolve(info, notes=tuple(notes[info.name])) for info in infos]


def _call_order(caller: Any) -> list[Any]:
    # pluggy calls the last of get_hookimpls() first (tryfirst last, trylast first).
    return list(reversed(caller.get_hookimpls()))


def _safe_resolve(impl: Any, name: str) -> Any:
    try:
        return impl.function(name=name)
    except Exception:
        return None


def first_answer(hook_name: str, accept: Callable[[Any], bool], **kwargs: Any) -> Any:
    """Call a first-result hook plugin by plugin; skip (and log) a plugin that raises or
    answers with the wrong type."""
    caller = getattr(load_plugins().hook, hook_name)
    for impl in _call_order(caller):
        try:
            answer = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.warning(
                "plugin failed; skipped",
                plugin=impl.plugin_name,
                hook=hook_name,
                error=f"{type(exc).__name__}: {exc}",
            )
            continue
        if answer is None:
            continue
        if not accept(answer):
            log.warning(
                "plugin answered with the wrong type; skipped",
                plugin=impl.plugin_name,
                hook=hook_name,
                answer=repr(answer)[:80],
            )
            continue
        return answer
    return None


def all_answers(hook_name: str) -> list[str]:
    return sorted({n for names in getattr(load_plugins().hook, hook_name)() for n in names})


def resolve_distro(name: str) -> Distro:
    """The Distro for a short name, or a UsageError listing what the plugins know."""
    distro = first_answer(
        "vnode_distro_resolve", lambda d: isinstance(d, Distro), name=name.lower()
    )
    if distro is None:
        known = all_answers("vnode_distro_names")
        raise UsageError(f"unknown distro {name!r}; known: {', '.join(known) or 'none'}")
    return distro


def network_backend(network: str, config: Any) -> Any:
    """The backend for ``KIND[:ARG]``, or a UsageError listing the kinds plugins provide."""
    from vnode.network import NetworkBackend

    kind, _, arg = network.partition(":")
    backend = first_answer(
        "vnode_network_backend",
        lambda b: isinstance(b, NetworkBackend),
        kind=kind,
        arg=arg or None,
        config=config,
    )
    if backend is None:
        kinds = all_answers("vnode_network_kinds")
        raise UsageError(f"unknown network {network!r}; kinds: {', '.join(kinds) or 'none'}")
    return backend

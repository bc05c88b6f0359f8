"""The plugin host: finds plugins through the ``vnode.plugins`` entry points (ours included) and
is the one way vnode calls a hook.

A third party's plugin must never break vnode. One that fails to import, does not match the
hook specifications, or answers a listing hook wrongly when it loads is recorded as broken and
left out. At run time every hook goes through the same isolation: an implementation that
raises (anything but vnode's own UsageError/EnvironmentProblem, which are answers meant for
the user) or answers with the wrong type is skipped and named, and the call goes on as if it
had not been there. Plain implementations are guarded where they are registered, so pluggy's
own call loop (first result, tryfirst/trylast, wrappers) is untouched; an exception that
escapes a wrapper is traced back to its plugin, and the call is made again without it.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
import pluggy

from vnode import hookspecs
from vnode.catalog import Catalog, MetadataReader
from vnode.errors import UsageError, VnodeError
from vnode.logs import get_logger
from vnode.model import (
    ConsoleSetup,
    Distro,
    ImageBuilder,
    NodePlan,
    PluginContext,
    Verdict,
)
from vnode.network import NetworkBackend

ENTRY_POINT_GROUP = "vnode.plugins"
log = get_logger("vnode.plugins")

PluginStatus = Literal["ok", "broken", "disabled"]


@attrs.frozen
class PluginInfo:
    """One entry point, loaded or not, as ``vnode plugins list`` shows it."""

    name: str
    kinds: tuple[str, ...]
    version: str
    distribution: str
    entry_point: str
    status: PluginStatus
    reason: str | None = None
    provides: tuple[str, ...] = ()  # distro names and network kinds it answers for
    notes: tuple[str, ...] = ()  # precedence conflicts, hooks it failed in

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class PluginSource:
    """A plugin to register: what an entry point gives, or what a test hands in directly."""

    name: str
    load: Callable[[], Any] = attrs.field(eq=False)
    version: str = "?"
    distribution: str = "?"
    entry_point: str = ""
    # The installed distribution, whose metadata gives version and name. Reading it parses
    # a METADATA file per plugin, so it is read only when the plugins are listed.
    dist: Any = attrs.field(default=None, eq=False, repr=False)

    def described(self) -> tuple[str, str]:
        """(distribution, version)."""
        if self.dist is None:
            return self.distribution, self.version
        return self.dist.name, self.dist.version


def entry_point_sources() -> list[PluginSource]:
    from importlib import metadata

    points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    # Distributions installed twice (e.g. editable and regular) would register twice.
    unique = {(ep.name, ep.value): ep for ep in points}
    return [
        PluginSource(
            name=ep.name, load=ep.load, entry_point=f"{ep.name} = {ep.value}", dist=ep.dist
        )
        for ep in sorted(unique.values(), key=lambda ep: ep.name)
    ]


class PluginHost:
    """Owns one pluggy manager for one session; every hook call goes through its methods."""

    def __init__(self, sources: Iterable[PluginSource], disabled: Iterable[str] = ()) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._faults: dict[str, list[str]] = {}
        self._catalogs: dict[str, Catalog] = {}
        self._code_owner: dict[Any, str] = {}  # a hook function's code -> its plugin's name
        self._sources: dict[str, PluginSource] = {}
        # One line per plugin command left out because its name was taken (cli_commands).
        self.skipped_commands: list[str] = []
        disabled = set(disabled)
        infos = []
        for source in sources:
            self._sources[source.name] = source
            if source.name in disabled:
                self._pm.set_blocked(source.name)
                infos.append(self._info(source, status="disabled", reason="disabled in config"))
            else:
                infos.append(self._register(source))
        unknown = disabled - {source.name for source in infos}
        if unknown:
            raise UsageError(f"config: [plugins] disable names no plugin: {', '.join(unknown)}")
        self._infos = tuple(infos)

    @classmethod
    def discover(cls, disabled: Iterable[str] = ()) -> PluginHost:
        """The plugins installed in this Python environment (entry points)."""
        return cls(entry_point_sources(), disabled)

    # -- the hooks, typed ----------------------------------------------------------------

    def use_catalogs(self, catalogs: Mapping[str, Catalog]) -> None:
        """The cached upstream catalogs the distro hooks get (the session loads them)."""
        self._catalogs = dict(catalogs)

    def resolve_distro(self, name: str) -> Distro:
        """The Distro for a short name, or a UsageError listing what the plugins know."""
        distro = self.find_distro(name)
        if distro is None:
            known = self.distro_names()
            raise UsageError(f"unknown distro {name!r}; known: {', '.join(known) or 'none'}")
        return distro

    def find_distro(self, name: str) -> Distro | None:
        return self._call("vnode_distro_resolve", name=name.lower(), catalogs=self._catalogs)

    def distro_names(self) -> list[str]:
        answers = self._call("vnode_distro_names", catalogs=self._catalogs)
        return sorted({n for names in answers for n in names})

    def distro_catalogs(self) -> list[Catalog]:
        answers = self._call("vnode_distro_catalogs", catalogs=self._catalogs)
        return [catalog for catalogs in answers for catalog in catalogs]

    def refresh_catalogs(self, read: MetadataReader) -> tuple[list[Catalog], list[str]]:
        """Every plugin's fresh catalog, and one line per plugin whose refresh failed."""
        before = {name: len(notes) for name, notes in self._faults.items()}
        catalogs: list[Catalog] = []
        failures: list[str] = []
        # One plugin at a time, so that one family's bad metadata (a CatalogError, which the
        # guard lets through) costs only that family's refresh.
        for impl in reversed(self._pm.hook.vnode_catalog_refresh.get_hookimpls()):
            try:
                answer = _call_impl(impl, read=read)
            except VnodeError as exc:
                failures.append(f"{impl.plugin_name}: {exc}")
                continue
            if answer is not None:
                catalogs.append(answer)
        failures += [
            f"{name}: {note}"
            for name, notes in self._faults.items()
            for note in notes[before.get(name, 0) :]
            if note.startswith("vnode_catalog_refresh")
        ]
        return catalogs, failures

    def image_builder(self, distro: Distro, context: PluginContext) -> ImageBuilder | None:
        return self._call("vnode_image_builder", distro=distro, context=context)

    def network_kinds(self) -> list[str]:
        return sorted({k for kinds in self._call("vnode_network_kinds") for k in kinds})

    def network_choice(self, network: str) -> str:
        """``KIND:ARG`` or a bare kind as they are; any other bare name as the plugin that
        gives bare names a meaning says (``vnode_network_bare_name``)."""
        if ":" in network or network in self.network_kinds():
            return network
        chosen = self._call("vnode_network_bare_name", name=network)
        if chosen is None:
            kinds = self.network_kinds()
            raise UsageError(f"unknown network {network!r}; kinds: {', '.join(kinds) or 'none'}")
        return chosen

    def network_alias(self, kind: str, arg: str) -> str:
        """``--bridge BR``, ``--direct DEV``: the documented aliases of ``--network KIND:ARG``,
        for a kind some plugin provides."""
        kinds = self.network_kinds()
        if kind not in kinds:
            raise UsageError(
                f"unknown network {kind + ':' + arg!r}; kinds: {', '.join(kinds) or 'none'}"
            )
        return f"{kind}:{arg}"

    def network_backend(self, network: str, context: PluginContext) -> NetworkBackend:
        """The backend for ``KIND[:ARG]``, or a UsageError listing the kinds plugins provide."""
        kind, _, arg = network.partition(":")
        backend = self._call("vnode_network_backend", kind=kind, arg=arg or None, context=context)
        if backend is None:
            kinds = self.network_kinds()
            raise UsageError(f"unknown network {network!r}; kinds: {', '.join(kinds) or 'none'}")
        return backend

    def guest_network_files(self, node: NodePlan) -> dict[str, str] | None:
        return self._call("vnode_guest_network_files", node=node)

    def console_setup(self, node: NodePlan, context: PluginContext) -> ConsoleSetup | None:
        return self._call("vnode_console_setup", node=node, context=context)

    def config_sections(self) -> dict[str, type]:
        """Every plugin-declared section; the same name with two classes is a broken setup."""
        merged: dict[str, type] = {}
        owners: dict[str, str] = {}
        for impl in self._pm.hook.vnode_config_sections.get_hookimpls():  # registration order
            answer = impl.function() or {}
            for section, cls in answer.items():
                if section in merged and merged[section] is not cls:
                    self._fault(
                        impl.plugin_name,
                        "vnode_config_sections",
                        f"section [{section}] is already {owners[section]}'s",
                    )
                    continue
                merged[section] = cls
                owners.setdefault(section, impl.plugin_name)
        return merged

    def doctor_checks(self, context: PluginContext) -> list[Verdict]:
        return [
            v for verdicts in self._call("vnode_doctor_checks", context=context) for v in verdicts
        ]

    def cli_commands(self, taken: Iterable[str] = ()) -> list[Any]:
        """Every plugin's sub-commands (``cyclopts.App``s). One whose name the core
        (``taken``) or a plugin called earlier already uses is skipped and named: a note in
        ``vnode plugins list``, and a line in :attr:`skipped_commands`."""
        owners = dict.fromkeys(taken, "the core")
        apps = []
        # pluggy's call order (the last registered first), one plugin at a time: the guard
        # still skips a plugin that raises or answers wrongly.
        for impl in reversed(self._pm.hook.vnode_cli_commands.get_hookimpls()):
            for app in _call_impl(impl) or ():
                name = app.name[0] if isinstance(app.name, tuple) else app.name
                if name in owners:
                    what = f"command {name!r} is {owners[name]}'s already; skipped"
                    # Noted, not logged: the command line says it on stderr (there may be
                    # no log handler yet when it asks).
                    notes = self._faults.setdefault(impl.plugin_name, [])
                    if what not in notes:
                        notes.append(what)
                    self.skipped_commands.append(f"plugin {impl.plugin_name}: {what}")
                    continue
                owners[name] = impl.plugin_name
                apps.append(app)
        return apps

    def adjust_domain(self, node: NodePlan, domain: ET.Element) -> None:
        self._call("vnode_domain_xml", node=node, domain=domain)

    # -- what vnode plugins list shows ---------------------------------------------------

    @property
    def infos(self) -> tuple[PluginInfo, ...]:
        with_conflicts = self._with_conflicts(self._infos)
        described = {name: source.described() for name, source in self._sources.items()}
        return tuple(
            attrs.evolve(
                info,
                distribution=described[info.name][0],
                version=described[info.name][1],
                notes=(*info.notes, *self._faults.get(info.name, ())),
            )
            for info in with_conflicts
        )

    # -- the one call path ---------------------------------------------------------------

    def _call(self, hook_name: str, **kwargs: Any) -> Any:
        left_out: list[Any] = []
        while True:
            caller = (
                self._pm.subset_hook_caller(hook_name, left_out)
                if left_out
                else getattr(self._pm.hook, hook_name)
            )
            try:
                return caller(**kwargs)
            except (VnodeError, KeyboardInterrupt):
                raise
            except Exception as exc:
                culprit = self._culprit(exc)
                plugin = self._pm.get_plugin(culprit) if culprit else None
                if plugin is None or plugin in left_out:
                    raise
                self._fault(culprit, hook_name, _one_line(exc))
                left_out.append(plugin)

    def _culprit(self, exc: BaseException) -> str | None:
        """The plugin whose code raised: the innermost traceback frame that is a hook function."""
        found = None
        tb = exc.__traceback__
        while tb is not None:
            found = self._code_owner.get(tb.tb_frame.f_code, found)
            tb = tb.tb_next
        return found

    def _fault(self, plugin: str, hook_name: str, what: str) -> None:
        note = f"{hook_name} failed, skipped: {what}"
        if note not in self._faults.setdefault(plugin, []):
            self._faults[plugin].append(note)
            log.warning("plugin failed; skipped", plugin=plugin, hook=hook_name, error=what)

    # -- registration --------------------------------------------------------------------

    def _register(self, source: PluginSource) -> PluginInfo:
        proxy = None
        try:
            plugin = source.load()
            proxy = self._guarded(source.name, plugin)
            self._pm.register(proxy, name=source.name)
            self._pm.check_pending()
            provides = self._listings(source.name)
        except Exception as exc:  # a third party's bug must not break vnode
            if proxy is not None and self._pm.is_registered(proxy):
                self._pm.unregister(proxy)
            return self._info(source, status="broken", reason=_one_line(exc))
        callers = self._pm.get_hookcallers(proxy) or []
        hooks = hookspecs.HOOKS
        kinds = sorted({hooks[c.name].kind for c in callers if c.name in hooks})
        return self._info(source, status="ok", kinds=tuple(kinds), provides=tuple(provides))

    def _info(self, source: PluginSource, **fields: Any) -> PluginInfo:
        return PluginInfo(
            name=source.name,
            version="?",  # filled in by infos, from the source
            distribution="?",
            entry_point=source.entry_point,
            **{"kinds": (), **fields},
        )

    def _guarded(self, name: str, plugin: Any) -> Any:
        """A stand-in for the plugin whose plain hook functions cannot raise or answer wrongly.

        Wrappers are left as they are: pluggy drives them as generators.
        """
        proxy = _GuardedPlugin(getattr(plugin, "__name__", name))
        marker = f"{hookspecs.PROJECT}_impl"
        for attribute in dir(plugin):
            function = getattr(plugin, attribute, None)
            options = getattr(function, marker, None)
            if not callable(function) or options is None:
                continue
            self._code_owner[_code_of(function)] = name
            wraps = options.get("wrapper") or options.get("hookwrapper")
            setattr(proxy, attribute, function if wraps else self._guard(name, attribute, function))
        return proxy

    def _guard(
        self, plugin: str, hook_name: str, function: Callable[..., Any]
    ) -> Callable[..., Any]:
        hook = hookspecs.HOOKS.get(hook_name)  # no such hook: pluggy refuses the plugin
        accepts = hook.accepts if hook is not None else (lambda answer: True)

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                answer = function(*args, **kwargs)
            except (VnodeError, KeyboardInterrupt):
                raise
            except Exception as exc:
                self._fault(plugin, hook_name, _one_line(exc))
                return None
            if answer is not None and not accepts(answer):
                self._fault(plugin, hook_name, f"answered {repr(answer)[:80]}, the wrong type")
                return None
            return answer

        return guarded

    def _listings(self, name: str) -> list[str]:
        """What the plugin says it provides; a wrong answer makes it broken."""
        provided: list[str] = []
        for hook_name in (name for name, hook in hookspecs.HOOKS.items() if hook.listing):
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                answer = _call_impl(impl, raw=True, catalogs=self._catalogs)
                if not hookspecs.HOOKS[hook_name].accepts(answer):
                    raise TypeError(f"{hook_name} returned {answer!r}, expected list[str]")
                provided.extend(answer)
        return provided

    def _with_conflicts(self, infos: Iterable[PluginInfo]) -> list[PluginInfo]:
        """Note where two plugins answer for the same distro name: the first in call order
        wins."""
        infos = list(infos)
        notes: dict[str, list[str]] = {info.name: list(info.notes) for info in infos}
        # pluggy calls the last of get_hookimpls() first (tryfirst last, trylast first).
        impls = list(reversed(self._pm.hook.vnode_distro_resolve.get_hookimpls()))
        for name in sorted({p for info in infos for p in info.provides}):
            answering = [
                impl.plugin_name
                for impl in impls
                if not (impl.wrapper or impl.hookwrapper)
                and _call_impl(impl, name=name, catalogs=self._catalogs) is not None
            ]
            winner, *shadowed = answering or [None]
            for loser in shadowed:
                notes[winner].append(f"overrides {loser} for {name}")
                notes[loser].append(f"{name} overridden by {winner}")
        return [attrs.evolve(info, notes=tuple(notes[info.name])) for info in infos]


def _call_impl(impl: Any, *, raw: bool = False, **kwargs: Any) -> Any:
    """One implementation with the arguments it names (pluggy's own rule: a plugin may take
    fewer arguments than the hook offers); ``raw`` bypasses the guard."""
    function = getattr(impl.function, "__wrapped__", impl.function) if raw else impl.function
    return function(**{name: kwargs[name] for name in impl.argnames if name in kwargs})


class _GuardedPlugin:
    """What is registered with pluggy in a plugin's place: its hook functions, guarded.
    (Hashable by identity, as pluggy needs.)"""

    def __init__(self, name: str) -> None:
        self.__name__ = name


def _code_of(function: Callable[..., Any]) -> Any:
    function = getattr(function, "__func__", function)
    return getattr(function, "__code__", None)


def _one_line(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())

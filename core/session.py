"""One command's (or one library user's) working set: configuration, plugins, libvirt, keys.

Everything vnode does goes through a :class:`Session`; nothing is cached process-wide, so two
sessions with different configurations (two labs, tests) never see each other's state.

>>> from vnode.session import Session
>>> with Session.open() as session:
...     session.config.defaults.distro
'fedora'
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode import hypervisor
from vnode.config import (
    CORE_SECTIONS,
    Config,
    RawConfig,
    build_config_from,
    check_plugin_sections,
    read_config,
)
from vnode.keys import ClientKey, KnownHosts, client_key
from vnode.model import PluginContext

if TYPE_CHECKING:
    from collections.abc import Callable

    from vnode.catalog import CachedCatalogs
    from vnode.plugins import PluginHost


@attrs.define
class Session:
    _config: Config = attrs.field(alias="config")
    known_hosts: KnownHosts
    _plugins: PluginHost | None = attrs.field(default=None, alias="plugins")
    _connection: Any = attrs.field(default=None, alias="connection")
    _catalogs_loaded: bool = attrs.field(default=False, init=False)
    # The files' sections that are no core's, checked against the plugins' once they load.
    _unchecked: RawConfig | None = attrs.field(default=None, init=False)
    # catalog.json parsed once per session: resolving names, deciding whether to refresh and
    # describing images all read it.
    _catalog_cache: CachedCatalogs | None = attrs.field(default=None, init=False)
    # Parallel fetches remember places from their worker threads.
    _catalog_update: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    # One connection per host of the lab, by name (vnode.lab opens them).
    host_connections: dict[str, Any] = attrs.field(factory=dict)
    _noted: set[str] = attrs.field(factory=set, init=False)

    @classmethod
    def open(cls, files: list[Path] | None = None) -> Session:
        """Read the configuration files and check the core's sections now, the others when
        the plugins load.

        Plugins (less those the config disables) are loaded on first use, and only then can
        they say whether a section the core does not own is theirs: a quick command such as
        ``vnode list`` needs no plugin and does not pay for loading them. A command that uses
        plugins touches them while planning, before it creates anything.
        """
        raw = read_config(files)
        disabled = raw.disabled_plugins()
        if disabled:  # a name there no plugin has is bad input for every command
            from vnode.plugins import PluginHost

            plugins = PluginHost.discover(disabled)
            return cls.for_config(build_config_from(raw, plugins.config_sections()), plugins)
        session = cls.for_config(build_config_from(raw, None))
        if set(raw.data) - {*CORE_SECTIONS, "pools", "hosts"}:
            session._unchecked = raw
        return session

    @classmethod
    def for_config(cls, config: Config, plugins: PluginHost | None = None) -> Session:
        """A session for a checked Config (the library, tests); plugin sections it lacks get
        their defaults when the plugins load."""
        return cls(
            config=config,
            known_hosts=KnownHosts(config.paths.ssh / "known_hosts"),
            plugins=plugins,
        )

    @property
    def plugins(self) -> PluginHost:
        if self._plugins is None:
            from vnode.plugins import PluginHost

            plugins = PluginHost.discover(self._config.plugins.disable)
            if self._unchecked is not None:
                sections = check_plugin_sections(self._unchecked, plugins.config_sections())
                self._config = attrs.evolve(self._config, sections=sections)
                self._unchecked = None
            self._plugins = plugins
        if not self._catalogs_loaded:
            self.reload_catalogs()
        return self._plugins

    def reload_catalogs(self) -> None:
        """Hand the plugins the catalogs cached in the state dir."""
        self._catalogs_loaded = True
        self.plugins.use_catalogs(self.catalog_cache.catalogs)

    @property
    def catalog_cache(self) -> CachedCatalogs:
        """What the state dir's catalog.json held when this session first asked."""
        if self._catalog_cache is None:
            from vnode.catalog import load_cache

            self._catalog_cache = load_cache(self._config.paths.state)
        return self._catalog_cache

    def update_catalog_cache(self, change: Callable[[CachedCatalogs], CachedCatalogs]) -> None:
        """Change catalog.json under its lock (another command may have written it since this
        session read it); :meth:`reload_catalogs` hands changed catalogs to the plugins."""
        from vnode.catalog import update_cache

        with self._catalog_update:
            self._catalog_cache = update_cache(self._config.paths.state, change)

    @property
    def config(self) -> Config:
        """The configuration; once plugins are loaded, with every plugin section present."""
        if self._plugins is not None:
            missing = {
                name: section_class()
                for name, section_class in self._plugins.config_sections().items()
                if name not in self._config.sections
            }
            if missing:
                sections = {**self._config.sections, **missing}
                self._config = attrs.evolve(self._config, sections=sections)
        return self._config

    @property
    def conn(self) -> Any:
        """The libvirt connection, opened on first use (a quick command may never need it)."""
        if self._connection is None:
            self._connection = hypervisor.connect(self.config.defaults.uri)
        return self._connection

    def connection_to(self, name: str, uri: str) -> Any:
        """The connection to one host of the lab, opened once; the host at ``[defaults] uri``
        shares :attr:`conn`, whatever the lab calls it."""
        if uri == self.config.defaults.uri:
            return self.conn
        conn = self.host_connections.get(name)
        if conn is None:
            conn = hypervisor.connect(uri)
            self.host_connections[name] = conn
        return conn

    def note_once(self, key: str) -> bool:
        """True the first time a command asks about ``key``: a warning that holds for the
        whole command (a stale catalog) is said once, not once per node."""
        first = key not in self._noted
        self._noted.add(key)
        return first

    def client_key(self) -> ClientKey:
        return client_key(self.config.paths.ssh, self.config.ssh.key)

    def plugin_context(self, *, connect: bool = True) -> PluginContext:
        """What plugins see: their sections, the pools, paths, mirrors and libvirt."""
        connection = None
        if connect:
            connection = self.conn
        elif self._connection is not None:
            connection = self._connection
        self.plugins  # noqa: B018 - loaded first, so that every plugin section is present
        return PluginContext(
            sections=self.config.sections,
            pools=self.config.pools,
            state_dir=self.config.paths.state,
            uri=self.config.defaults.uri,
            mirrors=self.config.images.mirror,
            connection=connection,
        )

    def close(self) -> None:
        for name, conn in list(self.host_connections.items()):
            # libvirt's own error type when closing a dead connection: nothing to do.
            with contextlib.suppress(Exception):
                conn.close()
            del self.host_connections[name]
        if self._connection is not None:
            try:
                self._connection.close()
            except hypervisor.HypervisorError:
                pass
            except Exception:  # libvirt's own error type: closing a dead connection
                pass
            self._connection = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

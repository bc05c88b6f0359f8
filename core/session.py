"""One command's (or one library user's) working set: configuration, plugins, libvirt, keys.

Everything vnode does goes through a :class:`Session`; nothing is cached process-wide, so two
sessions with different configurations (two labs, tests) never see each other's state.

>>> from vnode.session import Session
>>> with Session.open() as session:
...     session.config.defaults.distro
'fedora'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from vnode import hypervisor
from vnode.config import Config, build_config_from, read_config
from vnode.keys import ClientKey, KnownHosts, client_key
from vnode.model import PluginContext
from vnode.plugins import PluginHost


@attrs.define
class Session:
    config: Config
    plugins: PluginHost
    known_hosts: KnownHosts
    _connection: Any = attrs.field(default=None, alias="connection")

    @classmethod
    def open(cls, files: list[Path] | None = None) -> Session:
        """Read the configuration files, load the plugins (less those the config disables)
        and check every section, the plugins' own included."""
        raw = read_config(files)
        plugins = PluginHost.discover(raw.disabled_plugins())
        return cls.for_config(build_config_from(raw, plugins.config_sections()), plugins)

    @classmethod
    def for_config(cls, config: Config, plugins: PluginHost | None = None) -> Session:
        """A session for a Config built in code (the library, tests); plugin sections the
        config lacks get their defaults."""
        plugins = plugins or PluginHost.discover(config.plugins.disable)
        sections = {
            name: config.sections.get(name) or section_class()
            for name, section_class in plugins.config_sections().items()
        }
        config = attrs.evolve(config, sections=sections)
        return cls(config, plugins, KnownHosts(config.paths.ssh / "known_hosts"))

    @property
    def conn(self) -> Any:
        """The libvirt connection, opened on first use (a quick command may never need it)."""
        if self._connection is None:
            self._connection = hypervisor.connect(self.config.defaults.uri)
        return self._connection

    def client_key(self) -> ClientKey:
        return client_key(self.config.paths.ssh, self.config.ssh.key)

    def plugin_context(self, *, connect: bool = True) -> PluginContext:
        """What plugins see: their sections, the pools, paths, mirrors and libvirt."""
        connection = None
        if connect:
            connection = self.conn
        elif self._connection is not None:
            connection = self._connection
        return PluginContext(
            sections=self.config.sections,
            pools=self.config.pools,
            state_dir=self.config.paths.state,
            uri=self.config.defaults.uri,
            mirrors=self.config.images.mirror,
            connection=connection,
        )

    def close(self) -> None:
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

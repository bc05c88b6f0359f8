"""The session: one working set per command (config, plugins, connections), nothing shared
between sessions. libvirt's own test driver (test:///default) stands in for a host."""

from __future__ import annotations

from pathlib import Path

from vnode.config import build_config
from vnode.session import Session


def _session(tmp_path: Path) -> Session:
    config = {"defaults": {"uri": "test:///default"}, "paths": {"state": str(tmp_path)}}
    return Session.for_config(build_config(config))


def test_the_host_at_the_default_uri_shares_the_sessions_connection(tmp_path: Path) -> None:
    with _session(tmp_path) as session:
        assert session.connection_to("hv1", "test:///default") is session.conn
        other = session.connection_to("hv2", "test:///default?other")
        assert other is not session.conn
        assert session.connection_to("hv2", "test:///default?other") is other  # opened once
    assert session.host_connections == {}  # closed with the session


def test_plugins_see_the_labs_sections_paths_and_connection(tmp_path: Path) -> None:
    with _session(tmp_path) as session:
        quiet = session.plugin_context(connect=False)
        assert quiet.connection is None  # nothing opened for a command that needs no libvirt
        context = session.plugin_context()
        assert context.connection is session.conn
        assert context.state_dir == tmp_path and context.uri == "test:///default"
        assert "libvirt_network" in context.sections  # a plugin's section, with its defaults


def test_two_sessions_share_no_plugins(tmp_path: Path) -> None:
    with _session(tmp_path) as one, _session(tmp_path) as two:
        assert one.plugins is not two.plugins

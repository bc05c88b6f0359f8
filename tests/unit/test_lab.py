"""vnode.lab's pure parts: how a host's nodes are reached, and when a host's failure is
contained. (Surveying hosts needs libvirt: tests/integration/test_two_hosts.py.)"""

from __future__ import annotations

from pathlib import Path

from vnode.config import build_config
from vnode.hosts import Host
from vnode.lab import HostView, contains_failures, jump_for
from vnode.session import Session


def _backend(tmp_path: Path, network: str):
    session = Session.for_config(build_config({"paths": {"state": str(tmp_path)}}))
    return session.plugins.network_backend(network, session.plugin_context(connect=False))


def test_a_remote_hosts_private_network_is_reached_through_the_host(tmp_path: Path) -> None:
    libvirt = _backend(tmp_path, "libvirt:vnode")
    local = HostView(host=Host(name="hv1"), index=0)
    assert jump_for(local, libvirt) is None
    remote = HostView(host=Host(name="hv2", uri="qemu+ssh://admin@hv2.lab:2222/system"), index=1)
    jump = jump_for(remote, libvirt)
    assert jump is not None
    assert (jump.user, jump.host, jump.port) == ("admin", "hv2.lab", 2222)


def test_a_site_network_is_reached_directly_even_on_a_remote_host(tmp_path: Path) -> None:
    remote = HostView(host=Host(name="hv2", uri="qemu+ssh://admin@hv2.lab/system"), index=1)
    assert jump_for(remote, _backend(tmp_path, "bridge:br0")) is None
    assert jump_for(remote, None) is None  # the network's plugin is gone: no way to know


def test_a_hosts_failure_is_contained_only_where_other_hosts_go_on() -> None:
    one = {"local": HostView(host=Host(name="local", pool=None), index=0)}
    two = {**one, "hv2": HostView(host=Host(name="hv2", uri="qemu+ssh://hv2/system"), index=1)}
    assert not contains_failures(one)
    assert contains_failures(two)


def _lab(tmp_path: Path, **data: object) -> Session:
    config = {"defaults": {"uri": "test:///default"}, "paths": {"state": str(tmp_path)}, **data}
    return Session.for_config(build_config(config))


def test_a_lab_without_hosts_is_surveyed_as_its_one_host(tmp_path: Path) -> None:
    from vnode.lab import survey

    with _lab(tmp_path) as session:
        views = survey(session)
        (view,) = views.values()
        assert view.name == "local" and view.conn is session.conn and view.problem is None
        assert view.domains == ()  # the test driver's own domain is not vnode's


def test_a_host_that_does_not_answer_is_a_reason_while_another_does(tmp_path: Path) -> None:
    from vnode.lab import problems, survey, unchecked

    dead = "qemu+unix:///system?socket=/nonexistent/sock"
    hosts = [{"name": "hv1", "uri": "test:///default"}, {"name": "down", "uri": dead}]
    with _lab(tmp_path, hosts=hosts) as session:
        views = survey(session)
    assert views["hv1"].problem is None
    assert "nonexistent" in problems(views)["down"]
    assert unchecked(views).startswith("; not checked: down (")


def test_naming_a_node_no_host_has_is_bad_input(tmp_path: Path) -> None:
    import pytest

    from vnode.errors import UsageError
    from vnode.lab import locate

    with _lab(tmp_path) as session:
        assert locate(session, None) == []
        with pytest.raises(UsageError, match="no node made by vnode: vnode05"):
            locate(session, ["5"])


def test_each_host_keeps_its_templates_where_it_keeps_its_nodes(tmp_path: Path) -> None:
    from vnode.lab import survey, templates_for
    from vnode.warmstorage import PoolVolumes, StateFiles

    with _lab(tmp_path) as session:
        [view] = survey(session).values()
        files = templates_for(session, view)
        assert isinstance(files, StateFiles) and files.root == tmp_path / "templates"
    hosts = [{"name": "hv1", "uri": "test:///default", "pool_dir": str(tmp_path / "pool")}]
    with _lab(tmp_path, hosts=hosts) as session:
        [view] = survey(session).values()
        pooled = templates_for(session, view)
        assert isinstance(pooled, PoolVolumes) and pooled.host == "hv1"
        assert pooled.directory == tmp_path / "pool"
        assert pooled.pool is None and pooled.list() == []  # no pool yet: nothing made there

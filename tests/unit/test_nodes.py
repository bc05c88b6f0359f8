"""Removing nodes and what a killed vnode left, on libvirt's test driver (test:///default):
only vnode's own is ever touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode import hypervisor
from vnode.errors import UsageError
from vnode.keys import KnownHosts
from vnode.model import NodeIdentity
from vnode.nodes import NodeStore, leftover_dirs, remove_leftovers, remove_node

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    conn = hypervisor.connect("test:///default")
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    yield NodeStore(
        conn=conn, nodes_dir=nodes, images_dir=tmp_path, known_hosts=KnownHosts(tmp_path / "kh")
    )
    conn.close()


def test_leftovers_are_directories_without_a_domain(store: NodeStore, tmp_path: Path) -> None:
    for name in ("vnode01", "vnode02"):
        (store.nodes_dir / name).mkdir()
    (store.nodes_dir / "link").symlink_to(tmp_path)  # never followed, never removed
    assert leftover_dirs(store.nodes_dir, {"vnode01"}) == ["vnode02"]
    assert leftover_dirs(tmp_path / "absent", set()) == []
    store.known_hosts.set("vnode02", KEY)
    said = remove_leftovers(store, "vnode02")
    assert said is not None and "its directory" in said and "known_hosts" in said
    assert not (store.nodes_dir / "vnode02").exists() and store.known_hosts.get("vnode02") is None
    assert remove_leftovers(store, "vnode02") is None  # nothing left: nothing said
    assert (store.nodes_dir / "link").is_symlink()


def test_removing_a_node_whose_domain_is_gone_removes_its_files(store: NodeStore) -> None:
    node = NodeIdentity(name="vnode03", number=3, pool="vnode", mac="52:54:00:00:00:03")
    directory = store.nodes_dir / "vnode03"
    directory.mkdir()
    (directory / "disk.qcow2").write_bytes(b"x")
    store.known_hosts.set("vnode03", KEY)
    remove_node(store, node, None, node_dir=directory)
    assert not directory.exists() and store.known_hosts.get("vnode03") is None
    remove_node(store, node, None, node_dir=directory)  # idempotent


def test_a_directory_outside_the_node_directory_is_never_removed(
    store: NodeStore, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    node = NodeIdentity(name="vnode04", number=4, pool="vnode", mac="52:54:00:00:00:04")
    remove_node(store, node, None, node_dir=elsewhere)
    assert elsewhere.is_dir()


def test_a_domain_vnode_did_not_make_is_refused(store: NodeStore) -> None:
    # The test driver's own domain "test" has no vnode mark.
    assert store.owned("nosuchdomain") is None
    with pytest.raises(UsageError, match="vnode did not create it"):
        store.owned("test")

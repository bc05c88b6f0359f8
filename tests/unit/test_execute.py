"""Executing a plan: what is uploaded to a host is an image version of the store, by digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode import execute
from vnode.config import Config
from vnode.errors import VnodeError
from vnode.keys import KnownHosts
from vnode.nodes import NodeStore
from vnode.session import Session


def test_a_version_gone_from_the_store_is_not_uploaded(tmp_path: Path) -> None:
    store = NodeStore(
        conn=None,
        nodes_dir=tmp_path / "nodes",
        images_dir=tmp_path / "images",
        known_hosts=KnownHosts(tmp_path / "known_hosts"),
        host="hv2",
        pool=object(),
    )
    with pytest.raises(VnodeError, match=r"image version abababababab is no longer in"):
        execute.upload_images(Session.for_config(Config()), store, {"ab" * 32})
    assert store.base_volumes == {}

"""The network backend contract's own defaults (vnode.network)."""

from __future__ import annotations

import pytest

from vnode.model import Interface
from vnode.network import NetworkBackend


@pytest.mark.parametrize(
    ("kind", "pluggable"),
    [("network", True), ("bridge", True), ("direct", True), ("user", False), ("ethernet", False)],
)
def test_libvirts_hot_pluggable_nics_are_the_default(kind: str, pluggable: bool) -> None:
    assert NetworkBackend().hot_pluggable(Interface(type=kind, source={})) is pluggable


def test_a_backend_is_reached_directly_unless_it_says_otherwise() -> None:
    assert NetworkBackend.reached_through_host is False

"""Spec parsing: [STEM]NUM[:DISTRO][@HOST], names, ranges. Pure logic."""

from __future__ import annotations

import pytest

from vnode.errors import UsageError
from vnode.pools import Pool
from vnode.spec import parse_spec, parse_specs

POOLS = (Pool(stem="vnode"), Pool(stem="lab", mac_prefix="52:54:00:00:01"))


@pytest.mark.parametrize("text", ["3", "vnode3", "vnode03", "VNODE03"])
def test_a_number_and_both_names_are_one_node(text: str) -> None:
    ref = parse_spec(text, POOLS)
    assert (ref.name, ref.number, ref.distro) == ("vnode03", 3, None)


def test_the_users_example_parses() -> None:
    refs = parse_specs(["3:f43", "vnode4", "vnode18:u24.04", "20:u22.04"], POOLS)
    assert [(r.name, r.distro) for r in refs] == [
        ("vnode03", "f43"),
        ("vnode04", None),
        ("vnode18", "u24.04"),
        ("vnode20", "u22.04"),
    ]


def test_a_second_pool_is_chosen_by_stem() -> None:
    ref = parse_spec("lab7:d12", POOLS)
    assert (ref.name, ref.mac) == ("lab07", "52:54:00:00:01:07")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["x"], r"expected \[STEM\]NUM"),
        (["3:"], "empty or malformed"),
        ([":f43"], r"expected \[STEM\]NUM"),
        (["31"], "outside pool vnode"),
        (["vnode003"], "2 digits"),
        (["3", "vnode03"], "named twice"),
        (["foo3"], "unknown stem"),
        (["3:f4 3"], "malformed"),
        ([], "no nodes given"),
    ],
)
def test_bad_specs_are_usage_errors(texts: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_specs(texts, POOLS)


def test_ranges_expand_in_order_with_their_distro() -> None:
    refs = parse_specs(["3-5:u24.04", "vnode20-22", "lab1-2:d12"], POOLS)
    assert [(r.name, r.distro) for r in refs] == [
        ("vnode03", "u24.04"),
        ("vnode04", "u24.04"),
        ("vnode05", "u24.04"),
        ("vnode20", None),
        ("vnode21", None),
        ("vnode22", None),
        ("lab01", "d12"),
        ("lab02", "d12"),
    ]


def test_a_one_number_range_is_one_node() -> None:
    assert [r.name for r in parse_specs(["7-7"], POOLS)] == ["vnode07"]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["1-31"], r"31 is outside pool vnode \(0\.\.30\)"),
        (["lab25-40"], r"outside pool lab \(0\.\.30\)"),
        (["5-3"], "ends below its start"),
        (["1-5", "4"], r"node vnode04 is named twice \('1-5' and '4'\)"),
        (["1-3", "vnode02-4"], "vnode02 is named twice"),
        (["1-3-5"], "expected"),
        (["1-"], "expected"),
        (["1-003"], "2 digits"),
    ],
)
def test_bad_ranges_are_usage_errors(texts: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_specs(texts, POOLS)


def test_a_range_where_one_node_is_expected_is_refused() -> None:
    with pytest.raises(UsageError, match="one node is expected"):
        parse_spec("1-3", POOLS)

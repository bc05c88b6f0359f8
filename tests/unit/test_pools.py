"""Naming pools: MACs from numbers, bad pools refused, pools disjoint."""

from __future__ import annotations

import pytest

from vnode.errors import UsageError
from vnode.pools import Pool, check_disjoint


def test_mac_is_derived_from_the_number() -> None:
    assert Pool(stem="vnode").mac(18) == "52:54:00:00:00:18"
    wide = Pool(stem="big", width=3, last=999, mac_prefix="52:54:00:10")
    assert wide.mac(123) == "52:54:00:10:01:23"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stem": "v", "mac_prefix": "52:54:00:00"},  # too few bytes for width 2
        {"stem": "v", "mac_prefix": "53:54:00:00:00"},  # multicast bit
        {"stem": "v", "mac_prefix": "zz:54:00:00:00"},
        {"stem": "v", "last": 100},  # does not fit width 2
        {"stem": "v3"},  # a stem ending in a digit is ambiguous
    ],
)
def test_bad_pools_are_refused(kwargs: dict) -> None:
    with pytest.raises((UsageError, ValueError)):
        Pool(**kwargs)


def test_pools_must_be_disjoint() -> None:
    with pytest.raises(UsageError, match="both derive MAC"):
        check_disjoint((Pool(stem="a"), Pool(stem="b")))
    with pytest.raises(UsageError, match="used twice"):
        check_disjoint((Pool(stem="a"), Pool(stem="a", mac_prefix="52:54:00:00:01")))

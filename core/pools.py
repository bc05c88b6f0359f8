"""Naming pools: a stem, a zero-padded number, and the MAC and address derived from it."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from vnode.errors import UsageError

_MAC_BYTE = re.compile(r"^[0-9a-f]{2}$")
# A node has at most this many NICs: further NICs differ from the first in three bits of the
# MAC's first byte (see nic_mac).
MAX_NICS = 8


def _check_mac_prefix(pool: Pool, attribute: attrs.Attribute, value: str) -> None:
    parts = value.lower().split(":")
    if not all(_MAC_BYTE.match(p) for p in parts):
        raise UsageError(f"pool {pool.stem}: mac_prefix {value!r} is not colon-separated hex bytes")
    if len(parts) + pool.mac_suffix_bytes != 6:
        raise UsageError(
            f"pool {pool.stem}: mac_prefix {value!r} has {len(parts)} bytes; with width "
            f"{pool.width} it needs {6 - pool.mac_suffix_bytes}"
        )
    if int(parts[0], 16) & 1:
        raise UsageError(f"pool {pool.stem}: mac_prefix {value!r} is a multicast address")


@attrs.frozen
class Pool:
    """A disjoint family of node names such as ``vnode00`` .. ``vnode30``."""

    stem: str = attrs.field(
        validator=attrs.validators.matches_re(r"^[a-z][a-z0-9-]*[a-z-]$|^[a-z]$")
    )
    width: int = attrs.field(default=2, validator=[attrs.validators.ge(1), attrs.validators.le(6)])
    first: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    last: int = attrs.field(default=30)
    mac_prefix: str = attrs.field(default="52:54:00:00:00", validator=_check_mac_prefix)
    # The pool's own cloud-config files, merged after [defaults] cloud_config.
    cloud_config: list[Path] = attrs.field(factory=list, hash=False, eq=False)

    # The [[hosts]] this pool's nodes may go to; empty: any host.
    hosts: list[str] = attrs.field(factory=list, hash=False)

    @last.validator
    def _check_last(self, attribute: attrs.Attribute, value: int) -> None:
        if value < self.first:
            raise UsageError(f"pool {self.stem}: last ({value}) is below first ({self.first})")
        if len(str(value)) > self.width:
            raise UsageError(f"pool {self.stem}: last ({value}) does not fit width {self.width}")

    @property
    def mac_suffix_bytes(self) -> int:
        # The number's decimal digits are written as hex digit pairs, so 18 -> ":18".
        return (self.width + 1) // 2

    def name(self, number: int) -> str:
        return f"{self.stem}{number:0{self.width}d}"

    def mac(self, number: int) -> str:
        digits = f"{number:0{self.mac_suffix_bytes * 2}d}"
        pairs = [digits[i : i + 2] for i in range(0, len(digits), 2)]
        return ":".join([self.mac_prefix.lower(), *pairs])

    def contains(self, number: int) -> bool:
        return self.first <= number <= self.last

    def numbers(self) -> range:
        return range(self.first, self.last + 1)


def nic_mac(mac: str, index: int) -> str:
    """The MAC of a node's NIC ``index`` (0: its own ``mac``, as the pool derives it).

    Further NICs flip bits 2-4 of the first byte by the index (52:54:00:00:00:18 is NIC 1
    56:54:00:00:00:18, NIC 2 5a:..., up to NIC 7 4e:...): unicast and locally administered
    like the first, deterministic, one-to-one (the index and the node's own MAC are read back
    from it), and outside 52:54:00, where libvirt makes random MACs for everyone else's guests.
    """
    if not 0 <= index < MAX_NICS:
        raise UsageError(f"a node has at most {MAX_NICS} NICs, not {index + 1}")
    first, rest = mac.split(":", 1)
    return f"{int(first, 16) ^ (index << 2):02x}:{rest}"


def nic_owners(mac: str, pools: tuple[Pool, ...]) -> list[tuple[str, int]]:
    """Every node NIC the pools derive ``mac`` for: (node name, NIC index) pairs."""
    owners = []
    for index in range(MAX_NICS):
        own = nic_mac(mac.lower(), index)  # the flip is its own inverse
        for pool in pools:
            prefix = pool.mac_prefix.lower() + ":"
            digits = own[len(prefix) :].replace(":", "")
            number = int(digits) if own.startswith(prefix) and digits.isdigit() else -1
            if pool.contains(number) and pool.mac(number) == own:
                owners.append((pool.name(number), index))
    return owners


def check_nic_macs(node: str, macs: tuple[str, ...], pools: tuple[Pool, ...]) -> None:
    """A node's further NICs' MACs (``macs[1:]``) are no other NIC's: a UsageError naming
    both. Only pools whose mac_prefix differ in bits 2-4 of the first byte alone can clash."""
    for index, mac in enumerate(macs[1:], start=1):
        for name, other in nic_owners(mac, pools):
            if (name, other) != (node, index):
                raise UsageError(
                    f"{node}: its NIC {index + 1} would have MAC {mac}, which is NIC "
                    f"{other + 1}'s of {name}: give one of their pools a mac_prefix whose "
                    "first byte differs in more than bits 2-4"
                )


def check_disjoint(pools: tuple[Pool, ...]) -> None:
    """Pools must never hand out the same name or MAC twice."""
    stems = [p.stem for p in pools]
    for stem in stems:
        clashes = [other for other in stems if other != stem and other.startswith(stem)]
        if stems.count(stem) > 1 or any(c[len(stem) :].isdigit() for c in clashes):
            raise UsageError(f"pool stem {stem!r} is used twice or overlaps another stem")
    seen: dict[str, str] = {}
    for pool in pools:
        for number in pool.numbers():
            mac = pool.mac(number)
            if mac in seen:
                raise UsageError(f"pools {seen[mac]} and {pool.stem} both derive MAC {mac}")
            seen[mac] = pool.stem

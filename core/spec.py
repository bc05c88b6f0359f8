"""Node specs as users type them: ``[STEM]NUM[:DISTRO][@HOST]`` or a range
``[STEM]A-B[:DISTRO][@HOST]``."""

from __future__ import annotations

import re

import attrs

from vnode.errors import UsageError
from vnode.pools import Pool

_SPEC = re.compile(
    r"^(?P<stem>[A-Za-z][A-Za-z0-9-]*?)?(?P<digits>\d+)(?:-(?P<last>\d+))?"
    r"(?::(?P<distro>[^:@]*))?(?:@(?P<host>[A-Za-z][A-Za-z0-9_.-]*))?$"
)
_DISTRO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")  # `~`: fedora~1


@attrs.frozen
class NodeRef:
    """A node named by a spec: its pool, number and the distro asked for (if any)."""

    pool: Pool
    number: int
    distro: str | None = None
    host: str | None = None  # pinned with NUM@HOST

    @property
    def name(self) -> str:
        return self.pool.name(self.number)

    @property
    def mac(self) -> str:
        return self.pool.mac(self.number)


def parse_spec(text: str, pools: tuple[Pool, ...], *, allow_distro: bool = True) -> NodeRef:
    """Parse one spec naming one node; a bare number belongs to the first pool."""
    refs = parse_spec_range(text, pools, allow_distro=allow_distro)
    if len(refs) != 1:
        raise UsageError(f"bad node name {text!r}: one node is expected here, not a range")
    return refs[0]


def parse_spec_range(
    text: str, pools: tuple[Pool, ...], *, allow_distro: bool = True
) -> list[NodeRef]:
    """Parse one spec: one node (``3``, ``vnode03:d12``) or a range (``1-10``,
    ``vnode20-22:u24.04``), every number of it inside its pool."""
    match = _SPEC.match(text.strip())
    if not match:
        raise UsageError(
            f"bad node spec {text!r}: expected [STEM]NUM[:DISTRO][@HOST] or "
            "[STEM]FIRST-LAST[:DISTRO][@HOST], e.g. 3, vnode03:d12, 1-10, 4@hv2"
        )
    stem, distro, host = match["stem"], match["distro"], match["host"]
    if distro is not None:
        if not allow_distro:
            raise UsageError(f"bad node name {text!r}: a distro is not expected here")
        if not _DISTRO.match(distro):
            raise UsageError(f"bad node spec {text!r}: the distro after ':' is empty or malformed")
    pool = _pool_for(stem, pools, text)
    ends = [d for d in (match["digits"], match["last"]) if d is not None]
    for digits in ends:
        if len(digits) > pool.width:
            raise UsageError(
                f"bad node spec {text!r}: pool {pool.stem} numbers have {pool.width} digits"
            )
    first, last = int(ends[0]), int(ends[-1])
    if last < first:
        raise UsageError(f"bad node spec {text!r}: the range ends below its start")
    for number in (first, last):
        if not pool.contains(number):
            raise UsageError(
                f"bad node spec {text!r}: {number} is outside pool {pool.stem} "
                f"({pool.first}..{pool.last})"
            )
    if host is not None and not allow_distro:
        raise UsageError(f"bad node name {text!r}: a host is not expected here")
    return [NodeRef(pool=pool, number=n, distro=distro, host=host) for n in range(first, last + 1)]


def parse_specs(
    texts: list[str], pools: tuple[Pool, ...], *, allow_distro: bool = True
) -> list[NodeRef]:
    """Parse specs, ranges expanded, and refuse to name one node twice (``3 vnode03``,
    ``1-5 4``)."""
    if not texts:
        raise UsageError("no nodes given: name at least one, e.g. `vnode up 3`")
    refs: list[NodeRef] = []
    seen: dict[str, str] = {}
    for text in texts:
        for ref in parse_spec_range(text, pools, allow_distro=allow_distro):
            if ref.name in seen:
                raise UsageError(
                    f"node {ref.name} is named twice ({seen[ref.name]!r} and {text!r})"
                )
            seen[ref.name] = text
            refs.append(ref)
    return refs


def _pool_for(stem: str | None, pools: tuple[Pool, ...], text: str) -> Pool:
    if stem is None:
        return pools[0]
    for pool in pools:
        if pool.stem == stem.lower():
            return pool
    known = ", ".join(p.stem for p in pools)
    raise UsageError(f"bad node spec {text!r}: unknown stem {stem!r} (configured: {known})")

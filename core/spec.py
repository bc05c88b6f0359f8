"""Node specs as users type them: ``[STEM]NUM[:DISTRO][@HOST]``."""

from __future__ import annotations

import re

import attrs

from vnode.errors import UsageError
from vnode.pools import Pool

_SPEC = re.compile(
    r"^(?P<stem>[A-Za-z][A-Za-z0-9-]*?)?(?P<digits>\d+)(?::(?P<distro>[^:@]*))?"
    r"(?:@(?P<host>[A-Za-z][A-Za-z0-9_.-]*))?$"
)
_DISTRO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


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
    """Parse one spec; a bare number belongs to the first pool."""
    match = _SPEC.match(text.strip())
    if not match:
        raise UsageError(
            f"bad node spec {text!r}: expected [STEM]NUM[:DISTRO][@HOST], "
            "e.g. 3, vnode03:d12, 4@hv2"
        )
    stem, digits, distro, host = match["stem"], match["digits"], match["distro"], match["host"]
    if distro is not None:
        if not allow_distro:
            raise UsageError(f"bad node name {text!r}: a distro is not expected here")
        if not _DISTRO.match(distro):
            raise UsageError(f"bad node spec {text!r}: the distro after ':' is empty or malformed")
    pool = _pool_for(stem, pools, text)
    number = int(digits)
    if len(digits) > pool.width:
        raise UsageError(
            f"bad node spec {text!r}: pool {pool.stem} numbers have {pool.width} digits"
        )
    if not pool.contains(number):
        raise UsageError(
            f"bad node spec {text!r}: {number} is outside pool {pool.stem} "
            f"({pool.first}..{pool.last})"
        )
    if host is not None and not allow_distro:
        raise UsageError(f"bad node name {text!r}: a host is not expected here")
    return NodeRef(pool=pool, number=number, distro=distro, host=host)


def parse_specs(
    texts: list[str], pools: tuple[Pool, ...], *, allow_distro: bool = True
) -> list[NodeRef]:
    """Parse specs and refuse to name one node twice (``3 vnode03``)."""
    if not texts:
        raise UsageError("no nodes given: name at least one, e.g. `vnode up 3`")
    refs = [parse_spec(text, pools, allow_distro=allow_distro) for text in texts]
    seen: dict[str, str] = {}
    for text, ref in zip(texts, refs, strict=True):
        if ref.name in seen:
            raise UsageError(f"node {ref.name} is named twice ({seen[ref.name]!r} and {text!r})")
        seen[ref.name] = text
    return refs


def _pool_for(stem: str | None, pools: tuple[Pool, ...], text: str) -> Pool:
    if stem is None:
        return pools[0]
    for pool in pools:
        if pool.stem == stem.lower():
            return pool
    known = ", ".join(p.stem for p in pools)
    raise UsageError(f"bad node spec {text!r}: unknown stem {stem!r} (configured: {known})")

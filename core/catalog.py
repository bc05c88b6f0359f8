"""Distro catalogs: which releases of a family exist, which is latest, where their images are.

A distro plugin answers from a :class:`Catalog`. It keeps a built-in one (its offline
fallback) and may learn a fresh one from what upstream publishes for machines (Fedora's
releases.json, Ubuntu's simplestreams, Debian's image tree) through the
``vnode_catalog_refresh`` hook, reading with the :class:`MetadataReader` the core hands it.
The core keeps the answers in ``paths.state/catalog.json`` with their date and hands them
back to the plugins' resolve hooks; a refresh that fails, or answers nonsense, never replaces
a good cached catalog.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

import attrs

from vnode.errors import VnodeError
from vnode.model import Distro

Role = Literal["latest", "one-but-last", "end of life", ""]

# `fedora~1`: the family's one-but-last release (the users' matrix is "last and one-but-last").
PREVIOUS_SUFFIX = "~1"

CACHE_FILE = "catalog.json"
# 2: distros carry how their checksum file is signed; a cache without it would fetch unsigned.
CACHE_VERSION = 2
METADATA_TIMEOUT = 10.0  # seconds: a catalog refresh must never hold a command for long
METADATA_LIMIT = 64 << 20  # Ubuntu's download stream is tens of MiB
# A family has tens of releases; metadata claiming more (a "version 2000000") is lying, and
# must not make vnode build millions of entries.
MAX_RELEASES = 500


class CatalogError(VnodeError):
    """Upstream's metadata could not be read or made no sense; nothing cached was replaced."""


@attrs.frozen
class Catalog:
    """One family's releases. ``latest`` and ``previous`` are canonical names in ``releases``.

    ``origin`` says where the table came from ("built-in", or upstream's metadata URL) and
    ``fetched`` when (ISO date-time, UTC; for a built-in table, the day it was written), for
    ``vnode images list`` and for deciding when a family alias needs a refresh.
    """

    family: str
    releases: tuple[Distro, ...]
    latest: str
    previous: str | None = None
    origin: str = "built-in"
    fetched: str | None = None

    def resolve(self, name: str) -> Distro | None:
        wanted = self.moving_aliases().get(name.lower(), name.lower())
        for distro in self.releases:
            if wanted == distro.name or wanted in distro.aliases:
                return distro
        return None

    def moving_aliases(self) -> dict[str, str]:
        """The names that follow upstream's releases, and the release each means today:
        ``fedora`` (and ``latest-fedora``) the latest, ``fedora~1`` the one-but-last."""
        aliases = {self.family: self.latest, f"latest-{self.family}": self.latest}
        if self.previous is not None:
            aliases[self.family + PREVIOUS_SUFFIX] = self.previous
        return aliases

    def moving_names(self) -> list[str]:
        """The aliases ``vnode images list`` and completion show: ``fedora``, ``fedora~1``."""
        return [self.family] + ([self.family + PREVIOUS_SUFFIX] if self.previous else [])

    def names(self) -> list[str]:
        return [*self.moving_names(), *(d.name for d in self.releases)]

    def age(self, now: datetime.datetime | None = None) -> datetime.timedelta | None:
        """How old the table is: since it was fetched, or since the built-in table's date."""
        if self.fetched is None:
            return None
        return (now or utcnow()) - datetime.datetime.fromisoformat(self.fetched)

    def role(self, distro: Distro) -> Role:
        if distro.name == self.latest:
            return "latest"
        if distro.name == self.previous:
            return "one-but-last"
        return "end of life" if distro.end_of_life else ""


def catalog(
    family: str,
    latest: str,
    releases: Iterable[Distro],
    previous: str | None = None,
    origin: str = "built-in",
    fetched: str | None = None,
) -> Catalog:
    """A checked Catalog: ``latest`` and ``previous`` must be releases of the table, which
    holds at most MAX_RELEASES."""
    releases = tuple(itertools.islice(releases, MAX_RELEASES + 1))
    if len(releases) > MAX_RELEASES:
        raise CatalogError(f"{family}: more than {MAX_RELEASES} releases; not believed")
    built = Catalog(
        family=family,
        releases=tuple(releases),
        latest=latest,
        previous=previous,
        origin=origin,
        fetched=fetched,
    )
    for role, name in (("latest", latest), ("one-but-last", previous)):
        if name is not None and not any(d.name == name for d in built.releases):
            raise CatalogError(f"{family}: {role} release {name!r} is not in the table")
    if any(d.family != family for d in built.releases):
        raise CatalogError(f"{family}: the table holds another family's release")
    return built


@attrs.frozen
class MetadataReader:
    """How a plugin reads upstream's metadata during a refresh.

    ``read(family, url)`` fetches ``url`` (rewritten onto ``[images] mirror.FAMILY`` when the
    user configured one: a mirror keeps upstream's layout) with a short timeout, and raises
    :class:`CatalogError` naming the URL on any failure.
    """

    mirrors: Mapping[str, str] = attrs.field(factory=dict)
    timeout: float = METADATA_TIMEOUT
    # time.monotonic() by which every read must be done (a tree walk makes many reads);
    # None: each read has its own timeout only.
    deadline: float | None = None

    def url(self, family: str, url: str) -> str:
        from vnode.fetch import with_mirror

        return with_mirror(url, self.mirrors.get(family))

    def read(self, family: str, url: str) -> bytes:
        from vnode.fetch import FetchError, read_bytes

        timeout = self.timeout
        if self.deadline is not None:
            import time

            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise CatalogError(
                    f"{self.url(family, url)}: not read, the refresh ran out of time"
                )
        try:
            return read_bytes(self.url(family, url), limit=METADATA_LIMIT, timeout=timeout)
        except FetchError as exc:
            raise CatalogError(str(exc)) from None

    def json(self, family: str, url: str) -> object:
        data = self.read(family, url)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CatalogError(f"{self.url(family, url)}: not valid JSON ({exc})") from None

    def text(self, family: str, url: str) -> str:
        return self.read(family, url).decode("utf-8", errors="replace")


# -- the cache in vnode's state -----------------------------------------------------------


@attrs.frozen
class CachedCatalogs:
    """What ``catalog.json`` holds: the last good catalog of each family, and when a refresh
    was last tried (so an offline machine does not try at every command)."""

    catalogs: Mapping[str, Catalog] = attrs.field(factory=dict)
    last_attempt: str | None = None
    # distro name -> the checksum URL that answered last time (mirror or archive).
    places: Mapping[str, str] = attrs.field(factory=dict)

    def age(self, family: str, now: datetime.datetime | None = None) -> datetime.timedelta | None:
        known = self.catalogs.get(family)
        return known.age(now) if known is not None else None

    def attempted_within(self, span: datetime.timedelta) -> bool:
        if self.last_attempt is None:
            return False
        return utcnow() - datetime.datetime.fromisoformat(self.last_attempt) < span


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def cache_path(state: Path) -> Path:
    return state / CACHE_FILE


def load_cache(state: Path) -> CachedCatalogs:
    """The cached catalogs; an unreadable or foreign file counts as no cache (it is rebuilt
    at the next refresh), never as an error: the built-in tables still answer."""
    import cattrs

    path = cache_path(state)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return CachedCatalogs()
    except (OSError, ValueError) as exc:
        return _unreadable(path, exc)
    if not isinstance(data, dict) or data.pop("version", None) != CACHE_VERSION:
        return CachedCatalogs()  # another vnode's format: rebuilt at the next refresh
    try:
        cached = cattrs.structure(data, CachedCatalogs)
        # Dates are compared later, in every command: a bad one is found here, once.
        for when in (cached.last_attempt, *(c.fetched for c in cached.catalogs.values())):
            if when is not None:
                datetime.datetime.fromisoformat(when)
        for family, known in cached.catalogs.items():
            if known.family != family:
                raise ValueError(f"{family}: holds {known.family}'s catalog")
            catalog(family, known.latest, known.releases, known.previous)
    except (ValueError, TypeError, AttributeError, CatalogError, cattrs.BaseValidationError) as exc:
        return _unreadable(path, exc)
    return cached


def _unreadable(path: Path, exc: BaseException) -> CachedCatalogs:
    from vnode.logs import get_logger

    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    get_logger("vnode.catalog").warning(
        f"{path} is unreadable ({reason}); the built-in catalogs answer until `vnode images "
        "refresh` rewrites it"
    )
    return CachedCatalogs()


def save_cache(state: Path, cached: CachedCatalogs) -> None:
    import cattrs

    from vnode.files import write_atomic

    data = {"version": CACHE_VERSION, **cattrs.unstructure(cached)}
    write_atomic(cache_path(state), json.dumps(data, indent=1, sort_keys=True) + "\n")


def update_cache(state: Path, change: Callable[[CachedCatalogs], CachedCatalogs]) -> CachedCatalogs:
    """Read, change and write the cache under a lock (parallel fetches remember places)."""
    from vnode.locks import file_lock

    state.mkdir(parents=True, exist_ok=True)
    with file_lock(state / ".catalog.lock"):
        changed = change(load_cache(state))
        save_cache(state, changed)
    return changed


def remember_place(distro: str, place: str) -> Callable[[CachedCatalogs], CachedCatalogs]:
    """A change for :func:`update_cache`: the checksum URL that answered for ``distro`` is
    tried first next time."""
    return lambda cached: attrs.evolve(cached, places={**cached.places, distro: place})

"""A helper for distro plugins: a table of releases, a latest one, and family aliases.

Plugins (ours and third parties') build a :class:`Catalog` from data and answer the distro
hooks with it, so which release is "latest" stays a one-line change in the plugin.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from vnode.model import Distro


@attrs.frozen
class Catalog:
    family: str
    releases: tuple[Distro, ...]
    latest: str  # canonical name of the release the family alias means

    def resolve(self, name: str) -> Distro | None:
        wanted = name.lower()
        if wanted in (self.family, "latest-" + self.family):
            wanted = self.latest
        for distro in self.releases:
            if wanted == distro.name or wanted in distro.aliases:
                return distro
        return None

    def names(self) -> list[str]:
        return [self.family, *(d.name for d in self.releases)]


def catalog(family: str, latest: str, releases: Iterable[Distro]) -> Catalog:
    built = Catalog(family=family, releases=tuple(releases), latest=latest)
    if built.resolve(latest) is None:
        raise ValueError(f"{family}: latest release {latest!r} is not in the table")
    return built

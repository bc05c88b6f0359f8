"""Fedora Cloud Base images: releases learned from Fedora's releases.json, a built-in table
as the offline fallback.

Fedora publishes the releases it supports in ``https://fedoraproject.org/releases.json``
(version, arch, variant, subvariant, link, sha256 per image); betas appear there as
versions such as ``45 Beta`` and are never taken for a release. A release leaves the
mirrors for ``archives.fedoraproject.org`` some weeks or months after its end of life, on no
fixed day: every release therefore has both places, the likelier first, and ``fetch`` tries
the other on a 404 (and remembers which answered).

``f<N>`` resolves for every release from MIN_RELEASE to the latest. The image URL of a
release releases.json lists is the ``link`` it gives (Fedora has renamed its images before);
the rule that builds a file name from the compose is only for releases it no longer lists,
and a release whose compose is not known keeps a file-name pattern that ``vnode images
fetch`` fills in from the release's index page and CHECKSUM file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from vnode.plugin import (
    MAX_RELEASES,
    Catalog,
    CatalogError,
    Distro,
    Location,
    MetadataReader,
    catalog,
    hookimpl,
)

FAMILY = "fedora"
METADATA_URL = "https://fedoraproject.org/releases.json"
# The built-in table, as of TABLE_DATE: what answers offline before the first refresh.
TABLE_DATE = "2026-12-07T00:00:00+00:00"
LATEST = 45
LATEST_RELEASED = "2026-11-04"  # its GA images' date
PREVIOUS = 44
# The first release published under releases/N/Cloud/x86_64/images (27 and older used
# CloudImages/), as qcow2 with a CHECKSUM file.
MIN_RELEASE = 28
_MIRRORS = "https://download.fedoraproject.org/pub/fedora/linux/releases/{n}/Cloud/x86_64/images"
_ARCHIVE = (
    "https://archives.fedoraproject.org/pub/archive/fedora/linux/releases/{n}/Cloud/x86_64/images"
)

# Fedora clearsigns each CHECKSUM file with the release's own key, which the host has where it
# runs Fedora (fedora-gpg-keys: the releases around its own) or distribution-gpg-keys (every
# release; Fedora's and EPEL's repositories). The key files are the trust anchor (installed by
# the host's package manager, itself verified); getfedora.org/security lists fingerprints.
_KEY_FILES = (
    "/etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-{n}-primary",
    "/usr/share/distribution-gpg-keys/fedora/RPM-GPG-KEY-fedora-{n}-primary",
)

# release -> compose of its Cloud Base image, as published.
COMPOSES = {44: "1.7", 43: "1.6", 42: "1.1", 41: "1.4", 40: "1.14", 39: "1.5", 33: "1.2"}

# Fedora-Cloud-Base-Generic-44-1.7.x86_64.qcow2, or F40's Generic.x86_64-40-1.14.qcow2
_COMPOSE = re.compile(
    r"-(\d+)-(\d+(?:\.\d+)*)\.x86_64\.qcow2$|\.x86_64-(\d+)-(\d+(?:\.\d+)*)\.qcow2$"
)


def image_file(number: int, compose: str) -> str:
    # Fedora 40 moved to kiwi-built images and renamed them twice.
    if number >= 41:
        return f"Fedora-Cloud-Base-Generic-{number}-{compose}.x86_64.qcow2"
    if number == 40:
        return f"Fedora-Cloud-Base-Generic.x86_64-{number}-{compose}.qcow2"
    return f"Fedora-Cloud-Base-{number}-{compose}.x86_64.qcow2"


def checksum_file(number: int, compose: str) -> str:
    return f"Fedora-Cloud-{number}-{compose}-x86_64-CHECKSUM"


def _image_pattern(number: int) -> str:
    # The CHECKSUM file also lists the raw, Vagrant, Azure and EC2 images: the pattern must
    # single out the generic qcow2.
    if number >= 40:
        return f"Fedora-Cloud-Base-Generic*-{number}-*.qcow2"
    return f"Fedora-Cloud-Base-{number}-*.x86_64.qcow2"


def fedora(
    number: int,
    compose: str | None,
    *,
    on_mirrors: bool,
    end_of_life: bool,
    sha256: str | None = None,
    link: str | None = None,
) -> Distro:
    """A release; ``link``, where releases.json gives it, is the image's URL on the mirrors
    (its CHECKSUM file beside it), and the archive keeps the same file name."""
    image = image_file(number, compose) if compose else _image_pattern(number)
    if link is not None:
        image = link.rsplit("/", 1)[1]
    checksum = checksum_file(number, compose or "*")
    mirrors, archive = (
        Location(f"{base.format(n=number)}/{image}", f"{base.format(n=number)}/{checksum}")
        for base in (_MIRRORS, _ARCHIVE)
    )
    if link is not None:
        mirrors = Location(link, f"{link.rsplit('/', 1)[0]}/{checksum}")
    first, other = (mirrors, archive) if on_mirrors else (archive, mirrors)
    return Distro(
        name=f"f{number}",
        family=FAMILY,
        release=str(number),
        title=f"Fedora {number}" if compose else f"Fedora {number} (compose found on fetch)",
        osinfo=f"http://fedoraproject.org/fedora/{number}",
        image_url=first.image_url,
        checksum_url=first.checksum_url,
        checksum_format="fedora-checksum",
        disk_gb=10,
        aliases=(f"fedora{number}", f"fedora-{number}"),
        alternates=(other,),
        sha256=sha256,
        end_of_life=end_of_life,
        signature="clearsigned",
        keyrings=tuple(path.format(n=number) for path in _KEY_FILES),
    )


@attrs.frozen
class Listed:
    """A release as releases.json lists it (or the built-in table, which has no link)."""

    compose: str | None
    sha256: str | None = None
    link: str | None = None


def _table(latest: int, previous: int, current: Mapping[int, Listed]) -> list[Distro]:
    """Every release from MIN_RELEASE to ``latest``; ``current`` ones are on the mirrors and
    supported, older ones past their end of life and likely archived."""
    releases = []
    for number in range(MIN_RELEASE, latest + 1):
        if number in current:
            listed = current[number]
            releases.append(
                fedora(
                    number,
                    listed.compose,
                    on_mirrors=True,
                    end_of_life=False,
                    sha256=listed.sha256,
                    link=listed.link,
                )
            )
        else:
            supported = number >= previous
            releases.append(
                fedora(
                    number, COMPOSES.get(number), on_mirrors=supported, end_of_life=not supported
                )
            )
    return releases


BUILT_IN = catalog(
    FAMILY,
    f"f{LATEST}",
    _table(LATEST, PREVIOUS, {n: Listed(COMPOSES.get(n)) for n in (LATEST, PREVIOUS)}),
    previous=f"f{PREVIOUS}",
    fetched=TABLE_DATE,
)


def parse_releases_json(data: object, origin: str) -> Catalog:
    """Fedora's releases.json as a catalog; pre-releases ("45 Beta") are left out."""
    if not isinstance(data, list):
        raise CatalogError(f"{origin}: expected a list of releases")
    current: dict[int, Listed] = {}
    for entry in data:
        if not isinstance(entry, dict):
            raise CatalogError(f"{origin}: an entry is not an object")
        if (entry.get("arch"), entry.get("variant"), entry.get("subvariant")) != (
            "x86_64",
            "Cloud",
            "Cloud_Base",
        ):
            continue
        version, link = str(entry.get("version", "")), str(entry.get("link", ""))
        if not version.isdigit() or not link.endswith(".qcow2"):
            continue  # a beta, or the raw/vagrant images of a release
        match = _COMPOSE.search(link)
        if not match:
            raise CatalogError(f"{origin}: no compose in the image name {link!r}")
        number, compose = int(version), match[2] or match[4]
        if number - MIN_RELEASE >= MAX_RELEASES:
            # The table has every release from MIN_RELEASE up: bound it before building it.
            raise CatalogError(f"{origin}: release {number} is not believable")
        if int(match[1] or match[3]) != number:
            raise CatalogError(f"{origin}: release {number} links to {link!r}")
        sha256 = entry.get("sha256")
        if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha256)):
            raise CatalogError(f"{origin}: release {number}: {sha256!r} is not a sha256")
        if not link.startswith("https://") or ".." in link.split("/"):
            raise CatalogError(f"{origin}: release {number}: odd image link {link!r}")
        current[number] = Listed(compose, sha256, link)
    if not current:
        raise CatalogError(f"{origin}: no released x86_64 Cloud Base qcow2 is listed")
    latest, *older = sorted(current, reverse=True)
    previous = older[0] if older else latest - 1
    return catalog(
        FAMILY,
        f"f{latest}",
        _table(latest, previous, current),
        previous=f"f{previous}",
        origin=origin,
    )


def _catalog(catalogs: Mapping[str, Catalog]) -> Catalog:
    return catalogs.get(FAMILY) or BUILT_IN


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str, catalogs: Mapping[str, Catalog]) -> Distro | None:
    return _catalog(catalogs).resolve(name)


@hookimpl(trylast=True)
def vnode_distro_names(catalogs: Mapping[str, Catalog]) -> list[str]:
    table = _catalog(catalogs)
    # Every release resolves; the listing names the ones that matter and the family.
    shown = {table.latest, table.previous} | {
        d.name for d in table.releases if int(d.release) in COMPOSES
    }
    return [*table.moving_names(), *sorted(n for n in shown if n)]


@hookimpl(trylast=True)
def vnode_distro_catalogs(catalogs: Mapping[str, Catalog]) -> list[Catalog]:
    return [_catalog(catalogs)]


@hookimpl(trylast=True)
def vnode_catalog_refresh(read: MetadataReader) -> Catalog:
    return parse_releases_json(read.json(FAMILY, METADATA_URL), read.url(FAMILY, METADATA_URL))

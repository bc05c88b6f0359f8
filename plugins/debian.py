"""Debian cloud images: releases learned from Debian's cloud image tree, a built-in table as
the offline fallback; images can also be built locally from a Debian mirror.

cloud.debian.org keeps every release it builds at ``images/cloud/<codename>/latest/``
(``debian-<N>-genericcloud-amd64.qcow2`` and ``SHA512SUMS``), old ones included, so there
is no archive to fall back to. A refresh reads the tree's index and each codename's
``latest/`` listing: a codename without a numbered image (sid, a testing release) is not a
release yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from vnode.plugin import (
    Catalog,
    CatalogError,
    Distro,
    ImageBuilder,
    MetadataReader,
    PluginContext,
    UsageError,
    catalog,
    hookimpl,
    index_links,
)

FAMILY = "debian"
ROOT = "https://cloud.debian.org/images/cloud"
_BASE = ROOT + "/{codename}/latest"
# The built-in table, as of TABLE_DATE.
TABLE_DATE = "2026-12-07T00:00:00+00:00"
_RELEASES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}
LATEST = "d13"
LATEST_RELEASED = "2025-08-09"  # Debian 13's release day
PREVIOUS = "d12"
_END_OF_LIFE = {"9", "10", "11"}  # Debian 11's LTS ended 2026-08-31
# SHA512SUMS is signed next to it (SHA512SUMS.sign) by a Debian role key; the debian-keyring
# package installs Debian's role keys (www.debian.org/CD/verify lists the CD signing keys).
_KEY_FILES = ("/usr/share/keyrings/debian-role-keys.gpg",)
_IMAGE = re.compile(r"debian-(\d+)-genericcloud-amd64\.qcow2")
_CODENAME = re.compile(r"[a-z]+")
_MAX_CODENAMES = 64  # Debian has named some 30 releases since 1996


def debian(number: str, codename: str, *, end_of_life: bool) -> Distro:
    base = _BASE.format(codename=codename)
    return Distro(
        name=f"d{number}",
        family=FAMILY,
        release=number,
        title=f"Debian {number} ({codename})",
        osinfo=f"http://debian.org/debian/{number}",
        image_url=f"{base}/debian-{number}-genericcloud-amd64.qcow2",
        checksum_url=f"{base}/SHA512SUMS",
        checksum_format="sha512sums",
        disk_gb=10,
        aliases=(codename, f"debian{number}", f"debian-{number}"),
        end_of_life=end_of_life,
        signature=".sign",
        keyrings=_KEY_FILES,
    )


BUILT_IN = catalog(
    FAMILY,
    LATEST,
    (debian(n, c, end_of_life=n in _END_OF_LIFE) for n, c in _RELEASES.items()),
    previous=PREVIOUS,
    fetched=TABLE_DATE,
)


def read_image_tree(read: MetadataReader) -> Catalog:
    """The releases cloud.debian.org publishes, from its directory listings."""
    origin = read.url(FAMILY, f"{ROOT}/")
    codenames = [
        name for name in index_links(read.text(FAMILY, f"{ROOT}/")) if _CODENAME.fullmatch(name)
    ]
    if not codenames:
        raise CatalogError(f"{origin}: no release directories listed")
    if len(codenames) > _MAX_CODENAMES:
        # Each is one more request: a listing of thousands is not Debian's tree.
        raise CatalogError(f"{origin}: {len(codenames)} release directories; not believed")
    numbers: dict[str, str] = {}
    for codename in codenames:
        try:
            listing = read.text(FAMILY, f"{_BASE.format(codename=codename)}/")
        except CatalogError:
            continue  # a codename without latest/ (an old one, or daily builds only)
        found = {m[1] for name in index_links(listing) if (m := _IMAGE.fullmatch(name))}
        if len(found) > 1:
            raise CatalogError(f"{origin}{codename}/latest/: images of releases {sorted(found)}")
        if found:
            numbers[found.pop()] = codename
    if not numbers:
        raise CatalogError(f"{origin}: no release has a genericcloud amd64 image")
    ordered = sorted(numbers, key=int)
    latest, previous = ordered[-1], (ordered[-2] if len(ordered) > 1 else None)
    oldest_supported = int(previous or latest) - 1  # one-but-last's predecessor: LTS, maybe
    releases = [
        debian(
            n,
            numbers[n],
            end_of_life=n in _END_OF_LIFE or int(n) < oldest_supported,
        )
        for n in ordered
    ]
    return catalog(
        FAMILY,
        f"d{latest}",
        releases,
        previous=f"d{previous}" if previous else None,
        origin=origin,
    )


def _catalog(catalogs: Mapping[str, Catalog]) -> Catalog:
    return catalogs.get(FAMILY) or BUILT_IN


# The releases the image builder bootstraps from a Debian mirror (mmdebstrap), and the
# network stack each is built with: Debian's own cloud images use netplan and
# systemd-networkd since bookworm; vnode's d12 keeps ifupdown (cloud-init 22.4's eni).
BUILDABLE = {"12": "ifupdown", "13": "netplan"}
# d13-nm: the same release configured by NetworkManager, the way Fedora's cloud images are;
# built only (Debian publishes no such image).
VARIANTS = {"nm": ("networkmanager", "with NetworkManager")}
_VARIANT = re.compile(r"(d\d+)-([a-z]+)")
# What debian_build makes, bumped whenever nodes would notice a difference from the images
# it made before (2: a GPT disk booting on BIOS and UEFI, Secure Boot included); `vnode
# images build` rebuilds an image built at another version.
BUILD_VERSION = "2"


def _variant(base: Distro, suffix: str) -> Distro:
    return attrs.evolve(
        base,
        name=f"{base.name}-{suffix}",
        title=f"{base.title} {VARIANTS[suffix][1]}",
        image_url=None,
        checksum_url=None,
        checksum_format=None,
        aliases=(),
        alternates=(),
    )


def network_stack(distro: Distro) -> str | None:
    """The network stack vnode builds ``distro``'s image with; None if it builds none."""
    base = BUILDABLE.get(distro.release)
    if base is None:
        return None
    _, _, suffix = distro.name.partition("-")
    return VARIANTS[suffix][0] if suffix in VARIANTS else base


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str, catalogs: Mapping[str, Catalog]) -> Distro | None:
    found = _catalog(catalogs).resolve(name)
    if found is not None:
        return found
    match = _VARIANT.fullmatch(name)
    if match and match[2] in VARIANTS:
        base = _catalog(catalogs).resolve(match[1])
        if base is not None and base.release in BUILDABLE:
            return _variant(base, match[2])
    return None


@hookimpl(trylast=True)
def vnode_distro_names(catalogs: Mapping[str, Catalog]) -> list[str]:
    table = _catalog(catalogs)
    variants = [
        f"{d.name}-{suffix}"
        for d in table.releases
        if d.release in BUILDABLE
        for suffix in VARIANTS
    ]
    return [*table.names(), *variants]


@hookimpl(trylast=True)
def vnode_distro_catalogs(catalogs: Mapping[str, Catalog]) -> list[Catalog]:
    return [_catalog(catalogs)]


@hookimpl(trylast=True)
def vnode_catalog_refresh(read: MetadataReader) -> Catalog:
    return read_image_tree(read)


def _check_apt_mirror(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://", "file:/")):
        raise UsageError(f"config: [debian] apt_mirror = {value!r} is not an http(s) or file URL")


@attrs.frozen
class DebianSettings:
    """``[debian]``: where ``vnode images build`` gets Debian's packages.

    ``apt_mirror`` is a Debian *archive* (what apt reads, e.g. http://deb.debian.org/debian);
    by default the one in the host's own apt sources. ``[images] mirror.debian`` is another
    thing: a mirror of the cloud *images* that ``vnode images fetch`` downloads.
    """

    apt_mirror: str | None = attrs.field(default=None, validator=_check_apt_mirror)


@hookimpl(trylast=True)
def vnode_config_sections() -> dict[str, type]:
    return {"debian": DebianSettings}


@hookimpl(trylast=True)
def vnode_image_builder(distro: Distro, context: PluginContext) -> ImageBuilder | None:
    stack = network_stack(distro) if distro.family == FAMILY else None
    if stack is None:
        return None
    apt_mirror = context.section("debian").apt_mirror

    def build(dest: Path) -> None:
        # Imported only when building: mmdebstrap's driver is of no use to other commands.
        from vnode_plugins.debian_build import build_debian_image

        build_debian_image(dest, release=distro.release, mirror=apt_mirror, network_stack=stack)

    return ImageBuilder(
        how=f"bootstrapped from a Debian mirror with mmdebstrap, network by {stack}, "
        "boots on BIOS and UEFI",
        build=build,
        version=BUILD_VERSION,
    )

"""Ubuntu LTS cloud images: releases learned from Ubuntu's simplestreams, a built-in table as
the offline fallback.

Ubuntu describes its released cloud images for machines in simplestreams (what uvtool and
Multipass read): ``releases/streams/v1/com.ubuntu.cloud:released:download.json`` has one
product per release and architecture (``com.ubuntu.cloud:server:26.04:amd64``) with its
``release_title`` ("26.04 LTS"), ``supported`` flag and dated builds whose ``disk1.img`` item
gives the image's path and sha256. Only LTS releases resolve (``u24.04``, ``noble``,
``ubuntu`` = the latest LTS); a build not labelled ``release`` (a beta) is never taken.
Every LTS stays under ``releases/``, so there is no archive to fall back to; the release's
stable ``release/`` directory is the alternate of a dated build's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vnode.plugin import (
    Catalog,
    CatalogError,
    Distro,
    Location,
    MetadataReader,
    catalog,
    hookimpl,
)

FAMILY = "ubuntu"
ROOT = "https://cloud-images.ubuntu.com/releases"
METADATA_URL = f"{ROOT}/streams/v1/com.ubuntu.cloud:released:download.json"
_STABLE = ROOT + "/{v}/release"
# The built-in table, as of TABLE_DATE: LTS releases and their codenames.
TABLE_DATE = "2026-12-07T00:00:00+00:00"
_LTS = {
    "18.04": "bionic",
    "20.04": "focal",
    "22.04": "jammy",
    "24.04": "noble",
    "26.04": "resolute",
}
LATEST = "u26.04"
LATEST_RELEASED = "2026-04-23"  # an LTS comes every second April
PREVIOUS = "u24.04"
_END_OF_LIFE = {"18.04", "20.04"}  # standard support ended (2023-05, 2025-05)
# SHA256SUMS is signed (SHA256SUMS.gpg) by the "UEC Image Automatic Signing Key
# <cdimage@ubuntu.com>", fingerprint D2EB 4462 6FDD C30B 513D  5BB7 1A5D 6C4C 7DB8 7C81 (on
# keyserver.ubuntu.com; Ubuntu's ubuntu-cloudimage-keyring package installs it). That
# keyring holds only the cloud image keys, so every key in it is trusted.
_KEY_FILES = ("/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg",)
_PRODUCT = re.compile(r"com\.ubuntu\.cloud:server:(\d\d\.\d\d):amd64")


def _stable(version: str) -> Location:
    base = _STABLE.format(v=version)
    return Location(f"{base}/ubuntu-{version}-server-cloudimg-amd64.img", f"{base}/SHA256SUMS")


def ubuntu(
    version: str,
    codename: str,
    *,
    end_of_life: bool,
    build: Location | None = None,
    sha256: str | None = None,
) -> Distro:
    stable = _stable(version)
    first, alternates = (build, (stable,)) if build else (stable, ())
    return Distro(
        name=f"u{version}",
        family=FAMILY,
        release=version,
        title=f"Ubuntu {version} LTS ({codename})",
        osinfo=f"http://ubuntu.com/ubuntu/{version}",
        # A qcow2 despite the .img suffix; it is stored as u<version>.qcow2.
        image_url=first.image_url,
        checksum_url=first.checksum_url,
        checksum_format="sha256sums",
        disk_gb=10,
        aliases=(codename, f"ubuntu{version}", f"ubuntu-{version}"),
        alternates=alternates,
        sha256=sha256,
        end_of_life=end_of_life,
        signature=".gpg",
        keyrings=_KEY_FILES,
    )


BUILT_IN = catalog(
    FAMILY,
    LATEST,
    (ubuntu(v, c, end_of_life=v in _END_OF_LIFE) for v, c in _LTS.items()),
    previous=PREVIOUS,
    fetched=TABLE_DATE,
)


def parse_download_stream(data: object, origin: str) -> Catalog:
    """The simplestreams download stream as a catalog of LTS releases."""
    products = data.get("products") if isinstance(data, dict) else None
    if not isinstance(products, dict):
        raise CatalogError(f"{origin}: no products (not a simplestreams download stream)")
    releases = []
    for key, product in products.items():
        match = _PRODUCT.fullmatch(key)
        if not match or not isinstance(product, dict):
            continue
        version = match[1]
        if "LTS" not in str(product.get("release_title", "")):
            continue
        found = _latest_release_build(product, origin, key)
        if found is None:
            continue  # only betas so far: not a release yet
        path, sha256 = found
        directory = path.rsplit("/", 1)[0]
        build = Location(f"{ROOT}/{path}", f"{ROOT}/{directory}/SHA256SUMS")
        codename = str(product.get("release") or _LTS.get(version) or version)
        supported = product.get("supported", True) is not False
        releases.append(
            ubuntu(version, codename, end_of_life=not supported, build=build, sha256=sha256)
        )
    if not releases:
        raise CatalogError(f"{origin}: no released LTS amd64 image is listed")
    releases.sort(key=lambda d: d.release)
    return catalog(
        FAMILY,
        releases[-1].name,
        releases,
        previous=releases[-2].name if len(releases) > 1 else None,
        origin=origin,
    )


def _latest_release_build(product: dict, origin: str, key: str) -> tuple[str, str] | None:
    versions = product.get("versions")
    if not isinstance(versions, dict):
        raise CatalogError(f"{origin}: {key} has no versions")
    for serial in sorted(versions, reverse=True):
        build = versions[serial]
        if not isinstance(build, dict) or build.get("label", "release") != "release":
            continue
        item = (build.get("items") or {}).get("disk1.img")
        if not isinstance(item, dict):
            continue
        path, sha256 = item.get("path"), item.get("sha256")
        if not isinstance(path, str) or not re.fullmatch(r"[0-9a-f]{64}", str(sha256)):
            raise CatalogError(f"{origin}: {key} {serial}: disk1.img lacks a path or sha256")
        if path.startswith("/") or ".." in path.split("/"):
            raise CatalogError(f"{origin}: {key} {serial}: odd path {path!r}")
        return path, str(sha256)
    return None


def _catalog(catalogs: Mapping[str, Catalog]) -> Catalog:
    return catalogs.get(FAMILY) or BUILT_IN


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str, catalogs: Mapping[str, Catalog]) -> Distro | None:
    return _catalog(catalogs).resolve(name)


@hookimpl(trylast=True)
def vnode_distro_names(catalogs: Mapping[str, Catalog]) -> list[str]:
    return _catalog(catalogs).names()


@hookimpl(trylast=True)
def vnode_distro_catalogs(catalogs: Mapping[str, Catalog]) -> list[Catalog]:
    return [_catalog(catalogs)]


@hookimpl(trylast=True)
def vnode_catalog_refresh(read: MetadataReader) -> Catalog:
    return parse_download_stream(read.json(FAMILY, METADATA_URL), read.url(FAMILY, METADATA_URL))

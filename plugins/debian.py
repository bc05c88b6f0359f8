"""Debian cloud images, downloadable or built locally from a Debian mirror (no internet needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vnode.catalog import catalog
from vnode.hookspecs import hookimpl
from vnode.model import Distro

if TYPE_CHECKING:
    from vnode.config import Config

LATEST = "d12"
_BASE = "https://cloud.debian.org/images/cloud/{codename}/latest"
_RELEASES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}


def _distro(number: str, codename: str) -> Distro:
    base = _BASE.format(codename=codename)
    return Distro(
        name=f"d{number}",
        family="debian",
        release=number,
        title=f"Debian {number} ({codename})",
        osinfo=f"debian{number}",
        image_url=f"{base}/debian-{number}-genericcloud-amd64.qcow2",
        checksum_url=f"{base}/SHA512SUMS",
        checksum_format="sha512sums",
        disk_gb=10,
        interface_name="enp1s0",
        network_renderer="eni",
        aliases=(codename, f"debian{number}", f"debian-{number}"),
        buildable=number in ("12", "13"),
    )


CATALOG = catalog("debian", LATEST, (_distro(n, c) for n, c in _RELEASES.items()))


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str) -> Distro | None:
    return CATALOG.resolve(name)


@hookimpl(trylast=True)
def vnode_distro_names() -> list[str]:
    return CATALOG.names()


@hookimpl(trylast=True)
def vnode_image_build(distro: Distro, dest: Path, config: Config) -> bool | None:
    if distro.family != "debian" or not distro.buildable:
        return None
    from vnode_plugins.debian_build import build_debian_image

    build_debian_image(dest, release=distro.release)
    return True

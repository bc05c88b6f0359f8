"""Debian cloud images, downloadable or built locally from a Debian mirror (no internet needed).

Release data lives here: bump LATEST when a release ships. cloud.debian.org keeps older
releases (oldstable, LTS) at the same place, so one URL pattern serves them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vnode.catalog import catalog
from vnode.hookspecs import hookimpl
from vnode.model import Distro
from vnode_plugins.debian_build import RELEASES as _BUILDABLE

if TYPE_CHECKING:
    from vnode.config import Config

LATEST = "d13"
_BASE = "https://cloud.debian.org/images/cloud/{codename}/latest"
_RELEASES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}


def debian(number: str, codename: str) -> Distro:
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
        # Predictable names (no net.ifnames=0): the NIC is named after its PCI slot.
        interface_name="enp1s0",
        # ifupdown, in the images vnode builds; cloud-init picks what the guest has anyway.
        network_renderer="eni",
        aliases=(codename, f"debian{number}", f"debian-{number}"),
        # debian_build bootstraps these from the host's Debian mirror.
        buildable=number in _BUILDABLE,
    )


CATALOG = catalog("debian", LATEST, (debian(n, c) for n, c in _RELEASES.items()))


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

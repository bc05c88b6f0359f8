"""Debian cloud images, downloadable or built locally from a Debian mirror (no internet needed).

Release data lives here: bump LATEST when a release ships. cloud.debian.org keeps older
releases (oldstable, LTS) at the same place, so one URL pattern serves them all.
"""

from __future__ import annotations

from pathlib import Path

from vnode.plugin import Distro, ImageBuilder, PluginContext, catalog, hookimpl

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
        osinfo=f"http://debian.org/debian/{number}",
        image_url=f"{base}/debian-{number}-genericcloud-amd64.qcow2",
        checksum_url=f"{base}/SHA512SUMS",
        checksum_format="sha512sums",
        disk_gb=10,
        aliases=(codename, f"debian{number}", f"debian-{number}"),
    )


CATALOG = catalog("debian", LATEST, (debian(n, c) for n, c in _RELEASES.items()))


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str) -> Distro | None:
    return CATALOG.resolve(name)


@hookimpl(trylast=True)
def vnode_distro_names() -> list[str]:
    return CATALOG.names()


# The releases the image builder bootstraps from a Debian mirror (mmdebstrap).
BUILDABLE = ("12", "13")


@hookimpl(trylast=True)
def vnode_image_builder(distro: Distro, context: PluginContext) -> ImageBuilder | None:
    if distro.family != "debian" or distro.release not in BUILDABLE:
        return None
    mirror = context.mirrors.get("debian")

    def build(dest: Path) -> None:
        # Imported only when building: mmdebstrap's driver is of no use to other commands.
        from vnode_plugins.debian_build import build_debian_image

        if mirror:
            build_debian_image(dest, release=distro.release, mirror=mirror)
        else:
            build_debian_image(dest, release=distro.release)

    return ImageBuilder(how="bootstrapped from a Debian mirror with mmdebstrap", build=build)

"""Debian cloud images, downloadable or built locally from a Debian mirror (no internet needed).

Release data lives here: bump LATEST when a release ships. cloud.debian.org keeps older
releases (oldstable, LTS) at the same place, so one URL pattern serves them all.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from vnode.plugin import Distro, ImageBuilder, PluginContext, UsageError, catalog, hookimpl

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
    if distro.family != "debian" or distro.release not in BUILDABLE:
        return None
    apt_mirror = context.section("debian").apt_mirror

    def build(dest: Path) -> None:
        # Imported only when building: mmdebstrap's driver is of no use to other commands.
        from vnode_plugins.debian_build import build_debian_image

        build_debian_image(dest, release=distro.release, mirror=apt_mirror)

    return ImageBuilder(how="bootstrapped from a Debian mirror with mmdebstrap", build=build)

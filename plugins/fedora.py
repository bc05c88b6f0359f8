"""Fedora Cloud Base images. The table is data: bump LATEST when a release ships."""

from __future__ import annotations

from vnode.catalog import catalog
from vnode.hookspecs import hookimpl
from vnode.model import Distro

LATEST = "f43"
_CURRENT = "https://download.fedoraproject.org/pub/fedora/linux/releases/{n}/Cloud/x86_64/images"
_ARCHIVE = (
    "https://archives.fedoraproject.org/pub/archive/fedora/linux/releases/{n}/Cloud/x86_64/images"
)

# release -> (image file, checksum file, mirror); the compose suffix differs per release.
_RELEASES = {
    43: (
        "Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2",
        "Fedora-Cloud-43-1.6-x86_64-CHECKSUM",
        _CURRENT,
    ),
    42: (
        "Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2",
        "Fedora-Cloud-42-1.1-x86_64-CHECKSUM",
        _CURRENT,
    ),
    41: (
        "Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2",
        "Fedora-Cloud-41-1.4-x86_64-CHECKSUM",
        _ARCHIVE,
    ),
    40: (
        "Fedora-Cloud-Base-Generic.x86_64-40-1.14.qcow2",
        "Fedora-Cloud-40-1.14-x86_64-CHECKSUM",
        _ARCHIVE,
    ),
    39: ("Fedora-Cloud-Base-39-1.5.x86_64.qcow2", "Fedora-Cloud-39-1.5-x86_64-CHECKSUM", _ARCHIVE),
    33: ("Fedora-Cloud-Base-33-1.2.x86_64.qcow2", "Fedora-Cloud-33-1.2-x86_64-CHECKSUM", _ARCHIVE),
}


def _distro(number: int, image: str, checksum: str, mirror: str) -> Distro:
    base = mirror.format(n=number)
    return Distro(
        name=f"f{number}",
        family="fedora",
        release=str(number),
        title=f"Fedora {number}",
        osinfo=f"fedora{number}",
        image_url=f"{base}/{image}",
        checksum_url=f"{base}/{checksum}",
        checksum_format="fedora-checksum",
        disk_gb=10,
        interface_name="eth0",
        network_renderer="networkmanager" if number >= 33 else "sysconfig",
        aliases=(f"fedora{number}", f"fedora-{number}"),
    )


CATALOG = catalog("fedora", LATEST, (_distro(n, *row) for n, row in sorted(_RELEASES.items())))


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str) -> Distro | None:
    return CATALOG.resolve(name)


@hookimpl(trylast=True)
def vnode_distro_names() -> list[str]:
    return CATALOG.names()

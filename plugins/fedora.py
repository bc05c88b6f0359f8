"""Fedora Cloud Base images. Release data lives here: bump LATEST when a release ships.

``f<N>`` resolves for every release from MIN_RELEASE to LATEST. Fedora keeps the latest two
releases on its mirrors and moves older ones to the archive, so the location follows from
LATEST alone. A release's image and checksum file names carry its compose (``43-1.6``);
COMPOSES records the ones known, and for any other release the file names stay a pattern
that ``vnode images fetch`` fills in from the release's own index page and CHECKSUM file.
"""

from __future__ import annotations

import re

from vnode.plugin import Distro, catalog, hookimpl

LATEST = 43
# The first release published under releases/N/Cloud/x86_64/images (27 and older used
# CloudImages/), as qcow2 with a CHECKSUM file.
MIN_RELEASE = 28
_CURRENT = "https://download.fedoraproject.org/pub/fedora/linux/releases/{n}/Cloud/x86_64/images"
_ARCHIVE = (
    "https://archives.fedoraproject.org/pub/archive/fedora/linux/releases/{n}/Cloud/x86_64/images"
)

# release -> compose of its Cloud Base image, as published (best effort: a release whose
# compose is not here is found through its index page instead).
COMPOSES = {43: "1.6", 42: "1.1", 41: "1.4", 40: "1.14", 39: "1.5", 33: "1.2"}

_NAME = re.compile(r"(?:f|fedora-?)([1-9]\d{0,2})")


def image_file(number: int, compose: str) -> str:
    # Fedora 40 moved to kiwi-built images and renamed them twice.
    if number >= 41:
        return f"Fedora-Cloud-Base-Generic-{number}-{compose}.x86_64.qcow2"
    if number == 40:
        return f"Fedora-Cloud-Base-Generic.x86_64-{number}-{compose}.qcow2"
    return f"Fedora-Cloud-Base-{number}-{compose}.x86_64.qcow2"


def checksum_file(number: int, compose: str) -> str:
    return f"Fedora-Cloud-{number}-{compose}-x86_64-CHECKSUM"


def base_url(number: int) -> str:
    """Where a release's images are: the two newest on the mirrors, older ones archived."""
    return (_CURRENT if number >= LATEST - 1 else _ARCHIVE).format(n=number)


def fedora(number: int) -> Distro:
    compose = COMPOSES.get(number)
    image = image_file(number, compose) if compose else _image_pattern(number)
    checksum = checksum_file(number, compose or "*")
    base = base_url(number)
    return Distro(
        name=f"f{number}",
        family="fedora",
        release=str(number),
        title=f"Fedora {number}" if compose else f"Fedora {number} (compose found on fetch)",
        osinfo=f"http://fedoraproject.org/fedora/{number}",
        image_url=f"{base}/{image}",
        checksum_url=f"{base}/{checksum}",
        checksum_format="fedora-checksum",
        disk_gb=10,
        aliases=(f"fedora{number}", f"fedora-{number}"),
    )


def _image_pattern(number: int) -> str:
    # The CHECKSUM file also lists the raw, Vagrant, Azure and EC2 images: the pattern must
    # single out the generic qcow2.
    if number >= 40:
        return f"Fedora-Cloud-Base-Generic*-{number}-*.qcow2"
    return f"Fedora-Cloud-Base-{number}-*.x86_64.qcow2"


CATALOG = catalog(
    "fedora", f"f{LATEST}", (fedora(n) for n in sorted(COMPOSES) if MIN_RELEASE <= n <= LATEST)
)


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str) -> Distro | None:
    known = CATALOG.resolve(name)
    if known is not None:
        return known
    match = _NAME.fullmatch(name)
    if match and MIN_RELEASE <= int(match[1]) <= LATEST:
        return fedora(int(match[1]))
    return None


@hookimpl(trylast=True)
def vnode_distro_names() -> list[str]:
    return CATALOG.names()

"""Ubuntu LTS cloud images. Release data lives here: bump LATEST when an LTS ships.

Only the LTS releases in the table resolve (``u24.04``, ``noble``, ``ubuntu`` = LATEST); an
interim release or an LTS not listed is an unknown distro. Ubuntu keeps every LTS under
releases/, so there is no separate archive location.
"""

from __future__ import annotations

from vnode.plugin import Distro, catalog, hookimpl

LATEST = "u24.04"
_BASE = "https://cloud-images.ubuntu.com/releases/{v}/release"
_LTS = {"18.04": "bionic", "20.04": "focal", "22.04": "jammy", "24.04": "noble"}


def ubuntu(version: str, codename: str) -> Distro:
    base = _BASE.format(v=version)
    return Distro(
        name=f"u{version}",
        family="ubuntu",
        release=version,
        title=f"Ubuntu {version} LTS ({codename})",
        osinfo=f"http://ubuntu.com/ubuntu/{version}",
        # A qcow2 despite the .img suffix; it is stored as u<version>.qcow2.
        image_url=f"{base}/ubuntu-{version}-server-cloudimg-amd64.img",
        checksum_url=f"{base}/SHA256SUMS",
        checksum_format="sha256sums",
        disk_gb=10,
        aliases=(codename, f"ubuntu{version}", f"ubuntu-{version}"),
    )


CATALOG = catalog("ubuntu", LATEST, (ubuntu(v, c) for v, c in _LTS.items()))


@hookimpl(trylast=True)
def vnode_distro_resolve(name: str) -> Distro | None:
    return CATALOG.resolve(name)


@hookimpl(trylast=True)
def vnode_distro_names() -> list[str]:
    return CATALOG.names()

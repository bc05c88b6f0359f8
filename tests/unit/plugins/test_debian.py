"""The Debian plugin: its built-in table (pinned); the image tree is read in test_catalog."""

from __future__ import annotations

import pytest

from vnode_plugins import debian

ROOT = "https://cloud.debian.org/images/cloud"


@pytest.mark.parametrize(("number", "codename"), [("12", "bookworm"), ("13", "trixie")])
def test_built_in_table_pins_each_release(number: str, codename: str) -> None:
    distro = debian.vnode_distro_resolve(name=f"d{number}", catalogs={})
    base = f"{ROOT}/{codename}/latest"
    assert distro.image_url == f"{base}/debian-{number}-genericcloud-amd64.qcow2"
    assert (distro.checksum_url, distro.checksum_format) == (f"{base}/SHA512SUMS", "sha512sums")
    assert distro.image_format == "qcow2"
    assert distro.osinfo == f"http://debian.org/debian/{number}"
    assert debian.vnode_distro_resolve(name=codename, catalogs={}) == distro


def test_built_in_roles() -> None:
    table = debian.BUILT_IN
    assert (table.latest, table.previous) == ("d13", "d12")
    assert table.role(table.resolve("d11")) == "end of life"
    for name in ("d9", "d14", "sid"):
        assert table.resolve(name) is None

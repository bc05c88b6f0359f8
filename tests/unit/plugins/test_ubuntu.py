"""The Ubuntu plugin: its built-in table (pinned) and Ubuntu's simplestreams read as a catalog."""

from __future__ import annotations

import pytest

from vnode.catalog import CatalogError
from vnode_plugins import ubuntu

ROOT = "https://cloud-images.ubuntu.com/releases"


def _resolve(name: str):
    return ubuntu.vnode_distro_resolve(name=name, catalogs={})


@pytest.mark.parametrize("version", ["18.04", "24.04", "26.04"])
def test_built_in_table_pins_each_release(version: str) -> None:
    distro = _resolve(f"u{version}")
    base = f"{ROOT}/{version}/release"
    assert distro.image_url == f"{base}/ubuntu-{version}-server-cloudimg-amd64.img"
    assert (distro.checksum_url, distro.checksum_format) == (f"{base}/SHA256SUMS", "sha256sums")
    assert distro.image_format == "qcow2"
    assert distro.osinfo == f"http://ubuntu.com/ubuntu/{version}"


def test_built_in_latest_is_26_04_resolute_and_24_04_one_but_last() -> None:
    table = ubuntu.BUILT_IN
    assert (_resolve("ubuntu").name, _resolve("resolute").name) == ("u26.04", "u26.04")
    assert table.previous == "u24.04"
    assert table.role(_resolve("u18.04")) == "end of life"
    for name in ("u23.10", "u16.04", "u28.04"):
        assert _resolve(name) is None


def product(version: str, codename: str, builds: dict[str, str], supported: bool = True) -> dict:
    """One simplestreams product, as in com.ubuntu.cloud:released:download.json."""
    return {
        "aliases": f"{version},{codename[0]},{codename}",
        "arch": "amd64",
        "os": "ubuntu",
        "release": codename,
        "release_codename": codename.title(),
        "release_title": f"{version} LTS" if version.endswith(".04") else version,
        "support_eol": "2031-05-31",
        "supported": supported,
        "version": version,
        "versions": {
            serial: {
                "items": {
                    "disk1.img": {
                        "ftype": "disk1.img",
                        "md5": "0" * 32,
                        "path": f"server/releases/{codename}/release-{serial}/"
                        f"ubuntu-{version}-server-cloudimg-amd64.img",
                        "sha256": f"{int(serial):064x}",
                        "size": 600000000,
                    },
                    "manifest": {
                        "ftype": "manifest",
                        "path": f"server/releases/{codename}/release-{serial}/x.manifest",
                        "sha256": "1" * 64,
                        "size": 100,
                    },
                },
                "label": label,
                "pubname": f"ubuntu-{codename}-{version}-amd64-server-{serial}",
            }
            for serial, label in builds.items()
        },
    }


def stream(*products: tuple[str, dict]) -> dict:
    return {
        "content_id": "com.ubuntu.cloud:released:download",
        "datatype": "image-downloads",
        "format": "products:1.0",
        "updated": "Thu, 26 Nov 2026 10:00:00 +0000",
        "products": {f"com.ubuntu.cloud:server:{v}:amd64": p for v, p in products},
    }


def test_stream_gives_lts_releases_their_dated_build_and_skips_betas_and_interims() -> None:
    data = stream(
        ("24.04", product("24.04", "noble", {"20261101": "release", "20261120": "release"})),
        ("26.04", product("26.04", "resolute", {"20261115": "release", "20261125": "beta"})),
        ("25.10", product("25.10", "questing", {"20261110": "release"})),
        ("28.04", product("28.04", "future", {"20261125": "beta"})),
        ("20.04", product("20.04", "focal", {"20250501": "release"}, supported=False)),
    )
    table = ubuntu.parse_download_stream(data, "http://x/stream.json")
    assert (table.latest, table.previous) == ("u26.04", "u24.04")
    u26 = table.resolve("ubuntu")
    assert u26.image_url == (
        f"{ROOT}/server/releases/resolute/release-20261115/ubuntu-26.04-server-cloudimg-amd64.img"
    )
    assert u26.checksum_url == f"{ROOT}/server/releases/resolute/release-20261115/SHA256SUMS"
    assert u26.sha256 == f"{20261115:064x}"
    assert [a.checksum_url for a in u26.alternates] == [f"{ROOT}/26.04/release/SHA256SUMS"]
    assert table.resolve("u24.04").sha256 == f"{20261120:064x}"
    assert table.resolve("u20.04").end_of_life
    assert table.resolve("u25.10") is None and table.resolve("u28.04") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "no products"),
        ({"products": []}, "no products"),
        (stream(), "no released LTS"),
        (stream(("28.04", product("28.04", "future", {"20261125": "beta"}))), "no released LTS"),
        (
            stream(("26.04", {**product("26.04", "resolute", {}), "versions": None})),
            "has no versions",
        ),
    ],
)
def test_malformed_stream_is_a_catalog_error(data: object, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        ubuntu.parse_download_stream(data, "http://x/stream.json")


def test_a_build_without_sha256_or_with_an_escaping_path_is_refused() -> None:
    bad = product("26.04", "resolute", {"20261115": "release"})
    item = bad["versions"]["20261115"]["items"]["disk1.img"]
    item["sha256"] = None
    with pytest.raises(CatalogError, match="lacks a path or sha256"):
        ubuntu.parse_download_stream(stream(("26.04", bad)), "s")
    item["sha256"], item["path"] = "2" * 64, "../../etc/passwd"
    with pytest.raises(CatalogError, match="odd path"):
        ubuntu.parse_download_stream(stream(("26.04", bad)), "s")

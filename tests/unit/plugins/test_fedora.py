"""The Fedora plugin: its built-in table (pinned) and Fedora's releases.json read as a catalog."""

from __future__ import annotations

import json

import pytest

from vnode.catalog import CatalogError
from vnode_plugins import fedora

MIRRORS = "https://download.fedoraproject.org/pub/fedora/linux/releases"
ARCHIVE = "https://archives.fedoraproject.org/pub/archive/fedora/linux/releases"


def _resolve(name: str):
    return fedora.vnode_distro_resolve(name=name, catalogs={})


# What the built-in table (2026-12-07) fetches: image URL, checksum URL, formats, fallback.
PINNED = {
    # Fedora 45's compose is not in the table: fetch finds it in the release's CHECKSUM file.
    "f45": (
        f"{MIRRORS}/45/Cloud/x86_64/images/Fedora-Cloud-Base-Generic*-45-*.qcow2",
        f"{MIRRORS}/45/Cloud/x86_64/images/Fedora-Cloud-45-*-x86_64-CHECKSUM",
        f"{ARCHIVE}/45/Cloud/x86_64/images/Fedora-Cloud-45-*-x86_64-CHECKSUM",
    ),
    "f44": (
        f"{MIRRORS}/44/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-44-1.7.x86_64.qcow2",
        f"{MIRRORS}/44/Cloud/x86_64/images/Fedora-Cloud-44-1.7-x86_64-CHECKSUM",
        f"{ARCHIVE}/44/Cloud/x86_64/images/Fedora-Cloud-44-1.7-x86_64-CHECKSUM",
    ),
    "f43": (
        f"{ARCHIVE}/43/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2",
        f"{ARCHIVE}/43/Cloud/x86_64/images/Fedora-Cloud-43-1.6-x86_64-CHECKSUM",
        f"{MIRRORS}/43/Cloud/x86_64/images/Fedora-Cloud-43-1.6-x86_64-CHECKSUM",
    ),
    "f42": (
        f"{ARCHIVE}/42/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2",
        f"{ARCHIVE}/42/Cloud/x86_64/images/Fedora-Cloud-42-1.1-x86_64-CHECKSUM",
        f"{MIRRORS}/42/Cloud/x86_64/images/Fedora-Cloud-42-1.1-x86_64-CHECKSUM",
    ),
    "f41": (
        f"{ARCHIVE}/41/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2",
        f"{ARCHIVE}/41/Cloud/x86_64/images/Fedora-Cloud-41-1.4-x86_64-CHECKSUM",
        f"{MIRRORS}/41/Cloud/x86_64/images/Fedora-Cloud-41-1.4-x86_64-CHECKSUM",
    ),
    "f33": (
        f"{ARCHIVE}/33/Cloud/x86_64/images/Fedora-Cloud-Base-33-1.2.x86_64.qcow2",
        f"{ARCHIVE}/33/Cloud/x86_64/images/Fedora-Cloud-33-1.2-x86_64-CHECKSUM",
        f"{MIRRORS}/33/Cloud/x86_64/images/Fedora-Cloud-33-1.2-x86_64-CHECKSUM",
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_built_in_table_pins_each_release(name: str) -> None:
    image, checksum, alternate = PINNED[name]
    distro = _resolve(name)
    assert (distro.image_url, distro.checksum_url) == (image, checksum)
    assert (distro.checksum_format, distro.image_format) == ("fedora-checksum", "qcow2")
    assert [a.checksum_url for a in distro.alternates] == [alternate]
    assert distro.osinfo == f"http://fedoraproject.org/fedora/{name[1:]}"


def test_built_in_roles_latest_one_but_last_and_end_of_life() -> None:
    table = fedora.BUILT_IN
    assert (_resolve("fedora").name, table.latest, table.previous) == ("f45", "f45", "f44")
    assert (_resolve("fedora~1").name, _resolve("latest-fedora").name) == ("f44", "f45")
    assert [table.role(_resolve(n)) for n in ("f45", "f44", "f43")] == [
        "latest",
        "one-but-last",
        "end of life",
    ]


def test_every_release_from_28_resolves_and_nothing_newer_or_older() -> None:
    assert _resolve("fedora-40").image_url.endswith(
        "/40/Cloud/x86_64/images/Fedora-Cloud-Base-Generic.x86_64-40-1.14.qcow2"
    )
    f38 = _resolve("f38")
    assert f38.image_url == f"{ARCHIVE}/38/Cloud/x86_64/images/Fedora-Cloud-Base-38-*.x86_64.qcow2"
    for name in ("f27", "f46", "f0", "f038", "fedora~2"):
        assert _resolve(name) is None


def releases_json(versions: dict[str, str], *, beta: str | None = None) -> list[dict]:
    """Fedora's releases.json: one entry per (version, arch, variant, subvariant) image."""
    entries = []
    for version, compose in versions.items():
        base = f"{MIRRORS}/{version}/Cloud/x86_64/images"
        entries += [
            {
                "version": version,
                "arch": "x86_64",
                "link": f"{base}/Fedora-Cloud-Base-Generic-{version}-{compose}.x86_64.qcow2",
                "variant": "Cloud",
                "subvariant": "Cloud_Base",
                "sha256": f"{int(version):064x}",
                "size": "550000000",
            },
            {
                "version": version,
                "arch": "x86_64",
                "link": f"{base}/Fedora-Cloud-Base-Generic-{version}-{compose}.x86_64.raw.xz",
                "variant": "Cloud",
                "subvariant": "Cloud_Base",
                "sha256": "0" * 64,
                "size": "450000000",
            },
            {
                "version": version,
                "arch": "aarch64",
                "link": f"{base}/../../aarch64/images/x.qcow2",
                "variant": "Cloud",
                "subvariant": "Cloud_Base",
            },
            {
                "version": version,
                "arch": "x86_64",
                "link": f"{MIRRORS}/{version}/Server/x86_64/iso/Fedora-Server-dvd.iso",
                "variant": "Server",
                "subvariant": "Server",
            },
        ]
    if beta:
        entries.append(
            {
                "version": f"{beta} Beta",
                "arch": "x86_64",
                "link": f"https://download.fedoraproject.org/pub/fedora/linux/releases/test/"
                f"{beta}_Beta/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-{beta}_Beta-1.2.x86_64.qcow2",
                "variant": "Cloud",
                "subvariant": "Cloud_Base",
                "sha256": "1" * 64,
            }
        )
    return entries


def test_releases_json_gives_latest_previous_and_archive_for_the_rest() -> None:
    data = json.loads(json.dumps(releases_json({"45": "1.3", "44": "1.7"}, beta="46")))
    table = fedora.parse_releases_json(data, "http://x/releases.json")
    assert (table.latest, table.previous, table.origin) == ("f45", "f44", "http://x/releases.json")
    f45 = table.resolve("fedora")
    assert f45.image_url == (
        f"{MIRRORS}/45/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-45-1.3.x86_64.qcow2"
    )
    assert f45.checksum_url.endswith("/45/Cloud/x86_64/images/Fedora-Cloud-45-1.3-x86_64-CHECKSUM")
    assert f45.sha256 == f"{45:064x}" and not f45.end_of_life
    f43 = table.resolve("f43")
    assert f43.end_of_life and f43.image_url.startswith(f"{ARCHIVE}/43/")
    assert table.resolve("f46") is None
    assert table.resolve("fedora~1").name == "f44"


def test_the_image_url_is_the_link_releases_json_gives_not_one_built_from_the_compose() -> None:
    # Fedora renamed its images twice around release 40: a rename must not break fetch.
    data = releases_json({"46": "1.2"})
    renamed = f"{MIRRORS}/46/Cloud/x86_64/images/Fedora-Cloud-Base-Generic.x86_64-46-1.2.qcow2"
    data[0]["link"] = renamed
    f46 = fedora.parse_releases_json(data, "http://x/releases.json").resolve("f46")
    assert f46.image_url == renamed
    assert (
        f46.checksum_url == f"{MIRRORS}/46/Cloud/x86_64/images/Fedora-Cloud-46-1.2-x86_64-CHECKSUM"
    )
    # The archive keeps the file's name once the release leaves the mirrors.
    assert [a.image_url for a in f46.alternates] == [
        f"{ARCHIVE}/46/Cloud/x86_64/images/Fedora-Cloud-Base-Generic.x86_64-46-1.2.qcow2"
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"not": "a list"}, "expected a list"),
        ([], "no released x86_64 Cloud Base qcow2"),
        (releases_json({}, beta="46"), "no released x86_64 Cloud Base qcow2"),
        (
            [{**releases_json({"45": "1.3"})[0], "sha256": "nothex"}],
            "is not a sha256",
        ),
        (
            [{**releases_json({"45": "1.3"})[0], "link": "http://x/Fedora-45.qcow2"}],
            "no compose",
        ),
        (
            [{**releases_json({"45": "1.3"})[0], "version": "44"}],
            "release 44 links to",
        ),
        (
            [
                {
                    **releases_json({"45": "1.3"})[0],
                    "link": "http://x/45/Fedora-Cloud-Base-Generic-45-1.3.x86_64.qcow2",
                }
            ],
            "odd image link",
        ),
        # Lying metadata: two million releases from 28 up would take 43 s and 3 GiB.
        (releases_json({"2000000": "1.1"}), "release 2000000 is not believable"),
    ],
)
def test_malformed_releases_json_is_a_catalog_error(data: object, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        fedora.parse_releases_json(data, "http://x/releases.json")

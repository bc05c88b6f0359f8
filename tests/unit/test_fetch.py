"""Downloads' pure logic: mirrors, where an image may be, what may be fetched, sizes."""

from __future__ import annotations

from vnode.fetch import downloadable, human_size, places, with_mirror
from vnode.model import Distro, Location

FEDORA = Distro(
    name="f43",
    family="fedora",
    release="43",
    title="Fedora 43",
    osinfo="x",
    image_url="https://dl.example/pub/fedora/43/Cloud/x86_64/images/F.qcow2",
    checksum_url="https://dl.example/pub/fedora/43/Cloud/x86_64/images/CHECKSUM",
    checksum_format="fedora-checksum",
    alternates=(
        Location(
            "https://archive.example/pub/archive/fedora/43/F.qcow2",
            "https://archive.example/pub/archive/fedora/43/CHECKSUM",
        ),
    ),
)


def test_a_mirror_keeps_upstreams_layout_below_its_own_path() -> None:
    url = "https://dl.example/pub/fedora/43/F.qcow2?x=1"
    assert with_mirror(url, None) == url
    assert (
        with_mirror(url, "http://mirror.lab/fedora/")
        == "http://mirror.lab/fedora/pub/fedora/43/F.qcow2?x=1"
    )


def test_the_place_that_answered_last_is_tried_first() -> None:
    first = places(FEDORA)
    assert [p.checksum_url for p in first] == [
        str(FEDORA.checksum_url),
        FEDORA.alternates[0].checksum_url,
    ]
    archived = places(FEDORA, preferred=FEDORA.alternates[0].checksum_url)
    assert archived[0] == FEDORA.alternates[0] and len(archived) == 2


def test_only_an_image_with_a_published_checksum_is_downloadable() -> None:
    assert downloadable(FEDORA)
    built_locally = Distro(name="d12", family="debian", release="12", title="D", osinfo="x")
    assert not downloadable(built_locally)


def test_sizes_read_as_people_write_them() -> None:
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(490 << 20) == "490.0 MiB"
    assert human_size(3 << 30) == "3.0 GiB"

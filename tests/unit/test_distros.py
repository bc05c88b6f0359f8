"""What the built-in distro plugins know: names, URLs, checksum formats, quirks; mirrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode.config import build_config
from vnode.errors import UsageError
from vnode.model import Distro, PluginContext
from vnode.plugins import PluginHost
from vnode_plugins import debian, fedora, ubuntu

FEDORA_MIRRORS = "https://download.fedoraproject.org/pub/fedora/linux/releases"
FEDORA_ARCHIVE = "https://archives.fedoraproject.org/pub/archive/fedora/linux/releases"


def _resolve(name: str) -> Distro | None:
    for plugin in (fedora, ubuntu, debian):
        if (distro := plugin.vnode_distro_resolve(name=name)) is not None:
            return distro
    return None


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("f33", "f33"),
        ("f43", "f43"),
        ("fedora", f"f{fedora.LATEST}"),
        ("fedora-42", "f42"),
        ("u18.04", "u18.04"),
        ("u24.04", "u24.04"),
        ("noble", "u24.04"),
        ("ubuntu", ubuntu.LATEST),
        ("d12", "d12"),
        ("d13", "d13"),
        ("bookworm", "d12"),
        ("debian", debian.LATEST),
    ],
)
def test_short_names_and_aliases_resolve(name: str, canonical: str) -> None:
    distro = _resolve(name)
    assert distro is not None
    assert distro.name == canonical


@pytest.mark.parametrize(
    "name",
    ["f27", f"f{fedora.LATEST + 1}", "f0", "f038", "u23.10", "u16.04", "u26.04", "d9", "d14"],
)
def test_names_outside_what_the_plugins_know_do_not_resolve(name: str) -> None:
    assert _resolve(name) is None


def test_the_latest_releases_are_in_their_tables() -> None:
    assert fedora.CATALOG.resolve("fedora").name == f"f{fedora.LATEST}"
    assert ubuntu.CATALOG.resolve("ubuntu").name == ubuntu.LATEST
    assert debian.CATALOG.resolve("debian").name == debian.LATEST


def test_fedora_latest_two_are_on_the_mirrors_older_ones_archived() -> None:
    latest, previous, older = (_resolve(f"f{fedora.LATEST - i}") for i in range(3))
    assert latest.image_url.startswith(f"{FEDORA_MIRRORS}/{fedora.LATEST}/Cloud/x86_64/images/")
    assert previous.image_url.startswith(f"{FEDORA_MIRRORS}/{fedora.LATEST - 1}/")
    assert older.image_url.startswith(f"{FEDORA_ARCHIVE}/{fedora.LATEST - 2}/")


def test_fedora_known_composes_give_exact_file_names() -> None:
    f43, f40, f33 = _resolve("f43"), _resolve("f40"), _resolve("f33")
    assert f43.image_url.endswith(
        "/43/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2"
    )
    assert f43.checksum_url.endswith("/Fedora-Cloud-43-1.6-x86_64-CHECKSUM")
    assert f40.image_url.endswith("/Fedora-Cloud-Base-Generic.x86_64-40-1.14.qcow2")
    assert (
        f33.image_url
        == f"{FEDORA_ARCHIVE}/33/Cloud/x86_64/images/Fedora-Cloud-Base-33-1.2.x86_64.qcow2"
    )
    assert {d.checksum_format for d in (f43, f40, f33)} == {"fedora-checksum"}


def test_fedora_release_without_a_known_compose_leaves_the_compose_to_fetch() -> None:
    f38 = _resolve("f38")
    assert f38.name == "f38" and f38.osinfo == "http://fedoraproject.org/fedora/38"
    assert (
        f38.image_url
        == f"{FEDORA_ARCHIVE}/38/Cloud/x86_64/images/Fedora-Cloud-Base-38-*.x86_64.qcow2"
    )
    assert f38.checksum_url.endswith("/38/Cloud/x86_64/images/Fedora-Cloud-38-*-x86_64-CHECKSUM")


def test_ubuntu_and_debian_urls_and_checksum_formats() -> None:
    u18, d12 = _resolve("u18.04"), _resolve("d12")
    base = "https://cloud-images.ubuntu.com/releases/18.04/release"
    assert u18.image_url == f"{base}/ubuntu-18.04-server-cloudimg-amd64.img"
    assert (u18.checksum_url, u18.checksum_format) == (f"{base}/SHA256SUMS", "sha256sums")
    base = "https://cloud.debian.org/images/cloud/bookworm/latest"
    assert d12.image_url == f"{base}/debian-12-genericcloud-amd64.qcow2"
    assert (d12.checksum_url, d12.checksum_format) == (f"{base}/SHA512SUMS", "sha512sums")


def test_libosinfo_ids_and_image_names() -> None:
    f43, u24, d12 = _resolve("f43"), _resolve("u24.04"), _resolve("d12")
    assert [d.osinfo for d in (f43, u24, d12)] == [
        "http://fedoraproject.org/fedora/43",
        "http://ubuntu.com/ubuntu/24.04",
        "http://debian.org/debian/12",
    ]
    assert [d.image_filename for d in (f43, u24, d12)] == ["f43.qcow2", "u24.04.qcow2", "d12.qcow2"]


def test_only_debian_releases_the_builder_bootstraps_offer_a_builder() -> None:
    host = PluginHost.discover()
    sections = build_config({}, host.config_sections()).sections
    context = PluginContext(sections=sections, pools=(), state_dir=Path("/nonexistent"), uri="")
    buildable = {
        name
        for name in ("d11", "d12", "d13", "f43", "u24.04")
        if host.image_builder(host.resolve_distro(name), context) is not None
    }
    assert buildable == {"d12", "d13"}


def test_unknown_distro_error_lists_what_the_plugins_know() -> None:
    with pytest.raises(UsageError) as caught:
        PluginHost.discover().resolve_distro("u23.10")
    message = str(caught.value)
    assert "unknown distro 'u23.10'" in message
    for name in ("f43", "u24.04", "d12", "fedora", "ubuntu", "debian"):
        assert name in message
    assert "\n" not in message


def test_images_mirror_config_is_per_family_and_checked() -> None:
    config = build_config({"images": {"mirror": {"fedora": "http://127.0.0.1:8080/f"}}})
    assert config.images.mirror_for("fedora") == "http://127.0.0.1:8080/f"
    assert config.images.mirror_for("debian") is None
    assert build_config({}).images.mirror_for("fedora") is None


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ({"mirror": "http://x"}, "wrong type"),
        ({"mirror": {"fedora": "ftp://x/"}}, "not an http"),
        ({"mirror": {"fedora": 3}}, "wrong type"),
        ({"mirror": {"Fedora!": "http://x/"}}, "not a distro family"),
        ({"mirrors": {"fedora": "http://x/"}}, "unknown key"),
    ],
)
def test_bad_images_config_is_a_usage_error(images: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config({"images": images})

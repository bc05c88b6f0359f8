"""The catalogs follow upstream: refreshed from a local web server that serves Fedora's
releases.json, Ubuntu's simplestreams and Debian's image tree in their real formats, plus
images and checksum files at upstream's paths (through `[images] mirror.FAMILY`).

Covered: a new release becomes the family's name after a refresh; pre-releases never do;
missing, truncated or malformed metadata never replaces a good cached catalog; offline, the
cache and then the built-in tables answer; a release moved to the archive is still fetched
and verified (and the place remembered); metadata that lies about a checksum stops the fetch.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.httpmirror import Mirror
from tests.unit.plugins.test_fedora import releases_json
from tests.unit.plugins.test_ubuntu import product, stream
from vnode import images
from vnode.catalog import cache_path, load_cache
from vnode.config import build_config
from vnode.errors import UsageError
from vnode.session import Session
from vnode_plugins import debian as debian_plugin
from vnode_plugins import fedora as fedora_plugin
from vnode_plugins import ubuntu as ubuntu_plugin

FEDORA_TREE = "/fedora/pub/fedora/linux/releases"
FEDORA_ARCHIVE = "/fedora/pub/archive/fedora/linux/releases"
UBUNTU_STREAM = "/ubuntu/releases/streams/v1/com.ubuntu.cloud:released:download.json"


@pytest.fixture
def site(mirror: Mirror) -> Iterator[Mirror]:
    mirror.clear()
    yield mirror
    mirror.clear()


def _session(tmp_path: Path, base: str, *, auto_refresh: bool = True) -> Session:
    config = build_config(
        {
            "paths": {"state": str(tmp_path / "state"), "image_store": str(tmp_path / "images")},
            "images": {
                "mirror": {f: f"{base}/{f}" for f in ("fedora", "ubuntu", "debian")},
                "auto_refresh": auto_refresh,
            },
        }
    )
    return Session.for_config(config)


def _serve_fedora(site: Mirror, versions: dict[str, str], **kwargs: object) -> None:
    # Links stay upstream's URLs, as in the real file: the mirror setting maps them.
    entries = releases_json(versions, beta=kwargs.pop("beta", None))  # type: ignore[arg-type]
    site.put("/fedora/releases.json", json.dumps(entries), **kwargs)


def _publish_fedora(site: Mirror, tree: str, version: str, compose: str, body: bytes) -> str:
    directory = f"{tree}/{version}/Cloud/x86_64/images"
    name = f"Fedora-Cloud-Base-Generic-{version}-{compose}.x86_64.qcow2"
    digest = hashlib.sha256(body).hexdigest()
    site.put(f"{directory}/{name}", body)
    site.put(
        f"{directory}/Fedora-Cloud-{version}-{compose}-x86_64-CHECKSUM",
        f"# Fedora-Cloud-Base-Generic-{version}-{compose}.x86_64.qcow2: {len(body)} bytes\n"
        f"SHA256 ({name}) = {digest}\n",
    )
    return f"{directory}/{name}"


def _fedora_metadata_for(site: Mirror, body: bytes, version: str = "46") -> None:
    """releases.json whose sha256 for ``version`` is ``body``'s, as upstream's would be."""
    entries = releases_json({version: "1.3", "45": "1.7"})
    for entry in entries:
        if entry["version"] == version and entry["link"].endswith(".qcow2"):
            entry["sha256"] = hashlib.sha256(body).hexdigest()
    site.put("/fedora/releases.json", json.dumps(entries))


# -- new releases, pre-releases -------------------------------------------------------------


def test_a_new_fedora_release_becomes_fedora_after_a_refresh_and_a_beta_never(
    site: Mirror, tmp_path: Path
) -> None:
    session = _session(tmp_path, site.url)
    assert session.plugins.resolve_distro("fedora").name == "f45"  # built-in, before
    _serve_fedora(site, {"46": "1.3", "45": "1.7"}, beta="47")
    outcomes, failures = images.refresh_catalogs(session)
    assert failures == [
        f"debian: {site.url}/debian/images/cloud/: no release directories listed",
        f"ubuntu: {site.url}{UBUNTU_STREAM}: HTTP 404 Not Found",
    ]
    assert [(o.family, o.latest, o.previous) for o in outcomes] == [("fedora", "f46", "f45")]
    assert session.plugins.resolve_distro("fedora").name == "f46"
    with pytest.raises(UsageError, match="unknown distro 'f47'"):
        session.plugins.resolve_distro("f47")
    # Another command (a new session) reads the cache: no network needed.
    later = _session(tmp_path, "http://127.0.0.1:9", auto_refresh=False)
    assert later.plugins.resolve_distro("fedora").image_url == (
        "https://download.fedoraproject.org/pub/fedora/linux/releases/46/Cloud/x86_64/images/"
        "Fedora-Cloud-Base-Generic-46-1.3.x86_64.qcow2"
    )


def test_a_new_ubuntu_lts_becomes_ubuntu_only_once_released(site: Mirror, tmp_path: Path) -> None:
    session = _session(tmp_path, site.url)
    lts = ("26.04", product("26.04", "resolute", {"20261115": "release"}))
    beta = ("28.04", product("28.04", "stoic", {"20280301": "beta"}))
    site.put(UBUNTU_STREAM, json.dumps(stream(lts, beta)))
    images.refresh_catalogs(session)
    assert session.plugins.resolve_distro("ubuntu").name == "u26.04"
    site.put(
        UBUNTU_STREAM,
        json.dumps(stream(lts, ("28.04", product("28.04", "stoic", {"20280423": "release"})))),
    )
    images.refresh_catalogs(session)
    ubuntu = session.plugins.resolve_distro("ubuntu")
    assert (ubuntu.name, ubuntu.title) == ("u28.04", "Ubuntu 28.04 LTS (stoic)")
    assert session.plugins.resolve_distro("stoic") == ubuntu
    assert images.list_images(session)[-2:][0].role == "one-but-last"


def test_debian_releases_come_from_the_image_tree_and_sid_is_not_one(
    site: Mirror, tmp_path: Path
) -> None:
    session = _session(tmp_path, site.url)
    tree = "/debian/images/cloud"
    for codename, number in (("bookworm", "12"), ("trixie", "13"), ("forky", "14")):
        site.put(f"{tree}/{codename}/latest/debian-{number}-genericcloud-amd64.qcow2", b"x")
        site.put(f"{tree}/{codename}/latest/SHA512SUMS", "")
    site.put(f"{tree}/sid/daily/debian-sid-genericcloud-amd64-daily.qcow2", b"x")
    site.put(f"{tree}/sid/latest/debian-sid-genericcloud-amd64.qcow2", b"x")
    images.refresh_catalogs(session)
    debian = session.plugins.resolve_distro("debian")
    assert (debian.name, debian.title) == ("d14", "Debian 14 (forky)")
    assert debian.checksum_url == "https://cloud.debian.org/images/cloud/forky/latest/SHA512SUMS"
    roles = {e.distro: e.role for e in images.list_images(session) if e.family == "debian"}
    # d12-nm and d13-nm are vnode's own builds of those releases, not upstream's.
    assert roles == {"d12": "", "d12-nm": "", "d13": "one-but-last", "d13-nm": "", "d14": "latest"}
    with pytest.raises(UsageError):
        session.plugins.resolve_distro("sid")


# -- bad metadata never replaces a good catalog -----------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("missing", "HTTP 404 Not Found"),
        ("truncated", "truncated"),
        ("malformed", "not valid JSON"),
        ("not-fedora", "expected a list of releases"),
        ("betas-only", "no released x86_64 Cloud Base qcow2"),
    ],
)
def test_bad_metadata_is_a_clear_error_and_keeps_the_cached_catalog(
    site: Mirror, tmp_path: Path, fault: str, message: str
) -> None:
    session = _session(tmp_path, site.url)
    _serve_fedora(site, {"46": "1.3", "45": "1.7"})
    images.refresh_catalogs(session)
    cached = cache_path(session.config.paths.state)
    good = json.loads(cached.read_text())["catalogs"]["fedora"]
    good_body = json.dumps(releases_json({"47": "1.1", "46": "1.3"}))
    if fault == "missing":
        site.remove("/fedora/releases.json")
    elif fault == "truncated":
        site.put("/fedora/releases.json", good_body, mode="truncate", cut=len(good_body) // 2)
    elif fault == "malformed":
        site.put("/fedora/releases.json", "[{'version': 47,")
    elif fault == "not-fedora":
        site.put("/fedora/releases.json", json.dumps({"releases": []}))
    else:
        site.put("/fedora/releases.json", json.dumps(releases_json({}, beta="47")))
    outcomes, failures = images.refresh_catalogs(session)
    assert "fedora" not in {o.family for o in outcomes}
    [fedora_failure] = [f for f in failures if f.startswith("fedora: ")]
    assert message in fedora_failure and "releases.json" in fedora_failure
    assert json.loads(cached.read_text())["catalogs"]["fedora"] == good
    assert session.plugins.resolve_distro("fedora").name == "f46"


def test_offline_the_cache_answers_then_the_built_in_table(site: Mirror, tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on: "offline", on this machine
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    fresh = _session(tmp_path / "fresh", dead)
    outcomes, failures = images.refresh_catalogs(fresh)
    assert outcomes == [] and len(failures) == 3
    assert all("Connection refused" in line for line in failures)
    assert fresh.plugins.resolve_distro("fedora").name == "f45"  # the built-in table

    _serve_fedora(site, {"46": "1.3", "45": "1.7"})
    images.refresh_catalogs(_session(tmp_path, site.url))
    offline = _session(tmp_path, dead)
    images.refresh_catalogs(offline)
    assert offline.plugins.resolve_distro("fedora").name == "f46"  # the cache


def test_an_unknown_name_refreshes_once_unless_auto_refresh_is_off(
    site: Mirror, tmp_path: Path
) -> None:
    _serve_fedora(site, {"46": "1.3", "45": "1.7"})
    manual = _session(tmp_path / "manual", site.url, auto_refresh=False)
    with pytest.raises(UsageError, match="unknown distro 'f46'"):
        images.resolve_distro("f46", manual)
    assert site.requests_for("/fedora/releases.json") == []
    automatic = _session(tmp_path, site.url)
    assert images.resolve_distro("f46", automatic).name == "f46"
    assert len(site.requests_for("/fedora/releases.json")) == 1
    with pytest.raises(UsageError, match="unknown distro 'f48'"):
        images.resolve_distro("f48", automatic)  # tried within the hour: not again
    assert len(site.requests_for("/fedora/releases.json")) == 1


# -- fetching: mirror <-> archive, the metadata's checksum ---------------------------------


def test_a_release_moved_to_the_archive_is_fetched_verified_and_the_place_remembered(
    site: Mirror, tmp_path: Path, blobs: dict[str, bytes]
) -> None:
    session = _session(tmp_path, site.url)
    _fedora_metadata_for(site, blobs["a"])
    images.refresh_catalogs(session)
    # The metadata still says "on the mirrors"; the file is in the archive already.
    image = _publish_fedora(site, FEDORA_ARCHIVE, "46", "1.3", blobs["a"])
    [outcome] = images.fetch_images(["fedora"], session)
    assert (outcome.distro, outcome.state, outcome.detail) == ("f46", "fetched", None)
    assert (tmp_path / "images/f46.qcow2").read_bytes() == blobs["a"]
    record = json.loads(images.record_path(tmp_path / "images/f46.qcow2").read_text())
    assert record["status"] == "verified" and record["source"] == site.url + image
    archive_checksum = (
        "https://archives.fedoraproject.org/pub/archive/fedora/linux/releases/46/"
        "Cloud/x86_64/images/Fedora-Cloud-46-1.3-x86_64-CHECKSUM"
    )
    assert load_cache(session.config.paths.state).places == {"f46": archive_checksum}
    shown = images.show_image("f46", session)
    assert shown.checksum_url == site.url + "/fedora" + archive_checksum.split(".org", 1)[1]
    mirror_checksum = f"{FEDORA_TREE}/46/Cloud/x86_64/images/Fedora-Cloud-46-1.3-x86_64-CHECKSUM"
    asked = len(site.requests_for(mirror_checksum))
    images.fetch_images(["f46"], session, force=True)
    assert len(site.requests_for(mirror_checksum)) == asked  # the archive is asked first now


def test_metadata_that_lies_about_the_checksum_stops_the_fetch_and_keeps_the_image(
    site: Mirror, tmp_path: Path, blobs: dict[str, bytes]
) -> None:
    session = _session(tmp_path, site.url)
    _fedora_metadata_for(site, blobs["a"])
    images.refresh_catalogs(session)
    image = _publish_fedora(site, FEDORA_TREE, "46", "1.3", blobs["a"])
    assert images.fetch_images(["f46"], session)[0].state == "fetched"
    # Upstream's metadata now names another image than the checksum file vouches for.
    _fedora_metadata_for(site, blobs["b"])
    images.refresh_catalogs(session)
    [outcome] = images.fetch_images(["f46"], session, force=True)
    assert outcome.state == "failed"
    assert "the release metadata" in outcome.detail and "nothing was downloaded" in outcome.detail
    assert (tmp_path / "images/f46.qcow2").read_bytes() == blobs["a"]
    assert len(site.requests_for(image)) == 1  # only the first, good download


def test_show_names_the_exact_urls_on_the_users_mirror_without_downloading(
    site: Mirror, tmp_path: Path
) -> None:
    session = _session(tmp_path, site.url, auto_refresh=False)
    shown = images.show_image("u26.04", session)
    base = f"{site.url}/ubuntu/releases/26.04/release"
    assert (shown.image_url, shown.checksum_url) == (
        f"{base}/ubuntu-26.04-server-cloudimg-amd64.img",
        f"{base}/SHA256SUMS",
    )
    assert (shown.checksum_format, shown.image_format, shown.role) == (
        "sha256sums",
        "qcow2",
        "latest",
    )
    f42 = images.show_image("f42", session)
    assert f42.image_url.startswith(f"{site.url}/fedora/pub/archive/fedora/linux/releases/42/")
    assert f42.alternates[0]["checksum_url"].startswith(f"{site.url}{FEDORA_TREE}/42/")
    assert site.log == []


def test_a_refresh_past_its_deadline_reads_nothing_more(site: Mirror) -> None:
    import time

    from vnode.catalog import CatalogError, MetadataReader

    site.put("/fedora/releases.json", "[]")
    late = MetadataReader(mirrors={"fedora": f"{site.url}/fedora"}, deadline=time.monotonic())
    with pytest.raises(CatalogError, match="ran out of time"):
        late.json("fedora", "https://fedoraproject.org/releases.json")
    assert site.requests_for("/fedora/releases.json") == []


# -- family aliases follow a catalog no older than catalog_max_age_days ---------------------


def _age_cache(session: Session, days: int) -> None:
    """Make the cached catalogs and the last refresh attempt ``days`` old, as a host that has
    not refreshed since would have them."""
    path = cache_path(session.config.paths.state)
    data = json.loads(path.read_text())
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days, hours=1)
    then = then.isoformat()
    for table in data["catalogs"].values():
        table["fetched"] = then
    data["last_attempt"] = then
    path.write_text(json.dumps(data))


def test_a_family_alias_refreshes_a_stale_catalog_first_and_a_fresh_one_never(
    site: Mirror, tmp_path: Path
) -> None:
    _serve_fedora(site, {"46": "1.3", "45": "1.7"})
    images.refresh_catalogs(_session(tmp_path, site.url))
    _serve_fedora(site, {"47": "1.1", "46": "1.3"})
    fresh = _session(tmp_path, site.url)
    assert images.resolve_distro("fedora", fresh).name == "f46"  # a day-old cache: not asked
    assert len(site.requests_for("/fedora/releases.json")) == 1
    assert images.resolve_distro("f45", fresh).name == "f45"  # a release name never moves

    _age_cache(fresh, days=8)
    stale = _session(tmp_path, site.url)
    assert images.resolve_distro("fedora", stale).name == "f47"
    assert images.resolve_distro("fedora~1", stale).name == "f46"
    assert images.resolve_distro("latest-fedora", stale).name == "f47"
    assert len(site.requests_for("/fedora/releases.json")) == 2  # once for the whole command


def test_a_download_resolves_against_a_fresh_catalog_and_fetches_what_it_resolved(
    site: Mirror, tmp_path: Path, blobs: dict[str, bytes]
) -> None:
    _serve_fedora(site, {"46": "1.3", "45": "1.7"})
    images.refresh_catalogs(_session(tmp_path, site.url))
    _age_cache(_session(tmp_path, site.url), days=30)
    _fedora_metadata_for(site, blobs["a"], version="47")
    _publish_fedora(site, FEDORA_TREE, "47", "1.3", blobs["a"])
    session = _session(tmp_path, site.url)
    # `up --fetch` plans with resolve_distro, then downloads exactly the planned releases.
    planned = images.resolve_distro("fedora", session)
    images.ensure_images([planned], session)
    assert planned.name == "f47"
    assert (tmp_path / "images/f47.qcow2").read_bytes() == blobs["a"]
    assert len(site.requests_for("/fedora/releases.json")) == 2


def test_offline_a_stale_alias_answers_from_the_cache_and_says_once_how_old(
    site: Mirror, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _serve_fedora(site, {"46": "1.3", "45": "1.7"})
    images.refresh_catalogs(_session(tmp_path, site.url))
    site.remove("/fedora/releases.json")
    _age_cache(_session(tmp_path, site.url), days=9)
    offline = _session(tmp_path, site.url)
    with caplog.at_level(logging.WARNING, logger="vnode"):
        names = [images.resolve_distro(n, offline).name for n in ("fedora", "fedora", "f45")]
    assert names == ["f46", "f46", "f45"]
    assert [r.getMessage() for r in caplog.records] == [
        "the fedora catalog is 9 days old: `fedora` means f46 fix=vnode images refresh"
    ]


def test_with_auto_refresh_off_a_stale_alias_is_never_refreshed(
    site: Mirror, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _serve_fedora(site, {"46": "1.3", "45": "1.7"})
    manual = _session(tmp_path, site.url, auto_refresh=False)
    images.refresh_catalogs(manual)
    _age_cache(manual, days=8)
    with caplog.at_level(logging.WARNING, logger="vnode"):
        assert (
            images.resolve_distro("fedora~1", _session(tmp_path, site.url, auto_refresh=False)).name
            == "f45"
        )
    assert len(site.requests_for("/fedora/releases.json")) == 1
    assert "8 days old: `fedora~1` means f45" in caplog.text


# -- the built-in tables are current ---------------------------------------------------------

# How often each family releases, and how long after a release is due the table may go on
# without it: past that, the table is a release behind.
CADENCE = {"fedora": (183, 60), "ubuntu": (730, 60), "debian": (730, 120)}


def _release_number(distro_name: str) -> float:
    return float(distro_name.lstrip("fud"))


@pytest.mark.parametrize("plugin", [fedora_plugin, ubuntu_plugin, debian_plugin])
def test_a_built_in_table_is_never_more_than_one_release_behind(plugin: object) -> None:
    built_in = plugin.BUILT_IN
    # What this host's cached metadata says (a developer's host that refreshed, a Fedora host):
    # upstream's latest may be one release ahead of the table, never two.
    cached = load_cache(Path("/var/lib/vnode")).catalogs.get(built_in.family)
    if cached is not None:
        newer = [
            d.name
            for d in cached.releases
            if _release_number(d.name) > _release_number(built_in.latest) and not d.end_of_life
        ]
        assert len(newer) <= 1, f"{built_in.family}'s built-in table lacks {newer}"
    # And by the calendar, on a host that never refreshed (CI): this fails on the day the next
    # release is overdue in the table.
    every, grace = CADENCE[built_in.family]
    due = datetime.date.fromisoformat(plugin.LATEST_RELEASED) + datetime.timedelta(every + grace)
    assert datetime.date.today() <= due, (
        f"{built_in.family}: the built-in table's latest, {built_in.latest}, was released on "
        f"{plugin.LATEST_RELEASED}; its successor is due: add it to the table"
    )
    assert built_in.age() is not None and built_in.previous is not None


def test_a_family_of_more_releases_than_believable_is_refused() -> None:
    from vnode.catalog import MAX_RELEASES, CatalogError, catalog
    from vnode.model import Distro

    def releases(count: int) -> Iterator[Distro]:
        for n in range(count):
            yield Distro(name=f"x{n}", family="x", release=str(n), title="x", osinfo="x")

    assert len(catalog("x", "x0", releases(MAX_RELEASES)).releases) == MAX_RELEASES
    with pytest.raises(CatalogError, match="more than"):
        catalog("x", "x0", releases(10**9))  # never built whole


def test_a_debian_tree_listing_thousands_of_codenames_is_refused(mirror: Mirror) -> None:
    from vnode.catalog import CatalogError, MetadataReader
    from vnode_plugins import debian

    mirror.clear()
    for n in range(500):  # each would be one more request
        mirror.put(f"/debian/images/cloud/name{chr(97 + n % 26)}{chr(97 + n // 26)}/x", "")
    reader = MetadataReader(mirrors={"debian": f"{mirror.url}/debian"})
    try:
        with pytest.raises(CatalogError, match="500 release directories"):
            debian.read_image_tree(reader)
        assert len(mirror.log) == 1
    finally:
        mirror.clear()


def _good_cache(tmp_path: Path, site: Mirror) -> dict:
    """A catalog.json as a refresh writes it (Fedora's, from the local server)."""
    _serve_fedora(site, {"45": "1.3", "44": "1.7"})
    session = _session(tmp_path, site.url)
    images.refresh_catalogs(session)
    return json.loads(cache_path(tmp_path / "state").read_text())


@pytest.mark.parametrize(
    "damage",
    ["not json", "one", "bad date", "bad attempt", "escaping name", "escaping file", "family"],
)
def test_a_corrupt_catalog_cache_is_named_once_and_the_built_in_tables_answer(
    tmp_path: Path, site: Mirror, damage: str
) -> None:
    data = _good_cache(tmp_path, site)
    fedora = data["catalogs"]["fedora"]
    path = cache_path(tmp_path / "state")
    if damage == "not json":
        text = "{truncated"
    elif damage == "one":
        text = "1"
    else:
        if damage == "bad date":
            fedora["fetched"] = "yesterday"
        elif damage == "bad attempt":
            data["last_attempt"] = "never"
        elif damage == "escaping name":
            fedora["releases"][0]["name"] = "../../x"
        elif damage == "escaping file":
            fedora["releases"][0]["image_file"] = "../../../etc/shadow"
        else:
            data["catalogs"]["ubuntu"] = fedora
        text = json.dumps(data)
    path.write_text(text)
    assert load_cache(tmp_path / "state").catalogs == {}
    session = _session(tmp_path, site.url, auto_refresh=False)
    assert images.resolve_distro("f44", session).name == "f44"  # the built-in table
    for entry in images.list_images(session):
        assert entry.path.parent == tmp_path / "images"

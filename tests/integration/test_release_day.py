"""Release day: upstream publishes a new Fedora, and `fedora` follows it.

A local mirror (`[images] mirror.fedora`, a web server on 127.0.0.1) plays Fedora's site:
first Fedora 45 is latest, then Fedora 46. With a catalog older than
`[images] catalog_max_age_days`, the commands that resolve `fedora` refresh first, and
`up --fetch` downloads the release it planned; offline, the cached catalog answers and says
once how old it is. No Fedora guest boots here: a blank image stands in for Fedora 46's (with
--no-wait, `up` returns once the domain runs).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import uuid
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.httpmirror import Mirror
from tests.integration.test_images import Store, _domain_exists
from tests.unit.plugins.test_fedora import releases_json

pytestmark = pytest.mark.integration

TREE = "/fedora/pub/fedora/linux/releases"


@pytest.fixture
def fedora_store(lab: Lab, mirror: Mirror) -> Store:
    """The module's lab, its default distro left as shipped (`fedora`), catalogs refreshed
    from the test mirror, and an image store of its own."""
    images = lab.state / f"images-{uuid.uuid4().hex[:6]}"
    text = lab.config_path.read_text()
    text = re.sub(r"(?m)^image_store = .*$", f'image_store = "{images}"', text)
    text = re.sub(r"(?m)^distro = .*\n", "", text)
    text = re.sub(
        r"(?m)^auto_refresh = .*$",
        f'auto_refresh = true\ncatalog_max_age_days = 7\nmirror.fedora = "{mirror.url}/fedora"\n'
        f'mirror.ubuntu = "{mirror.url}/ubuntu"\nmirror.debian = "{mirror.url}/debian/"',
        text,
    )
    config = lab.state / f"release-day-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(text)
    return Store(config=config, images=images)


def _publish_releases(mirror: Mirror, versions: dict[str, str], image: bytes) -> None:
    """releases.json listing ``versions`` (newest first), the newest one's sha256 that of
    ``image``; the newest one's image and CHECKSUM file served where its link points."""
    entries = releases_json(versions)
    newest, compose = next(iter(versions.items()))
    name = f"Fedora-Cloud-Base-Generic-{newest}-{compose}.x86_64.qcow2"
    digest = hashlib.sha256(image).hexdigest()
    for entry in entries:
        if entry["version"] == newest and entry["link"].endswith(".qcow2"):
            entry["sha256"] = digest
    directory = f"{TREE}/{newest}/Cloud/x86_64/images"
    mirror.put(f"{directory}/{name}", image)
    mirror.put(
        f"{directory}/Fedora-Cloud-{newest}-{compose}-x86_64-CHECKSUM",
        f"SHA256 ({name}) = {digest}\n",
    )
    mirror.put("/fedora/releases.json", json.dumps(entries))


def _age_catalog(state: Path, days: int) -> None:
    path = state / "catalog.json"
    data = json.loads(path.read_text())
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days, hours=1)
    for table in data["catalogs"].values():
        table["fetched"] = then.isoformat()
    data["last_attempt"] = then.isoformat()
    path.write_text(json.dumps(data))


def _roles(store: Store) -> dict[str, str]:
    listed = json.loads(store.run("images", "list", "--json").stdout)
    wanted = ("latest", "one-but-last")
    return {
        e["distro"]: e["role"] for e in listed if e["family"] == "fedora" and e["role"] in wanted
    }


def test_fedora_follows_upstream_on_release_day(
    lab: Lab, fedora_store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    mirror.clear()
    node = lab.name(3)
    _publish_releases(mirror, {"45": "1.3", "44": "1.7"}, blobs["b"])
    fedora_store.run("images", "refresh")  # ubuntu's and debian's metadata are not served
    assert _roles(fedora_store) == {"f45": "latest", "f44": "one-but-last"}

    # Fedora 46 is out; a catalog refreshed today does not ask again.
    _publish_releases(mirror, {"46": "1.2", "45": "1.3"}, blobs["a"])
    planned = fedora_store.run("up", "3", "--no-wait")
    assert planned.returncode == 1 and "no image for f45" in planned.stderr
    assert len(mirror.requests_for("/fedora/releases.json")) == 1

    # A week later `fedora` is f46: the plan refreshed the catalog before resolving it.
    _age_catalog(lab.state, days=8)
    planned = fedora_store.run("up", "3", "--no-wait")
    assert (planned.returncode, planned.stderr.strip().splitlines()[-1]) == (
        1,
        f"vnode: no image for f46 at {fedora_store.image('f46')}: run `vnode images fetch f46`"
        " (or `vnode up --fetch`)",
    )
    assert len(mirror.requests_for("/fedora/releases.json")) == 2
    assert not _domain_exists(node)
    assert _roles(fedora_store) == {"f46": "latest", "f45": "one-but-last"}
    shown = json.loads(fedora_store.run("images", "show", "fedora~1", "--json").stdout)
    assert (shown["distro"], shown["role"]) == ("f45", "one-but-last")

    # One command, one answer: `up --fetch` downloads the release it planned, and boots it.
    _age_catalog(lab.state, days=8)
    started = fedora_store.run("up", "3", "--no-wait", "--fetch", "--json")
    try:
        assert started.returncode == 0, started.stderr
        [result] = json.loads(started.stdout)
        assert (result["name"], result["state"], result["distro"]) == (node, "started", "f46")
        assert fedora_store.record("f46")["status"] == "verified"
        assert fedora_store.image("f46").read_bytes() == blobs["a"]
        # What vnode prints on stderr is its own (progress, its one-liners): no library's
        # warnings.
        own = re.compile(r"\[ *\d+\.\ds\] [\w.~-]+: |vnode: ")
        assert all(own.match(line) for line in started.stderr.splitlines()), started.stderr
    finally:
        assert fedora_store.run("destroy", "3").returncode == 0

    # Offline (the metadata is gone) a week later: the cache answers, and says so once.
    mirror.remove("/fedora/releases.json")
    _age_catalog(lab.state, days=9)
    offline = fedora_store.run("up", "3:fedora", "4:fedora~1", "5:fedora", "--no-wait")
    assert offline.returncode == 1 and "no image for f45" in offline.stderr
    stale = [line for line in offline.stderr.splitlines() if "catalog is" in line]
    assert len(stale) == 1 and "the fedora catalog is 9 days old" in stale[0], offline.stderr
    assert not _domain_exists(lab.name(4)) and not _domain_exists(node)

"""`vnode images fetch/import/list` and `up --fetch`, against a real HTTP server on 127.0.0.1.

The server serves small qcow2 (and raw) images and checksum files in the distros' own formats
(Fedora CHECKSUM, Ubuntu SHA256SUMS, Debian SHA512SUMS) under the upstream paths, reached
through the `[images] mirror.FAMILY` override; it honours Range requests and logs each one, and
can corrupt, truncate or interrupt a transfer, or ignore Range. Each test has its own
temporary image store: the real one is never touched, and nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import pytest

from tests.conftest import REPO, VNODE, Lab
from tests.httpmirror import Logged, Mirror
from tests.signing import LocalKey
from vnode import images
from vnode.config import build_config
from vnode.errors import UsageError
from vnode.hookspecs import hookimpl
from vnode.model import Distro, ImageBuilder, PluginContext
from vnode.plugins import PluginHost, PluginSource, entry_point_sources
from vnode.session import Session

pytestmark = pytest.mark.integration

QCOW2_MAGIC = b"QFI\xfb"
SIGNATURE = """-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEEv3KqcNkSlTOiAnOsqLkSlH3nWl0FAmcAAAAACgkQqLkSlH3n
=abcd
-----END PGP SIGNATURE-----
"""


@attrs.frozen
class Store:
    config: Path
    images: Path

    def run(self, *args: str, argv: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "VNODE_CONFIG": str(self.config)}
        return subprocess.run(
            [*(argv or VNODE), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def image(self, name: str) -> Path:
        return self.images / f"{name}.qcow2"

    def record(self, name: str) -> dict:
        return json.loads(images.record_path(self.images / f"{name}.qcow2").read_text())


def _write_config(path: Path, state: Path, images: Path, mirror: Mirror, extra: str = "") -> None:
    path.write_text(
        f"""{extra}
[paths]
state = "{state}"
image_store = "{images}"

[images]
mirror.fedora = "{mirror.url}/fedora"
mirror.ubuntu = "{mirror.url}/ubuntu"
mirror.debian = "{mirror.url}/debian/"
"""
    )


@pytest.fixture
def store(tmp_path: Path, mirror: Mirror) -> Store:
    config = tmp_path / "config.toml"
    _write_config(config, tmp_path / "state", tmp_path / "images", mirror)
    return Store(config=config, images=tmp_path / "images")


def _served_path(family: str, url: str) -> str:
    return f"/{family}{urlsplit(url).path}"


def publish(
    mirror: Mirror,
    name: str,
    body: bytes,
    *,
    listed: bytes | None = None,
    compose: str = "1.6",
    key: LocalKey | None = None,
    **how: object,
) -> str:
    """Serve ``name``'s image and its checksum file (vouching for ``listed``, default ``body``)
    in the family's format, signed by ``key`` as the family signs (a Fedora CHECKSUM with a
    placeholder armour when no key is given); returns the image's path on the server."""
    distro = PluginHost.discover().resolve_distro(name)
    image_path = _served_path(distro.family, distro.image_url).replace("*", compose)
    checksum_path = _served_path(distro.family, distro.checksum_url).replace("*", compose)
    image = image_path.rsplit("/", 1)[1]
    vouched = listed if listed is not None else body
    decoy = b"some other artifact"
    if distro.checksum_format == "fedora-checksum":
        digest = hashlib.sha256(vouched).hexdigest()
        text = (
            f"# {image}: {len(vouched)} bytes\nSHA256 ({image}) = {digest}\n"
            f"SHA256 ({image.replace('.qcow2', '.raw.xz')}) = {hashlib.sha256(decoy).hexdigest()}\n"
            f"SHA256 (Fedora-Cloud-Base-Vagrant-libvirt-{name}.vagrant-libvirt.box) = "
            f"{hashlib.sha256(decoy).hexdigest()}\n"
        )
        if key is None:
            text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + text + SIGNATURE
        else:
            text = key.clearsign(text)
    elif distro.checksum_format == "sha256sums":
        text = (
            f"{hashlib.sha256(decoy).hexdigest()} *other-cloudimg-amd64.tar.gz\n"
            f"{hashlib.sha256(vouched).hexdigest()} *{image}\n"
        )
    else:
        text = (
            f"{hashlib.sha512(vouched).hexdigest()}  {image}\n"
            f"{hashlib.sha512(decoy).hexdigest()}  {image.replace('.qcow2', '.raw')}\n"
        )
    mirror.put(checksum_path, text)
    if distro.signature not in (None, "clearsigned"):
        if key is None:
            mirror.remove(checksum_path + distro.signature)
        else:
            mirror.put(checksum_path + distro.signature, key.detach_sign(text.encode()))
    mirror.put(image_path, body, **how)
    return image_path


def _no_leftovers(store: Store) -> None:
    assert not list(store.images.glob("*.part")), "a .part file was left behind"
    assert not list(store.images.glob("*.tmp")) and not list(store.images.glob("*.import"))


# --- fetch -------------------------------------------------------------------------------------


def test_fetch_downloads_every_family_in_parallel_and_verifies(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    paths = {name: publish(mirror, name, blobs["a"]) for name in ("f43", "u24.04", "d12")}
    script = [str(REPO / "images" / "fetch-images")]
    result = store.run("f43", "u24.04", "d12", argv=script)
    assert result.returncode == 0, result.stderr
    assert "downloading" in result.stderr and "verified" in result.stderr  # progress on stderr
    assert store.images.stat().st_mode & 0o777 == 0o755
    expected_algorithm = {"f43": "sha256", "u24.04": "sha256", "d12": "sha512"}
    for name, path in paths.items():
        assert f"{name}: fetched at {store.image(name)}" in result.stdout
        assert store.image(name).read_bytes() == blobs["a"]
        assert store.image(name).stat().st_mode & 0o777 == 0o644
        record = store.record(name)
        assert record["status"] == "verified"
        assert record["source"] == mirror.url + path
        assert record["sha256"] == hashlib.sha256(blobs["a"]).hexdigest()
        assert record["source_checksum"]["algorithm"] == expected_algorithm[name]
        assert mirror.requests_for(path) == [Logged(path, None, 200)]
    _no_leftovers(store)
    listed = json.loads(store.run("images", "list", "--json").stdout)
    status = {entry["distro"]: entry["status"] for entry in listed}
    # No distro key is on this host: the checksums were verified, no signature was.
    assert status["f43"] == status["u24.04"] == status["d12"] == "unsigned"
    assert status["f42"] == "-"

    again = store.run("images", "fetch", "f43")
    assert again.returncode == 0 and "f43: present" in again.stdout
    assert len(mirror.requests_for(paths["f43"])) == 1  # present images are not downloaded


def test_fedora_release_without_a_known_compose_is_found_through_its_index(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    path = publish(mirror, "f38", blobs["a"], compose="1.6")
    assert path.endswith("/38/Cloud/x86_64/images/Fedora-Cloud-Base-38-1.6.x86_64.qcow2")
    result = store.run("images", "fetch", "f38")
    assert result.returncode == 0, result.stderr
    assert store.image("f38").read_bytes() == blobs["a"]
    record = store.record("f38")
    assert record["source"].endswith("/Fedora-Cloud-Base-38-1.6.x86_64.qcow2")
    assert record["source_checksum"]["checksum_url"].endswith(
        "/Fedora-Cloud-38-1.6-x86_64-CHECKSUM"
    )


def test_refresh_and_show_through_the_command_line(store: Store, mirror: Mirror) -> None:
    from tests.unit.plugins.test_fedora import releases_json

    mirror.clear()  # other tests' images would make a Debian tree
    mirror.put("/fedora/releases.json", json.dumps(releases_json({"45": "1.3", "44": "1.7"})))
    refreshed = store.run("images", "refresh")
    assert refreshed.returncode == 1  # ubuntu's and debian's metadata are not served here
    assert refreshed.stdout.splitlines() == [
        f"fedora: latest f45, one-but-last f44 (18 releases, {mirror.url}/fedora/releases.json)"
    ]
    failed = refreshed.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in failed] == [
        "refresh failed, cached catalog kept"
    ] * 2
    shown = json.loads(store.run("images", "show", "fedora", "--json").stdout)
    base = f"{mirror.url}/fedora/pub/fedora/linux/releases/45/Cloud/x86_64/images"
    assert (shown["distro"], shown["role"], shown["image_format"]) == ("f45", "latest", "qcow2")
    assert shown["image_url"] == f"{base}/Fedora-Cloud-Base-Generic-45-1.3.x86_64.qcow2"
    assert shown["checksum_url"] == f"{base}/Fedora-Cloud-45-1.3-x86_64-CHECKSUM"
    listed = json.loads(store.run("images", "list", "--json").stdout)
    roles = {e["distro"]: e["role"] for e in listed if e["family"] == "fedora"}
    assert (roles["f45"], roles["f44"], roles["f43"]) == ("latest", "one-but-last", "end of life")
    bad = store.run("images", "show", "f99")
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1)
    mirror.remove("/fedora/releases.json")


def test_a_corrupted_body_never_replaces_a_good_image(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    publish(mirror, "u22.04", blobs["a"])
    assert store.run("images", "fetch", "u22.04").returncode == 0
    corrupted = bytearray(blobs["b"])
    corrupted[len(corrupted) // 2] ^= 0xFF
    publish(mirror, "u22.04", bytes(corrupted), listed=blobs["b"])
    result = store.run("images", "fetch", "--force", "u22.04")
    assert result.returncode == 1
    failure = [line for line in result.stderr.splitlines() if line.startswith("vnode:")]
    assert len(failure) == 1 and "sha256 mismatch" in failure[0], result.stderr
    assert store.image("u22.04").read_bytes() == blobs["a"]  # the good image stays
    assert store.record("u22.04")["sha256"] == hashlib.sha256(blobs["a"]).hexdigest()
    _no_leftovers(store)


def test_an_image_the_checksum_file_does_not_vouch_for_is_refused(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    publish(mirror, "d11", blobs["a"], listed=blobs["b"])
    result = store.run("images", "fetch", "d11")
    assert result.returncode == 1
    assert "sha512 mismatch" in result.stderr and "discarded" in result.stderr
    assert not store.image("d11").exists()
    _no_leftovers(store)


def test_a_truncated_transfer_is_kept_for_resume_and_never_used(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    cut = len(blobs["a"]) // 2
    path = publish(mirror, "f42", blobs["a"], mode="truncate", cut=cut)
    result = store.run("images", "fetch", "f42")
    assert result.returncode == 1
    assert f"transfer ended at {cut} of {len(blobs['a'])} bytes" in result.stderr
    assert not store.image("f42").exists()
    part = store.images / "f42.qcow2.part"
    assert part.read_bytes() == blobs["a"][:cut]

    # The next run resumes where the last one stopped, with a Range request.
    publish(mirror, "f42", blobs["a"])
    result = store.run("images", "fetch", "f42")
    assert result.returncode == 0, result.stderr
    assert mirror.requests_for(path)[-1] == Logged(path, f"bytes={cut}-", 206)
    assert store.image("f42").read_bytes() == blobs["a"]
    _no_leftovers(store)


def test_an_interrupted_transfer_resumes_with_a_range_request(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    cut = len(blobs["a"]) // 3
    path = publish(mirror, "u20.04", blobs["a"], mode="interrupt-once", cut=cut)
    result = store.run("images", "fetch", "u20.04")
    assert result.returncode == 0, result.stderr
    assert "interrupted" in result.stderr
    assert mirror.requests_for(path) == [
        Logged(path, None, 200),
        Logged(path, f"bytes={cut}-", 206),
    ]
    assert store.image("u20.04").read_bytes() == blobs["a"]
    assert store.record("u20.04")["status"] == "verified"


def test_ctrl_c_during_a_fetch_stops_it_with_one_line_and_the_store_unchanged(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    # Padding after the qcow2 data keeps it a valid image that takes a minute at this rate.
    body = blobs["a"] + bytes(8 * 1024 * 1024)
    path = publish(mirror, "u22.04", body, mode="slow", cut=64 * 1024)
    process = subprocess.Popen(
        [*VNODE, "images", "fetch", "u22.04"],
        env={**os.environ, "VNODE_CONFIG": str(store.config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal's foreground job, whatever this test runs under (a script's background
        # job has SIGINT ignored, and then Ctrl-C never reaches it).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # interrupt only once the transfer is under way
        seen.append(line)
        if "downloading" in line:
            break
    assert mirror.requests_for(path), f"the download never started: {seen}"
    part = store.images / "u22.04.qcow2.part"
    deadline = time.monotonic() + 60
    while (not part.exists() or part.stat().st_size < 64 * 1024) and time.monotonic() < deadline:
        time.sleep(0.05)  # the fast first part has come; the rest trickles for minutes
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=30)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "vnode: interrupted", stderr
    assert lines[-2].endswith("u22.04: stopped"), stderr
    assert not store.image("u22.04").exists()
    # What came is kept for the next fetch to resume from.
    assert part.stat().st_size >= 64 * 1024


def test_kill_9_during_a_fetch_leaves_a_part_the_next_fetch_resumes(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    body = blobs["a"] + bytes(8 * 1024 * 1024)
    path = publish(mirror, "u26.04", body, mode="slow", cut=64 * 1024)
    process = subprocess.Popen(
        [*VNODE, "images", "fetch", "u26.04"],
        env={**os.environ, "VNODE_CONFIG": str(store.config)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    part = store.images / "u26.04.qcow2.part"
    deadline = time.monotonic() + 60
    while (not part.exists() or part.stat().st_size < 64 * 1024) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    kept = part.stat().st_size
    assert kept >= 64 * 1024 and not store.image("u26.04").exists()
    listed = store.run("images", "list", "--json")
    assert listed.returncode == 0
    assert {e["distro"]: e["status"] for e in json.loads(listed.stdout)}["u26.04"] == "-"
    # The lock died with the process; the next fetch resumes, and verifies the whole.
    publish(mirror, "u26.04", body)
    result = store.run("images", "fetch", "u26.04")
    assert result.returncode == 0, result.stderr
    assert mirror.requests_for(path)[-1] == Logged(path, f"bytes={kept}-", 206)
    assert store.image("u26.04").read_bytes() == body
    _no_leftovers(store)


def test_a_server_ignoring_range_gets_a_clean_restart(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    path = publish(mirror, "u18.04", blobs["a"], mode="ignore-range")
    store.images.mkdir(parents=True)
    (store.images / "u18.04.qcow2.part").write_bytes(b"x" * 1000)
    result = store.run("images", "fetch", "u18.04")
    assert result.returncode == 0, result.stderr
    assert "ignored the range" in result.stderr
    assert mirror.requests_for(path) == [Logged(path, "bytes=1000-", 200)]
    assert store.image("u18.04").read_bytes() == blobs["a"]


def test_a_stale_part_of_another_upload_is_downloaded_again_whole(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    path = publish(mirror, "d13", blobs["a"])
    store.images.mkdir(parents=True)
    stale = blobs["b"][: len(blobs["a"]) // 2]
    (store.images / "d13.qcow2.part").write_bytes(stale)
    result = store.run("images", "fetch", "d13")
    assert result.returncode == 0, result.stderr
    assert mirror.requests_for(path) == [
        Logged(path, f"bytes={len(stale)}-", 206),
        Logged(path, None, 200),
    ]
    assert store.image("d13").read_bytes() == blobs["a"]


def test_a_raw_download_is_converted_to_qcow2(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    publish(mirror, "d12", blobs["raw"])
    result = store.run("images", "fetch", "d12")
    assert result.returncode == 0, result.stderr
    assert "converting raw to qcow2" in result.stderr
    assert store.image("d12").read_bytes()[:4] == QCOW2_MAGIC
    assert _virtual_size(store.image("d12")) == len(blobs["raw"])
    record = store.record("d12")
    assert record["status"] == "verified" and record["converted_from"] == "raw"
    assert record["source_checksum"]["hexdigest"] == hashlib.sha512(blobs["raw"]).hexdigest()
    _no_leftovers(store)


def test_bad_fetch_requests_exit_2_with_one_line(store: Store) -> None:
    for args in (("images", "fetch", "nosuch"), ("images", "fetch")):
        result = store.run(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "known:" in store.run("images", "fetch", "u23.10").stderr


# --- signatures, every digest, no downgrade ---------------------------------------------------


@pytest.fixture
def signed_store(tmp_path: Path, mirror: Mirror, signing_key: LocalKey) -> Store:
    """A store whose config names the test key as every family's signing key (as a user
    would name a distro's key file on a host without its key package)."""
    base = tmp_path / "signed"  # beside the `store` fixture's, not instead of it
    base.mkdir()
    config = base / "config.toml"
    _write_config(config, base / "state", base / "images", mirror)
    with config.open("a") as handle:
        handle.write(
            f'keyring.fedora = "{signing_key.public}"\n'  # armoured, as RPM-GPG-KEY files
            f'keyring.ubuntu = "{signing_key.public_binary}"\n'
            f'keyring.debian = "{signing_key.public_binary}"\n'
        )
    return Store(config=config, images=base / "images")


def _failure(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("vnode:")]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    return lines[0]


def test_signed_checksum_files_are_verified_and_listed_as_signed(
    signed_store: Store, mirror: Mirror, blobs: dict[str, bytes], signing_key: LocalKey
) -> None:
    paths = {n: publish(mirror, n, blobs["a"], key=signing_key) for n in ("f41", "u24.04", "d11")}
    result = signed_store.run("images", "fetch", *paths)
    assert result.returncode == 0, result.stderr
    for name in paths:
        assert signed_store.record(name)["signed_by"] == signing_key.fingerprint
    listed = json.loads(signed_store.run("images", "list", "--json").stdout)
    status = {entry["distro"]: entry["status"] for entry in listed}
    assert status["f41"] == status["u24.04"] == status["d11"] == "signed"


def test_doctor_says_which_families_are_fetched_unsigned(store: Store, signed_store: Store) -> None:
    def verdict(of: Store) -> dict:
        found = json.loads(of.run("doctor", "--json").stdout)
        return next(v for v in found if v["check"] == "signatures")

    # This host has none of the distros' key packages (no real key can be had here).
    assert verdict(store)["status"] == "warn" and "fedora" in verdict(store)["message"]
    assert verdict(signed_store)["status"] == "ok"


def test_a_bad_signature_a_foreign_key_or_no_signature_downloads_nothing(
    signed_store: Store,
    mirror: Mirror,
    blobs: dict[str, bytes],
    signing_key: LocalKey,
    other_key: LocalKey,
) -> None:
    distro = PluginHost.discover().resolve_distro("f40")
    checksum = _served_path("fedora", distro.checksum_url).replace("*", "1.6")
    image = publish(mirror, "f40", blobs["b"], key=signing_key)
    signed = mirror.files[checksum].body.decode()
    # The image's line changed after signing: the signature no longer covers it.
    good_digest = hashlib.sha256(blobs["b"]).hexdigest()
    mirror.put(checksum, signed.replace(good_digest, hashlib.sha256(blobs["a"]).hexdigest()))
    assert "BAD signature" in _failure(signed_store.run("images", "fetch", "f40"))
    publish(mirror, "f40", blobs["b"], key=other_key)
    assert "signed by a key not in" in _failure(signed_store.run("images", "fetch", "f40"))
    publish(mirror, "f40", blobs["b"])  # the placeholder armour: no real signature
    assert "no OpenPGP signature" in _failure(signed_store.run("images", "fetch", "f40"))
    publish(mirror, "u22.04", blobs["b"])  # SHA256SUMS without its SHA256SUMS.gpg
    assert "missing, and ubuntu signs" in _failure(signed_store.run("images", "fetch", "u22.04"))
    assert mirror.requests_for(image) == []
    assert not signed_store.image("f40").exists() and not signed_store.image("u22.04").exists()
    _no_leftovers(signed_store)


def test_unsigned_lines_around_a_clearsigned_checksum_file_are_not_read(
    signed_store: Store, mirror: Mirror, blobs: dict[str, bytes], signing_key: LocalKey
) -> None:
    distro = PluginHost.discover().resolve_distro("f39")
    checksum = _served_path("fedora", distro.checksum_url).replace("*", "1.5")
    publish(mirror, "f39", blobs["b"], compose="1.5", key=signing_key, listed=blobs["a"])
    image = distro.image_url.rsplit("/", 1)[1]
    forged = f"SHA256 ({image}) = {hashlib.sha256(blobs['b']).hexdigest()}\n"
    mirror.put(checksum, forged + mirror.files[checksum].body.decode())
    assert "sha256 mismatch" in _failure(signed_store.run("images", "fetch", "f39"))
    assert not signed_store.image("f39").exists()


def test_every_digest_given_for_the_image_must_match(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    # SHA256 vouches for image a, an added SHA512 line for image b, which is served: the
    # stronger line alone must not let b in.
    distro = PluginHost.discover().resolve_distro("f38")
    path = publish(mirror, "f38", blobs["b"], listed=blobs["a"])
    checksum = _served_path("fedora", distro.checksum_url).replace("*", "1.6")
    image = path.rsplit("/", 1)[1]
    extra = f"SHA512 ({image}) = {hashlib.sha512(blobs['b']).hexdigest()}\n"
    text = mirror.files[checksum].body.decode()
    mirror.put(
        checksum, text.replace("-----BEGIN PGP SIGNATURE", extra + "-----BEGIN PGP SIGNATURE")
    )
    assert "sha256 mismatch" in _failure(store.run("images", "fetch", "f38"))
    assert not store.image("f38").exists()
    _no_leftovers(store)


def test_the_release_metadata_sha256_must_match_beside_a_sha512_line(
    store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    from tests.unit.plugins.test_fedora import releases_json

    # The metadata gives image a's sha256; the checksum file only a SHA512 line, for b.
    entries = releases_json({"45": "1.3", "44": "1.7"})
    for entry in entries:
        if entry["version"] == "45" and entry["link"].endswith(".qcow2"):
            entry["sha256"] = hashlib.sha256(blobs["a"]).hexdigest()
    mirror.put("/fedora/releases.json", json.dumps(entries))
    store.run("images", "refresh")  # fedora's is served; the others fail, and keep theirs
    base = "/fedora/pub/fedora/linux/releases/45/Cloud/x86_64/images"
    image = "Fedora-Cloud-Base-Generic-45-1.3.x86_64.qcow2"
    mirror.put(f"{base}/{image}", blobs["b"])
    sha512 = hashlib.sha512(blobs["b"]).hexdigest()
    mirror.put(f"{base}/Fedora-Cloud-45-1.3-x86_64-CHECKSUM", f"SHA512 ({image}) = {sha512}\n")
    failure = _failure(store.run("images", "fetch", "f45"))
    assert "sha256 mismatch" in failure, failure
    assert not store.image("f45").exists()
    mirror.remove("/fedora/releases.json")


def test_a_redirect_from_https_to_http_is_refused(
    tmp_path: Path,
    mirror: Mirror,
    tls_mirror: tuple[Mirror, str],
    blobs: dict[str, bytes],
) -> None:
    secure, cert = tls_mirror
    config = tmp_path / "config.toml"
    _write_config(config, tmp_path / "state", tmp_path / "images", mirror)
    config.write_text(config.read_text().replace(mirror.url + "/ubuntu", secure.url + "/ubuntu"))
    store = Store(config=config, images=tmp_path / "images")
    os.environ["SSL_CERT_FILE"] = cert  # the subprocess trusts the test certificate
    try:
        path = publish(secure, "u20.04", blobs["a"])
        # https -> https is followed (the redirector of a distro's mirror network) ...
        secure.put(path + ".moved", blobs["a"])
        secure.files[path] = attrs.evolve(
            secure.files[path], mode="redirect", location=secure.url + path + ".moved"
        )
        fetched = store.run("images", "fetch", "u20.04")
        assert fetched.returncode == 0, fetched.stderr
        # ... https -> http is not.
        mirror.put(path, blobs["b"])
        asked = len(mirror.requests_for(path))  # other tests fetched u20.04 from it
        secure.files[path] = attrs.evolve(secure.files[path], location=mirror.url + path)
        failure = _failure(store.run("images", "fetch", "--force", "u20.04"))
        assert "off https; refused" in failure, failure
        assert len(mirror.requests_for(path)) == asked
        assert store.image("u20.04").read_bytes() == blobs["a"]
    finally:
        del os.environ["SSL_CERT_FILE"]


# --- import ------------------------------------------------------------------------------------


def test_import_registers_a_users_image_under_a_distro_name(
    store: Store, tmp_path: Path, blobs: dict[str, bytes]
) -> None:
    own = tmp_path / "my-debian.qcow2"
    own.write_bytes(blobs["a"])
    result = store.run("images", "import", str(own), "--as", "bookworm")
    assert result.returncode == 0, result.stderr
    assert store.image("d12").read_bytes() == blobs["a"]
    record = store.record("d12")
    assert record["status"] == "imported" and record["source"] == str(own)
    assert record["source_checksum"]["hexdigest"] == hashlib.sha256(blobs["a"]).hexdigest()
    assert record["converted_from"] is None

    again = store.run("images", "import", str(own), "--as", "d12")
    assert again.returncode == 2 and "--force" in again.stderr

    raw = tmp_path / "disk.raw"
    raw.write_bytes(blobs["raw"])
    result = store.run("images", "import", str(raw), "--as", "d12", "--force")
    assert result.returncode == 0, result.stderr
    assert store.image("d12").read_bytes()[:4] == QCOW2_MAGIC
    assert store.record("d12")["converted_from"] == "raw"
    listed = json.loads(store.run("images", "list", "--json").stdout)
    assert {e["distro"]: e["status"] for e in listed}["d12"] == "imported"
    _no_leftovers(store)


def test_import_copies_no_host_file_unless_asked_by_name(store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "root-only"  # stands for /etc/shadow, a host key, another VM's disk
    secret.write_bytes(b"host secret " * 4096)
    secret.chmod(0o600)
    backed = tmp_path / "backed.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(backed)],
        check=True,
    )
    data_file = tmp_path / "external.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={secret}",
         str(data_file), "64K"],
        check=True,
    )  # fmt: skip
    for image in (backed, data_file):
        result = store.run("images", "import", str(image), "--as", "d12")
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and str(secret) in result.stderr
        assert "--allow-backing" in result.stderr
        assert not store.image("d12").exists()
    result = store.run("images", "import", str(backed), "--as", "d12", "--allow-backing")
    assert result.returncode == 0, result.stderr
    flattened = subprocess.run(
        ["qemu-img", "info", "--output=json", str(store.image("d12"))],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "backing-filename" not in json.loads(flattened.stdout)
    _no_leftovers(store)


def test_import_refuses_bad_input_with_exit_2(store: Store, tmp_path: Path) -> None:
    own = tmp_path / "x.qcow2"
    own.write_bytes(b"\0" * 512)
    for args in (
        (str(own), "--as", "nosuch"),
        (str(tmp_path / "missing.qcow2"), "--as", "d12"),
        (str(own),),
    ):
        result = store.run("images", "import", *args)
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not store.images.exists() or not list(store.images.iterdir())


def test_an_image_changed_by_hand_lists_as_unverified(
    store: Store, tmp_path: Path, blobs: dict[str, bytes]
) -> None:
    own = tmp_path / "mine.qcow2"
    own.write_bytes(blobs["a"])
    assert store.run("images", "import", str(own), "--as", "f43").returncode == 0
    store.image("f43").write_bytes(blobs["b"])
    listed = json.loads(store.run("images", "list", "--json").stdout)
    assert {e["distro"]: e["status"] for e in listed}["f43"] == "unverified"


# --- build ---------------------------------------------------------------------------------------


class _QemuImgBuilder:
    """A builder plugin for f43 (which no built-in plugin builds): a blank qcow2."""

    def __init__(self, version: str = "") -> None:
        self.version = version

    @hookimpl
    def vnode_image_builder(self, distro: Distro, context: PluginContext) -> ImageBuilder | None:
        if distro.name != "f43":
            return None

        def build(dest: Path) -> None:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(dest), "16M"], check=True
            )

        return ImageBuilder(how="a blank disk", build=build, version=self.version)


def test_a_built_image_is_recorded_as_built(store: Store) -> None:
    host = PluginHost(
        [*entry_point_sources(), PluginSource("test-builder", lambda: _QemuImgBuilder())]
    )
    config = build_config(
        {
            "paths": {
                "state": str(store.images.parent / "state"),
                "image_store": str(store.images),
            },
            "images": {"auto_refresh": False},
        }
    )
    session = Session.for_config(config, host)
    path, built = images.build_image("fedora-43", session)
    assert built and path == store.image("f43")
    assert images.build_image("f43", session) == (path, False)  # present: kept
    with pytest.raises(UsageError, match=r"no plugin can build u24\.04"):
        images.build_image("u24.04", session)
    assert path.stat().st_mode & 0o777 == 0o644
    record = store.record("f43")
    assert record["status"] == "built"
    assert record["source"] == "vnode images build f43 (a blank disk)"
    listed = json.loads(store.run("images", "list", "--json").stdout)
    assert {e["distro"]: e["status"] for e in listed}["f43"] == "built"
    # A builder at another version (what it makes changed) rebuilds the image once.
    newer = PluginHost(
        [*entry_point_sources(), PluginSource("test-builder", lambda: _QemuImgBuilder("2"))]
    )
    session = Session.for_config(config, newer)
    assert images.build_image("f43", session) == (path, True)
    assert store.record("f43")["builder_version"] == "2"
    assert images.build_image("f43", session) == (path, False)


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """pytest's tmp_path lives under a 0700 directory another user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix="vnode-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_building_as_a_user_without_root_is_one_line_and_builds_nothing(
    world_readable_dir: Path,
) -> None:
    config = world_readable_dir / "config.toml"
    images = world_readable_dir / "images"
    config.write_text(f'[paths]\nstate = "{world_readable_dir}/state"\nimage_store = "{images}"\n')
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

    def build_as_nobody() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*nobody, *VNODE, "images", "build", "d13"],
            env={**os.environ, "VNODE_CONFIG": str(config), "HOME": "/nonexistent"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    unwritable = build_as_nobody()
    assert (unwritable.returncode, unwritable.stderr.strip()) == (
        1,
        f"vnode: cannot write the image store {images}: Permission denied"
        " (run as root, or set paths.image_store)",
    )
    world_readable_dir.chmod(0o777)
    not_root = build_as_nobody()
    assert (not_root.returncode, not_root.stderr.strip()) == (
        1,
        "vnode: building an image needs root (loop devices, mount): run as root",
    )
    # No image nor part of one; the lock files stay (as fetch's: removing a lock file
    # another process may hold is a race), and the store knows this state directory uses it.
    assert {p.name for p in images.iterdir()} <= {".d13.qcow2.lock", ".store.lock", ".states"}


# --- up ----------------------------------------------------------------------------------------


@pytest.fixture
def lab_store(lab: Lab, mirror: Mirror) -> Store:
    """The module's lab with its own image store (qemu-readable) and the test mirror."""
    images = lab.state / f"images-{uuid.uuid4().hex[:6]}"
    text = re.sub(
        r"(?m)^image_store = .*$", f'image_store = "{images}"', lab.config_path.read_text()
    )
    config = lab.state / "with-mirror.toml"
    config.write_text(
        text.replace("[images]\n", f'[images]\nmirror.ubuntu = "{mirror.url}/ubuntu"\n', 1)
    )
    return Store(config=config, images=images)


def test_up_names_the_fetch_command_and_up_fetch_fetches_before_creating(
    lab: Lab, lab_store: Store, mirror: Mirror, blobs: dict[str, bytes]
) -> None:
    node = lab.name(7)
    result = lab_store.run("up", "7:u24.04", "--no-wait")
    assert result.returncode == 1
    assert "vnode images fetch u24.04" in result.stderr and "--fetch" in result.stderr
    assert not _domain_exists(node)

    publish(mirror, "u24.04", blobs["b"], listed=blobs["a"])
    result = lab_store.run("up", "7:u24.04", "--no-wait", "--fetch")
    assert result.returncode == 1
    assert "mismatch" in result.stderr
    assert not _domain_exists(node) and not lab_store.image("u24.04").exists()

    # A blank image is enough: --no-wait returns once the domain runs.
    publish(mirror, "u24.04", blobs["a"])
    result = lab_store.run("up", "7:u24.04", "--no-wait", "--fetch", "--json")
    try:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)[0]["state"] == "started"
        assert lab_store.record("u24.04")["status"] == "verified"
    finally:
        assert lab_store.run("destroy", "7").returncode == 0


def _domain_exists(name: str) -> bool:
    result = subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", "domstate", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def _virtual_size(path: Path) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(info.stdout)["virtual-size"]

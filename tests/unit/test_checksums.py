"""Checksum files in the distros' formats, and what fetch reads from servers besides images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vnode.checksums import Checksum, ChecksumError, hash_file, lookup, parse_checksums
from vnode.fetch import FetchError, choose_name, index_links, with_mirror

H256 = hashlib.sha256(b"image").hexdigest()
H256_B = hashlib.sha256(b"other").hexdigest()
H512 = hashlib.sha512(b"image").hexdigest()

FEDORA_SIGNED = f"""-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

# Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2: 574685184 bytes
SHA256 (Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2) = {H256.upper()}
# Fedora-Cloud-Base-43-1.6.x86_64.raw.xz: 400000000 bytes
SHA256 (Fedora-Cloud-Base-43-1.6.x86_64.raw.xz) = {H256_B}
- -dash-escaped comment line
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEEv3KqcNkSlTOiAnOsqLkSlH3nWl0FAmcAAAAACgkQqLkSlH3n
SHA256 (evil.qcow2) = {H256_B}
=abcd
-----END PGP SIGNATURE-----
"""


def test_fedora_checksum_reads_tag_lines_inside_a_pgp_signature() -> None:
    entries = parse_checksums(FEDORA_SIGNED, "fedora-checksum")
    assert set(entries) == {
        "Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2",
        "Fedora-Cloud-Base-43-1.6.x86_64.raw.xz",
    }
    assert lookup(entries, "Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2") == (
        Checksum("sha256", H256),
    )


def test_fedora_checksum_unsigned_with_crlf_and_a_weak_digest_beside() -> None:
    text = f"MD5 (a.qcow2) = {'0' * 32}\r\nSHA256 (a.qcow2) = {H256}\r\n"
    assert parse_checksums(text, "fedora-checksum") == {"a.qcow2": (Checksum("sha256", H256),)}


def test_fedora_checksum_keeps_every_digest_of_a_file_strongest_first() -> None:
    # A SHA512 line beside the SHA256 one must not replace it: the download has to match both.
    text = f"SHA256 (a.qcow2) = {H256}\nSHA512 (a.qcow2) = {H512}\nSHA256 (a.qcow2) = {H256}\n"
    assert parse_checksums(text, "fedora-checksum")["a.qcow2"] == (
        Checksum("sha512", H512),
        Checksum("sha256", H256),
    )


def test_ubuntu_sha256sums_binary_marker() -> None:
    text = f"{H256} *ubuntu-24.04-server-cloudimg-amd64.img\n{H256_B} *other.tar.gz\n"
    entries = parse_checksums(text, "sha256sums")
    assert entries["ubuntu-24.04-server-cloudimg-amd64.img"] == (Checksum("sha256", H256),)


def test_debian_sha512sums_text_mode() -> None:
    text = f"{H512}  debian-12-genericcloud-amd64.qcow2\n{H512}  debian-12-generic-amd64.raw\n"
    entries = parse_checksums(text, "sha512sums")
    assert entries["debian-12-genericcloud-amd64.qcow2"] == (Checksum("sha512", H512),)


def test_entries_are_found_by_file_name_even_with_a_directory() -> None:
    entries = parse_checksums(f"{H256}  ./images/a.qcow2\n", "sha256sums")
    assert "a.qcow2" in entries


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        (f"{H256}  a.qcow2\n", "sha512sums", "128 hex digits"),
        (f"{H512}  a.qcow2\n", "sha256sums", "64 hex digits"),
        (f"{H256}  a.qcow2\n{H256_B}  a.qcow2\n", "sha256sums", "twice"),
        ("<html>404 Not Found</html>\n", "sha256sums", "not a sha256sum line"),
        ("<html>404 Not Found</html>\n", "fedora-checksum", "no fedora-checksum entries"),
        (f"SHA1 (a.qcow2) = {'0' * 40}\n", "fedora-checksum", "no fedora-checksum entries"),
        (f"{H256}  a.qcow2\n", "md5sums", "unknown checksum format"),
    ],
)
def test_bad_checksum_files_are_refused(text: str, fmt: str, message: str) -> None:
    with pytest.raises(ChecksumError, match=message):
        parse_checksums(text, fmt)


def test_a_file_without_an_entry_is_not_vouched_for() -> None:
    entries = parse_checksums(f"{H256}  a.qcow2\n", "sha256sums")
    with pytest.raises(ChecksumError, match=r"no sha256/sha384/sha512 entry for b\.qcow2"):
        lookup(entries, "b.qcow2")


def test_hash_file_computes_several_digests_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"image")
    assert hash_file(path, ["sha256", "sha512"]) == {"sha256": H256, "sha512": H512}


def test_mirror_keeps_upstream_path_below_its_own() -> None:
    url = "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
    assert with_mirror(url, None) == url
    assert (
        with_mirror(url, "http://127.0.0.1:8080/cache/")
        == "http://127.0.0.1:8080/cache/images/cloud/bookworm/latest/SHA512SUMS"
    )


def test_index_links_reads_apache_nginx_and_python_listings() -> None:
    html = """<a href="?C=N;O=D">Name</a> <a href="../">Parent</a>
    <a href="Fedora-Cloud-38-1.6-x86_64-CHECKSUM">x</a>
    <a href='/pub/x/Fedora-Cloud-Base-38-1.6.x86_64.qcow2'>y</a>
    <A HREF="with%20space.qcow2">z</A>"""
    assert index_links(html) == [
        "..",
        "Fedora-Cloud-38-1.6-x86_64-CHECKSUM",
        "Fedora-Cloud-Base-38-1.6.x86_64.qcow2",
        "with space.qcow2",
    ]


def test_a_pattern_must_match_exactly_one_name() -> None:
    names = [
        "Fedora-Cloud-Base-38-1.6.x86_64.qcow2",
        "Fedora-Cloud-Base-38-1.6.x86_64.raw.xz",
        "Fedora-Cloud-Base-Vagrant-38-1.6.x86_64.vagrant-libvirt.box",
    ]
    assert choose_name("Fedora-Cloud-Base-38-*.x86_64.qcow2", names, "x") == names[0]
    assert choose_name("exact.qcow2", names, "x") == "exact.qcow2"
    with pytest.raises(FetchError, match="found none"):
        choose_name("Fedora-Cloud-Base-39-*.qcow2", names, "x")
    with pytest.raises(FetchError, match="exactly one"):
        choose_name("Fedora-Cloud-Base-*38-*", names, "x")

"""The checksum files distros publish next to their cloud images, and hashing local files.

Formats (``Distro.checksum_format``):

- ``fedora-checksum``: BSD tag lines, ``SHA256 (FILE) = HEX``, with ``#`` comments, often
  wrapped in a PGP cleartext signature (checked by :mod:`vnode.signatures` before the text
  gets here, which then hands over only what was signed).
- ``sha256sums`` / ``sha512sums``: coreutils lines, ``HEX  FILE`` or ``HEX *FILE``.

A file may give several digests for one image (Fedora's SHA256 and SHA512 lines): every one
is kept, and a download must match them all, so that no line can vouch for other bytes than
the one beside it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import attrs

from vnode.errors import VnodeError

# Hex lengths; weaker digests (md5, sha1) are refused rather than trusted.
ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
FORMATS = ("fedora-checksum", "sha256sums", "sha512sums")

_TAG_LINE = re.compile(r"(?P<algo>[A-Za-z0-9-]+) \((?P<name>.+)\) = (?P<hex>[0-9A-Fa-f]+)")
_SUMS_LINE = re.compile(r"(?P<hex>[0-9A-Fa-f]+) [ *](?P<name>.+)")
_PGP_SIGNATURE_START = "-----BEGIN PGP SIGNATURE-----"
_PGP_SIGNATURE_END = "-----END PGP SIGNATURE-----"


class ChecksumError(VnodeError):
    """A checksum file that cannot be read, or that does not vouch for the file wanted."""


@attrs.frozen
class Checksum:
    algorithm: str  # hashlib name: "sha256", "sha512"
    hexdigest: str = attrs.field(converter=str.lower)

    def to_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


def parse_checksums(text: str, fmt: str) -> dict[str, tuple[Checksum, ...]]:
    """File name -> every distinct digest given for it, strongest first; a file with no entry
    at all is an error, and so are two different digests of one algorithm for one name."""
    if fmt == "fedora-checksum":
        pairs = _tag_entries(_signed_body(text))
    elif fmt in ("sha256sums", "sha512sums"):
        pairs = _sums_entries(text, fmt.removesuffix("sums"))
    else:
        raise ChecksumError(f"unknown checksum format {fmt!r}; known: {', '.join(FORMATS)}")
    entries: dict[str, dict[str, Checksum]] = {}
    for name, checksum in pairs:
        known = entries.setdefault(name, {})
        if known.get(checksum.algorithm, checksum) != checksum:
            raise ChecksumError(f"the checksum file lists {name} twice, with different digests")
        known[checksum.algorithm] = checksum
    if not entries:
        raise ChecksumError(f"no {fmt} entries in the checksum file")
    return {
        name: tuple(sorted(found.values(), key=_strength, reverse=True))
        for name, found in entries.items()
    }


def lookup(entries: dict[str, tuple[Checksum, ...]], filename: str) -> tuple[Checksum, ...]:
    try:
        return entries[filename]
    except KeyError:
        usable = "/".join(ALGORITHMS)
        raise ChecksumError(f"the checksum file has no {usable} entry for {filename}") from None


def hash_file(path: Path, algorithms: Iterable[str]) -> dict[str, str]:
    """Hex digests of ``path`` in one pass over the file (images are hundreds of MiB)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _signed_body(text: str) -> list[str]:
    """The lines of a PGP cleartext-signed message without its armour; plain text as is."""
    lines: list[str] = []
    in_signature = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line == _PGP_SIGNATURE_START:
            in_signature = True
        elif line == _PGP_SIGNATURE_END:
            in_signature = False
        elif not in_signature:
            # RFC 4880 dash-escapes signed lines that start with "-".
            lines.append(line[2:] if line.startswith("- ") else line)
    return lines


def _tag_entries(lines: list[str]) -> list[tuple[str, Checksum]]:
    entries = []
    for line in lines:
        match = _TAG_LINE.fullmatch(line.strip())
        if match is None:
            continue  # comments, armour headers ("Hash: SHA256"), blank lines
        algorithm = match["algo"].lower().replace("-", "")
        if algorithm not in ALGORITHMS:
            continue  # an MD5 or SHA1 line beside the SHA256 one vouches for nothing
        entries.append((_basename(match["name"]), _checksum(algorithm, match["hex"], line)))
    return entries


def _sums_entries(text: str, algorithm: str) -> list[tuple[str, Checksum]]:
    entries = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _SUMS_LINE.fullmatch(stripped)
        if match is None:
            raise ChecksumError(f"not a {algorithm}sum line: {stripped[:80]!r}")
        entries.append((_basename(match["name"]), _checksum(algorithm, match["hex"], stripped)))
    return entries


def _checksum(algorithm: str, hexdigest: str, line: str) -> Checksum:
    expected = ALGORITHMS.get(algorithm)
    if expected is None:
        raise ChecksumError(f"unsupported digest {algorithm!r} in {line[:80]!r}")
    if len(hexdigest) != expected:
        raise ChecksumError(f"a {algorithm} digest has {expected} hex digits: {line[:80]!r}")
    return Checksum(algorithm=algorithm, hexdigest=hexdigest)


def _strength(checksum: Checksum) -> int:
    return ALGORITHMS[checksum.algorithm]


def _basename(name: str) -> str:
    # Entries may carry "./" or a directory; images are looked up by their file name.
    return name.strip().rsplit("/", 1)[-1]

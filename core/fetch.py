"""Downloading a distro's image over HTTP(S): found through its checksum file, verified, resumable.

The bytes go to a ``.part`` file the caller names. :func:`download` returns only once that
file's digest is the one the distro publishes; the caller then moves it into place, so a
partial or corrupt download never becomes, nor replaces, an image. An interrupted transfer
resumes with an HTTP Range request, within the run and in the next one.

A distro may leave a file name open with ``*`` (a plugin that knows the pattern but not the
exact compose, e.g. ``Fedora-Cloud-Base-38-*.x86_64.qcow2``): a ``*`` in the checksum file's
name is matched against the links of its directory's index page, a ``*`` in the image's name
against the entries of the checksum file. Exactly one match is required, so nothing is
guessed: the file fetched is the one the release's own checksum file vouches for.

Every digest upstream gives for the image must agree with the bytes: each line of the
checksum file for it (SHA256 and SHA512 alike) and the release metadata's sha256. The
checksum file's signature is checked first where upstream signs it (:mod:`vnode.signatures`),
and only the signed text is read. A redirect from https to anything but https is refused:
a mirror redirector must not move a download onto a connection anyone can change.
"""

from __future__ import annotations

import fnmatch
import http.client
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import attrs

from vnode import __version__, signatures
from vnode.checksums import Checksum, hash_file, lookup, parse_checksums
from vnode.errors import UsageError, VnodeError
from vnode.model import Distro, Location

Progress = Callable[[str], None]

USER_AGENT = f"vnode/{__version__}"
CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without a byte before a transfer counts as interrupted
SMALL_LIMIT = 4 << 20  # checksum files and index pages are kilobytes
STALLED_ATTEMPTS = 3  # consecutive attempts that add no byte before giving up
MAX_ATTEMPTS = 20

_HREF = re.compile(r"""href\s*=\s*["']([^"'#?]+)""", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class FetchError(VnodeError):
    """A download failed or did not verify; no image was created or replaced."""


class NotFound(FetchError):
    """The server answered 404: the file may be in another place (mirror or archive)."""


class _Interrupted(Exception):
    """A transfer that ended early or could not start; worth resuming."""


@attrs.frozen
class Source:
    """Where one image comes from, after the mirror and any ``*`` are resolved."""

    image_url: str
    checksum_url: str
    # Every digest upstream gives for the image, strongest first: all must match.
    checksums: tuple[Checksum, ...]
    place: str = ""  # the distro's checksum URL (before the mirror) that answered
    signer: str | None = None  # the fingerprint of the key that signed the checksum file
    signature_note: str = ""  # how the checksum file was (or why it was not) checked

    @property
    def checksum(self) -> Checksum:
        return self.checksums[0]


def downloadable(distro: Distro) -> bool:
    # An image without a published checksum is never fetched: it could not be verified.
    return bool(distro.image_url and distro.checksum_url and distro.checksum_format)


def with_mirror(url: str, mirror: str | None) -> str:
    """``url`` on ``mirror``, which keeps upstream's layout below its own path."""
    if not mirror:
        return url
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    return mirror.rstrip("/") + parts.path + query


def places(distro: Distro, preferred: str | None = None) -> list[Location]:
    """Where the image may be, in the order to try: the plugin's first choice and its
    alternates, with the place that answered last time (``preferred``, a checksum URL) first."""
    found = [Location(str(distro.image_url), str(distro.checksum_url)), *distro.alternates]
    return sorted(found, key=lambda place: place.checksum_url != preferred)


def locate(
    distro: Distro,
    mirror: str | None = None,
    preferred: str | None = None,
    keyring: str | None = None,
) -> Source:
    """Read the distro's checksum file and pick the image it vouches for.

    A checksum file that answers 404 is looked for in the distro's other places (a release
    moved to the archive, or not there yet); any other failure stops at once.
    ``keyring`` (the user's ``[images] keyring.FAMILY``) replaces the plugin's key files and
    fingerprints.
    """
    if not downloadable(distro):
        raise UsageError(f"{distro.name}: its plugin names no image URL and checksum file")
    missing = []
    for place in places(distro, preferred):
        try:
            return _locate_at(distro, place, mirror, keyring)
        except NotFound as exc:
            missing.append(str(exc))
    raise FetchError("; ".join(missing))


def _locate_at(distro: Distro, place: Location, mirror: str | None, keyring: str | None) -> Source:
    checksum_url = _resolve_listed(with_mirror(place.checksum_url, mirror))
    checked = _signed_text(distro, checksum_url, keyring)
    text = checked.text.decode("utf-8", errors="replace")
    entries = parse_checksums(text, str(distro.checksum_format))
    directory, wanted = with_mirror(place.image_url, mirror).rsplit("/", 1)
    name = choose_name(unquote(wanted), sorted(entries), f"the entries of {checksum_url}")
    checksums = lookup(entries, name)
    claimed = distro.sha256
    if claimed:
        given = {c.algorithm: c.hexdigest for c in checksums}.get("sha256")
        if given is not None and given != claimed.lower():
            raise FetchError(
                f"{checksum_url} gives {name} sha256 {given[:16]}..., the release metadata "
                f"{claimed[:16]}...; nothing was downloaded (run `vnode images refresh`)"
            )
        if given is None:
            checksums = (*checksums, Checksum("sha256", claimed))
    return Source(
        image_url=f"{directory}/{quote(name)}",
        checksum_url=checksum_url,
        checksums=checksums,
        place=place.checksum_url,
        signer=checked.signer,
        signature_note=checked.note,
    )


def _signed_text(distro: Distro, checksum_url: str, keyring: str | None) -> signatures.Checked:
    """The checksum file, its signature checked where upstream signs it and a key is here."""
    data = read_bytes(checksum_url, limit=SMALL_LIMIT, timeout=TIMEOUT)
    if distro.signature is None and keyring is None:
        return signatures.Checked(data, note="upstream signs no checksum file")
    if keyring is not None:
        keyrings, signers = signatures.present([keyring]), ()
        if not keyrings:
            raise UsageError(f"config: [images] keyring.{distro.family} {keyring} does not exist")
    else:
        keyrings, signers = signatures.present(distro.keyrings), distro.signers
    if not keyrings:
        looked = ", ".join(distro.keyrings) or "none named by its plugin"
        return signatures.Checked(data, note=f"signature not checked: no key file ({looked})")
    signature = None
    if distro.signature not in (None, signatures.CLEARSIGNED):
        signature_url = checksum_url + str(distro.signature)
        try:
            signature = read_bytes(signature_url, limit=SMALL_LIMIT, timeout=TIMEOUT)
        except NotFound:
            # Upstream signs it: a place that serves the file without its signature is not
            # trusted (stripping the signature must not turn into an unsigned download).
            raise signatures.SignatureError(
                f"{signature_url}: missing, and {distro.family} signs its checksum files; "
                "nothing was downloaded"
            ) from None
    return signatures.check(
        data, what=checksum_url, signature=signature, keyrings=keyrings, signers=signers
    )


def download(
    source: Source, part: Path, progress: Progress, stop: threading.Event | None = None
) -> None:
    """Leave at ``part`` a file whose digest is ``source.checksum``, resuming what is there.

    Setting ``stop`` (Ctrl-C in another thread) ends the transfer at the next chunk; the
    ``.part`` is kept for the next run.

    A file assembled from several transfers that fails verification is downloaded once more
    from scratch (its first bytes may be from an older upload of the image); a single
    transfer that fails is discarded and reported.
    """
    algorithms = [c.algorithm for c in source.checksums]
    for last_try in (False, True):
        assembled = _transfer(source.image_url, part, progress, stop or threading.Event())
        progress(f"verifying {'+'.join(algorithms)}")
        digests = hash_file(part, algorithms)
        wrong = [c for c in source.checksums if digests[c.algorithm] != c.hexdigest]
        if not wrong:
            return
        part.unlink(missing_ok=True)
        if not assembled or last_try:
            break
        progress("checksum mismatch on a resumed download; starting over")
    bad = wrong[0]
    raise FetchError(
        f"{source.image_url}: {bad.algorithm} mismatch (published {bad.hexdigest[:16]}..., "
        f"downloaded {digests[bad.algorithm][:16]}...); the download was discarded"
    )


def read_small(url: str) -> str:
    """A checksum file or index page, whole."""
    data = read_bytes(url, limit=SMALL_LIMIT, timeout=TIMEOUT)
    return data.decode("utf-8", errors="replace")


def read_bytes(url: str, *, limit: int, timeout: float) -> bytes:
    """A small file whole (metadata, checksums): 404 is :class:`NotFound`; a body that is
    longer than ``limit`` or shorter than its Content-Length is an error."""
    try:
        with _OPENER.open(_request(url), timeout=timeout) as response:
            data = response.read(limit + 1)
            expected = response.headers.get("Content-Length")
    except _Downgrade as exc:
        raise FetchError(str(exc)) from None
    except urllib.error.HTTPError as exc:
        error = NotFound if exc.code == 404 else FetchError
        raise error(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{url}: {_reason(exc)}") from None
    if len(data) > limit:
        raise FetchError(f"{url}: more than {limit >> 20} MiB; not what was expected")
    if expected is not None and expected.isdigit() and int(expected) != len(data):
        raise FetchError(f"{url}: truncated ({len(data)} of {expected} bytes)")
    return data


def index_links(html: str) -> list[str]:
    """File names an HTML directory index links to (Apache, nginx and Python's look alike)."""
    names = {unquote(href).rstrip("/").rsplit("/", 1)[-1] for href in _HREF.findall(html)}
    return sorted(name for name in names if name)


def _resolve_listed(url: str) -> str:
    directory, wanted = url.rsplit("/", 1)
    if "*" not in wanted:
        return url
    links = index_links(read_small(f"{directory}/"))
    name = choose_name(unquote(wanted), links, f"the index of {directory}/")
    return f"{directory}/{quote(name)}"


def choose_name(pattern: str, names: list[str], where: str) -> str:
    if "*" not in pattern:
        return pattern
    matches = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    if len(matches) != 1:
        found = ", ".join(matches) if matches else "none"
        raise FetchError(f"exactly one file must match {pattern} in {where}; found {found}")
    return matches[0]


def _transfer(url: str, part: Path, progress: Progress, stop: threading.Event) -> bool:
    """Download ``url`` into ``part``, resuming; True if the file was assembled from pieces."""
    stalled = 0
    for _ in range(MAX_ATTEMPTS):
        before = _size(part)
        try:
            return _get(url, part, progress, stop)
        except _Interrupted as exc:
            stalled = 0 if _size(part) > before else stalled + 1
            if stalled >= STALLED_ATTEMPTS:
                raise FetchError(
                    f"{url}: {exc}; {_size(part)} bytes kept in {part} to resume next time"
                ) from None
            progress(f"interrupted ({exc}); resuming at {human_size(_size(part))}")
            time.sleep(stalled)
    raise FetchError(f"{url}: gave up after {MAX_ATTEMPTS} interrupted transfers")


def _get(url: str, part: Path, progress: Progress, stop: threading.Event) -> bool:
    """One GET from where ``part`` ends; True if the body was appended to earlier bytes."""
    offset = _size(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _OPENER.open(_request(url, headers), timeout=TIMEOUT)
    except _Downgrade as exc:
        raise FetchError(str(exc)) from None
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return True  # the .part may be whole already; verification decides
        if exc.code >= 500:
            raise _Interrupted(f"HTTP {exc.code} {exc.reason}") from None
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Interrupted(_reason(exc)) from None
    with response:
        start, total = _body_range(response, offset)
        if start == 0 and offset:
            progress("the server ignored the range request; starting over")
        _check_space(part, total, start)
        _stream(response, part, start, total, progress, stop)
    return start > 0


def _body_range(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file, and the file's full size if the server says."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match is None or int(match[1]) != offset:
            raise FetchError(f"{response.url}: a partial reply for the wrong range")
        return offset, None if match[3] == "*" else int(match[3])
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    start: int,
    total: int | None,
    progress: Progress,
    stop: threading.Event,
) -> None:
    meter = _Meter(progress, total, start)
    with part.open("r+b" if start else "wb") as out:
        out.seek(start)
        out.truncate()
        try:
            # read1: whatever has arrived (up to CHUNK), so a stop on a slow mirror is seen
            # at once rather than after a whole chunk.
            while chunk := response.read1(CHUNK):
                out.write(chunk)
                meter.add(len(chunk))
                if stop.is_set():
                    raise FetchError(f"stopped; {_size(part)} bytes kept in {part} to resume")
        except (OSError, http.client.HTTPException) as exc:
            raise _Interrupted(_reason(exc)) from None
    got = _size(part)
    if total is not None and got < total:
        raise _Interrupted(f"transfer ended at {got} of {total} bytes")
    if total is not None and got > total:
        part.unlink()
        raise FetchError(f"{response.url}: more bytes than the server announced")


def _check_space(part: Path, total: int | None, start: int) -> None:
    if total is None:
        return
    free = shutil.disk_usage(part.parent).free
    # The image may need converting to qcow2 next to itself: keep room for a second copy.
    if free < (total - start) + total:
        raise FetchError(f"{part.parent}: no room for a {human_size(total)} image, twice over")


class _Meter:
    """Reports progress in 5% steps (or every 64 MiB of a file of unknown size)."""

    def __init__(self, progress: Progress, total: int | None, done: int) -> None:
        self.progress = progress
        self.total = total
        self.done = done
        self.last_step = -1

    def add(self, count: int) -> None:
        self.done += count
        if self.total:
            step = self.done * 20 // self.total
            text = f"downloading {step * 5}% of {human_size(self.total)}"
        else:
            step = self.done >> 26
            text = f"downloading {human_size(self.done)}"
        if step != self.last_step:
            self.last_step = step
            self.progress(text)


def human_size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} B"


class _Downgrade(Exception):
    """A redirect off https."""


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, except from https to any other scheme."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old, new = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme
        if old == "https" and new != "https":
            raise _Downgrade(
                f"{req.full_url}: redirected to {newurl}, off https; refused "
                "(set [images] mirror.FAMILY to an https mirror)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngrade)


def _request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason  # type: ignore[assignment]
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

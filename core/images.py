"""The image store: a qcow2 per distro under paths.images, readable by the qemu user.

Each image version is kept by its digest and a distro's name points at its current one
(:mod:`vnode.imagestore`: replacing an image never touches a version a node, a template or a
lab.lock uses). Images arrive three ways, and each leaves a record beside its version
(``sha256/<hex>.qcow2.json``):
``verified`` (downloaded and matched against the distro's published checksum), ``built``
(made locally by a plugin) or ``imported`` (a user's own file). A record holds the image's
sha256 and source; it vouches for the image only while the image's size and mtime are the
ones recorded, so an image replaced by hand lists as ``unverified``.

New images are written next to their final place and moved there with ``os.replace``, and
the name is moved onto them with one more: a reader (a node being created) sees the old
image or the new one, never half of either.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from vnode import fetch, imagestore
from vnode.catalog import (
    CachedCatalogs,
    Catalog,
    MetadataReader,
    remember_place,
    utcnow,
)
from vnode.checksums import hash_file
from vnode.config import Config
from vnode.errors import EnvironmentProblem, UsageError, VnodeError
from vnode.files import write_atomic
from vnode.locks import file_lock
from vnode.logs import get_logger
from vnode.model import Distro, ImageBuilder
from vnode.progress import Reporter, SilentReporter
from vnode.session import Session

QCOW2_MAGIC = b"QFI\xfb"
MAX_PARALLEL_FETCHES = 4

log = get_logger("vnode.images")


def warn_end_of_life(distros: Iterable[Distro]) -> None:
    """Using a release past its end of life works, and says so once per command."""
    for distro in distros:
        if distro.end_of_life:
            log.warning("release past its end of life: no more updates", distro=distro.name)


@attrs.frozen
class ImageRecord:
    """How an image got into the store; written as ``<image>.json``."""

    status: str  # "verified", "built" or "imported"
    source: str  # the URL downloaded, the file imported, or the builder
    sha256: str  # of the stored qcow2
    size: int
    mtime_ns: int
    recorded: str
    # The digest the source was checked against: the distro's published checksum (fetch) or
    # the imported file's own sha256 (import); with the checksum file's URL when there is one.
    source_checksum: dict[str, str] | None = None
    converted_from: str | None = None  # the source's format when it was not qcow2
    # fetch: the fingerprint of the key that signed the checksum file (None: not checked),
    # and how the checksum file was checked, or why its signature was not.
    signed_by: str | None = None
    signature: str | None = None
    builder_version: str | None = None  # built: the ImageBuilder's version
    name: str | None = None  # the store name (distro) it was added as

    def describes(self, image: Path) -> bool:
        stat = image.stat()
        return stat.st_size == self.size and stat.st_mtime_ns == self.mtime_ns


@attrs.frozen
class ImageEntry:
    distro: str
    title: str
    path: Path
    present: bool
    size: int | None
    # "signed" (fetched: checksums and the checksum file's signature verified), "unsigned"
    # (fetched: checksums verified, no signature checked), "built", "imported", "unverified"
    # (changed since it was recorded), or "-" when absent
    status: str
    source: str | None = None  # where the stored image came from (its record)
    family: str = ""
    role: str = ""  # "latest", "one-but-last", "end of life" or ""
    url: str | None = None  # where `fetch` would download it from (the plugin's first place)
    catalog: str | None = None  # the family catalog's origin and date
    sha256: str | None = None  # the version the name points at

    @property
    def size_human(self) -> str:
        return fetch.human_size(self.size) if self.size is not None else "-"

    def to_dict(self) -> dict[str, object]:
        return {**attrs.asdict(self), "path": str(self.path)}


@attrs.frozen
class VersionEntry:
    """One image version in the store and what keeps it there."""

    sha256: str
    name: str  # the distro it was added as ("" when not recorded)
    current: bool  # a name points at it
    status: str
    size: int
    users: tuple[str, ...]

    @property
    def size_human(self) -> str:
        return fetch.human_size(self.size)

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.frozen
class FetchOutcome:
    distro: str
    path: Path
    state: str  # "fetched", "present" or "failed"
    detail: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {**attrs.asdict(self), "path": str(self.path)}


def image_path(distro: Distro, config: Config) -> Path:
    return config.paths.images / distro.image_filename


def record_path(image: Path, name: str | None = None) -> Path:
    """Beside the version: a name's record is the one of the version it points at, as that
    name added it (``name``, e.g. ``d12.qcow2``; a name's own when ``image`` is the name)."""
    if image.is_symlink() and imagestore.versioned(image):
        name, image = image.name, image.resolve()
    if imagestore.digest_of(image) is not None:
        return imagestore.record_file(image, name)
    return image.with_name(image.name + ".json")


def read_record(image: Path) -> ImageRecord | None:
    try:
        data = json.loads(record_path(image).read_text())
        return ImageRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def recorded_sha256(image: Path) -> str:
    """The image's sha256 as its record vouches for it; "" when absent or unvouched."""
    try:
        record = read_record(image)
        if record is None and imagestore.versioned(image) and image.exists():
            # vnode named the version by the digest it computed; no record says otherwise.
            return imagestore.digest_of(image) or ""
        return record.sha256 if record is not None and record.describes(image) else ""
    except OSError:
        return ""


def image_status(image: Path) -> tuple[str, str | None]:
    """(status, source) as ``images list`` shows them."""
    if not image.exists():
        return "-", None
    record = read_record(image)
    if record is None or not record.describes(image):
        return "unverified", None
    if record.status == "verified":
        # Checksums matched; "signed" says the checksum file's signature did too.
        return ("signed" if record.signed_by else "unsigned"), record.source
    return record.status, record.source


def how_to_get(distro: Distro, session: Session) -> str:
    """The commands that put ``distro``'s image in the store, for error messages."""
    ways = []
    if fetch.downloadable(distro):
        ways.append(f"`vnode images fetch {distro.name}`")
    if session.plugins.image_builder(distro, session.plugin_context(connect=False)):
        ways.append(f"`vnode images build {distro.name}`")
    if not ways:
        return f"`vnode images import FILE --as {distro.name}`"
    return " or ".join(ways)


def missing_message(distro: Distro, image: Path, session: Session) -> str:
    """What ``up`` says when an image is missing: the command that gets it."""
    hint = " (or `vnode up --fetch`)" if fetch.downloadable(distro) else ""
    return f"no image for {distro.name} at {image}: run {how_to_get(distro, session)}{hint}"


def list_images(session: Session) -> list[ImageEntry]:
    """Every distro the plugins list, and any other image in the store a plugin resolves;
    per family which release is latest, one-but-last or past its end of life."""
    config = session.config
    names = set(session.plugins.distro_names())
    store = config.paths.images
    if store.is_dir():
        names |= {p.name.removesuffix(".qcow2") for p in store.glob("*.qcow2")}
    distros = {d.name: d for n in names if (d := session.plugins.find_distro(n))}
    catalogs = {c.family: c for c in session.plugins.distro_catalogs()}
    entries = []
    for distro in sorted(distros.values(), key=_release_order):
        path = image_path(distro, config)
        size = path.stat().st_size if path.exists() else None
        status, source = image_status(path)
        family = catalogs.get(distro.family)
        digest = imagestore.current(store, distro.image_filename)
        entries.append(
            ImageEntry(
                distro.name,
                distro.title,
                path,
                size is not None,
                size,
                status,
                source,
                family=distro.family,
                role=_role(distro, family),
                url=distro.image_url,
                catalog=_describe_catalog(family) if family else None,
                sha256=digest,
            )
        )
    return entries


def list_versions(session: Session) -> list[VersionEntry]:
    """Every version in the store with its users (names, nodes, templates, lab.lock files)."""
    config = session.config
    store = config.paths.images
    disks = imagestore.store_disks(config)
    users = imagestore.usage(store, disks, imagestore.store_pins(config))
    entries = []
    for digest in imagestore.versions(store):
        path = imagestore.version_path(store, digest)
        record = read_record(path)
        status, _ = image_status(path)
        held = tuple(users.get(digest, ()))
        entries.append(
            VersionEntry(
                sha256=digest,
                name=(record.name or "") if record else "",
                current=any(u.startswith("name ") for u in held),
                status=status,
                size=path.stat().st_size,
                users=held,
            )
        )
    return entries


def migrate_store(session: Session, names: Iterable[str] | None = None) -> None:
    """Names that are plain files (a store an older vnode made) moved into the versioned
    layout; all of them without ``names``."""
    store = session.config.paths.images
    if not store.is_dir():
        return
    if names is None:
        names = [p.name for p in store.glob("*.qcow2")]
    plain = [n for n in names if not imagestore.versioned(store / n)]
    if plain:
        disks = imagestore.store_disks(session.config)
        for name in plain:
            imagestore.migrate(store, name, disks)


def current_version(session: Session, distro: Distro) -> Path:
    """The version file ``distro``'s name points at (the store migrated first if need be);
    what node and template disks are backed by."""
    store = session.config.paths.images
    disks = imagestore.store_disks(session.config)
    digest = imagestore.migrate(store, distro.image_filename, disks)
    if digest is None:
        raise EnvironmentProblem(
            missing_message(distro, image_path(distro, session.config), session)
        )
    return imagestore.version_path(store, digest)


def planned_version(session: Session, distro: Distro, digest: str) -> Path:
    """The version a plan chose (``digest``; "" for the name's current one), checked present."""
    if not digest:
        return current_version(session, distro)
    path = imagestore.version_path(session.config.paths.images, digest)
    if not path.is_file():
        raise EnvironmentProblem(
            f"image version {digest[:12]} of {distro.name} is not in the store (replaced and "
            "pruned since it was chosen); run again"
        )
    return path


def _release_order(distro: Distro) -> tuple[str, list[tuple[int, str]]]:
    # f9 before f10, u18.04 before u24.04: numbers compare as numbers.
    parts = [p for p in re.split(r"(\d+)", distro.release) if p]
    return distro.family, [(int(p), "") if p.isdigit() else (-1, p) for p in parts]


def _role(distro: Distro, family: Catalog | None) -> str:
    if family is not None:
        return family.role(distro)
    return "end of life" if distro.end_of_life else ""


def _describe_catalog(catalog: Catalog) -> str:
    if catalog.fetched is None:
        return catalog.origin
    return f"{catalog.origin} ({catalog.fetched})"


@attrs.frozen
class ImageSource:
    """What ``vnode images show`` prints: where ``fetch`` would get a distro's image."""

    distro: str
    title: str
    family: str
    role: str
    image_url: str | None
    checksum_url: str | None
    checksum_format: str | None
    image_format: str
    alternates: tuple[dict[str, str], ...]
    sha256: str | None
    catalog: str | None

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def show_image(name: str, session: Session) -> ImageSource:
    """The exact URLs ``fetch`` would use for ``name`` (the user's mirror applied, the place
    that answered last time first), without downloading anything."""
    distro = resolve_distro(name, session)
    config = session.config
    mirror = config.images.mirror_for(distro.family)
    preferred = session.catalog_cache.places.get(distro.name)
    places = fetch.places(distro, preferred) if fetch.downloadable(distro) else []
    first, *others = [
        (fetch.with_mirror(p.image_url, mirror), fetch.with_mirror(p.checksum_url, mirror))
        for p in places
    ] or [(None, None)]
    family = {c.family: c for c in session.plugins.distro_catalogs()}.get(distro.family)
    return ImageSource(
        distro=distro.name,
        title=distro.title,
        family=distro.family,
        role=_role(distro, family),
        image_url=first[0],
        checksum_url=first[1],
        checksum_format=distro.checksum_format,
        image_format=distro.image_format,
        alternates=tuple({"image_url": i, "checksum_url": c} for i, c in others),
        sha256=distro.sha256,
        catalog=_describe_catalog(family) if family else None,
    )


# -- the catalogs: refreshed from upstream ------------------------------------------------

REFRESH_RETRY = datetime.timedelta(hours=1)  # an offline machine tries at most this often


@attrs.frozen
class RefreshOutcome:
    """One family refreshed: its latest and one-but-last and how many releases it knows."""

    family: str
    latest: str
    previous: str | None
    releases: int
    origin: str

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


IMPLICIT_REFRESH_LIMIT = 15.0  # seconds, all families together: a command waits no longer


def refresh_catalogs(
    session: Session, *, within: float | None = None
) -> tuple[list[RefreshOutcome], list[str]]:
    """Ask every plugin for its family's catalog from upstream, and cache the good ones.

    Returns the refreshed families and one line per failure; a family whose refresh failed
    keeps its cached catalog (or its plugin's built-in table). ``within``: seconds the whole
    refresh may take."""
    import time

    deadline = time.monotonic() + within if within is not None else None
    reader = MetadataReader(mirrors=session.config.images.mirror, deadline=deadline)
    fresh, failures = session.plugins.refresh_catalogs(reader)
    now = utcnow().isoformat()
    stamped = {c.family: attrs.evolve(c, fetched=c.fetched or now) for c in fresh}

    def merge(cached: CachedCatalogs) -> CachedCatalogs:
        return attrs.evolve(cached, catalogs={**cached.catalogs, **stamped}, last_attempt=now)

    session.update_catalog_cache(merge)
    session.reload_catalogs()
    outcomes = [
        RefreshOutcome(c.family, c.latest, c.previous, len(c.releases), c.origin)
        for c in stamped.values()
    ]
    return sorted(outcomes, key=lambda o: o.family), failures


def resolve_distro(name: str, session: Session, *, for_download: bool = False) -> Distro:
    """The Distro for ``name``, from a catalog no older than ``[images]
    catalog_max_age_days`` where it matters: a family alias (``fedora``, ``fedora~1``) moves
    with upstream's releases, and a download (``for_download``) wants upstream's current
    files. A stale or missing catalog is refreshed first (with ``[images] auto_refresh``, at
    most once an hour, so an offline host does not try at every command); a name no catalog
    knows refreshes too, a new release may have appeared. Offline, the alias answers from the
    cache or the built-in table and says once per command how old that is.

    Every command resolves through here once, and plans, fetches and templates use the Distro
    it returns: `up --fetch` downloads the release it planned."""
    distro = session.plugins.find_distro(name)
    family = _catalog_of(session, distro.family) if distro is not None else None
    moving = family is not None and name.lower() in family.moving_aliases()
    wanted = distro is None or ((moving or for_download) and _stale(session, family))
    if wanted and _may_refresh(session):
        _refresh_quietly(session)
        distro = session.plugins.find_distro(name)
        family = _catalog_of(session, distro.family) if distro is not None else None
    if distro is None:
        return session.plugins.resolve_distro(name)  # raises, listing the names known
    if moving and _stale(session, family) and session.note_once(f"stale catalog {distro.family}"):
        log.warning(
            f"the {distro.family} catalog is {_age_text(family)}: `{name}` means {distro.name}",
            fix="vnode images refresh",
        )
    return distro


def _catalog_of(session: Session, family: str) -> Catalog | None:
    return {c.family: c for c in session.plugins.distro_catalogs()}.get(family)


def _stale(session: Session, family: Catalog | None) -> bool:
    if family is None:
        return False  # a plugin that keeps no catalog: nothing to refresh
    age = family.age()
    return age is None or age > datetime.timedelta(days=session.config.images.catalog_max_age_days)


def _age_text(family: Catalog | None) -> str:
    age = family.age() if family is not None else None
    if age is None:
        return "undated"
    return "1 day old" if age.days == 1 else f"{age.days} days old"


def _may_refresh(session: Session) -> bool:
    config = session.config
    if not config.images.auto_refresh:
        return False
    return not session.catalog_cache.attempted_within(REFRESH_RETRY)


def _refresh_quietly(session: Session) -> None:
    # Offline is normal: the cached or built-in catalogs answer, and the command's own line
    # (e.g. "unknown distro") is what the user needs; `vnode images refresh` shows failures.
    try:
        outcomes, failures = refresh_catalogs(session, within=IMPLICIT_REFRESH_LIMIT)
    except (VnodeError, OSError) as exc:
        log.debug("catalog refresh failed; the cached catalogs answer", error=_one_line(exc))
        return
    for failure in failures:
        log.debug("catalog refresh failed; the cached catalog answers", error=failure)
    for outcome in outcomes:
        log.info("catalog refreshed", family=outcome.family, latest=outcome.latest)


def fetch_images(
    names: Iterable[str],
    session: Session,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
) -> list[FetchOutcome]:
    """Download the distros' images in parallel, each verified before it enters the store.

    Unknown or undownloadable distros are a UsageError before any download starts; a failed
    download is reported in its outcome and leaves the store as it was.
    """
    distros = [resolve_distro(name, session, for_download=True) for name in names]
    warn_end_of_life(_unique(distros))
    return fetch_distros(distros, session, force=force, reporter=reporter)


def fetch_distros(
    distros: Iterable[Distro],
    session: Session,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
) -> list[FetchOutcome]:
    """:func:`fetch_images` for distros already resolved (``up --fetch`` downloads exactly
    what it planned)."""
    config = session.config
    reporter = reporter or SilentReporter()
    distros = _unique(distros)
    for distro in distros:
        if not fetch.downloadable(distro):
            raise UsageError(
                f"no download is known for {distro.name}; use {how_to_get(distro, session)}"
            )
    store = _prepare_store(config)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_FETCHES, len(distros) or 1))
    try:
        futures = [
            pool.submit(_fetch_outcome, d, store, force, session, reporter, stop) for d in distros
        ]
        return [future.result() for future in futures]
    except BaseException:
        # Ctrl-C: the downloads stop at their next chunk instead of running to the end.
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ensure_images(
    distros: Iterable[Distro], session: Session, reporter: Reporter | None = None
) -> None:
    """Fetch the images that are missing (``up --fetch``); the first failure is raised."""
    missing = [d for d in _unique(distros) if not image_path(d, session.config).exists()]
    if not missing:
        return
    failed = [o for o in fetch_distros(missing, session, reporter=reporter) if o.detail]
    if failed:
        raise fetch.FetchError(f"fetching {failed[0].distro} failed: {failed[0].detail}")


def build_image(name: str, session: Session, *, force: bool = False) -> tuple[Path, bool]:
    """Build a distro's image with the plugin that can; returns (path, whether it was built).

    An image is kept unless ``force``, or unless this builder made it at another version
    (an older vnode's image: rebuilt once, so that what nodes expect of it holds)."""
    config = session.config
    distro = resolve_distro(name, session)
    dest = image_path(distro, config)
    builder = session.plugins.image_builder(distro, session.plugin_context(connect=False))
    if dest.exists() and not force and not _outdated(dest, builder):
        return dest, False
    if builder is None:
        raise UsageError(
            f"no plugin can build {distro.name} locally; use {how_to_get(distro, session)}"
        )
    store = _prepare_store(config)
    # The same lock as fetch and import of this image: two of them never write it at once.
    with file_lock(_lock_path(store, dest)):
        if dest.exists() and not force and not _outdated(dest, builder):
            return dest, False  # another vnode built it meanwhile
        if dest.exists() and not force:
            log.info("rebuilding: an older builder made the image", distro=distro.name)
        imagestore.movable(store, dest.name, imagestore.store_disks(config))
        staging = store / f".{dest.name}.build"
        staging.unlink(missing_ok=True)
        try:
            builder.build(staging)
            how = f"vnode images build {distro.name} ({builder.how})"
            _add_version(
                session,
                staging,
                dest,
                status="built",
                source=how,
                builder_version=builder.version,
            )
        finally:
            staging.unlink(missing_ok=True)
    return dest, True


def _outdated(image: Path, builder: ImageBuilder | None) -> bool:
    """Whether ``builder`` made the stored image at another version of itself."""
    if builder is None:
        return False
    record = read_record(image)
    return (
        record is not None
        and record.status == "built"
        and (record.builder_version or "") != builder.version
    )


def import_image(
    source: Path,
    name: str,
    session: Session,
    *,
    force: bool = False,
    allow_backing: bool = False,
) -> tuple[Path, ImageRecord]:
    """Copy (qcow2) or convert (any format qemu-img reads) a user's image into the store.

    ``name`` must resolve to a distro, whose canonical name the image takes: nodes of that
    distro then boot from it. An existing image is replaced only with ``force``. An image
    that names other files (a backing file, a data file, extents) is refused unless
    ``allow_backing``: flattening it copies those files, which may be any of the host's
    (root reads them all), into an image every node boots.
    """
    config = session.config
    distro = resolve_distro(name, session)
    if not source.is_file():
        raise UsageError(f"{source} is not a file")
    dest = image_path(distro, config)
    if dest.exists() and not force:
        raise UsageError(f"{dest} exists; give --force to replace it")
    info = _image_info(source, fmt=None)
    if info is None:
        raise UsageError(f"{source} is not a disk image qemu-img can read")
    others = _external_names(info)
    if others and not allow_backing:
        raise UsageError(
            f"{source} reads other files ({', '.join(others)}); importing it would copy them "
            "into the image: give --allow-backing if you mean it"
        )
    store = _prepare_store(config)
    staging = dest.with_name(f".{dest.name}.import")
    with file_lock(_lock_path(store, dest)):
        imagestore.movable(store, dest.name, imagestore.store_disks(config))
        try:
            converted = _copy_as_qcow2(source, staging, info)
            source_sha256 = hash_file(source, ["sha256"])["sha256"]
            record = _add_version(
                session,
                staging,
                dest,
                status="imported",
                source=str(source.resolve()),
                source_checksum={"algorithm": "sha256", "hexdigest": source_sha256},
                converted_from=converted,
            )
        finally:
            staging.unlink(missing_ok=True)
    return dest, record


def _add_version(session: Session, staging: Path, dest: Path, **record: Any) -> ImageRecord:
    """A finished image kept as a version, recorded, and ``dest``'s name moved onto it; the
    version it replaces stays while anything uses it."""
    store = dest.parent
    os.chmod(staging, 0o644)
    digest = hash_file(staging, ["sha256"])["sha256"]
    version = imagestore.keep(store, staging, digest)
    written = write_record(version, sha256=digest, name=dest.name.removesuffix(".qcow2"), **record)
    disks = imagestore.store_disks(session.config)
    imagestore.point(store, dest.name, digest, disks)
    imagestore.prune(store, disks, imagestore.store_pins(session.config))
    return written


def write_record(
    image: Path,
    *,
    status: str,
    source: str,
    source_checksum: dict[str, str] | None = None,
    converted_from: str | None = None,
    signed_by: str | None = None,
    signature: str | None = None,
    builder_version: str | None = None,
    sha256: str | None = None,
    name: str | None = None,
) -> ImageRecord:
    stat = image.stat()
    record = ImageRecord(
        status=status,
        source=source,
        sha256=sha256 or hash_file(image, ["sha256"])["sha256"],
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        recorded=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        source_checksum=source_checksum,
        converted_from=converted_from,
        signed_by=signed_by,
        signature=signature,
        builder_version=builder_version,
        name=name,
    )
    text = json.dumps(attrs.asdict(record), indent=2) + "\n"
    write_atomic(record_path(image, name), text)
    return record


def _fetch_outcome(
    distro: Distro,
    store: Path,
    force: bool,
    session: Session,
    reporter: Reporter,
    stop: threading.Event,
) -> FetchOutcome:
    dest = store / distro.image_filename
    try:
        fetched = _fetch_one(distro, dest, force, session, reporter, stop)
    except (VnodeError, OSError) as exc:
        reporter.phase(distro.name, "stopped" if stop.is_set() else "failed")
        return FetchOutcome(distro.name, dest, "failed", _one_line(exc))
    return FetchOutcome(distro.name, dest, "fetched" if fetched else "present")


def _fetch_one(
    distro: Distro,
    dest: Path,
    force: bool,
    session: Session,
    reporter: Reporter,
    stop: threading.Event,
) -> bool:
    """Download, verify and store one image; False if it was there already."""

    def progress(text: str) -> None:
        reporter.phase(distro.name, text)

    # One fetch per image at a time: two would write the same .part.
    with file_lock(_lock_path(dest.parent, dest)):
        if dest.exists() and not force:
            progress("present")
            return False
        imagestore.movable(dest.parent, dest.name, imagestore.store_disks(session.config))
        progress("reading checksums")
        preferred = session.catalog_cache.places.get(distro.name)
        mirror = session.config.images.mirror_for(distro.family)
        keyring = session.config.images.keyring_for(distro.family)
        source = fetch.locate(distro, mirror, preferred, keyring)
        if source.place != preferred:
            session.update_catalog_cache(remember_place(distro.name, source.place))
        part = dest.with_name(dest.name + ".part")
        fetch.download(source, part, progress, stop)
        converted = _ensure_qcow2(part, progress)
        _add_version(
            session,
            part,
            dest,
            status="verified",
            source=source.image_url,
            source_checksum={**source.checksum.to_dict(), "checksum_url": source.checksum_url},
            converted_from=converted,
            signed_by=source.signer,
            signature=source.signature_note,
        )
    progress("verified, signed" if source.signer else f"verified; {source.signature_note}")
    return True


def _ensure_qcow2(part: Path, progress: fetch.Progress) -> str | None:
    """Make the verified download a standalone qcow2; the format it had if it was not one.

    A download is never format-probed: anything without the qcow2 magic is read as raw
    (probing would let a crafted file name host files as its extents).
    """
    with part.open("rb") as handle:
        is_qcow2 = handle.read(4) == QCOW2_MAGIC
    if is_qcow2:
        info = _image_info(part, fmt="qcow2")
        if info is None or _external_files(info):
            part.unlink()
            raise fetch.FetchError(
                f"{part.name}: not a standalone qcow2 (backing or data file); discarded"
            )
        return None
    progress("converting raw to qcow2")
    converted = part.with_name(part.name + ".qcow2")
    try:
        _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(part), str(converted))
        os.replace(converted, part)
    finally:
        converted.unlink(missing_ok=True)
    return "raw"


def _copy_as_qcow2(source: Path, staging: Path, info: dict[str, Any]) -> str | None:
    fmt = str(info.get("format"))
    if fmt == "qcow2" and not _external_files(info):
        shutil.copyfile(source, staging)
        return None
    # Converting also flattens a backing chain into one standalone image.
    _qemu_img("convert", "-f", fmt, "-O", "qcow2", str(source), str(staging))
    return fmt


def _image_info(path: Path, fmt: str | None) -> dict[str, Any] | None:
    argv = ["qemu-img", "info", "--output=json", *(["-f", fmt] if fmt else []), str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def _external_files(info: dict[str, Any]) -> bool:
    return bool(_external_names(info))


def _external_names(info: dict[str, Any]) -> list[str]:
    """The files besides itself an image makes qemu read: its backing file, a qcow2 data
    file, a VMDK's extents (as ``qemu-img info`` reports them)."""
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    data = data if isinstance(data, dict) else {}
    names = [str(info["backing-filename"])] if info.get("backing-filename") else []
    if data.get("data-file"):
        names.append(str(data["data-file"]))
    own = str(info.get("filename", ""))
    extents = data.get("extents")
    for extent in extents if isinstance(extents, list) else ():
        name = extent.get("filename") if isinstance(extent, dict) else None
        if name and str(name) != own:
            names.append(str(name))
    return names


def _qemu_img(*args: str) -> None:
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EnvironmentProblem(f"qemu-img {args[0]} failed: {_one_line(result.stderr)}")


def _prepare_store(config: Config) -> Path:
    store = config.paths.images
    try:
        store.mkdir(parents=True, exist_ok=True)
        # libvirt's qemu runs as its own user: the store must be searchable by everyone.
        if store.stat().st_mode & 0o005 != 0o005:
            os.chmod(store, 0o755)
        if not os.access(store, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except PermissionError as exc:
        raise EnvironmentProblem(
            f"cannot write the image store {store}: {exc.strerror}"
            " (run as root, or set paths.image_store)"
        ) from None
    return store


def _lock_path(store: Path, dest: Path) -> Path:
    return store / f".{dest.name}.lock"


def _unique(distros: Iterable[Distro]) -> list[Distro]:
    return list({d.name: d for d in distros}.values())


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())

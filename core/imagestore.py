"""The image store's layout: every image version kept by its content, names pointing at one.

``<store>/sha256/<hex>.qcow2`` is one version of an image, named by its sha256, with its
record beside it (``<hex>.qcow2.json``, see :mod:`vnode.images`); it never changes once
there. ``<store>/d12.qcow2`` is a name: a symlink to the version nodes of that distro are
made from now. ``fetch --force``, ``build`` and ``import --force`` add a version and move the
name (one ``rename``: a reader sees the old version or the new one), and never touch the
old version: node overlays and warm templates name the version file as their backing file,
not the name, so they keep booting from what they were made from.

A version stays while something uses it: a name points at it, a node's or a template's disk
is backed by it, or a lab's ``lab.lock`` pins it (locks are registered in
``<state>/image-pins/`` when ``apply`` reads or writes them). It is removed when the last user
goes (``destroy``, ``template remove``, a name moving on) or by ``vnode images prune``, the
one place that also looks at every host's pool. Users are found by reading disks' backing
files, not counted, so a vnode killed at any point leaves nothing that keeps a version
forever or removes one in use.

A store made by an older vnode has plain files as names; each is moved into ``sha256/`` when
first met (hashed: the version is named by what the file holds, its record carried over only
if its digest agrees) and the name becomes a symlink. Disks backed by the old plain path
(they follow the symlink, so they keep working) are rebased onto the version while their
guest is not running; one still running blocks moving that name, with one line saying so.

Remote hosts (``qemu+ssh``) hold each version they need as a volume ``sha256-<hex>.qcow2``
in vnode's pool, uploaded once; node volumes are backed by it. A host's version volume goes
when no volume there is backed by it and it is not the current version of a name here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from vnode.errors import EnvironmentProblem
from vnode.files import fsync_dir, write_atomic
from vnode.locks import file_lock
from vnode.logs import get_logger

log = get_logger("vnode.imagestore")

VERSIONS = "sha256"
PINS = "image-pins"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_VERSION_FILE = re.compile(r"([0-9a-f]{64})\.qcow2")
_VOLUME = re.compile(r"sha256-([0-9a-f]{64})\.qcow2")
_STORE_LOCK = ".store.lock"


def versions_dir(store: Path) -> Path:
    return store / VERSIONS


def version_path(store: Path, digest: str) -> Path:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256: {digest!r}")
    return versions_dir(store) / f"{digest}.qcow2"


def volume_name(digest: str) -> str:
    """A version's volume in a remote host's pool."""
    version_path(Path("/"), digest)  # validates
    return f"sha256-{digest}.qcow2"


def record_file(version: Path, name: str | None) -> Path:
    """Where the record of a version added as ``name`` (``d12.qcow2``) is kept: one per name,
    for two distros may hold the same bytes; without a name, the first one there is."""
    if name is not None:
        return version.with_name(f"{version.name}.{name.removesuffix('.qcow2')}.json")
    found = sorted(version.parent.glob(f"{version.name}.*.json"))
    return found[0] if found else version.with_name(f"{version.name}.json")


def digest_of(path: Path) -> str | None:
    """The version a path in the store is (a version file, or a name pointing at one)."""
    target = path.resolve() if path.is_symlink() else path
    match = _VERSION_FILE.fullmatch(target.name)
    if match and target.parent.name == VERSIONS:
        return match.group(1)
    return None


def current(store: Path, name: str) -> str | None:
    """The digest the name points at now; None when the store has no such name, or when it
    is still a plain file (see :func:`migrate`)."""
    path = store / name
    return digest_of(path) if path.is_symlink() and versioned(path) else None


def store_lock(store: Path, *, shared: bool = False) -> Any:
    """Shared: a version is being used (a disk made on it); exclusive: names move, versions
    go. Held for moments only, never over a download or a build."""
    return file_lock(store / _STORE_LOCK, shared=shared)


@attrs.frozen
class Disk:
    """A disk that may be backed by an image version: a node's or a template's."""

    user: str  # "node d1", "template 3f2a..."
    path: Path


def backing_file(path: Path) -> str | None:
    """The backing file a qcow2 header names (bytes 8..20: offset and length), or None."""
    import struct

    with path.open("rb") as handle:
        header = handle.read(20)
        if len(header) < 20 or header[:4] != b"QFI\xfb":
            return None
        offset, size = struct.unpack(">QI", header[8:20])
        if not offset or size > 4096:
            return None
        handle.seek(offset)
        return handle.read(size).decode(errors="replace")


def _backings(disks: Iterable[Disk]) -> Iterator[tuple[Disk, str]]:
    for disk in disks:
        try:
            backing = backing_file(disk.path)
        except OSError:
            continue
        if backing:
            yield disk, backing


def _version_backed(store: Path, backing: str) -> str | None:
    """The digest of the version a backing file string leads to in this store, if any."""
    path = Path(backing)
    if not path.is_absolute():
        return None
    if path.parent.name == VERSIONS and path.parent.parent.resolve() == store.resolve():
        match = _VERSION_FILE.fullmatch(path.name)
        return match.group(1) if match else None
    if path.parent.resolve() == store.resolve():
        return current(store, path.name)  # an older vnode's overlay: it follows the name
    return None


def _name_backed(store: Path, name: str, backing: str) -> bool:
    path = Path(backing)
    return path.is_absolute() and path.name == name and path.parent.resolve() == store.resolve()


def store_disks(config: Any) -> list[Disk]:
    """The local disks an image version can back: nodes' and warm templates', of every
    state directory that uses this store (``paths.image_store`` may be shared)."""
    states = states_of(config.paths.images, config.paths.state)
    disks = []
    for state in states:
        where = "" if state == config.paths.state else f" (state {state})"
        for kind, root in (("node", state / "nodes"), ("template", state / "templates")):
            if root.is_dir():
                disks += [
                    Disk(f"{kind} {disk.parent.name}{where}", disk)
                    for disk in sorted(root.glob("*/disk.qcow2"))
                ]
    return disks


def store_pins(config: Any) -> dict[str, list[str]]:
    """The lab.lock pins of every state directory that uses this store."""
    found: dict[str, list[str]] = {}
    for state in states_of(config.paths.images, config.paths.state):
        for digest, locks in pinned(state).items():
            found.setdefault(digest, []).extend(locks)
    return found


_STATES = ".states"


def states_of(store: Path, own: Path) -> list[Path]:
    """The state directories that use the store: ``own`` (registered now if it was not) and
    every other registered one that still exists (one gone is forgotten)."""
    own = Path(os.path.abspath(own))
    root = store / _STATES
    entry = root / f"{hashlib.sha256(str(own).encode()).hexdigest()[:24]}.json"
    try:
        if not entry.is_file() and store.is_dir():
            root.mkdir(mode=0o755, exist_ok=True)
            write_atomic(entry, json.dumps({"state": str(own)}) + "\n")
    except OSError:
        pass  # a reader without write access to the store: its own state still counts
    states = [own]
    for other in sorted(root.glob("*.json")) if root.is_dir() else ():
        try:
            state = Path(json.loads(other.read_text())["state"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if state == own:
            continue
        if state.is_dir():
            states.append(state)
        else:
            with contextlib.suppress(OSError):
                other.unlink()
    return states


def prune_local(config: Any) -> list[str]:
    """Remove the versions of the local store nothing uses (after a destroy, a template
    removal); the digests removed."""
    store = config.paths.images
    if not versions_dir(store).is_dir():
        return []
    return prune(store, store_disks(config), store_pins(config))


def current_digests(store: Path) -> set[str]:
    """The versions the store's names point at."""
    if not store.is_dir():
        return set()
    return {d for name in store.glob("*.qcow2") if (d := current(store, name.name)) is not None}


# -- pins: lab.lock files ---------------------------------------------------------------


def register_pin(state: Path, lock: Path) -> None:
    """Remember a lab.lock so that the versions it pins are kept while it exists."""
    lock = lock.resolve()
    key = hashlib.sha256(str(lock).encode()).hexdigest()[:24]
    entry = state / PINS / f"{key}.json"
    if not entry.is_file():
        write_atomic(entry, json.dumps({"lock": str(lock)}) + "\n", 0o600)


def pinned(state: Path) -> dict[str, list[str]]:
    """{digest: ["lab.lock PATH", ...]} for every registered lock still on disk; a lock gone
    is forgotten, one that is not a lock any more pins nothing."""
    found: dict[str, list[str]] = {}
    root = state / PINS
    if not root.is_dir():
        return found
    for entry in sorted(root.glob("*.json")):
        try:
            lock = Path(json.loads(entry.read_text())["lock"])
        except (OSError, ValueError, KeyError, TypeError):
            entry.unlink(missing_ok=True)
            continue
        try:
            data = json.loads(lock.read_text())
        except FileNotFoundError:
            entry.unlink(missing_ok=True)
            continue
        except (OSError, ValueError):
            continue
        images = data.get("images") if isinstance(data, dict) else None
        for digest in images.values() if isinstance(images, dict) else ():
            if isinstance(digest, str) and _DIGEST.fullmatch(digest):
                found.setdefault(digest, []).append(f"lab.lock {lock}")
    return found


# -- who uses what ----------------------------------------------------------------------


def usage(store: Path, disks: Iterable[Disk], pins: dict[str, list[str]]) -> dict[str, list[str]]:
    """{digest: its users}: the names pointing at it, the disks backed by it, the locks."""
    users: dict[str, list[str]] = {}
    for name_path in sorted(store.glob("*.qcow2")) if store.is_dir() else ():
        if (digest := current(store, name_path.name)) is not None:
            users.setdefault(digest, []).append(f"name {name_path.name.removesuffix('.qcow2')}")
    for disk, backing in _backings(disks):
        if (digest := _version_backed(store, backing)) is not None:
            users.setdefault(digest, []).append(disk.user)
    for digest, locks in pins.items():
        users.setdefault(digest, []).extend(locks)
    return users


def versions(store: Path) -> list[str]:
    root = versions_dir(store)
    if not root.is_dir():
        return []
    return sorted(m.group(1) for p in root.iterdir() if (m := _VERSION_FILE.fullmatch(p.name)))


def prune(store: Path, disks: Iterable[Disk], pins: dict[str, list[str]]) -> list[str]:
    """Remove every version nothing uses; the digests removed."""
    disks = list(disks)
    removed = []
    with store_lock(store):
        used = usage(store, disks, pins)
        for digest in versions(store):
            if digest in used:
                continue
            path = version_path(store, digest)
            path.unlink(missing_ok=True)
            for record in path.parent.glob(f"{path.name}.*json"):
                record.unlink(missing_ok=True)
            removed.append(digest)
        # A record whose version is gone: a vnode killed between the two removals.
        for record in versions_dir(store).glob("*.qcow2.*json"):
            if not record.with_name(record.name.split(".qcow2")[0] + ".qcow2").exists():
                record.unlink(missing_ok=True)
        if removed:
            fsync_dir(versions_dir(store))
    for digest in removed:
        log.info("image version removed: nothing uses it", sha256=digest[:12])
    return removed


# -- adding versions, moving names -------------------------------------------------------


def keep(store: Path, staging: Path, digest: str) -> Path:
    """Move a finished image (``digest`` its sha256) into the store as a version; an
    identical version already there is kept as it is."""
    from vnode.files import install_atomic

    version = version_path(store, digest)
    _ensure_versions_dir(store)
    with store_lock(store):
        if version.is_file():
            staging.unlink()
        else:
            install_atomic(staging, version, 0o644)
    return version


def _ensure_versions_dir(store: Path) -> None:
    root = versions_dir(store)
    root.mkdir(mode=0o755, exist_ok=True)
    # The qemu user reads versions through it; nobody but root writes.
    if root.stat().st_mode & 0o777 != 0o755:
        os.chmod(root, 0o755)


def point(store: Path, name: str, digest: str, disks: Iterable[Disk]) -> None:
    """Make ``name`` lead to the version ``digest`` (which is in the store), atomically.

    An older vnode's disks backed by the name itself are rebased onto its version first;
    one whose guest runs cannot be, and the name then stays where it is (EnvironmentProblem).
    """
    disks = list(disks)
    with store_lock(store):
        old = _migrate_locked(store, name, disks)
        if old == digest:
            return
        if old is not None and (stuck := _rebase_name_users(store, name, old, disks)):
            raise EnvironmentProblem(
                f"{', '.join(stuck)} run on {name} by its name (made by an older vnode) and "
                f"cannot be moved onto its version while running: stop them (`vnode stop`) "
                "or destroy them, then run again"
            )
        link = store / f".{name}.link"
        link.unlink(missing_ok=True)
        os.symlink(f"{VERSIONS}/{digest}.qcow2", link)
        os.replace(link, store / name)
        fsync_dir(store)


def movable(store: Path, name: str, disks: Iterable[Disk]) -> None:
    """Before a download or a build: the name can move (its older disks rebased), or an
    EnvironmentProblem saying which running guests hold it."""
    disks = list(disks)
    with store_lock(store):
        old = _migrate_locked(store, name, disks)
        if old is not None and (stuck := _rebase_name_users(store, name, old, disks)):
            raise EnvironmentProblem(
                f"{', '.join(stuck)} run on {name} by its name (made by an older vnode): stop "
                "them (`vnode stop`) or destroy them, then run again"
            )


def versioned(path: Path) -> bool:
    """A name already in this layout (a symlink into the versions), or absent."""
    if not path.is_symlink():
        return not path.exists()
    target = Path(os.path.normpath(path.parent / os.readlink(path)))
    return target.parent == versions_dir(path.parent)


def migrate(store: Path, name: str, disks: Iterable[Disk]) -> str | None:
    """A name that is still a plain file (an older vnode's store, or a symlink to an image
    elsewhere) made a version; its digest, or None when the store has no such name."""
    path = store / name
    if versioned(path):
        return _checked_current(store, name)
    with store_lock(store):
        return _migrate_locked(store, name, list(disks))


def _checked_current(store: Path, name: str) -> str | None:
    path = store / name
    if not path.is_symlink():
        return None
    digest = digest_of(path)
    if digest is None or not path.exists():
        raise EnvironmentProblem(
            f"{path} leads to {os.readlink(path)}, which is not a version in the store: "
            "remove it and fetch, build or import the image again"
        )
    return digest


def _migrate_locked(store: Path, name: str, disks: list[Disk]) -> str | None:
    path = store / name
    if versioned(path):
        return _checked_current(store, name)
    from vnode.checksums import hash_file

    if not path.is_file():
        raise EnvironmentProblem(f"{path} is not a file; not an image vnode can use")
    digest = hash_file(path, ["sha256"])["sha256"]
    _ensure_versions_dir(store)
    version = version_path(store, digest)
    if not version.exists():
        _link_or_copy(path, version)
    _carry_record(path, version, digest)
    link = store / f".{name}.link"
    link.unlink(missing_ok=True)
    os.symlink(f"{VERSIONS}/{digest}.qcow2", link)
    os.replace(link, path)
    fsync_dir(versions_dir(store))
    fsync_dir(store)
    log.info("image moved into the versioned store", name=name, sha256=digest[:12])
    stuck = _rebase_name_users(store, name, digest, disks)
    if stuck:
        log.warning(
            "still running on the image by its name; moved onto its version once stopped",
            name=name,
            users=", ".join(stuck),
        )
    return digest


def _link_or_copy(path: Path, version: Path) -> None:
    """The same file (a hard link: nothing copied, nothing to verify twice), or a copy when
    the name led to another filesystem."""
    import shutil

    try:
        os.link(path.resolve(), version)  # the file itself, not a symlink to it
    except OSError:
        staging = version.with_name(f".{version.name}.copy")
        shutil.copyfile(path, staging)
        os.chmod(staging, 0o644)
        os.replace(staging, version)


def _carry_record(path: Path, version: Path, digest: str) -> None:
    """The plain file's record goes with it only if it describes what the file holds."""
    old = path.with_name(path.name + ".json")
    new = record_file(version, path.name)
    try:
        record = json.loads(old.read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("sha256") == digest and not new.exists():
        record["name"] = path.name.removesuffix(".qcow2")
        write_atomic(new, json.dumps(record, indent=2) + "\n")
    elif record is not None:
        log.warning("image record does not match the image; it lists as unverified", name=path.name)
    old.unlink(missing_ok=True)


def _rebase_name_users(store: Path, name: str, digest: str, disks: list[Disk]) -> list[str]:
    """Disks backed by the name itself rebased onto its version (the same bytes: only the
    header changes); the users whose guest holds the disk open, which cannot be."""
    version = str(version_path(store, digest))
    stuck = []
    for disk, backing in _backings(disks):
        if not _name_backed(store, name, backing):
            continue
        argv = ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", version, str(disk.path)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            stuck.append(disk.user)  # QEMU holds its write lock: the guest runs
        else:
            log.info("disk moved onto its image version", user=disk.user, sha256=digest[:12])
    return stuck


# -- remote hosts ------------------------------------------------------------------------


def prune_pool(pool: Any, keep_digests: set[str]) -> list[str]:
    """Remove the version volumes of a host's pool that no volume there is backed by, but
    those of the versions names point at here (uploaded once, kept for the next node); an
    older vnode's image volumes (``NAME.qcow2`` with ``NAME.qcow2.sha256``) likewise."""
    from vnode import hypervisor

    volumes = hypervisor.volume_backings(pool)
    backed = {backing for _, backing in volumes.values() if backing}
    removed = []
    for name, (path, _) in sorted(volumes.items()):
        match = _VOLUME.fullmatch(name)
        legacy = match is None and name.endswith(".qcow2") and f"{name}.sha256" in volumes
        if not (match or legacy) or path in backed:
            continue
        if match and match.group(1) in keep_digests:
            continue
        hypervisor.delete_volume(pool, f"{name}.sha256")
        hypervisor.delete_volume(pool, name)
        removed.append(name)
    return removed

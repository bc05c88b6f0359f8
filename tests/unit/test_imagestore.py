"""The versioned image store on real files (qemu-img makes the images and overlays): names
move, versions in use stay, an older vnode's flat store is migrated and its overlays rebased."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from vnode import imagestore
from vnode.config import build_config
from vnode.errors import EnvironmentProblem
from vnode.locks import FileLock


def _qcow2(path: Path, size: str = "16M", backing: Path | None = None) -> Path:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-F", "qcow2", "-b", str(backing)]
    subprocess.run([*argv, str(path), size], check=True)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def config(tmp_path: Path):
    config = build_config({"paths": {"state": str(tmp_path / "state")}})
    config.paths.images.mkdir(parents=True)
    config.paths.nodes.mkdir(parents=True)
    return config


def _add(store: Path, name: str, size: str) -> str:
    staging = _qcow2(store / f".{name}.staging", size)
    digest = _sha(staging)
    imagestore.keep(store, staging, digest)
    return digest


def _node(config, name: str, backing: Path) -> Path:
    directory = config.paths.nodes / name
    directory.mkdir()
    return _qcow2(directory / "disk.qcow2", backing=backing)


def test_a_name_moves_and_the_version_under_a_node_stays_until_the_node_goes(config) -> None:
    store = config.paths.images
    first = _add(store, "d12.qcow2", "16M")
    imagestore.point(store, "d12.qcow2", first, [])
    assert imagestore.current(store, "d12.qcow2") == first
    node = _node(config, "n1", imagestore.version_path(store, first))

    second = _add(store, "d12.qcow2", "32M")
    imagestore.point(store, "d12.qcow2", second, imagestore.store_disks(config))
    assert imagestore.current(store, "d12.qcow2") == second
    assert imagestore.prune_local(config) == []
    assert imagestore.version_path(store, first).is_file()
    assert imagestore.usage(store, imagestore.store_disks(config), {})[first] == ["node n1"]

    node.unlink()
    assert imagestore.prune_local(config) == [first]
    assert not imagestore.version_path(store, first).exists()
    assert imagestore.versions(store) == [second]  # the current one is never pruned


def test_a_template_and_a_lab_lock_keep_a_version(config, tmp_path: Path) -> None:
    store = config.paths.images
    old = _add(store, "d12.qcow2", "16M")
    imagestore.point(store, "d12.qcow2", old, [])
    template = config.paths.state / "templates" / "abc"
    template.mkdir(parents=True)
    _qcow2(template / "disk.qcow2", backing=imagestore.version_path(store, old))
    lock = tmp_path / "lab.lock"
    lock.write_text(json.dumps({"version": 1, "lab": "x", "images": {"d12": old}}))
    imagestore.register_pin(config.paths.state, lock)
    new = _add(store, "d12.qcow2", "32M")
    imagestore.point(store, "d12.qcow2", new, [])

    users = imagestore.usage(store, imagestore.store_disks(config), imagestore.store_pins(config))
    assert users[old] == ["template abc", f"lab.lock {lock}"]
    (template / "disk.qcow2").unlink()
    assert imagestore.prune_local(config) == []  # the lock still pins it
    lock.unlink()
    assert imagestore.prune_local(config) == [old]
    assert not list((config.paths.state / imagestore.PINS).iterdir())  # forgotten


def test_a_store_shared_by_two_state_directories_keeps_the_other_ones_versions(
    config,
    tmp_path: Path,
) -> None:
    store = config.paths.images
    other = build_config({"paths": {"state": str(tmp_path / "other"), "image_store": str(store)}})
    old = _add(store, "d12.qcow2", "16M")
    imagestore.point(store, "d12.qcow2", old, [])
    other.paths.nodes.mkdir(parents=True)
    _node(other, "theirs", imagestore.version_path(store, old))
    imagestore.store_disks(other)  # the other state directory has used the store
    imagestore.point(store, "d12.qcow2", _add(store, "d12.qcow2", "32M"), [])

    assert imagestore.prune_local(config) == []
    assert "node theirs (state" in " ".join(
        imagestore.usage(store, imagestore.store_disks(config), {})[old]
    )


def test_a_flat_store_is_migrated_and_its_overlays_rebased(config) -> None:
    store = config.paths.images
    flat = _qcow2(store / "d12.qcow2")
    digest = _sha(flat)
    stat = flat.stat()
    record = {"status": "built", "source": "x", "sha256": digest, "size": stat.st_size,
              "mtime_ns": stat.st_mtime_ns, "recorded": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    (store / "d12.qcow2.json").write_text(json.dumps(record))
    node = _node(config, "old", flat)

    assert imagestore.migrate(store, "d12.qcow2", imagestore.store_disks(config)) == digest
    assert (store / "d12.qcow2").is_symlink()
    version = imagestore.version_path(store, digest)
    assert _sha(version) == digest
    carried = json.loads(imagestore.record_file(version, "d12").read_text())
    assert carried["sha256"] == digest and carried["name"] == "d12"
    assert not (store / "d12.qcow2.json").exists()
    assert imagestore.backing_file(node) == str(version)

    # Moving the name on leaves the migrated node on its version.
    imagestore.point(store, "d12.qcow2", _add(store, "d12.qcow2", "32M"), [])
    assert imagestore.backing_file(node) == str(version)
    assert imagestore.prune_local(config) == []


def test_a_record_that_does_not_match_is_not_carried(config) -> None:
    store = config.paths.images
    _qcow2(store / "d12.qcow2")
    (store / "d12.qcow2.json").write_text(json.dumps({"sha256": "0" * 64}))
    digest = imagestore.migrate(store, "d12.qcow2", [])
    version = imagestore.version_path(store, digest)
    assert not list(version.parent.glob("*.json"))


def test_a_name_that_leads_to_an_image_elsewhere_is_migrated(config, tmp_path: Path) -> None:
    elsewhere = _qcow2(tmp_path / "mine.qcow2")
    store = config.paths.images
    (store / "d12.qcow2").symlink_to(elsewhere)
    assert imagestore.current(store, "d12.qcow2") is None
    digest = imagestore.migrate(store, "d12.qcow2", [])
    assert digest == _sha(elsewhere)
    assert imagestore.current(store, "d12.qcow2") == digest
    assert elsewhere.is_file()  # linked or copied, never moved


def test_a_name_leading_to_a_lost_version_is_one_clear_line(config) -> None:
    store = config.paths.images
    (store / "sha256").mkdir()
    (store / "d12.qcow2").symlink_to(f"sha256/{'a' * 64}.qcow2")
    with pytest.raises(EnvironmentProblem, match="not a version in the store"):
        imagestore.migrate(store, "d12.qcow2", [])


def test_a_name_used_by_a_running_older_overlay_does_not_move(config) -> None:
    store = config.paths.images
    flat = _qcow2(store / "d12.qcow2")
    node = _node(config, "busy", flat)
    holder = subprocess.Popen(  # QEMU's own image lock, as a running guest holds it
        ["qemu-io", "-c", "sleep 60000", str(node)], stdin=subprocess.PIPE
    )
    try:
        subprocess.run(["sleep", "0.5"], check=True)
        old = imagestore.migrate(store, "d12.qcow2", imagestore.store_disks(config))
        assert imagestore.backing_file(node) == str(flat)  # not rebased under QEMU
        new = _add(store, "d12.qcow2", "32M")
        with pytest.raises(EnvironmentProblem, match=r"node busy run on d12\.qcow2"):
            imagestore.point(store, "d12.qcow2", new, imagestore.store_disks(config))
        assert imagestore.current(store, "d12.qcow2") == old
    finally:
        holder.kill()
        holder.wait()
    imagestore.point(store, "d12.qcow2", new, imagestore.store_disks(config))
    assert imagestore.backing_file(node) == str(imagestore.version_path(store, old))


def test_pool_volumes_go_when_nothing_is_backed_by_them() -> None:
    import libvirt

    conn = libvirt.open("test:///default")
    pool = conn.storagePoolLookupByName("default-pool")
    keep, gone = "a" * 64, "b" * 64

    def volume(name: str, backing: str | None = None) -> None:
        back = f"<backingStore><path>{backing}</path></backingStore>" if backing else ""
        xml = f"<volume><name>{name}</name><capacity>1024</capacity>{back}</volume>"
        pool.createXML(xml, 0)

    for digest in (keep, gone, "c" * 64):
        volume(imagestore.volume_name(digest))
        volume(f"{imagestore.volume_name(digest)}.sha256")
    used = pool.storageVolLookupByName(imagestore.volume_name("c" * 64)).path()
    volume("n1-disk.qcow2", used)
    volume("d12.qcow2")  # an older vnode's upload, unused
    volume("d12.qcow2.sha256")

    removed = imagestore.prune_pool(pool, {keep})
    assert removed == ["d12.qcow2", imagestore.volume_name(gone)]
    left = set(pool.listVolumes())
    assert imagestore.volume_name(keep) in left and imagestore.volume_name("c" * 64) in left
    assert "n1-disk.qcow2" in left


def test_shared_locks_exclude_an_exclusive_one(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    readers = [FileLock(path), FileLock(path)]
    for lock in readers:
        lock.acquire(shared=True)
    writer = FileLock(path)
    assert not writer.try_acquire()
    for lock in readers:
        lock.release()
    assert writer.try_acquire()
    writer.release()
    assert os.path.exists(path)

"""Where a host keeps its templates: the state directory's files, or volumes of a real pool
on this machine's libvirtd (qemu:///system; skipped where it does not answer), read and
written through libvirt's storage API as a remote host's are."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LAB_PREFIX
from tests.unit.test_warm import TEMPLATE_XML, _fake_save
from vnode import hypervisor, warm
from vnode.errors import UsageError
from vnode.model import Distro, NodePlan
from vnode.warmstorage import PoolVolumes, StateFiles, volume_stem

KEY = "aaaa111122223333"
RECORD = {
    "key": KEY,
    "distro": "d12",
    "image": "/images/d12.qcow2",
    "image_fingerprint": "sha256:aa",
    "memory_mib": 512,
    "vcpus": 1,
    "virt_type": "qemu",
    "disk_gb": 1,
    "agent": "abc",
    "libvirt": "9.0.0",
    "qemu": "7.2.0",
    "made": "2026-12-07T09:00:00+00:00",
    "boot_seconds": 40.0,
    "save_bytes": 1,
}
DISTRO = Distro(name="d12", family="debian", release="12", title="Debian 12", osinfo="x")


def test_each_storage_names_its_files_and_locks_per_host(tmp_path: Path) -> None:
    files = StateFiles(conn=None, root=tmp_path / "templates", nodes_dir=tmp_path, host="local")
    assert files.paths(KEY) == (
        tmp_path / "templates" / KEY,
        tmp_path / "templates" / KEY / "disk.qcow2",
        tmp_path / "templates" / KEY / "state.save",
    )
    pool = PoolVolumes(conn=None, pool=None, directory=Path("/p"), host="hv2")
    assert pool.paths(KEY)[1:] == (
        Path(f"/p/template.{KEY}-disk.qcow2"),
        Path(f"/p/template.{KEY}-state.save"),
    )
    # The same key on two hosts is two templates: neither waits for the other's lock.
    assert pool.lock_name(KEY) != files.lock_name(KEY)
    assert PoolVolumes(None, None, Path("/p"), "hv3").lock_name(KEY) != pool.lock_name(KEY)
    assert pool.list() == [] and pool.read(KEY) is None  # no pool yet: no template


@pytest.fixture
def real_pool(tmp_path: Path) -> Iterator[PoolVolumes]:
    try:
        conn = hypervisor.connect("qemu:///system")
    except hypervisor.EnvironmentProblem:
        pytest.skip("libvirtd does not answer on qemu:///system (`make setup` starts it)")
    name = f"{LAB_PREFIX}wsunit-{uuid.uuid4().hex[:6]}"
    directory = tmp_path / "pool"
    tmp_path.chmod(0o755)
    pool = hypervisor.ensure_pool(conn, name, str(directory))
    try:
        yield PoolVolumes(conn=conn, pool=pool, directory=directory, host="hv2")
    finally:
        for volume in pool.listAllVolumes(0):
            volume.delete(0)
        pool.destroy()
        pool.undefine()
        conn.close()


def _template_in(storage: PoolVolumes, body: bytes) -> None:
    """A made template's volumes, as make_template leaves them (disk, save image, record)."""
    stem = volume_stem(KEY)
    base = storage.directory / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    hypervisor.refresh_pool(storage.pool)
    hypervisor.create_overlay_volume(
        storage.pool, f"{stem}-disk.qcow2", storage.pool.storageVolLookupByName("base.qcow2"), 1
    )
    scratch = storage.directory.parent / "scratch.save"  # outside the pool: sent through it
    _fake_save(scratch, TEMPLATE_XML, "<cookie/>", body)
    hypervisor.upload_file(storage.conn, storage.pool, f"{stem}-state.save", scratch, "raw")
    hypervisor.upload_bytes(storage.conn, storage.pool, f"{stem}.json", json.dumps(RECORD).encode())


def _node(storage: PoolVolumes, name: str = "vnode05") -> NodePlan:
    return NodePlan(
        name=name,
        number=5,
        pool="vnode",
        mac="52:54:00:00:00:05",
        distro=DISTRO,
        memory_mib=512,
        vcpus=1,
        disk_gb=1,
        network="libvirt:vnode",
        virt_type="qemu",
        node_dir=Path("/nowhere") / name,
        host="hv2",
        volume_dir=storage.directory,
    )


def test_a_pools_template_is_listed_cloned_and_removed_through_libvirt(
    real_pool: PoolVolumes,
) -> None:
    storage = real_pool
    body = bytes(range(256)) * 64
    _template_in(storage, body)
    [record] = storage.list()
    assert (record.key, record.host, record.damage) == (KEY, "hv2", None)
    assert record.disk == storage.directory / f"template.{KEY}-disk.qcow2"
    assert storage.read(KEY) == record

    node = _node(storage)
    storage.clone_disk(record, node)
    assert storage.users(record) == ["vnode05"]
    with pytest.raises(UsageError, match="base of vnode05"):
        storage.remove(record)

    # The clone's restore image: the host's own copy of the save image, the clone's header
    # written over its start; the migration stream is the template's, byte for byte.
    clone_xml = warm.clone_domain_xml(
        storage.saved_xml(record), name="vnode05", disk=node.disk_path, console=Path("/c.log")
    )
    path = storage.restore_image(record, node, clone_xml)
    restored = warm.read_save_image(path)
    assert "<name>vnode05</name>" in restored.xml and restored.cookie == "<cookie/>"
    assert path.read_bytes()[restored.body_offset :] == body
    hypervisor.delete_volume(storage.pool, path.name)
    identity = storage.identity_disk(node, b"\0" * 512)
    assert identity.read_bytes() == b"\0" * 512
    assert "<mode>0600</mode>" in storage.pool.storageVolLookupByName(identity.name).XMLDesc(0)

    for name in (node.disk_volume, identity.name):
        hypervisor.delete_volume(storage.pool, name)
    storage.remove(record)
    assert storage.list(damaged=True) == []
    left = {v.name() for v in storage.pool.listAllVolumes(0)}
    assert left == {"base.qcow2"}


def test_a_pools_damaged_or_unfinished_template(real_pool: PoolVolumes) -> None:
    storage = real_pool
    _template_in(storage, b"x" * 1024)
    hypervisor.delete_volume(storage.pool, f"template.{KEY}-state.save")
    assert storage.list() == []
    [damaged] = storage.list(damaged=True)
    assert damaged.damage and "state.save missing on hv2" in damaged.damage
    hypervisor.upload_bytes(storage.conn, storage.pool, f"template.{KEY}.json", b"{")
    [unreadable] = storage.list(damaged=True)
    assert unreadable.distro == "?" and "unreadable" in str(unreadable.damage)
    hypervisor.delete_volume(storage.pool, f"template.{KEY}.json")
    assert storage.read(KEY) is None and storage.unfinished(KEY)

"""Where a node's files are: its directory, or its host's pool (volumes named after it)."""

from __future__ import annotations

from pathlib import Path

from vnode.model import Distro, NodePlan, extra_disk_volume

DISTRO = Distro(name="d12", family="debian", release="12", title="Debian 12", osinfo="x")


def _plan(**changes: object) -> NodePlan:
    fields: dict = {
        "name": "vnode03",
        "number": 3,
        "pool": "vnode",
        "mac": "52:54:00:00:00:03",
        "distro": DISTRO,
        "memory_mib": 512,
        "vcpus": 1,
        "disk_gb": 10,
        "network": "libvirt:vnode",
        "virt_type": "qemu",
        "node_dir": Path("/s/nodes/vnode03"),
        **changes,
    }
    return NodePlan(**fields)


def test_a_nodes_files_are_in_its_directory_without_a_pool() -> None:
    plan = _plan(extra_disks=(1, 2))
    assert plan.disk_path == Path("/s/nodes/vnode03/disk.qcow2")
    assert plan.seed_path == Path("/s/nodes/vnode03/seed.iso")
    assert plan.extra_disk_paths == (
        Path("/s/nodes/vnode03/data1.qcow2"),
        Path("/s/nodes/vnode03/data2.qcow2"),
    )
    # The seed comes after the root disk and the extra disks.
    assert plan.seed_target == "vdd" and _plan().seed_target == "vdb"


def test_with_a_pool_they_are_its_volumes() -> None:
    plan = _plan(volume_dir=Path("/pool"), extra_disks=(1,))
    assert plan.disk_path == Path("/pool/vnode03-disk.qcow2")
    assert plan.seed_path == Path("/pool/vnode03-seed.iso")
    assert plan.extra_disk_paths == (Path("/pool/vnode03-data1.qcow2"),)
    assert plan.console_volume == "vnode03-console.log"
    assert extra_disk_volume("vnode03", 2) == "vnode03-data2.qcow2"

"""What `vnode apply` grows in place, and what it makes anew instead (vnode.inplace)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vnode.hypervisor import AppliedShape
from vnode.inplace import AddedDisk, Maxima, Wanted, disk_xml, domain_maxima, growth

RECORDED = AppliedShape(768, 1, 10, (), "", "k8s")
ROOMY = Maxima(memory_mib=2048, vcpus=4, targets=("vda", "vdb"))


def _growth(want: Wanted, maxima: Maxima = ROOMY, recorded: AppliedShape = RECORDED, **kw):
    found, change = growth(recorded, maxima, want, node="vt1", node_dir=Path("/n/vt1"), **kw)
    return [(d.text, d.in_place) for d in found], change


def test_growth_within_the_maxima_is_in_place() -> None:
    found, change = _growth(Wanted(1024, 2, (5,)))
    assert found == [
        ("memory 768 -> 1024 MiB (in place)", True),
        ("vcpus 1 -> 2 (in place)", True),
        ("extra disk 5 GiB added (in place)", True),
    ]
    assert (change.memory_mib, change.vcpus, change.extra_disks) == (1024, 2, (5,))
    assert change.grow_memory and change.grow_vcpus and change.changes
    # The first free slot after the root disk and the seed; the serial as at creation.
    assert change.disks == (AddedDisk(5, 1, "vdc", "/n/vt1/data1.qcow2"),)
    assert change.pool == ""


def test_an_unchanged_shape_has_no_differences() -> None:
    found, change = _growth(Wanted(768, 1, ()))
    assert found == [] and not change.changes


def test_growth_past_a_maximum_is_not_in_place() -> None:
    found, change = _growth(Wanted(1024, 2, ()), Maxima(768, 1))
    assert found == [
        ("memory 768 -> 1024 MiB (above the domain's maximum 768 MiB)", False),
        ("vcpus 1 -> 2 (above the domain's maximum 1)", False),
    ]
    assert not change.changes


@pytest.mark.parametrize(
    ("want", "said"),
    [
        (Wanted(512, 1, ()), "memory 768 -> 512 MiB"),
        (Wanted(768, 1, (), max_memory=4096), "max_memory 2048 -> 4096 MiB"),
        (Wanted(768, 1, (), max_vcpus=2), "max_vcpus 4 -> 2"),
    ],
)
def test_shrinking_or_another_maximum_is_not_in_place(want: Wanted, said: str) -> None:
    assert _growth(want)[0] == [(said, False)]


def test_a_maximum_asked_as_it_is_is_no_difference() -> None:
    assert _growth(Wanted(1024, 1, (), max_memory=2048, max_vcpus=4))[0] == [
        ("memory 768 -> 1024 MiB (in place)", True)
    ]


def test_fewer_vcpus_is_not_in_place() -> None:
    recorded = AppliedShape(768, 2, 10, (), "", "k8s")
    assert _growth(Wanted(768, 1, ()), recorded=recorded)[0] == [("vcpus 2 -> 1", False)]


@pytest.mark.parametrize("disks", [(), (3,), (5, 6)])
def test_a_removed_or_resized_disk_is_not_in_place(disks: tuple[int, ...]) -> None:
    recorded = AppliedShape(768, 1, 10, (5, 7), "", "k8s")
    found, change = _growth(Wanted(768, 1, disks), recorded=recorded)
    assert found == [(f"disks [5, 7] -> {list(disks)}", False)]
    assert change.disks == ()


def test_a_disk_after_the_others_is_added_in_place_on_the_host_s_pool() -> None:
    recorded = AppliedShape(768, 1, 10, (5,), "", "k8s")
    maxima = Maxima(768, 1, targets=("vda", "vdb", "vdc"))
    found, change = _growth(
        Wanted(768, 1, (5, 8)), maxima, recorded, pool="vnode", volume_dir=Path("/pool")
    )
    assert found == [("extra disk 8 GiB added (in place)", True)]
    assert change.disks == (AddedDisk(8, 2, "vdd", "/pool/vt1-data2.qcow2", "vt1-data2.qcow2"),)
    assert (change.pool, change.extra_disks) == ("vnode", (5, 8))


def test_the_maxima_are_read_from_the_domain_s_definition() -> None:
    xml = (
        "<domain><memory unit='KiB'>2097152</memory><currentMemory unit='KiB'>786432"
        "</currentMemory><vcpu placement='static' current='1'>4</vcpu><devices>"
        "<disk><target dev='vda'/></disk><disk><target dev='vdb'/></disk></devices></domain>"
    )
    assert domain_maxima(xml) == Maxima(2048, 4, ("vda", "vdb"))


def test_an_added_disk_is_defined_as_extra_disks_are_at_creation() -> None:
    disk = ET.fromstring(disk_xml(AddedDisk(5, 1, "vdc", "/n/a'<b>/data1.qcow2")))
    assert disk.find("source").get("file") == "/n/a'<b>/data1.qcow2"  # escaped, read back
    assert (disk.find("target").get("dev"), disk.find("target").get("bus")) == ("vdc", "virtio")
    assert disk.findtext("serial") == "vnode-data1"
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2", "discard": "unmap"}


def test_a_secure_boot_node_takes_no_vcpus_in_place() -> None:
    recorded = AppliedShape(768, 1, 10, (), "", "k8s", firmware="uefi-secure")
    found, change = _growth(Wanted(1024, 2, ()), recorded=recorded)
    assert found == [
        ("memory 768 -> 1024 MiB (in place)", True),
        ("vcpus 1 -> 2 (above the domain's maximum 1)", False),
    ]
    assert not change.grow_vcpus

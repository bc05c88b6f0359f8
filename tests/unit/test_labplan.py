"""The lab's lock, and the shapes vnode records in domain metadata, as read back."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from vnode.errors import UsageError
from vnode.hypervisor import AppliedShape, parse_shape
from vnode.labplan import LabAction, read_lock, write_lock

SHA = "ab" * 32


def test_a_lock_round_trips_and_belongs_to_its_lab(tmp_path: Path) -> None:
    path = tmp_path / "lab.lock"
    assert read_lock(path, "k8s") == {}
    write_lock(path, "k8s", {"d12": SHA})
    assert read_lock(path, "k8s") == {"d12": SHA}
    assert json.loads(path.read_text())["version"] == 1
    with pytest.raises(UsageError, match="the lock of lab 'k8s', not 'ceph'"):
        read_lock(path, "ceph")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a lab lock"),
        ("[]", "not a lab lock of this vnode"),
        ('{"version": 2, "lab": "k8s", "images": {}}', "not a lab lock of this vnode"),
        ('{"version": 1, "lab": "k8s", "images": {"d12": "../x"}}', "'d12' is not pinned"),
    ],
)
def test_a_lock_that_is_not_vnode_s_is_bad_input(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lab.lock"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_lock(path, "k8s")


def _metadata(**fields: str) -> str:
    values = {
        "memory": "1024",
        "vcpus": "2",
        "disk": "10",
        "disks": "50,60",
        "image": SHA,
        "lab": "k8s",
    }
    values.update(fields)
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in values.items())
    return f"<node><created-by>vnode</created-by><shape>{inner}</shape></node>"


def test_a_recorded_shape_is_read_back() -> None:
    assert parse_shape(_metadata()) == AppliedShape(1024, 2, 10, (50, 60), SHA, "k8s")
    assert parse_shape(_metadata(disks="", image="", lab="")) == AppliedShape(
        1024, 2, 10, (), "", ""
    )
    assert parse_shape(_metadata(tpm="yes")).tpm and not parse_shape(_metadata(tpm="no")).tpm
    # Nodes recorded before firmware was are BIOS nodes: all vnode made then.
    assert parse_shape(_metadata()).firmware == "bios"
    assert parse_shape(_metadata(firmware="uefi-secure")).firmware == "uefi-secure"


@pytest.mark.parametrize(
    "fields",
    [
        {"memory": "x"},
        {"vcpus": "-1"},
        {"disk": "0"},
        {"disks": "50,../x"},
        {"memory": "١٢"},  # digits, but not ASCII ones
        {"image": "zz"},
        {"lab": "a b"},
        {"tpm": "maybe"},
        {"firmware": "efi"},
    ],
)
def test_a_shape_not_in_vnode_s_form_is_unknown(fields: dict[str, str]) -> None:
    assert parse_shape(_metadata(**fields)) is None


def test_a_domain_made_before_shapes_were_recorded_has_none() -> None:
    assert parse_shape("<node><created-by>vnode</created-by></node>") is None
    assert parse_shape("<node") is None


def test_an_action_describes_itself_in_one_line() -> None:
    action = LabAction(
        node="vnode02",
        action="replace",
        reasons=("memory 1280 -> 1024 MiB",),
        distro="d12",
        memory_mib=1024,
        vcpus=2,
        disk_gb=10,
        extra_disks=(3,),
    )
    assert action.describe() == (
        "replace  vnode02      d12 1024 MiB 2 vCPU 10 GiB +3 GiB: memory 1280 -> 1024 MiB"
    )


def test_an_update_says_what_changes_in_place() -> None:
    action = LabAction(
        node="vnode01",
        action="update",
        reasons=("vcpus 1 -> 2 (in place)", "extra disk 5 GiB added (in place)"),
        distro="d12",
        memory_mib=768,
        vcpus=2,
        disk_gb=10,
        extra_disks=(5,),
    )
    assert action.describe() == (
        "update   vnode01      d12 768 MiB 2 vCPU 10 GiB +5 GiB: "
        "vcpus 1 -> 2 (in place); extra disk 5 GiB added (in place)"
    )


def test_an_action_with_several_nics_names_their_networks() -> None:
    action = LabAction(
        node="vnode03",
        action="replace",
        reasons=("networks ['libvirt'] -> ['libvirt', 'libvirt:storage']",),
        distro="d12",
        memory_mib=1024,
        vcpus=1,
        disk_gb=10,
        networks=("libvirt", "libvirt:storage"),
    )
    assert action.describe() == (
        "replace  vnode03      d12 1024 MiB 1 vCPU 10 GiB NICs libvirt,libvirt:storage: "
        "networks ['libvirt'] -> ['libvirt', 'libvirt:storage']"
    )
    one = attrs.evolve(action, networks=("libvirt",), reasons=())
    assert "NICs" not in one.describe()  # one NIC: as before

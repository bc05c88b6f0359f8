"""Lab files as read: every key checked, each mistake one line naming file, table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode.errors import UsageError
from vnode.labfile import Shape, read_lab
from vnode.pools import Pool

POOLS = (
    Pool(stem="vnode", width=2, first=0, last=30),
    Pool(stem="storage", width=2, first=0, last=30, mac_prefix="52:54:00:00:01"),
)


def _lab(tmp_path: Path, text: str, **kwargs: object):
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return read_lab(path, POOLS, **kwargs)  # type: ignore[arg-type]


def test_defaults_apply_below_each_table_and_a_spec_distro_wins(tmp_path: Path) -> None:
    (tmp_path / "storage.yaml").write_text("#cloud-config\n")
    lab = _lab(
        tmp_path,
        """
[lab]
name = "k8s"
[defaults]
distro = "f45"
memory = 2048
vcpus = 2
[[nodes]]
spec = "1-3"
memory = 4096
[[nodes]]
spec = "storage10-11:u26.04"
disks = [50, 50]
networks = ["bridge:br0", "libvirt:storage"]
cloud_config = ["storage.yaml"]
run = ["lsblk"]
""",
    )
    assert lab.name == "k8s" and lab.lock_path == tmp_path / "lab.lock"
    assert [n.name for n in lab.nodes] == [
        "vnode01",
        "vnode02",
        "vnode03",
        "storage10",
        "storage11",
    ]
    assert lab.node("vnode02").shape == Shape(distro="f45", memory=4096, vcpus=2)
    storage = lab.node("storage11")
    assert storage.ref.distro == "u26.04" and storage.shape.distro == "u26.04"
    assert storage.shape.disks == (50, 50) and storage.shape.run == ("lsblk",)
    assert storage.shape.cloud_config == (tmp_path / "storage.yaml",)
    assert storage.shape.memory == 2048  # from [defaults]
    assert storage.shape.networks == ("bridge:br0", "libvirt:storage")  # the first: its own NIC
    assert lab.node("vnode01").shape.networks == ()  # as configured
    assert not storage.shape.tpm and storage.shape.firmware == "bios"


def test_firmware_is_read(tmp_path: Path) -> None:
    lab = _lab(
        tmp_path,
        '[defaults]\nfirmware = "uefi"\n[[nodes]]\nspec = "1"\n'
        '[[nodes]]\nspec = "2"\nfirmware = "uefi-secure"\n',
    )
    assert [n.shape.firmware for n in lab.nodes] == ["uefi", "uefi-secure"]


def test_the_lab_is_named_after_its_file_unless_it_says(tmp_path: Path) -> None:
    assert _lab(tmp_path, '[[nodes]]\nspec = "1"\n').name == "lab"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = 1", "unknown table [x]"),
        ("[lab]\nname = 3\n[[nodes]]\nspec = '1'", "[lab]: name must be"),
        ("[lab]\nowner = 'me'", "[lab]: unknown key 'owner'"),
        ("[defaults]\nspec = '1'", "[defaults]: spec belongs in a [[nodes]] table"),
        ("[defaults]\nmemory = 1024", "no [[nodes]] tables"),
        ("[[nodes]]\nmemory = 1024", "[[nodes]] #1: spec is missing"),
        ('[[nodes]]\nspec = "1"\nmemroy = 1', "[[nodes]] #1 (spec \"1\"): unknown key 'memroy'"),
        ('[[nodes]]\nspec = "1"\nmemory = true', "memory must be a whole number, not True"),
        ('[[nodes]]\nspec = "1"\nmemory = 8', "memory must be from 64 to"),
        ('[[nodes]]\nspec = "1"\ndisk = 0', "disk must be from 1 to"),
        ('[[nodes]]\nspec = "1"\ndisks = [50, "x"]', "disks must be a list of GiB numbers"),
        ('[[nodes]]\nspec = "1"\ndisks = [1,1,1,1,1,1,1,1,1]', "at most 8 extra disks"),
        ('[[nodes]]\nspec = "1"\nwarm = "yes"', "warm must be true or false"),
        ('[[nodes]]\nspec = "1"\nfirmware = "coreboot"', "firmware must be one of bios, uefi"),
        ('[[nodes]]\nspec = "1"\nnetworks = ["a", "a"]', "networks: a is named twice"),
        ('[[nodes]]\nspec = "1"\nnetworks = ["libvirt: x"]', "is not a network (KIND[:ARG])"),
        ('[[nodes]]\nspec = "1"\nnetworks = [1]', "networks must be a list of strings"),
        (
            '[[nodes]]\nspec = "1"\nnetworks = ["a","b","c","d","e","f","g","h","i"]',
            "networks: at most 8 NICs, not 9",
        ),
        ('[[nodes]]\nspec = "1"\ncloud_config = ["nope.yaml"]', "nope.yaml is not a file"),
        ('[[nodes]]\nspec = "1"\nrun = [" "]', "run: an empty command"),
        ('[[nodes]]\nspec = "99"', '[[nodes]] #1 (spec "99"): '),
        (
            '[[nodes]]\nspec = "1-3"\n[[nodes]]\nspec = "vnode02"',
            "vnode02 is named by [[nodes]] #1",
        ),
        ("[[nodes]]\nspec = ", "not valid TOML"),
    ],
)
def test_a_mistake_is_one_line_naming_file_table_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        _lab(tmp_path, text)
    assert message in str(caught.value) and str(tmp_path / "lab.toml") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_vcpus_are_bounded_by_the_host(tmp_path: Path) -> None:
    text = '[[nodes]]\nspec = "1"\nvcpus = 4\n'
    assert _lab(tmp_path, text, host_cpus=8).nodes[0].shape.vcpus == 4
    with pytest.raises(UsageError, match="vcpus 4 is more than the host's 2"):
        _lab(tmp_path, text, host_cpus=2)


def test_the_maxima_are_read_and_bounded(tmp_path: Path) -> None:
    text = '[[nodes]]\nspec = "1"\nmax_memory = 4096\nmax_vcpus = 4\n'
    shape = _lab(tmp_path, text, host_cpus=8).nodes[0].shape
    assert (shape.max_memory, shape.max_vcpus) == (4096, 4)
    with pytest.raises(UsageError, match="max_vcpus 4 is more than the host's 2"):
        _lab(tmp_path, text, host_cpus=2)
    secure = '[[nodes]]\nspec = "1"\nfirmware = "uefi-secure"\nmax_vcpus = 2\n'
    with pytest.raises(UsageError, match="a uefi-secure node cannot take vCPUs in place"):
        _lab(tmp_path, secure)
    with pytest.raises(UsageError, match="max_memory must be from 64 to"):
        _lab(tmp_path, '[[nodes]]\nspec = "1"\nmax_memory = 0\n')


def test_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_lab(tmp_path / "none.toml", POOLS)

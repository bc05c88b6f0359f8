"""A lab written down once: `vnode plan` / `vnode apply` of a lab file, on real guests.

Two nodes of two shapes are made by one `apply` (memory, vCPUs, an extra disk with its
serial, a TPM, a `run` command: each seen inside the guest over SSH) on a dual-stack network
(each node's IPv6 address from its number, in DNS, reached over IPv6 by the other node and by
the host); an unchanged file applies as
a no-op; a changed shape replaces exactly the node it concerns while the other keeps running
untouched (same boot_id); --prune removes the node the file no longer names; lab.lock pins
the image the lab was made from.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_DISTRO, Lab, cleanup_lab, domain_names, make_lab

pytestmark = pytest.mark.integration

BOOT = os.environ.get("VNODE_TEST_BOOT_TIMEOUT", "420")
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


def _write(path: Path, name: str, second: str) -> None:
    path.write_text(
        f"""[lab]
name = "{name}"

[defaults]
distro = "{TEST_DISTRO}"
memory = 768

[[nodes]]
spec = "1"
{second}"""
    )


SECOND = """
[[nodes]]
spec = "2"
memory = 1280
vcpus = 2
disks = [3]
tpm = true
run = ["nproc"]
"""


@pytest.fixture(scope="module")
def lab(host_ready: None) -> Iterator[Lab]:
    """The module's lab on a dual-stack network: IPv6 from a ULA subnet of its own."""
    made = make_lab("vt")
    octet = int(made.subnet_prefix.rsplit(".", 1)[1])
    text = made.config_path.read_text().replace(
        'forward = "none"\n', f'forward = "none"\nsubnet6 = "fd5e:{octet:x}::/64"\n'
    )
    made.config_path.write_text(text)
    try:
        yield made
    finally:
        cleanup_lab(made)


def _ip6(lab: Lab, number: int) -> str:
    octet = int(lab.subnet_prefix.rsplit(".", 1)[1])
    return f"fd5e:{octet:x}::{100 + number}"


@pytest.fixture(scope="module")
def lab_file(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labfile") / "lab.toml"
    _write(path, f"k8s-{uuid.uuid4().hex[:4]}", SECOND)
    return path


def _plan(lab: Lab, path: Path, *args: str) -> dict[str, dict]:
    result = lab.run("plan", str(path), "--json", *args)
    assert result.returncode == 0, result.stderr
    return {node["node"]: node for node in json.loads(result.stdout)["nodes"]}


def _mem_mib(lab: Lab, number: int) -> int:
    result = lab.ssh(str(number), "awk '/MemTotal/ {print $2}' /proc/meminfo")
    assert result.returncode == 0, result.stderr
    return int(result.stdout) // 1024


def test_apply_makes_each_node_in_its_own_shape(lab: Lab, lab_file: Path) -> None:
    planned = _plan(lab, lab_file)
    assert {n: p["action"] for n, p in planned.items()} == {
        lab.name(1): "create",
        lab.name(2): "create",
    }
    assert (planned[lab.name(2)]["memory_mib"], planned[lab.name(2)]["extra_disks"]) == (1280, [3])
    assert not lab_file.with_name("lab.lock").exists()  # plan reads only
    assert domain_names(lab.stem) == set()

    applied = lab.run(
        "apply", str(lab_file), "--timeout", BOOT, "--json", timeout=float(BOOT) + 120
    )
    assert applied.returncode == 0, applied.stderr
    results = {r["name"]: r for r in json.loads(applied.stdout)}
    assert {n: r["state"] for n, r in results.items()} == {
        lab.name(1): "ready",
        lab.name(2): "ready",
    }
    assert results[lab.name(2)]["output"].strip() == "2"  # its `run` command: nproc
    assert lab.ssh("1", "nproc").stdout.strip() == "1"
    # The guest's MemTotal is what was asked for less the kernel's own reservations.
    assert 600 < _mem_mib(lab, 1) <= 768 < 1100 < _mem_mib(lab, 2) <= 1280
    disk = lab.ssh(
        "2", "lsblk -bdno SIZE,SERIAL /dev/vdb; readlink /dev/disk/by-id/virtio-vnode-data1"
    )
    assert disk.stdout.split() == [str(3 * 1024**3), "vnode-data1", "../../vdb"], disk.stderr
    assert (
        lab.ssh("1", "ls /dev/disk/by-id/virtio-vnode-data1 || echo none").stdout.strip() == "none"
    )
    tpm = "cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo none"
    assert (lab.ssh("2", tpm).stdout.strip(), lab.ssh("1", tpm).stdout.strip()) == ("2", "none")
    # IPv6 between the nodes: node 1's address from its number, in DNS, its sshd answering
    # node 2 over IPv6 with the host key vnode recorded; and the host pings both.
    first = _ip6(lab, 1)
    assert f"inet6 {first}/64" in lab.ssh("1", "ip -6 -o addr show").stdout
    resolved = lab.ssh("2", f"getent ahostsv6 {lab.name(1)}.lab").stdout
    assert first in resolved.split(), resolved
    scanned = lab.ssh("2", f"ssh-keyscan -6 -T 30 -t ed25519 {first} 2>/dev/null").stdout.split()
    recorded = next(
        line.split()[1:]
        for line in lab.known_hosts.read_text().splitlines()
        if line.split()[0].split(",")[0] == lab.name(1)
    )
    assert scanned[1:] == recorded, (scanned, recorded)
    for number in (1, 2):
        ping = ["ping", "-6", "-c", "1", "-W", "10", _ip6(lab, number)]
        assert subprocess.run(ping, capture_output=True, check=False).returncode == 0
    lock = json.loads(lab_file.with_name("lab.lock").read_text())
    assert set(lock["images"]) == {TEST_DISTRO} and len(lock["images"][TEST_DISTRO]) == 64
    listed = {n["name"]: n["shape"] for n in lab.run_json("list")[1]}
    assert listed[lab.name(2)] == {
        "memory_mib": 1280,
        "vcpus": 2,
        "disk_gb": 10,
        "extra_disks": [3],
        "image_sha256": lock["images"][TEST_DISTRO],
        "lab": lock["lab"],
        "tpm": True,
        "networks": ["libvirt"],  # one NIC, on the configured network, as asked for
        "macs": [results[lab.name(2)]["mac"]],
        "firmware": "bios",
    }


def test_an_unchanged_file_applies_as_a_no_op(lab: Lab, lab_file: Path) -> None:
    before = lab.ssh("1", BOOT_ID).stdout
    planned = _plan(lab, lab_file)
    assert {p["action"] for p in planned.values()} == {"keep"}
    again = lab.run("apply", str(lab_file))
    assert again.returncode == 0, again.stderr
    assert "0 to create, 0 to replace, 2 to keep" in again.stderr
    assert lab.ssh("1", BOOT_ID).stdout == before


def test_a_changed_shape_replaces_only_its_node(lab: Lab, lab_file: Path) -> None:
    kept = lab.ssh("1", BOOT_ID).stdout.strip()
    replaced = lab.ssh("2", BOOT_ID).stdout.strip()
    name = json.loads(lab_file.with_name("lab.lock").read_text())["lab"]
    _write(lab_file, name, SECOND.replace("memory = 1280", "memory = 1024"))
    planned = _plan(lab, lab_file)
    assert planned[lab.name(1)]["action"] == "keep"
    assert (planned[lab.name(2)]["action"], planned[lab.name(2)]["reasons"]) == (
        "replace",
        ["memory 1280 -> 1024 MiB"],
    )
    refused = lab.run("apply", str(lab_file))  # replacing needs --yes
    assert refused.returncode == 2 and "give --yes" in refused.stderr.splitlines()[-1]
    assert lab.ssh("2", BOOT_ID).stdout.strip() == replaced

    applied = lab.run(
        "apply", str(lab_file), "--yes", "--timeout", BOOT, "--json", timeout=float(BOOT) + 120
    )
    assert applied.returncode == 0, applied.stderr
    assert [r["name"] for r in json.loads(applied.stdout)] == [lab.name(2)]
    assert lab.ssh("1", BOOT_ID).stdout.strip() == kept
    assert lab.ssh("2", BOOT_ID).stdout.strip() not in ("", replaced)
    assert 900 < _mem_mib(lab, 2) <= 1024


def test_prune_removes_what_the_file_no_longer_names(lab: Lab, lab_file: Path) -> None:
    name = json.loads(lab_file.with_name("lab.lock").read_text())["lab"]
    _write(lab_file, name, "")
    assert lab.name(2) not in _plan(lab, lab_file)  # without --prune: not the plan's business
    planned = _plan(lab, lab_file, "--prune")
    assert (planned[lab.name(1)]["action"], planned[lab.name(2)]["action"]) == ("keep", "remove")
    pruned = lab.run("apply", str(lab_file), "--prune", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert domain_names(lab.stem) == {lab.name(1)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[nodes]]\nspec = "1"\nmemroy = 2048\n',
            "[[nodes]] #1 (spec \"1\"): unknown key 'memroy'",
        ),
        ('[[nodes]]\nspec = "1"\nvcpus = "2"\n', "vcpus must be a whole number, not '2'"),
        ('[[nodes]]\nspec = "1"\ndisks = [0]\n', "disks: a disk must be from 1 to"),
        ('[[nodes]]\nspec = "1-3"\n[[nodes]]\nspec = "2"\n', "is named by [[nodes]] #1"),
        ('[[nodes]]\nspec = "1"\nvcpus = 400\n', "is more than the host's"),
    ],
)
def test_a_bad_lab_file_is_one_line_and_changes_nothing(
    lab: Lab, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    before = domain_names(lab.stem)
    for command in (["plan"], ["apply", "--yes"]):
        result = lab.run(*command, str(path))
        assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
        assert str(path) in result.stderr and message in result.stderr, result.stderr
    assert domain_names(lab.stem) == before


def test_a_domain_vnode_did_not_make_is_never_planned_for(lab: Lab, tmp_path: Path) -> None:
    name = lab.name(9)
    xml = tmp_path / "foreign.xml"
    xml.write_text(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    virsh = ["virsh", "-q", "-c", "qemu:///system"]
    subprocess.run([*virsh, "define", str(xml)], check=True, capture_output=True)
    try:
        path = tmp_path / "lab.toml"
        path.write_text('[[nodes]]\nspec = "9"\n')
        result = lab.run("plan", str(path))
        assert result.returncode == 2 and "vnode did not create it" in result.stderr
    finally:
        subprocess.run([*virsh, "undefine", name], check=False, capture_output=True)

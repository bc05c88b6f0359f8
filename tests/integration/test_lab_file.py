"""A lab written down once: `vnode plan` / `vnode apply` of a lab file, on real guests.

Two nodes of two shapes are made by one `apply` (memory, vCPUs, an extra disk with its
serial, a TPM, a `run` command: each seen inside the guest over SSH) on a dual-stack network
(each node's IPv6 address from its number, in DNS, reached over IPv6 by the other node and by
the host). Node 1 is a Secure Boot node (`firmware = "uefi-secure"`: the guest says Secure
Boot is enforced, its NVRAM is its own file, 0600) with room to grow (max_memory); node 2
boots through BIOS. An unchanged file applies as a no-op; a changed shape grows node 1 in
place (more memory, an added disk with its serial: seen in the guest, same boot_id) and
replaces node 2 (less memory, fewer vCPUs with room for more, bios -> uefi: booted through
EFI without Secure Boot), whose vCPUs then grow in place (onlined in the guest, same boot);
--prune removes the node the file no longer names, its NVRAM with it; lab.lock pins the
image the lab was made from. `up --firmware` is checked on a node that is not waited for.
The images vnode builds boot on both BIOS and UEFI: the same image serves both nodes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_DISTRO, Lab, cleanup_lab, domain_names, domain_xml, make_lab

pytestmark = pytest.mark.integration

# OVMF under plain emulation (TCG) takes longer than SeaBIOS to reach the boot loader, and
# Secure Boot's SMM makes every variable access a mode switch.
BOOT = os.environ.get("VNODE_TEST_BOOT_TIMEOUT", "600")
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# "efi" when the guest booted through UEFI, then the SecureBoot variable: after its 4 attribute
# bytes one byte, 1 when Secure Boot is enforced ("none": a firmware built without it).
SECURE_BOOT = (
    "test -d /sys/firmware/efi && echo efi; "
    f"od -An -tu1 -j4 -N1 {SECURE_BOOT_VAR} 2>/dev/null || echo none"
)
FIRST = """firmware = "uefi-secure"
max_memory = 1024
"""


def _write(path: Path, name: str, second: str, first: str = FIRST) -> None:
    path.write_text(
        f"""[lab]
name = "{name}"

[defaults]
distro = "{TEST_DISTRO}"
memory = 768

[[nodes]]
spec = "1"
{first}{second}"""
    )


def _live(name: str) -> ET.Element:
    return ET.fromstring(domain_xml(name))


def _nvram(lab: Lab, number: int) -> Path:
    return lab.state / "nodes" / lab.name(number) / "nvram.fd"


def _settled(lab: Lab, number: int, command: str, expected: str) -> str:
    """What ``command`` prints once the guest has caught up with a change plugged in (udev
    onlining a vCPU, the balloon letting memory go): asked until it says ``expected`` or a
    minute has passed, then returned for the assertion to say what it was."""
    loop = f'for i in $(seq 60); do [ "$({command})" = "{expected}" ] && break; sleep 1; done'
    return lab.ssh(str(number), f"{loop}; {command}").stdout.strip()


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
    assert (planned[lab.name(1)]["firmware"], planned[lab.name(1)]["max_memory"]) == (
        "uefi-secure",
        1024,
    )
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
    # The guest's MemTotal is what was asked for less the kernel's own reservations (node 1's
    # balloon holds back what is above its size, up to its maximum).
    assert 600 < _mem_mib(lab, 1) <= 768 < 1100 < _mem_mib(lab, 2) <= 1280
    # Booted through EFI with Secure Boot enforced, as shim and mokutil see it; node 2: BIOS.
    assert lab.ssh("1", SECURE_BOOT).stdout.split() == ["efi", "1"]
    assert "SecureBoot enabled" in lab.ssh("1", "mokutil --sb-state").stdout
    assert lab.ssh("2", SECURE_BOOT).stdout.split() == ["none"]
    assert stat.S_IMODE(_nvram(lab, 1).stat().st_mode) == 0o600
    secure = _live(lab.name(1))
    assert secure.findtext("os/nvram") == str(_nvram(lab, 1))
    assert secure.find("os/loader").get("secure") == "yes"
    assert "q35" in secure.find("os/type").get("machine")
    assert secure.find("features/smm").get("state") == "on"
    # Room to grow: the maximum above the node's size, the balloon holding the difference.
    assert int(secure.findtext("memory")) == 1024 * 1024
    assert int(secure.findtext("currentMemory")) == 768 * 1024
    assert not _nvram(lab, 2).exists()
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
    assert listed[lab.name(1)]["firmware"] == "uefi-secure"


def test_an_unchanged_file_applies_as_a_no_op(lab: Lab, lab_file: Path) -> None:
    before = lab.ssh("1", BOOT_ID).stdout
    planned = _plan(lab, lab_file)
    assert {p["action"] for p in planned.values()} == {"keep"}
    again = lab.run("apply", str(lab_file))
    assert again.returncode == 0, again.stderr
    assert "0 to create, 0 to update, 0 to replace, 2 to keep" in again.stderr
    assert lab.ssh("1", BOOT_ID).stdout == before


def test_a_changed_shape_grows_one_node_in_place_and_replaces_the_other(
    lab: Lab, lab_file: Path
) -> None:
    kept = lab.ssh("1", BOOT_ID).stdout.strip()
    replaced = lab.ssh("2", BOOT_ID).stdout.strip()
    name = json.loads(lab_file.with_name("lab.lock").read_text())["lab"]
    grown = FIRST + "memory = 1024\ndisks = [2]\n"
    second = SECOND.replace("memory = 1280", 'memory = 1024\nfirmware = "uefi"').replace(
        "vcpus = 2", "vcpus = 1\nmax_vcpus = 2"
    )
    _write(lab_file, name, second, grown)
    planned = _plan(lab, lab_file)
    assert (planned[lab.name(1)]["action"], planned[lab.name(1)]["reasons"]) == (
        "update",
        [
            "memory 768 -> 1024 MiB (in place)",
            "extra disk 2 GiB added (in place)",
        ],
    )
    assert (planned[lab.name(2)]["action"], planned[lab.name(2)]["reasons"]) == (
        "replace",
        ["memory 1280 -> 1024 MiB", "vcpus 2 -> 1", "firmware bios -> uefi"],
    )
    # Past the domain's maximum a node is made anew, and the plan says why (a max_memory
    # below memory is a mistake in the file: left out here, the maximum is not compared).
    _write(lab_file, name, second, FIRST.replace("max_memory = 1024\n", "memory = 1280\n"))
    assert _plan(lab, lab_file)[lab.name(1)]["reasons"] == [
        "memory 768 -> 1280 MiB (above the domain's maximum 1024 MiB)"
    ]
    _write(lab_file, name, second, grown)
    summary = lab.run("plan", str(lab_file)).stdout.splitlines()[0]
    assert "0 to create, 1 to update, 1 to replace, 0 to keep" in summary, summary
    refused = lab.run("apply", str(lab_file))  # replacing needs --yes
    assert refused.returncode == 2 and "give --yes" in refused.stderr.splitlines()[-1]
    assert lab.ssh("2", BOOT_ID).stdout.strip() == replaced
    assert _mem_mib(lab, 1) <= 768  # nothing done without --yes

    applied = lab.run(
        "apply", str(lab_file), "--yes", "--timeout", BOOT, "--json", timeout=float(BOOT) + 120
    )
    assert applied.returncode == 0, applied.stderr
    results = {r["name"]: r for r in json.loads(applied.stdout)}
    assert {n: r["state"] for n, r in results.items()} == {
        lab.name(1): "ready",
        lab.name(2): "ready",
    }
    assert results[lab.name(1)]["detail"].startswith("grown in place: "), results
    # Node 1 grew while it ran: the same boot, the memory the balloon held let go, the new
    # disk under its serial.
    assert lab.ssh("1", BOOT_ID).stdout.strip() == kept
    assert 900 < _mem_mib(lab, 1) <= 1024
    disk = _settled(
        lab,
        1,
        "lsblk -bdno SIZE,SERIAL $(readlink -f /dev/disk/by-id/virtio-vnode-data1)",
        f"{2 * 1024**3} vnode-data1",
    )
    assert disk.split() == [str(2 * 1024**3), "vnode-data1"], disk
    assert lab.ssh("2", BOOT_ID).stdout.strip() not in ("", replaced)
    assert 900 < _mem_mib(lab, 2) <= 1024
    # Node 2 is a UEFI node now: booted through EFI without Secure Boot, its own NVRAM.
    assert lab.ssh("2", SECURE_BOOT).stdout.split() in (["efi", "0"], ["efi", "none"])
    assert stat.S_IMODE(_nvram(lab, 2).stat().st_mode) == 0o600
    live = _live(lab.name(2))
    assert live.findtext("os/nvram") == str(_nvram(lab, 2))
    assert live.find("os/loader").get("secure") in (None, "no")
    assert lab.ssh("2", "nproc").stdout.strip() == "1"

    # Node 2 was made with room for a vCPU: it takes it in place, onlined in the guest.
    booted = lab.ssh("2", BOOT_ID).stdout.strip()
    _write(lab_file, name, second.replace("vcpus = 1\n", "vcpus = 2\n"), grown)
    planned = _plan(lab, lab_file)
    assert (planned[lab.name(2)]["action"], planned[lab.name(2)]["reasons"]) == (
        "update",
        ["vcpus 1 -> 2 (in place)"],
    )
    assert planned[lab.name(1)]["action"] == "keep"
    applied = lab.run("apply", str(lab_file), "--json")  # nothing replaced: no --yes needed
    assert applied.returncode == 0, applied.stderr
    assert [r["name"] for r in json.loads(applied.stdout)] == [lab.name(2)]
    assert _settled(lab, 2, "nproc", "2") == "2"
    assert lab.ssh("2", BOOT_ID).stdout.strip() == booted

    # The shape recorded on node 1 is what it runs now: nothing left to do.
    planned = _plan(lab, lab_file)
    assert {n: p["action"] for n, p in planned.items()} == {
        lab.name(1): "keep",
        lab.name(2): "keep",
    }
    listed = {n["name"]: n["shape"] for n in lab.run_json("list")[1]}
    assert (listed[lab.name(1)]["memory_mib"], listed[lab.name(1)]["vcpus"]) == (1024, 1)
    assert listed[lab.name(2)]["vcpus"] == 2
    assert listed[lab.name(1)]["extra_disks"] == [2]
    assert (listed[lab.name(1)]["firmware"], listed[lab.name(2)]["firmware"]) == (
        "uefi-secure",
        "uefi",
    )


def test_prune_removes_what_the_file_no_longer_names(lab: Lab, lab_file: Path) -> None:
    name = json.loads(lab_file.with_name("lab.lock").read_text())["lab"]
    _write(lab_file, name, "", FIRST + "memory = 1024\ndisks = [2]\n")
    assert lab.name(2) not in _plan(lab, lab_file)  # without --prune: not the plan's business
    planned = _plan(lab, lab_file, "--prune")
    assert (planned[lab.name(1)]["action"], planned[lab.name(2)]["action"]) == ("keep", "remove")
    pruned = lab.run("apply", str(lab_file), "--prune", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert domain_names(lab.stem) == {lab.name(1)}
    # A UEFI node's NVRAM goes with it, and its directory.
    assert not _nvram(lab, 2).exists() and not _nvram(lab, 2).parent.exists()


def test_up_firmware_on_the_command_line(lab: Lab) -> None:
    """`up --firmware`: checked where it is read, made into the domain and its shape, and
    removed with the node (not waited for: its boot is what the lab file's nodes check)."""
    bad = lab.run("up", "3", "--firmware", "efi")
    assert bad.returncode == 2, bad.stderr
    assert "--firmware must be one of bios, uefi, uefi-secure, not 'efi'" in bad.stderr
    assert lab.name(3) not in domain_names(lab.stem)
    started = lab.run("up", "3", "--firmware", "uefi", "--memory", "768", "--no-wait")
    assert started.returncode == 0, started.stderr
    try:
        listed = {n["name"]: n["shape"] for n in lab.run_json("list")[1]}
        assert listed[lab.name(3)]["firmware"] == "uefi"
        live = _live(lab.name(3))
        assert live.findtext("os/nvram") == str(_nvram(lab, 3))
        assert live.find("os/loader").get("secure") in (None, "no")
        assert stat.S_IMODE(_nvram(lab, 3).stat().st_mode) == 0o600
    finally:
        destroyed = lab.run("destroy", "3")
    assert destroyed.returncode == 0, destroyed.stderr
    assert not _nvram(lab, 3).exists() and not _nvram(lab, 3).parent.exists()


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
        (
            '[[nodes]]\nspec = "1"\nmemory = 1024\nmax_memory = 512\n',
            "max_memory 512 is less than memory 1024",
        ),
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


def test_run_commands_without_the_wait_are_bad_input(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text('[[nodes]]\nspec = "8"\nrun = ["true"]\n')
    before = domain_names(lab.stem)
    result = lab.run("apply", str(path), "--no-wait")
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert str(path) in result.stderr and "not --no-wait" in result.stderr, result.stderr
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

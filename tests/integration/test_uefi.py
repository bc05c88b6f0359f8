"""UEFI nodes on real guests: one booted with `up --firmware uefi`, one made by a lab file's
`firmware = "uefi-secure"`, both from the same image vnode builds (which BIOS nodes boot too:
the rest of the suite). Each guest is asked over SSH how it booted (EFI, Secure Boot on or
off); each node's NVRAM is its own file, 0600, recorded in its shape, and removed with it; a
change of firmware in the lab file plans a replace.
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

from tests.conftest import TEST_DISTRO, Lab, cleanup_lab, make_lab

pytestmark = pytest.mark.integration

# OVMF under plain emulation (TCG) takes longer than SeaBIOS to reach the boot loader, and
# Secure Boot's SMM makes every variable access a mode switch.
BOOT = os.environ.get("VNODE_TEST_BOOT_TIMEOUT", "600")
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# "efi" when the guest booted through UEFI, then the SecureBoot variable: after its 4 attribute
# bytes one byte, 1 when Secure Boot is enforced ("none": a firmware built without it).
SECURE_BOOT = (
    "test -d /sys/firmware/efi && echo efi; "
    f"od -An -tu1 -j4 -N1 {SECURE_BOOT_VAR} 2>/dev/null || echo none"
)


@pytest.fixture(scope="module")
def lab(host_ready: None) -> Iterator[Lab]:
    made = make_lab("vu")
    try:
        yield made
    finally:
        cleanup_lab(made)


def _lab_file(path: Path, name: str, firmware: str) -> None:
    path.write_text(
        f"""[lab]
name = "{name}"

[[nodes]]
spec = "2"
distro = "{TEST_DISTRO}"
memory = 768
firmware = "{firmware}"
"""
    )


def _live_os(name: str) -> ET.Element:
    xml = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dumpxml", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ET.fromstring(xml)


def test_uefi_and_secure_boot_nodes(lab: Lab, tmp_path: Path) -> None:
    bad = lab.run("up", "1", "--firmware", "efi")
    assert bad.returncode == 2, bad.stderr
    assert "--firmware must be one of bios, uefi, uefi-secure, not 'efi'" in bad.stderr

    # Node 1 starts (not waited for), then the lab file makes node 2: both boot at once.
    started = lab.run("up", "1", "--firmware", "uefi", "--memory", "768", "--no-wait")
    assert started.returncode == 0, started.stderr
    labfile = tmp_path / "lab.toml"
    _lab_file(labfile, f"uefi-{uuid.uuid4().hex[:4]}", "uefi-secure")
    applied = lab.run("apply", str(labfile), "--timeout", BOOT, timeout=float(BOOT) + 120)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    waited = lab.run("wait", "1", "--timeout", BOOT, timeout=float(BOOT) + 60)
    assert waited.returncode == 0, waited.stdout + waited.stderr

    # Booted through EFI both; Secure Boot enforced in node 2 only, as shim and mokutil see it.
    assert lab.ssh("1", SECURE_BOOT).stdout.split() in (["efi", "0"], ["efi", "none"])
    assert lab.ssh("2", SECURE_BOOT).stdout.split() == ["efi", "1"]
    assert "SecureBoot enabled" in lab.ssh("2", "mokutil --sb-state").stdout

    nvram = {n: lab.state / "nodes" / lab.name(n) / "nvram.fd" for n in (1, 2)}
    for number, path in nvram.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, number
        live = _live_os(lab.name(number))
        assert live.findtext("os/nvram") == str(path)
    secure = _live_os(lab.name(2))
    assert secure.find("os/loader").get("secure") == "yes"
    assert "q35" in secure.find("os/type").get("machine")
    assert secure.find("features/smm").get("state") == "on"
    assert _live_os(lab.name(1)).find("os/loader").get("secure") in (None, "no")

    listed = {n["name"]: n["shape"] for n in lab.run_json("list")[1]}
    assert (listed[lab.name(1)]["firmware"], listed[lab.name(2)]["firmware"]) == (
        "uefi",
        "uefi-secure",
    )
    _lab_file(labfile, json.loads(labfile.with_name("lab.lock").read_text())["lab"], "uefi")
    planned = json.loads(lab.run("plan", str(labfile), "--json").stdout)["nodes"]
    assert [(p["node"], p["action"], p["reasons"]) for p in planned] == [
        (lab.name(2), "replace", ["firmware uefi-secure -> uefi"])
    ]

    destroyed = lab.run("destroy", "1", "2")
    assert destroyed.returncode == 0, destroyed.stderr
    assert not any(path.exists() for path in nvram.values())
    assert not any(path.parent.exists() for path in nvram.values())

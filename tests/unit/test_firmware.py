"""Firmware: the choice as libvirt makes it from QEMU's descriptors, what a host's domain
capabilities say it lacks, and the firmware's part of the domain XML (parsed)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

from tests.unit.test_domainxml import PLAN
from vnode import firmware
from vnode.domainxml import core_domain
from vnode.errors import UsageError
from vnode.hypervisor import NAMESPACE


def _descriptor(code: str, vars_: str, features: list[str], machines: list[str]) -> dict:
    return {
        "interface-types": ["uefi"],
        "mapping": {
            "device": "flash",
            "executable": {"filename": code, "format": "raw"},
            "nvram-template": {"filename": vars_, "format": "raw"},
        },
        "targets": [{"architecture": "x86_64", "machines": machines}],
        "features": features,
    }


def _debian(tmp_path: Path) -> Path:
    """Debian 12's ovmf, as its three descriptors say, with files of its own."""
    share = tmp_path / "share"
    share.mkdir()
    for name in ("CODE.fd", "CODE.ms.fd", "CODE.secboot.fd", "VARS.fd", "VARS.ms.fd"):
        (tmp_path / name).write_bytes(b"\0")
    q35, both = ["pc-q35-*"], ["pc-i440fx-*", "pc-q35-*"]
    secure = ["acpi-s3", "requires-smm", "secure-boot"]
    files = {
        "40-enrolled.json": _descriptor(
            f"{tmp_path}/CODE.ms.fd", f"{tmp_path}/VARS.ms.fd", [*secure, "enrolled-keys"], q35
        ),
        "50-secure.json": _descriptor(
            f"{tmp_path}/CODE.secboot.fd", f"{tmp_path}/VARS.fd", secure, q35
        ),
        "60-plain.json": _descriptor(
            f"{tmp_path}/CODE.fd", f"{tmp_path}/VARS.fd", ["acpi-s3"], both
        ),
    }
    for name, data in files.items():
        (share / name).write_text(json.dumps(data))
    (share / "README").write_text("not a descriptor")
    return share


def test_each_uefi_firmware_gets_the_build_libvirt_would_pick(tmp_path: Path) -> None:
    found = firmware.host_support(firmware.read_descriptors([_debian(tmp_path)]))
    assert found["uefi"].executable == f"{tmp_path}/CODE.fd"
    assert found["uefi-secure"].executable == f"{tmp_path}/CODE.ms.fd"
    assert found["uefi-secure"].nvram_template == f"{tmp_path}/VARS.ms.fd"


def test_a_later_directory_replaces_or_hides_a_descriptor(tmp_path: Path) -> None:
    share = _debian(tmp_path)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "40-enrolled.json").write_text("")  # an empty file hides the packaged one
    found = firmware.host_support(firmware.read_descriptors([share, etc]))
    assert found["uefi-secure"] is None and found["uefi"] is not None


def test_builds_whose_files_are_gone_or_descriptors_in_another_form_are_not_chosen(
    tmp_path: Path,
) -> None:
    share = _debian(tmp_path)
    (tmp_path / "CODE.fd").unlink()
    (share / "70-broken.json").write_text("{not json")
    (share / "80-arm.json").write_text(
        json.dumps(
            {
                **_descriptor("/a", "/b", [], ["virt-*"]),
                "targets": [{"architecture": "aarch64", "machines": ["virt-*"]}],
            }
        )
    )
    descriptors = firmware.read_descriptors([share, tmp_path / "absent"])
    assert [d.name for d in descriptors] == ["40-enrolled.json", "50-secure.json", "60-plain.json"]
    assert firmware.host_support(descriptors)["uefi"] is None


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {**_descriptor("/c", "/v", [], ["pc-q35-*"]), "interface-types": ["bios"]},
        {**_descriptor("/c", "/v", [], ["pc-q35-*"]), "mapping": {"device": "memory"}},
        _descriptor("relative.fd", "/v", [], ["pc-q35-*"]),
        _descriptor("/c", "/v", [], []),
    ],
)
def test_what_is_no_x86_64_uefi_flash_build_is_left_out(data: object) -> None:
    assert firmware.parse_descriptor("x.json", data) is None


def test_secure_boot_needs_enrolled_keys_on_q35() -> None:
    enrolled = firmware.parse_descriptor(
        "a", _descriptor("/c", "/v", ["secure-boot", "enrolled-keys"], ["pc-q35-*"])
    )
    empty = firmware.parse_descriptor("b", _descriptor("/c", "/v", ["secure-boot"], ["pc-q35-*"]))
    plain_q35 = firmware.parse_descriptor("c", _descriptor("/c", "/v", [], ["pc-q35-*"]))
    assert enrolled.serves("uefi-secure") and not enrolled.serves("uefi")
    assert not empty.serves("uefi-secure") and not empty.serves("uefi")
    assert not plain_q35.serves("uefi")  # uefi nodes are i440fx machines


CAPS = """<domainCapabilities><os supported='yes'>
<enum name='firmware'>{firmware}</enum>
<loader supported='yes'><enum name='secure'>{secure}</enum></loader></os></domainCapabilities>"""


def test_a_host_without_the_firmware_is_said_so() -> None:
    efi = CAPS.format(firmware="<value>efi</value>", secure="<value>yes</value><value>no</value>")
    no_secure = CAPS.format(firmware="<value>efi</value>", secure="<value>no</value>")
    none = CAPS.format(firmware="", secure="")
    assert firmware.missing_in_capabilities(efi, "uefi-secure") is None
    assert firmware.missing_in_capabilities(no_secure, "uefi") is None
    assert "no Secure Boot build" in firmware.missing_in_capabilities(no_secure, "uefi-secure")
    assert "install ovmf" in firmware.missing_in_capabilities(none, "uefi")
    assert "not XML" in firmware.missing_in_capabilities("<", "uefi")


def test_bad_firmware_is_one_line() -> None:
    with pytest.raises(UsageError, match="--firmware must be one of bios, uefi, uefi-secure"):
        firmware.checked("efi")
    assert firmware.checked("uefi") == "uefi"


def _rendered(**changes: object) -> ET.Element:
    return core_domain(attrs.evolve(PLAN, **changes), "2026-01-01T00:00:00+00:00")


def _recorded_firmware(domain: ET.Element) -> str | None:
    ns = f"{{{NAMESPACE}}}"
    return domain.findtext(f"metadata/{ns}node/{ns}shape/{ns}firmware")


def test_a_bios_node_has_seabios_as_before() -> None:
    domain = _rendered()
    assert domain.find("os").get("firmware") is None
    assert domain.find("os/bios").get("useserial") == "yes"
    assert domain.find("os/nvram") is None and domain.find("features/smm") is None
    assert _recorded_firmware(domain) == "bios"


def test_a_uefi_node_asks_libvirt_for_efi_without_secure_boot() -> None:
    domain = _rendered(firmware="uefi")
    os_element = domain.find("os")
    assert os_element.get("firmware") == "efi"
    features = {f.get("name"): f.get("enabled") for f in os_element.findall("firmware/feature")}
    assert features == {"secure-boot": "no", "enrolled-keys": "no"}
    assert os_element.findtext("nvram") == "/var/lib/vnode/nodes/vnode03/nvram.fd"
    assert os_element.find("type").get("machine") is None and os_element.find("bios") is None
    assert domain.find("features/smm") is None
    assert _recorded_firmware(domain) == "uefi"


def test_a_secure_boot_node_is_q35_with_smm_and_the_keys_enrolled() -> None:
    domain = _rendered(firmware="uefi-secure", volume_dir=Path("/srv/pool"))
    os_element = domain.find("os")
    features = {f.get("name"): f.get("enabled") for f in os_element.findall("firmware/feature")}
    assert features == {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert os_element.find("type").get("machine") == "q35"
    assert domain.find("features/smm").get("state") == "on"
    # On a host's pool the NVRAM is a volume there, named after the node.
    assert os_element.findtext("nvram") == "/srv/pool/vnode03-nvram.fd"

"""A node's firmware: BIOS (SeaBIOS), UEFI (OVMF) or UEFI with Secure Boot enforced.

libvirt picks the UEFI build itself (``<os firmware="efi">`` with the features asked for),
from the JSON descriptors QEMU's firmware packages install (Debian's ``ovmf``, Fedora's
``edk2-ovmf``) on the node's own host, and copies that build's variable store template to
the node's NVRAM file when the domain first starts. vnode reads the descriptors only to say
what a host has (``doctor``) and asks each host's libvirt before making UEFI nodes there
(:func:`missing_on_host`). See docs/uefi.md.
"""

from __future__ import annotations

import fnmatch
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import attrs

from vnode.errors import UsageError

Firmware = Literal["bios", "uefi", "uefi-secure"]
FIRMWARES: tuple[str, ...] = Firmware.__args__  # type: ignore[attr-defined]
UEFI_FIRMWARES = ("uefi", "uefi-secure")
# Secure Boot needs the firmware's SMM mode, which QEMU has on the q35 machine only.
SECURE_MACHINE = "q35"

# Where QEMU's firmware descriptors live, lowest precedence first (docs/interop/firmware.json
# in QEMU: a file of the same name in a later directory replaces an earlier one).
DESCRIPTOR_DIRS = (Path("/usr/share/qemu/firmware"), Path("/etc/qemu/firmware"))
_MAX_DESCRIPTOR = 64 * 1024


def checked(value: str, where: str = "--firmware") -> str:
    """``value`` if it is a firmware vnode makes; else bad input naming ``where``."""
    if value not in FIRMWARES:
        raise UsageError(f"{where} must be one of {', '.join(FIRMWARES)}, not {value!r}")
    return value


def label(firmware: str) -> str:
    """How listings say it: "BIOS", "UEFI", "UEFI Secure Boot"."""
    return {"bios": "BIOS", "uefi": "UEFI", "uefi-secure": "UEFI Secure Boot"}[firmware]


@attrs.frozen
class Descriptor:
    """What one firmware descriptor offers, as far as vnode's choice goes."""

    name: str  # the file's name
    executable: str  # the firmware's code
    nvram_template: str  # the variable store copied per node
    features: frozenset[str]
    machines: tuple[str, ...]  # glob patterns: "pc-q35-*"

    def serves(self, firmware: str) -> bool:
        """Whether libvirt would pick this build for ``firmware``: for ``uefi`` one without
        Secure Boot on vnode's default machine (i440fx), for ``uefi-secure`` one with Secure
        Boot and the Microsoft keys enrolled, on q35."""
        if firmware == "uefi":
            return "secure-boot" not in self.features and self._runs_on("pc-i440fx-")
        if firmware == "uefi-secure":
            return {"secure-boot", "enrolled-keys"} <= self.features and self._runs_on("pc-q35-")
        return False

    def _runs_on(self, machine: str) -> bool:
        # The machine names of any QEMU version: "pc-q35-7.2", "pc-q35-9.1", ...
        return any(fnmatch.fnmatchcase(f"{machine}99.9", pattern) for pattern in self.machines)


def parse_descriptor(name: str, data: object) -> Descriptor | None:
    """The descriptor's x86_64 UEFI flash build, or None when it describes something else
    (another architecture, a BIOS, a memory-mapped build) or is not in QEMU's form."""
    if not isinstance(data, dict) or "uefi" not in _strings(data.get("interface-types")):
        return None
    mapping = data.get("mapping")
    if not isinstance(mapping, dict) or mapping.get("device") != "flash":
        return None
    executable = _filename(mapping.get("executable"))
    template = _filename(mapping.get("nvram-template"))
    if executable is None or template is None:
        return None
    machines: list[str] = []
    for target in data.get("targets") or ():
        if isinstance(target, dict) and target.get("architecture") == "x86_64":
            machines += _strings(target.get("machines"))
    if not machines:
        return None
    return Descriptor(
        name=name,
        executable=executable,
        nvram_template=template,
        features=frozenset(_strings(data.get("features"))),
        machines=tuple(machines),
    )


def _strings(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _filename(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    filename = value.get("filename")
    return filename if isinstance(filename, str) and filename.startswith("/") else None


def read_descriptors(dirs: Iterable[Path] = DESCRIPTOR_DIRS) -> list[Descriptor]:
    """The x86_64 UEFI builds the host's descriptors offer, in QEMU's order of preference
    (by file name); a later directory's file replaces an earlier one of the same name, an
    empty one hides it. Unreadable or malformed files are left out."""
    files: dict[str, Path] = {}
    for directory in dirs:
        try:
            for path in directory.iterdir():
                if path.suffix == ".json":
                    files[path.name] = path
        except OSError:
            continue
    found = []
    for name in sorted(files):
        try:
            with files[name].open("rb") as handle:
                text = handle.read(_MAX_DESCRIPTOR + 1)
            data = json.loads(text) if 0 < len(text) <= _MAX_DESCRIPTOR else None
        except (OSError, ValueError):
            continue
        if (descriptor := parse_descriptor(name, data)) is not None:
            found.append(descriptor)
    return found


def choose(descriptors: Iterable[Descriptor], firmware: str) -> Descriptor | None:
    """The build libvirt would pick for ``firmware`` whose files exist, or None."""
    for descriptor in descriptors:
        if descriptor.serves(firmware) and all(
            os.path.isfile(p) for p in (descriptor.executable, descriptor.nvram_template)
        ):
            return descriptor
    return None


def host_support(descriptors: Iterable[Descriptor]) -> Mapping[str, Descriptor | None]:
    """Per UEFI firmware, the build this host would use (None: it has none)."""
    listed = list(descriptors)
    return {firmware: choose(listed, firmware) for firmware in UEFI_FIRMWARES}


def missing_in_capabilities(capabilities: str, firmware: str) -> str | None:
    """Why a host whose libvirt reports ``capabilities`` (``getDomainCapabilities`` for the
    machine the firmware needs) cannot start ``firmware``, or None."""
    try:
        root = ET.fromstring(capabilities)
    except ET.ParseError:
        return "libvirt's domain capabilities are not XML"
    os_element = root.find("os")
    values = {v.text for v in root.findall("os/enum[@name='firmware']/value")}
    if os_element is None or "efi" not in values:
        return "libvirt finds no UEFI firmware (install ovmf, or edk2-ovmf on Fedora)"
    secure = {v.text for v in root.findall("os/loader/enum[@name='secure']/value")}
    if firmware == "uefi-secure" and "yes" not in secure:
        return "libvirt finds no Secure Boot build of the UEFI firmware (install ovmf)"
    return None


def machine(firmware: str) -> str | None:
    """The machine type a node of ``firmware`` is defined with (None: libvirt's default)."""
    return SECURE_MACHINE if firmware == "uefi-secure" else None

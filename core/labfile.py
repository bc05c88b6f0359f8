"""Lab files: a lab written down once (``vnode plan lab.toml``, ``vnode apply lab.toml``).

A lab file names nodes by the same specs as ``vnode up`` and gives each group of them its
shape::

    [lab]
    name = "k8s"            # optional; the file's stem otherwise

    [defaults]              # any key of a [[nodes]] table but spec
    distro = "d12"
    memory = 2048

    [[nodes]]
    spec = "1-3"
    memory = 4096

Everything is checked where it is read: an unknown key, a wrong type, specs that overlap and
shapes that cannot be made are one line naming the file, the table and the key. Nothing here
touches a host: :mod:`vnode.labplan` compares the file with what runs.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from vnode.disks import MAX_EXTRA_DISKS
from vnode.errors import UsageError
from vnode.firmware import FIRMWARES
from vnode.pools import MAX_NICS, Pool
from vnode.spec import NodeRef, parse_spec_range

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_DISK_GB = 64 * 1024


@attrs.frozen
class Shape:
    """One node's shape as a lab file gives it; None: as vnode's config says."""

    distro: str | None = None
    memory: int | None = None  # MiB
    vcpus: int | None = None
    disk: int | None = None  # GiB, the root disk
    warm: bool | None = None
    disks: tuple[int, ...] = ()  # extra disks, GiB
    networks: tuple[str, ...] = ()  # a NIC each; the first is the node's own; (): as configured
    firmware: str = "bios"
    tpm: bool = False
    cloud_config: tuple[Path, ...] = ()  # absolute: relative to the lab file when written
    run: tuple[str, ...] = ()
    # The domain's maxima, up to which `apply` grows memory and vCPUs in place; None: none.
    max_memory: int | None = None  # MiB
    max_vcpus: int | None = None


@attrs.frozen
class LabNode:
    """A node of the lab: which it is, the table that named it, its shape."""

    ref: NodeRef
    table: str  # "[[nodes]] #2 (spec \"storage10-12\")", for messages
    shape: Shape

    @property
    def name(self) -> str:
        return self.ref.name


@attrs.frozen
class LabFile:
    path: Path
    name: str
    nodes: tuple[LabNode, ...]

    @property
    def lock_path(self) -> Path:
        return self.path.with_name("lab.lock")

    def node(self, name: str) -> LabNode | None:
        return next((node for node in self.nodes if node.name == name), None)


_KEYS: dict[str, type | tuple[type, ...]] = {
    "distro": str,
    "memory": int,
    "vcpus": int,
    "disk": int,
    "warm": bool,
    "disks": list,
    "networks": list,
    "firmware": str,
    "tpm": bool,
    "cloud_config": list,
    "run": list,
    "max_memory": int,
    "max_vcpus": int,
}


def read_lab(path: Path, pools: tuple[Pool, ...], *, host_cpus: int | None = None) -> LabFile:
    """The lab file at ``path``, checked whole before anything is planned; ``host_cpus``
    bounds vcpus where the caller knows the host."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"lab file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"lab file {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"lab file {path}: not valid TOML ({exc})") from None
    where = str(path)
    unknown = sorted(set(data) - {"lab", "defaults", "nodes"})
    if unknown:
        raise UsageError(
            f"{where}: unknown table [{unknown[0]}] (expected [lab], [defaults], [[nodes]])"
        )
    name = _lab_name(data.get("lab", {}), path)
    base = path.parent
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{where}: [defaults] must be a table")
    if "spec" in defaults:
        raise UsageError(f"{where}: [defaults]: spec belongs in a [[nodes]] table")
    common = _fields(defaults, f"{where}: [defaults]", base)
    tables = data.get("nodes")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{where}: no [[nodes]] tables: a lab names at least one node")
    nodes: list[LabNode] = []
    seen: dict[str, str] = {}
    for index, table in enumerate(tables, start=1):
        spec = table.get("spec")
        label = f"[[nodes]] #{index}"
        if not isinstance(spec, str) or not spec.strip():
            raise UsageError(
                f'{where}: {label}: spec is missing (a vnode spec: "1-3", "storage10:d12")'
            )
        label = f'{label} (spec "{spec}")'
        own = _fields({k: v for k, v in table.items() if k != "spec"}, f"{where}: {label}", base)
        shape = _shape({**common, **own}, f"{where}: {label}", host_cpus)
        try:
            refs = parse_spec_range(spec, pools)
        except UsageError as exc:
            raise UsageError(f"{where}: {label}: {exc}") from None
        for ref in refs:
            if ref.name in seen:
                raise UsageError(f"{where}: {label}: {ref.name} is named by {seen[ref.name]} too")
            seen[ref.name] = label
            # A spec's own :DISTRO wins over the table's distro key, as on the command line.
            node_shape = attrs.evolve(shape, distro=ref.distro) if ref.distro else shape
            nodes.append(
                LabNode(
                    ref=attrs.evolve(ref, distro=node_shape.distro), table=label, shape=node_shape
                )
            )
    return LabFile(path=path, name=name, nodes=tuple(nodes))


def _lab_name(table: object, path: Path) -> str:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [lab] must be a table")
    if unknown := sorted(set(table) - {"name"}):
        raise UsageError(f"{path}: [lab]: unknown key {unknown[0]!r} (known: name)")
    name = table.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"{path}: [lab]: name must be letters, digits, '.', '_' or '-' (at most 63), "
            f"not {name!r}"
        )
    return name


def _fields(table: Mapping[str, Any], where: str, base: Path) -> dict[str, Any]:
    """The table's keys, type-checked; lists become tuples, paths absolute."""
    fields: dict[str, Any] = {}
    for key, value in table.items():
        wanted = _KEYS.get(key)
        if wanted is None:
            known = ", ".join(["spec", *_KEYS])
            raise UsageError(f"{where}: unknown key {key!r} (known: {known})")
        # TOML's booleans are no integers here: `memory = true` is a mistake.
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise UsageError(f"{where}: {key} must be {_type_name(wanted)}, not {value!r}")
        if key == "disks":
            value = _list_of(value, int, where, key, "GiB numbers")
        elif key in ("networks", "run"):
            value = _list_of(value, str, where, key, "strings")
        elif key == "cloud_config":
            value = tuple(
                Path(os.path.normpath(base / p))
                for p in _list_of(value, str, where, key, "file paths")
            )
        fields[key] = value
    return fields


def _shape(fields: dict[str, Any], where: str, host_cpus: int | None) -> Shape:
    for key, low, high in (
        ("memory", 64, 1024 * 1024),
        ("vcpus", 1, 512),
        ("max_memory", 64, 1024 * 1024),
        ("max_vcpus", 1, 512),
        ("disk", 1, MAX_DISK_GB),
    ):
        value = fields.get(key)
        if value is not None and not low <= value <= high:
            raise UsageError(f"{where}: {key} must be from {low} to {high}, not {value}")
    for key in ("vcpus", "max_vcpus"):
        if host_cpus is not None and fields.get(key, 0) > host_cpus:
            raise UsageError(f"{where}: {key} {fields[key]} is more than the host's {host_cpus}")
    disks = fields.get("disks", ())
    if len(disks) > MAX_EXTRA_DISKS:
        raise UsageError(f"{where}: disks: at most {MAX_EXTRA_DISKS} extra disks, not {len(disks)}")
    for size in disks:
        if not 1 <= size <= MAX_DISK_GB:
            raise UsageError(
                f"{where}: disks: a disk must be from 1 to {MAX_DISK_GB} GiB, not {size}"
            )
    firmware = fields.get("firmware", "bios")
    if firmware not in FIRMWARES:
        raise UsageError(
            f"{where}: firmware must be one of {', '.join(FIRMWARES)}, not {firmware!r}"
        )
    if firmware == "uefi-secure" and fields.get("max_vcpus") is not None:
        # QEMU stops a Secure Boot guest (SMM) at a vCPU hot-plug its OVMF did not negotiate.
        raise UsageError(f"{where}: max_vcpus: a uefi-secure node cannot take vCPUs in place (SMM)")
    _check_networks(fields.get("networks", ()), where)
    for path in fields.get("cloud_config", ()):
        if not path.is_file():
            raise UsageError(f"{where}: cloud_config: {path} is not a file")
    for command in fields.get("run", ()):
        if not command.strip():
            raise UsageError(f"{where}: run: an empty command")
    return Shape(**fields)


def _check_networks(networks: tuple[str, ...], where: str) -> None:
    """A NIC per entry, the node's own first (what each names is checked when planned)."""
    if len(networks) > MAX_NICS:
        raise UsageError(f"{where}: networks: at most {MAX_NICS} NICs, not {len(networks)}")
    for network in networks:
        if not network.strip() or any(c.isspace() for c in network):
            raise UsageError(f"{where}: networks: {network!r} is not a network (KIND[:ARG])")
        if networks.count(network) > 1:
            raise UsageError(f"{where}: networks: {network} is named twice (a NIC per network)")


def _list_of(value: list, kind: type, where: str, key: str, what: str) -> tuple:
    if not all(isinstance(item, kind) and not isinstance(item, bool) for item in value):
        raise UsageError(f"{where}: {key} must be a list of {what}, not {value!r}")
    return tuple(value)


def _type_name(wanted: type | tuple[type, ...]) -> str:
    return {int: "a whole number", str: "a string", bool: "true or false", list: "a list"}[wanted]  # type: ignore[index]

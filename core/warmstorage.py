"""Where one host keeps its warm templates and its clones' files.

A template is made on, and cloned on, the host its clones run on: a saved guest can only be
restored by the libvirtd that can read its save image. Every host keeps its templates the
way it keeps its nodes (:func:`vnode.lab.templates_for` chooses, as
:func:`vnode.lab.store_for` does for nodes):

- :class:`StateFiles`: the implicit host of a lab without ``[[hosts]]`` keeps node files in
  the state directory, and its templates in ``<state>/templates/<key>/`` (``disk.qcow2``,
  ``state.save``, ``record.json``); a clone's overlay, identity disk and restore image are
  files in its node directory;
- :class:`PoolVolumes`: a host with a pool (every ``[[hosts]]`` host, local or remote)
  keeps them as volumes of that pool, made and read through libvirt's storage API alone
  (``template.<key>-disk.qcow2``, ``template.<key>-state.save``, ``template.<key>.json``;
  the dot keeps them apart from nodes' volumes, which a pool stem cannot contain). A clone's
  restore image is the template's save image copied by the host itself
  (``virStorageVolCreateXMLFrom``) with the clone's header uploaded over its start: the
  template's memory never crosses the wire.

Both answer the same calls; :mod:`vnode.warmstore` makes and lists templates through them,
:mod:`vnode.warm` makes clones through them.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from vnode import hypervisor
from vnode.disks import GIB
from vnode.errors import EnvironmentProblem
from vnode.model import ConsoleSetup, NodePlan

if TYPE_CHECKING:
    from vnode.warm import SaveImage
    from vnode.warmstore import TemplateRecord, TemplateSpec

RECORD = "record.json"


class TemplateStorage(Protocol):
    """What a host's template storage answers (see the module's docstring)."""

    host: str
    conn: Any

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        """(directory, disk, save image) of template ``key`` on the host."""

    def lock_name(self, key: str) -> str:
        """The file lock (in the lab's locks directory) making and removing it take."""

    def read(self, key: str) -> TemplateRecord | None:
        """The template as made (``damage`` set when it cannot be used), None if absent or
        unfinished."""

    def list(self, *, damaged: bool = False) -> list[TemplateRecord]: ...

    def users(self, record: TemplateRecord) -> list[str]:
        """The nodes whose disk is an overlay on the template's disk."""

    def remove(self, record: TemplateRecord) -> None: ...

    def unfinished(self, key: str) -> bool:
        """Whether an earlier attempt left something of ``key`` without a record."""

    def clear(self, spec: TemplateSpec) -> None:
        """What an unfinished attempt left (the caller checked it has no users)."""

    def template_plan(self, spec: TemplateSpec) -> NodePlan:
        """The node plan the template's domain is rendered from (no NIC, the agent's seed)."""

    def lay_down(self, spec: TemplateSpec, plan: NodePlan, seed: bytes) -> None:
        """The template's overlay on its image and its seed, before its boot."""

    def console_text(self, plan: NodePlan) -> str:
        """The end of the template's console log ("" while there is none)."""

    def seal(self, spec: TemplateSpec, plan: NodePlan, record: str) -> None:
        """After the save: the seed goes, the disk becomes read-only, the record is written
        last (a record says the template is whole)."""

    def discard(self, spec: TemplateSpec) -> None:
        """Everything of a failed attempt."""

    def save_bytes(self, spec: TemplateSpec) -> int:
        """The size of the template's save image, once saved."""

    def saved_xml(self, template: TemplateRecord) -> str:
        """The domain XML in the template's save image header."""

    def clone_disk(self, template: TemplateRecord, plan: NodePlan) -> None: ...

    def identity_disk(self, plan: NodePlan, archive: bytes) -> Path: ...

    def restore(
        self, conn: Any, template: TemplateRecord, plan: NodePlan, xml: str, flags: int
    ) -> None:
        """Restore the domain ``xml`` from the template's saved state (the clone's header
        before the template's migration stream), with libvirt's restore ``flags``."""


@attrs.define
class StateFiles:
    """Templates in ``<state>/templates/<key>/``, clones' files in their node directories."""

    conn: Any
    root: Path  # <state>/templates
    nodes_dir: Path
    host: str

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        directory = self.root / key
        return directory, directory / "disk.qcow2", directory / "state.save"

    def lock_name(self, key: str) -> str:
        return f"template-{key}.lock"

    def read(self, key: str) -> TemplateRecord | None:
        from vnode.warmstore import read_template

        return _on(read_template(self.root / key), self.host)

    def list(self, *, damaged: bool = False) -> list[TemplateRecord]:
        from vnode.warmstore import list_templates

        return [_on(r, self.host) for r in list_templates(self.root.parent, damaged=damaged)]

    def users(self, record: TemplateRecord) -> list[str]:
        from vnode.warmstore import users_of

        return users_of(record, self.nodes_dir)

    def remove(self, record: TemplateRecord) -> None:
        from vnode.warmstore import remove_template

        remove_template(record, self.nodes_dir)

    def unfinished(self, key: str) -> bool:
        return (self.root / key).exists()

    def clear(self, spec: TemplateSpec) -> None:
        _remove_inside(self.root, spec.directory)

    def template_plan(self, spec: TemplateSpec) -> NodePlan:
        return _base_plan(spec, node_dir=spec.directory, volume_dir=None, name=spec.domain_name)

    def lay_down(self, spec: TemplateSpec, plan: NodePlan, seed: bytes) -> None:
        from vnode.disks import create_overlay
        from vnode.files import write_atomic

        spec.directory.mkdir(mode=0o755, parents=True)
        os.chmod(spec.directory.parent, 0o755)
        create_overlay(spec.image, spec.disk, spec.shape.disk_gb)
        write_atomic(plan.seed_path, seed, 0o600)

    def console_text(self, plan: NodePlan) -> str:
        assert plan.console is not None
        path = plan.console.log_path
        return path.read_text(errors="replace") if path.is_file() else ""

    def seal(self, spec: TemplateSpec, plan: NodePlan, record: str) -> None:
        from vnode.files import write_atomic

        plan.seed_path.unlink(missing_ok=True)
        # From now on only ever a backing file: a clone writing to it would corrupt them all.
        os.chmod(spec.disk, 0o444)
        write_atomic(spec.directory / RECORD, record)

    def discard(self, spec: TemplateSpec) -> None:
        _remove_inside(self.root, spec.directory)

    def save_bytes(self, spec: TemplateSpec) -> int:
        return spec.save.stat().st_size

    def saved_xml(self, template: TemplateRecord) -> str:
        from vnode.warm import read_save_image

        return read_save_image(template.save).xml

    def clone_disk(self, template: TemplateRecord, plan: NodePlan) -> None:
        from vnode.disks import create_overlay

        if plan.node_dir.exists():
            shutil.rmtree(plan.node_dir)
        plan.node_dir.mkdir(mode=0o711, parents=True)
        plan.node_dir.chmod(0o711)  # as nodes.NODE_DIR_MODE: qemu passes, no one else looks
        # The template's virtual size: the saved guest already knows its disk's size.
        create_overlay(template.disk, plan.disk_path, template.disk_gb)

    def identity_disk(self, plan: NodePlan, archive: bytes) -> Path:
        path = plan.node_dir / "identity.tar"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(archive)
        return path

    def restore(
        self, conn: Any, template: TemplateRecord, plan: NodePlan, xml: str, flags: int
    ) -> None:
        from vnode.warm import restore_clone

        # Through a FIFO beside the node's files: no per-clone copy of the guest's memory.
        restore_clone(conn, template.save, xml, plan.node_dir / "restore.fifo", flags)


def _on(record: TemplateRecord | None, host: str) -> Any:
    return attrs.evolve(record, host=host) if record is not None else None


def _remove_inside(root: Path, path: Path) -> None:
    # Only ever delete inside vnode's templates directory, whatever a record says.
    if path.resolve().parent == root.resolve() and path.exists():
        shutil.rmtree(path)


def _base_plan(
    spec: TemplateSpec, *, node_dir: Path, volume_dir: Path | None, name: str
) -> NodePlan:
    # The same domain as a cold node's (the core's template), so a clone's device layout is
    # a cold node's less the NIC and the seed; no plugin adjusts it.
    plan = NodePlan(
        name=name,
        number=0,
        pool="template",
        mac="",
        distro=spec.distro,
        memory_mib=spec.shape.memory_mib,
        vcpus=spec.shape.vcpus,
        disk_gb=spec.shape.disk_gb,
        network="none",
        virt_type=spec.shape.virt_type,
        node_dir=node_dir,
        host=spec.host,
        volume_dir=volume_dir,
    )
    console = (
        volume_dir / plan.console_volume if volume_dir is not None else node_dir / "console.log"
    )
    return attrs.evolve(plan, console=ConsoleSetup(log_path=console))


# -- a host's pool -----------------------------------------------------------------------------


def volume_stem(key: str) -> str:
    """The template's volumes' common start (a dot: no node's name has one)."""
    return f"template.{key}"


def clone_volume(node: str, what: str) -> str:
    """A clone's volume besides a cold node's (vnode.nodes.remove_volumes removes them)."""
    return f"{node}-{what}"


@attrs.define
class PoolVolumes:
    """Templates and clones' files as volumes of the host's vnode pool. ``pool`` is None
    while the host has no pool yet (planning makes nothing): it then holds no template.
    ``base_volumes``: the base images' volumes there, by image version (digest) (vnode.execute
    uploads them before any template is made)."""

    conn: Any
    pool: Any
    directory: Path
    host: str
    base_volumes: dict[str, Any] = attrs.field(factory=dict)

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        stem = volume_stem(key)
        return (
            self.directory,
            self.directory / f"{stem}-disk.qcow2",
            self.directory / f"{stem}-state.save",
        )

    def lock_name(self, key: str) -> str:
        return f"template-{self.host}-{key}.lock"

    def _volumes(self) -> dict[str, Any]:
        if self.pool is None:
            return {}
        hypervisor.refresh_pool(self.pool)
        with hypervisor.libvirt_errors(f"listing the volumes of pool {self.pool.name()}"):
            return {volume.name(): volume for volume in self.pool.listAllVolumes(0)}

    def read(self, key: str) -> TemplateRecord | None:
        return self._read(key, self._volumes())

    def _read(self, key: str, volumes: dict[str, Any]) -> TemplateRecord | None:
        from vnode.warmstore import parse_record

        name = f"{volume_stem(key)}.json"
        if name not in volumes:
            return None
        _, disk, save = self.paths(key)
        where = f"volume {name} on {self.host}"
        try:
            text = hypervisor.download(self.conn, volumes[name]).decode(errors="replace")
        except hypervisor.HypervisorError as exc:
            text, problem = "", str(exc)
        else:
            problem = None
        record = parse_record(text, key, where, problem=problem)
        record = attrs.evolve(
            record, host=self.host, directory=str(self.directory), disk_file=str(disk),
            save_file=str(save),
        )  # fmt: skip
        missing = [p.name for p in (disk, save) if p.name not in volumes]
        if missing and record.damage is None:
            record = attrs.evolve(record, damage=f"{', '.join(missing)} missing on {self.host}")
        return record

    def list(self, *, damaged: bool = False) -> list[TemplateRecord]:
        volumes = self._volumes()
        keys = sorted(
            name[len("template.") : -len(".json")]
            for name in volumes
            if name.startswith("template.") and name.endswith(".json")
        )
        found = (self._read(key, volumes) for key in keys)
        kept = (r for r in found if r is not None and (damaged or r.damage is None))
        return sorted(kept, key=lambda r: (r.distro, r.made))

    def users(self, record: TemplateRecord) -> list[str]:
        users = []
        for name, volume in sorted(self._volumes().items()):
            if not name.endswith("-disk.qcow2") or name.startswith("template."):
                continue
            try:
                backing = ET.fromstring(volume.XMLDesc(0)).findtext("backingStore/path")
            except Exception:  # gone meanwhile, or unreadable: not a user we can name
                continue
            if backing == record.disk_file:
                users.append(name[: -len("-disk.qcow2")])
        return users

    def remove(self, record: TemplateRecord) -> None:
        from vnode.errors import UsageError

        if users := self.users(record):
            raise UsageError(
                f"template {record.key} on {self.host} is the base of {', '.join(users)}: "
                "destroy them first"
            )
        self._delete_all(record.key)

    def _delete_all(self, key: str) -> None:
        stem = volume_stem(key)
        # The record first: without it, what is left is an unfinished template.
        for suffix in (".json", "-state.save", "-disk.qcow2", "-seed.iso", "-console.log"):
            hypervisor.delete_volume(self.pool, stem + suffix)

    def unfinished(self, key: str) -> bool:
        stem = volume_stem(key)
        return any(name.startswith(stem) for name in self._volumes())

    def clear(self, spec: TemplateSpec) -> None:
        self._delete_all(spec.key)

    def template_plan(self, spec: TemplateSpec) -> NodePlan:
        # Named for its volumes; the domain itself takes spec.domain_name (vnode.warmstore).
        return _base_plan(
            spec, node_dir=spec.directory, volume_dir=self.directory, name=volume_stem(spec.key)
        )

    def lay_down(self, spec: TemplateSpec, plan: NodePlan, seed: bytes) -> None:
        from vnode import imagestore

        digest = imagestore.digest_of(spec.image)
        if self.pool is None or digest not in self.base_volumes:
            raise EnvironmentProblem(f"{self.host}: image {spec.image.name} is not in its pool")
        hypervisor.create_overlay_volume(
            self.pool, plan.disk_volume, self.base_volumes[digest], spec.shape.disk_gb * GIB
        )
        hypervisor.upload_bytes(self.conn, self.pool, plan.seed_volume, seed, mode="0600")
        hypervisor.delete_volume(self.pool, plan.console_volume)

    def console_text(self, plan: NodePlan) -> str:
        data = hypervisor.volume_tail(self.conn, self.pool, plan.console_volume)
        return data.decode(errors="replace") if data else ""

    def seal(self, spec: TemplateSpec, plan: NodePlan, record: str) -> None:
        hypervisor.delete_volume(self.pool, plan.seed_volume)
        # libvirt has no call to make a volume read-only after the fact; once the domain is
        # saved the disk is root's again (0600), and clones open it only as a backing file.
        hypervisor.refresh_pool(self.pool)
        hypervisor.upload_bytes(
            self.conn, self.pool, f"{volume_stem(spec.key)}.json", record.encode()
        )

    def discard(self, spec: TemplateSpec) -> None:
        if self.pool is not None:
            self._delete_all(spec.key)

    def save_bytes(self, spec: TemplateSpec) -> int:
        hypervisor.refresh_pool(self.pool)
        return int(self._volume(spec.save.name).info()[1])

    def _volume(self, name: str) -> Any:
        volume = hypervisor.find_volume(self.pool, name)
        if volume is None:
            raise EnvironmentProblem(f"{self.host}: volume {name} is gone")
        return volume

    def clone_disk(self, template: TemplateRecord, plan: NodePlan) -> None:
        base = self._volume(Path(template.disk_file).name)
        # The template's virtual size: the saved guest already knows its disk's size.
        hypervisor.create_overlay_volume(self.pool, plan.disk_volume, base, template.disk_gb * GIB)
        # virtlogd makes the console log afresh; an earlier one would be read by `vnode log`.
        hypervisor.delete_volume(self.pool, plan.console_volume)

    def identity_disk(self, plan: NodePlan, archive: bytes) -> Path:
        name = clone_volume(plan.name, "identity.tar")
        hypervisor.upload_bytes(self.conn, self.pool, name, archive, mode="0600")
        return self.directory / name

    def _header(self, template: TemplateRecord) -> tuple[Any, SaveImage]:
        from vnode.warm import parse_save_header

        source = self._volume(Path(template.save_file).name)
        head = hypervisor.download(self.conn, source, offset=0, length=HEADER_PROBE)
        image = parse_save_header(head, where=template.save_file)
        if len(head) < image.body_offset:
            head = hypervisor.download(self.conn, source, offset=0, length=image.body_offset)
            image = parse_save_header(head, where=template.save_file)
        return source, image

    def saved_xml(self, template: TemplateRecord) -> str:
        return self._header(template)[1].xml

    def restore(
        self, conn: Any, template: TemplateRecord, plan: NodePlan, xml: str, flags: int
    ) -> None:
        # libvirt restores from a path on its host, and a FIFO there cannot be fed through
        # the storage API: the host copies the save image (nothing crosses the connection)
        # and the clone's header is written over its start.
        path = self.restore_image(template, plan, xml)
        try:
            with hypervisor.libvirt_errors(f"restoring {plan.name} from template {template.key}"):
                conn.restoreFlags(str(path), None, flags)
        finally:
            hypervisor.delete_volume(self.pool, path.name)

    def restore_image(self, template: TemplateRecord, plan: NodePlan, xml: str) -> Path:
        """The clone's own save image in the pool: the template's, copied by the host, with
        the clone's header over its first bytes (the header keeps the template's room)."""
        from vnode.warm import clone_header

        source, image = self._header(template)
        header = clone_header(image, xml, grow=False)
        name = clone_volume(plan.name, "restore.save")
        hypervisor.copy_volume(self.pool, source, name, mode="0600")
        hypervisor.overwrite_volume(self.conn, self._volume(name), header)
        return self.directory / name


# What is read of a template's save image to find its header (libvirt's pad is 64 KiB).
HEADER_PROBE = 128 * 1024


def record_text(record: TemplateRecord) -> str:
    """The record as stored: what was made, not where it was found."""
    hidden = ("directory", "damage", "host", "disk_file", "save_file")
    data = {k: v for k, v in record.to_dict().items() if k not in hidden}
    return json.dumps(data, indent=2) + "\n"

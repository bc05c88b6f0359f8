"""Warm templates: a booted, NIC-less guest saved once per image and shape, cloned many times.

A template lives on the host its clones run on, where :mod:`vnode.warmstorage` keeps it (for
a host without a pool ``<state>/templates/<key>/``; for a pool's host, volumes of that pool):
its disk (only ever a backing file from then on: of every clone's overlay), its save image
(libvirt's of the running guest) and its record (what it was made from; written last, so a
template without it is unfinished). The key covers everything a saved guest depends on: the image's
content, memory, vCPUs, virt type, disk size, the agent installed in it, and the libvirt and
QEMU that saved it. The network is not part of it: the NIC is hot-plugged into each clone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import struct
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode import hypervisor
from vnode.errors import EnvironmentProblem, UsageError
from vnode.hosts import LOCAL
from vnode.logs import get_logger
from vnode.model import Distro, NodePlan, VirtType

if TYPE_CHECKING:
    from vnode.warm import WarmSource
    from vnode.warmstorage import TemplateStorage

log = get_logger("vnode.warmstore")

READY_MARKER = "vnode-template-ready"
# Raised whenever what the template's agent does changes in a way a clone depends on.
TEMPLATE_FORMAT = 1
_AGENT_FILES = ("warm-agent.sh", "warm-finish.sh", "warm-user-data.j2")
_RECORD = "record.json"
_SEED_TARGET = "vdb"


@attrs.frozen
class Shape:
    """What a saved guest cannot change after the save: its memory, CPUs, virt type, disk."""

    memory_mib: int
    vcpus: int
    virt_type: VirtType
    disk_gb: int


@attrs.frozen
class TemplateSpec:
    """Everything decided about a template before it is made (planned once, made once)."""

    key: str
    distro: Distro = attrs.field(eq=False)
    image: Path
    image_fingerprint: str
    shape: Shape
    agent: str
    libvirt: str
    qemu: str
    directory: Path  # where its files are on its host (a pool's directory, for a pool)
    disk: Path
    save: Path
    domain_name: str
    host: str = LOCAL


@attrs.frozen
class TemplateRecord:
    """A made template, as ``record.json`` and ``vnode template list`` show it."""

    key: str
    distro: str
    image: str
    image_fingerprint: str
    memory_mib: int
    vcpus: int
    virt_type: str
    disk_gb: int
    agent: str
    libvirt: str
    qemu: str
    made: str
    boot_seconds: float
    save_bytes: int
    directory: str = ""  # filled in when read: where the template is
    # Why the template cannot be used (an unreadable record, a file missing): listed and
    # removable (when no node runs on it), never cloned, never replaced without asking.
    damage: str | None = None
    # Filled in when read: the host it is on, and its disk and save image there.
    host: str = LOCAL
    disk_file: str = ""
    save_file: str = ""

    @property
    def disk(self) -> Path:
        return Path(self.disk_file) if self.disk_file else Path(self.directory) / "disk.qcow2"

    @property
    def save(self) -> Path:
        return Path(self.save_file) if self.save_file else Path(self.directory) / "state.save"

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def templates_dir(state: Path) -> Path:
    return state / "templates"


def image_fingerprint(image: Path) -> str:
    """What identifies the image's content without reading 500 MiB: its store record's
    sha256 while the record still describes the file, else size, mtime and inode."""
    from vnode.images import read_record

    record = read_record(image)
    if record is not None and record.describes(image):
        return f"sha256:{record.sha256}"
    stat = image.stat()
    return f"stat:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def agent_version() -> str:
    """A digest of what the template's own boot installs: a change needs new templates.
    (``warm-apply.sh`` is not in it: it ships on each clone's identity disk.)"""
    from importlib.resources import files

    digest = hashlib.sha256(f"format {TEMPLATE_FORMAT}".encode())
    for name in _AGENT_FILES:
        digest.update(files("vnode.templates").joinpath(name).read_bytes())
    return digest.hexdigest()[:12]


def host_versions(conn: Any) -> tuple[str, str]:
    """(libvirt, QEMU) versions as "9.0.0", "7.2.0": a save image is only known to restore
    on the versions that wrote it."""
    with hypervisor.libvirt_errors("reading libvirt's version"):
        return _dotted(conn.getLibVersion()), _dotted(conn.getVersion())


def _dotted(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def template_key(fingerprint: str, shape: Shape, agent: str, libvirt: str, qemu: str) -> str:
    """The template's name in the store: a digest of everything a saved guest depends on."""
    fields = {
        "image": fingerprint,
        "memory_mib": shape.memory_mib,
        "vcpus": shape.vcpus,
        "virt_type": shape.virt_type,
        "disk_gb": shape.disk_gb,
        "agent": agent,
        "libvirt": libvirt,
        "qemu": qemu,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def plan_template(
    *,
    storage: TemplateStorage,
    distro: Distro,
    image: Path,
    shape: Shape,
    versions: tuple[str, str],
    stem: str,
) -> TemplateSpec:
    """Decide the template for this image and shape on the host ``storage`` is of (nothing
    is made). ``stem`` names the template's short-lived domain after the configuration's
    first pool, so that labs sharing a libvirtd never collide."""
    fingerprint = image_fingerprint(image)
    agent = agent_version()
    key = template_key(fingerprint, shape, agent, *versions)
    directory, disk, save = storage.paths(key)
    return TemplateSpec(
        key=key,
        distro=distro,
        image=image,
        image_fingerprint=fingerprint,
        shape=shape,
        agent=agent,
        libvirt=versions[0],
        qemu=versions[1],
        directory=directory,
        disk=disk,
        save=save,
        domain_name=f"{stem}tpl-{key[:8]}",
        host=storage.host,
    )


# Defaults for what an older vnode's record may lack: such a template is listed and can be
# removed (its key, which covers the agent's version, is never planned again).
_RECORD_DEFAULTS: dict[str, object] = {
    "image": "",
    "image_fingerprint": "",
    "memory_mib": 0,
    "vcpus": 0,
    "virt_type": "qemu",
    "disk_gb": 0,
    "agent": "",
    "libvirt": "",
    "qemu": "",
    "made": "",
    "boot_seconds": 0.0,
    "save_bytes": 0,
}


def read_template(directory: Path) -> TemplateRecord | None:
    """The template in ``directory``: None when it has no record (absent, or an unfinished
    attempt: the record is written last); a record with ``damage`` set when the record is
    unreadable or the template's files are missing."""
    path = directory / _RECORD
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        text, problem = "", _one_line(exc)
    else:
        problem = None
    record = parse_record(text, directory.name, str(path), problem=problem)
    record = attrs.evolve(record, directory=str(directory))
    if record.damage is not None:
        return record
    missing = [p.name for p in (record.disk, record.save) if not p.is_file()]
    if missing:
        return attrs.evolve(record, damage=f"{', '.join(missing)} missing in {directory}")
    return record


def parse_record(text: str, key: str, where: str, *, problem: str | None = None) -> TemplateRecord:
    """Template ``key``'s record from its text (read from ``where``): what it says, or with
    ``damage`` set when it is unreadable (``problem``: why it could not be read at all), not
    a template record, or another template's. Fields an older vnode did not write take
    defaults; fields it no longer writes are ignored."""
    if problem is not None:
        return _damaged(key, f"{where} is unreadable ({problem})")
    try:
        data = json.loads(text)
    except ValueError as exc:
        return _damaged(key, f"{where} is unreadable ({_one_line(exc)})")
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        return _damaged(key, f"{where} is not a template record")
    hidden = {"directory", "damage", "host", "disk_file", "save_file"}
    known = {field.name for field in attrs.fields(TemplateRecord)} - hidden
    fields = {**_RECORD_DEFAULTS, **{k: v for k, v in data.items() if k in known}}
    try:
        record = TemplateRecord(**fields)
    except TypeError as exc:
        return _damaged(key, f"{where} lacks what a template needs ({_one_line(exc)})")
    if record.key != key:
        return _damaged(key, f"{where} names template {record.key!r}")
    return record


def _damaged(key: str, why: str) -> TemplateRecord:
    fields = {**_RECORD_DEFAULTS, "made": f"damaged: {why}"}
    return TemplateRecord(key=key, distro="?", damage=why, **fields)  # type: ignore[arg-type]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def list_templates(state: Path, *, damaged: bool = False) -> list[TemplateRecord]:
    """The templates made in ``state``; with ``damaged``, those that cannot be used too."""
    root = templates_dir(state)
    if not root.is_dir():
        return []
    found = (read_template(path) for path in sorted(root.iterdir()) if path.is_dir())
    kept = (r for r in found if r is not None and (damaged or r.damage is None))
    return sorted(kept, key=lambda r: (r.distro, r.made))


def users_of(record: TemplateRecord, nodes_dir: Path) -> list[str]:
    """The nodes whose disk is an overlay on this template's disk (they need it to run)."""
    disk = str(record.disk)
    users = []
    if nodes_dir.is_dir():
        for node_disk in sorted(nodes_dir.glob("*/disk.qcow2")):
            try:
                if _backing_file(node_disk) == disk:
                    users.append(node_disk.parent.name)
            except (OSError, EnvironmentProblem):
                continue
    return users


def _backing_file(path: Path) -> str | None:
    """The backing file a qcow2 header names (bytes 8..20: offset and length), or None."""
    with path.open("rb") as handle:
        header = handle.read(20)
        if len(header) < 20 or header[:4] != b"QFI\xfb":
            return None
        offset, size = struct.unpack(">QI", header[8:20])
        if not offset:
            return None
        handle.seek(offset)
        return handle.read(size).decode(errors="replace")


def select_templates(state: Path, which: str) -> list[TemplateRecord]:
    """The templates in ``state`` that ``which`` names (see :func:`pick_templates`)."""
    chosen = pick_templates(list_templates(state, damaged=True), which)
    if not chosen:
        raise UsageError(f"no template {which!r}: `vnode template list` shows the keys")
    return chosen


def pick_templates(templates: list[TemplateRecord], which: str) -> list[TemplateRecord]:
    """The templates ``which`` names: a key (or its start, 4 characters at least), or a
    distro (all of its templates)."""
    chosen = [t for t in templates if t.distro == which]
    if not chosen and len(which) >= 4:
        chosen = [t for t in templates if t.key.startswith(which)]
    return chosen


def remove_template(record: TemplateRecord, nodes_dir: Path) -> None:
    """Remove a template nobody runs on; UsageError (nothing removed) if nodes still do."""
    if users := users_of(record, nodes_dir):
        raise UsageError(
            f"template {record.key} is the base of {', '.join(users)}: destroy them first"
        )
    _remove_inside(Path(record.directory).parent, Path(record.directory))


def _remove_inside(root: Path, path: Path) -> None:
    # Only ever delete inside vnode's templates directory, whatever a record says.
    if path.resolve().parent == root.resolve() and path.exists():
        shutil.rmtree(path)


# -- making a template -------------------------------------------------------------------


def make_template(
    storage: TemplateStorage, spec: TemplateSpec, *, timeout: float = 900.0
) -> TemplateRecord:
    """Boot the image NIC-less with the agent's seed on the template's host, wait for the
    guest to say it may be saved, unplug the seed, save, keep disk and state there.
    Idempotent: a template already made is returned as it is. On failure nothing of it is
    left (domain, files).

    A damaged template (its record unreadable, a file gone) is reported, never replaced; an
    unfinished one (no record) is made again only if no node's disk is backed by it."""
    from vnode.warmstorage import record_text

    if (made := storage.read(spec.key)) is not None:
        if made.damage is not None:
            raise EnvironmentProblem(
                f"template {spec.key} is damaged ({made.damage}); not replaced: "
                f"`vnode template remove {spec.key}` removes it once no node runs on it"
            )
        return made
    started = time.monotonic()
    if storage.unfinished(spec.key):  # an earlier attempt killed before its end
        unfinished = TemplateRecord(
            key=spec.key, distro=spec.distro.name, directory=str(spec.directory),
            disk_file=str(spec.disk), save_file=str(spec.save),
            **_RECORD_DEFAULTS,  # type: ignore[arg-type]
        )  # fmt: skip
        if users := storage.users(unfinished):
            raise EnvironmentProblem(
                f"{spec.disk} has no record but is the base of {', '.join(users)}; "
                "not replaced (destroy them, then remove the directory)"
            )
        storage.clear(spec)
    conn = storage.conn
    _remove_stale_domain(conn, spec)
    domain = None
    plan = storage.template_plan(spec)
    try:
        storage.lay_down(spec, plan, _seed(plan))
        with hypervisor.libvirt_errors(f"starting template {spec.domain_name}"):
            # Transient: once saved, libvirt forgets it; nothing needs undefining.
            domain = conn.createXML(_template_xml(plan, spec.domain_name), 0)
        log.info("template booting", key=spec.key, distro=spec.distro.name, host=spec.host)
        _wait_ready(domain, plan, storage, started + timeout)
        boot_seconds = time.monotonic() - started
        _unplug_seed(domain, plan)
        with hypervisor.libvirt_errors(f"saving template {spec.domain_name}"):
            domain.save(str(spec.save))
        domain = None
    except BaseException:
        if domain is not None:
            hypervisor.remove_domain(domain)
        storage.discard(spec)
        raise
    record = TemplateRecord(
        key=spec.key,
        distro=spec.distro.name,
        image=str(spec.image),
        image_fingerprint=spec.image_fingerprint,
        memory_mib=spec.shape.memory_mib,
        vcpus=spec.shape.vcpus,
        virt_type=spec.shape.virt_type,
        disk_gb=spec.shape.disk_gb,
        agent=spec.agent,
        libvirt=spec.libvirt,
        qemu=spec.qemu,
        made=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        boot_seconds=round(boot_seconds, 1),
        save_bytes=storage.save_bytes(spec),
    )
    # Last, atomically and durably where the storage can: a record says the template is whole.
    storage.seal(spec, plan, record_text(record))
    log.info("template made", key=spec.key, seconds=record.boot_seconds, host=spec.host)
    made = storage.read(spec.key)
    if made is None or made.damage is not None:
        raise EnvironmentProblem(f"template {spec.key} on {spec.host} could not be read back")
    return made


def _remove_stale_domain(conn: Any, spec: TemplateSpec) -> None:
    """The transient domain of an attempt killed with ``kill -9`` (nothing rolled it back)
    still runs under the template's name: it is this template's if its disk is in the
    template's directory, and goes; any other domain of that name is not vnode's to touch."""
    stale = hypervisor.lookup(conn, spec.domain_name)
    if stale is None:
        return
    with hypervisor.libvirt_errors(f"reading {spec.domain_name}"):
        xml = stale.XMLDesc(0)
    if str(spec.disk) not in xml:
        raise EnvironmentProblem(
            f"domain {spec.domain_name} exists and is not template {spec.key}'s; not touching it"
        )
    log.warning("removing what a killed template make left running", domain=spec.domain_name)
    hypervisor.remove_domain(stale)


def _template_xml(plan: NodePlan, domain_name: str) -> str:
    from vnode.templating import render_xml

    xml = render_xml(
        "domain.xml.j2",
        node=plan,
        namespace=hypervisor.NAMESPACE,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    if plan.name == domain_name:
        return xml
    root = ET.fromstring(xml)  # the plan is named for its volumes; the domain is not
    name = root.find("name")
    assert name is not None
    name.text = domain_name
    return ET.tostring(root, encoding="unicode")


def template_user_data() -> str:
    """The template's cloud-config: install the agent, then finish and say so on the console."""
    from importlib.resources import files

    from vnode.templating import render_yaml

    source = files("vnode.templates")
    rule = (
        'ACTION=="add", SUBSYSTEM=="block", KERNEL=="vd*", ATTRS{serial}=="vnode-identity", '
        'TAG+="systemd", ENV{SYSTEMD_WANTS}+="vnode-identity.service"\n'
    )
    unit = (
        "[Unit]\nDescription=vnode warm clone: apply this clone's identity\n"
        "DefaultDependencies=no\n\n[Service]\nType=oneshot\n"
        "ExecStart=/usr/local/sbin/vnode-warm-agent\n"
    )
    entries = [
        ("/usr/local/sbin/vnode-warm-agent", source.joinpath("warm-agent.sh").read_text(), "0755"),
        (
            "/usr/local/sbin/vnode-template-finish",
            source.joinpath("warm-finish.sh").read_text(),
            "0755",
        ),
        ("/etc/udev/rules.d/99-vnode-identity.rules", rule, "0644"),
        ("/etc/systemd/system/vnode-identity.service", unit, "0644"),
    ]
    return render_yaml(
        "warm-user-data.j2",
        files=[{"path": p, "content": c, "mode": m} for p, c, m in entries],
    )


def _seed(plan: NodePlan) -> bytes:
    from vnode.cloudinit import SeedFiles, seed_iso
    from vnode.templating import render_yaml

    meta = render_yaml(
        "meta-data.j2", instance_id=f"{plan.name}-{uuid.uuid4().hex[:12]}", hostname=plan.name
    )
    return seed_iso(SeedFiles(template_user_data(), meta, ""))


def _wait_ready(domain: Any, plan: NodePlan, storage: TemplateStorage, deadline: float) -> None:
    assert plan.console is not None
    console = plan.console.log_path
    while time.monotonic() < deadline:
        if READY_MARKER in storage.console_text(plan):
            return
        if not hypervisor.is_active(domain):
            raise EnvironmentProblem(f"template {plan.name} stopped while booting; see {console}")
        time.sleep(0.5)
    raise EnvironmentProblem(f"template {plan.name} not ready in time; see {console}")


def _unplug_seed(domain: Any, plan: NodePlan) -> None:
    libvirt = hypervisor.libvirt_module()
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "source", file=str(plan.seed_path))
    ET.SubElement(disk, "target", dev=_SEED_TARGET, bus="virtio")
    xml = ET.tostring(disk, encoding="unicode")
    with hypervisor.libvirt_errors(f"unplugging {plan.name}'s seed"):
        domain.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    # The guest acknowledges the unplug asynchronously; the save must not carry the seed.
    deadline = time.monotonic() + 60
    while f'dev="{_SEED_TARGET}"' in domain.XMLDesc(0):
        if time.monotonic() > deadline:
            raise EnvironmentProblem(f"template {plan.name}: the guest kept its seed disk")
        time.sleep(0.2)


# -- deciding, per node of an `up --warm`, warm or cold ---------------------------------------


@attrs.frozen
class WarmChoice:
    """One node's boot in an ``up --warm`` plan: from ``template`` or, when None, cold, and
    why (the reason is shown to the user)."""

    node: str
    template: TemplateSpec | None
    reason: str

    @property
    def warm(self) -> bool:
        return self.template is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "boot": "warm" if self.warm else "cold",
            "template": self.template.key if self.template else None,
            "reason": self.reason,
        }


def cold_reason(
    plan: NodePlan, *, hot_pluggable: bool, plugin_adjusted: bool, wait_cloud_init: bool
) -> str | None:
    """Why this node cannot be a clone (None: it can). A clone is the template's guest with a
    NIC plugged in and an identity applied, so anything that needs a first boot, or a device
    the template was not saved with, needs a cold boot. ``hot_pluggable``: the network
    backend's answer for the node's NIC (NetworkBackend.hot_pluggable)."""
    interface = plan.interface
    if interface is None or not hot_pluggable:
        kind = interface.type if interface else "none"
        return f"network kind {plan.network} (interface {kind}) is not hot-pluggable into a clone"
    if plugin_adjusted:
        return "a plugin changed the domain (vnode_domain_xml): the template lacks its changes"
    if plan.user_cloud_config:
        return "the lab's cloud-config runs on a first boot only"
    if wait_cloud_init:
        return "--wait-cloud-init waits for a first boot's cloud-init"
    return None


def warm_choice(
    plan: NodePlan,
    spec: TemplateSpec,
    *,
    plugin_adjusted: bool,
    wait_cloud_init: bool,
    others: list[TemplateRecord],
    hot_pluggable: bool = True,
) -> WarmChoice:
    """Warm from ``spec`` (made first if needed) or cold with the reason. ``others``: the
    templates already made, to say why a new one is needed."""
    if reason := cold_reason(
        plan,
        hot_pluggable=hot_pluggable,
        plugin_adjusted=plugin_adjusted,
        wait_cloud_init=wait_cloud_init,
    ):
        return WarmChoice(plan.name, None, reason)
    if any(record.key == spec.key for record in others):
        return WarmChoice(plan.name, spec, f"template {spec.key}")
    same_distro = [r for r in others if r.distro == plan.distro.name]
    if not same_distro:
        why = f"no template of {plan.distro.name} yet"
    elif any(r.image_fingerprint != spec.image_fingerprint for r in same_distro):
        why = f"{plan.distro.name}'s image changed since its template was made"
    else:
        made = ", ".join(_shape_words(r) for r in same_distro)
        why = f"no template of this shape ({_shape_words(spec.shape)}; made: {made})"
    return WarmChoice(plan.name, spec, f"template {spec.key}, made first: {why}")


def _shape_words(shape: Shape | TemplateRecord) -> str:
    return f"{shape.memory_mib} MiB, {shape.vcpus} vCPU, {shape.virt_type}, {shape.disk_gb} GiB"


def ensure_templates(
    choices: tuple[WarmChoice, ...],
    storages: Mapping[str, TemplateStorage],
    locks_dir: Path,
    progress: Any = None,
) -> tuple[dict[str, WarmSource], dict[str, str]]:
    """Make every template the choices need on its host, once per key and host: one at a
    time on a host (each is a boot, and boots compete for its CPU), hosts in parallel.
    ``storages``: each host's template storage. ({node: what it is cloned from}, {node: why
    cold after all})."""
    import concurrent.futures

    from vnode.locks import file_lock
    from vnode.warm import WarmSource

    records: dict[tuple[str, str], TemplateRecord] = {}
    failed: dict[tuple[str, str], str] = {}

    def made_on(host: str) -> None:
        storage = storages[host]
        for choice in choices:
            spec = choice.template
            if spec is None or spec.host != host:
                continue
            if (host, spec.key) in records or (host, spec.key) in failed:
                continue
            waiting = [c.node for c in choices if c.template and c.template == spec]
            if progress is not None and storage.read(spec.key) is None:
                for node in waiting:
                    progress(node, f"making template {spec.key} ({spec.distro.name})")
            try:
                # Another vnode making the same template: wait for it, then use its work.
                with file_lock(locks_dir / storage.lock_name(spec.key)):
                    records[host, spec.key] = make_template(storage, spec)
            except EnvironmentProblem as exc:
                log.warning(
                    "template could not be made; cold boot", key=spec.key, host=host,
                    error=str(exc),
                )  # fmt: skip
                failed[host, spec.key] = f"template {spec.key} could not be made: {exc}"

    hosts = sorted({c.template.host for c in choices if c.template is not None})
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for future in [pool.submit(made_on, host) for host in hosts]:
            future.result()
    warm: dict[str, WarmSource] = {}
    cold: dict[str, str] = {}
    for c in choices:
        if c.template is None:
            continue
        where = (c.template.host, c.template.key)
        if where in records:
            warm[c.node] = WarmSource(records[where], storages[c.template.host])
        elif where in failed:
            cold[c.node] = failed[where]
    return warm, cold

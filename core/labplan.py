"""``vnode plan`` and ``vnode apply`` of a lab file: compare what the file asks for with what
runs, then converge.

Each node of the file is ``create`` (absent), ``keep`` (it runs in the shape asked for: its
recorded shape, distro and image match), ``update`` (it grows in place, without a reboot:
more memory or vCPUs within the domain's maxima, extra disks added; :mod:`vnode.inplace`)
or ``replace`` (with the reasons: which attributes differ); with ``prune``, nodes that the
same lab made and the file no longer names are ``remove``. The comparison reads what vnode
recorded in each domain's metadata when it made it, so it holds from any machine that
reaches the hosts. ``apply`` leaves kept nodes
untouched (not even rebooted) and makes the others in one ``up``: the same starting gate,
wait, timeout and per-node results.

``lab.lock`` beside the file pins the image each distro's nodes were made from (its sha256):
``apply`` makes nodes from the pinned image only, and ``apply --update`` takes the store's
current image and rewrites the lock.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from vnode import hypervisor, lab
from vnode.errors import UsageError
from vnode.files import write_atomic
from vnode.firmware import label as firmware_label
from vnode.inplace import Growth, Wanted, domain_maxima, growth
from vnode.labfile import LabFile, LabNode, read_lab
from vnode.planning import NodeShape, UpOptions, node_defaults

if TYPE_CHECKING:
    from vnode.model import NodeResult
    from vnode.progress import Reporter
    from vnode.session import Session

Action = Literal["create", "update", "replace", "keep", "remove"]
LOCK_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


@attrs.frozen
class LabAction:
    """What ``apply`` does to one node, and the shape it ends with."""

    node: str
    action: Action
    reasons: tuple[str, ...] = ()
    host: str = ""
    distro: str = ""
    memory_mib: int = 0
    vcpus: int = 0
    disk_gb: int = 0
    extra_disks: tuple[int, ...] = ()
    tpm: bool = False
    # Every NIC's network, the node's own first, as planned (KIND[:ARG] or a bare kind).
    networks: tuple[str, ...] = ()
    firmware: str = "bios"
    # The domain's maxima as the file asks for them (0: not asked: the node's own size).
    max_memory: int = 0
    max_vcpus: int = 0
    # What `apply` changes in place on an `update` (decided here; None otherwise).
    growth: Growth | None = None

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)

    def describe(self) -> str:
        if self.action == "remove":
            return f"{self.action:<8} {self.node}"
        shape = f"{self.distro} {self.memory_mib} MiB {self.vcpus} vCPU {self.disk_gb} GiB"
        shape += "".join(f" +{size} GiB" for size in self.extra_disks)
        shape += " TPM" if self.tpm else ""
        shape += f" NICs {','.join(self.networks)}" if len(self.networks) > 1 else ""
        shape += f" {firmware_label(self.firmware)}" if self.firmware != "bios" else ""
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"{self.action:<8} {self.node:<12} {shape}{why}"


@attrs.frozen
class LabPlan:
    lab: LabFile
    actions: tuple[LabAction, ...]
    # distro -> the image sha256 the lock holds once the plan is applied.
    lock: dict[str, str]
    update: bool = False

    def of(self, *actions: Action) -> list[LabAction]:
        return [a for a in self.actions if a.action in actions]

    def summary(self) -> str:
        counts = {
            action: len(self.of(action))
            for action in ("create", "update", "replace", "keep", "remove")
        }
        listed = ", ".join(f"{n} to {action}" for action, n in counts.items())
        return f"lab {self.lab.name} ({self.lab.path}): {listed}"

    def to_dict(self) -> dict[str, object]:
        return {
            "lab": self.lab.name,
            "file": str(self.lab.path),
            "nodes": [a.to_dict() for a in self.actions],
            "lock": self.lock,
        }


def plan_lab(path: Path, session: Session, *, prune: bool = False, update: bool = False) -> LabPlan:
    """What ``apply`` would do; reads only. Bad input (the file, a domain of a node's name
    that vnode did not make, an image the lock pins that the store no longer has) is a
    UsageError."""
    views = lab.survey(session)
    cpus = max((view.cpus or 0 for view in views.values()), default=0) or None
    labfile = read_lab(path, session.config.pools, host_cpus=cpus)
    pinned = read_lock(labfile.lock_path, labfile.name)
    from vnode import images, imagestore

    if pinned:
        # The store keeps what a lock pins while the lock exists (a rebuild next month).
        imagestore.register_pin(session.config.paths.state, labfile.lock_path)

    actions: list[LabAction] = []
    lock: dict[str, str] = {}
    default_network = session.plugins.network_choice(session.config.defaults.network)
    for node in labfile.nodes:
        defaults = node_defaults(session.config.defaults, _shape(node, labfile))
        distro = images.resolve_distro(node.ref.distro or defaults.distro, session)
        current = images.recorded_sha256(images.image_path(distro, session.config))
        wanted = current if update or distro.name not in pinned else pinned[distro.name]
        want = LabAction(
            node=node.name,
            action="create",
            host=node.ref.host or "",
            distro=distro.name,
            memory_mib=defaults.memory,
            vcpus=defaults.vcpus,
            disk_gb=max(defaults.disk, distro.disk_gb),
            extra_disks=node.shape.disks,
            tpm=node.shape.tpm,
            networks=_networks(session, node, labfile, default_network),
            firmware=node.shape.firmware,
            max_memory=node.shape.max_memory or 0,
            max_vcpus=node.shape.max_vcpus or 0,
        )
        _check_maxima(labfile, node, want)
        action = _compare(views, node, want, wanted)
        # The store keeps a pinned version while the lock exists (vnode.imagestore): a node
        # is then made from it even after the distro's image was replaced.
        kept = (
            wanted == current
            or imagestore.version_path(session.config.paths.images, wanted).is_file()
        )
        if action.action != "keep" and wanted and not kept:
            raise UsageError(
                f"{labfile.lock_path}: {distro.name} is pinned to image sha256 {wanted[:12]}, "
                f"which the image store no longer has; {node.name} cannot be made from the "
                "pinned image: `vnode apply --update` takes the current one"
            )
        actions.append(action)
        if wanted:
            lock.setdefault(distro.name, wanted)
    if prune:
        named = {node.name for node in labfile.nodes}
        for view in views.values():
            for domain, mark in view.domains:
                shape = hypervisor.read_shape(domain)
                if mark.name not in named and shape is not None and shape.lab == labfile.name:
                    actions.append(LabAction(node=mark.name, action="remove", host=view.name))
    return LabPlan(lab=labfile, actions=tuple(actions), lock=lock, update=update)


def _compare(
    views: dict[str, lab.HostView], node: LabNode, want: LabAction, image: str
) -> LabAction:
    hit = lab.find_node(views, node.name)
    if hit is None:
        lab.refuse_foreign(views, node.name)  # a domain vnode did not make: never replaced
        return want
    view, domain, mark = hit
    shape = hypervisor.read_shape(domain)
    reasons = []
    if mark.distro != want.distro:
        reasons.append(f"distro {mark.distro} -> {want.distro}")
    if want.host and want.host != view.name:
        reasons.append(f"host {view.name} -> {want.host}")
    in_place: list[str] = []
    change = None
    if shape is None:
        reasons.append("made without a recorded shape")
    else:
        found, change = growth(
            shape,
            domain_maxima(hypervisor.domain_xml(domain)),
            Wanted(want.memory_mib, want.vcpus, want.extra_disks, want.max_memory, want.max_vcpus),
            node=node.name,
            pool=view.host.pool or "",
            volume_dir=lab.volume_dir(view),
            node_dir=Path(mark.node_dir) if mark.node_dir else None,
        )
        for difference in found:
            (in_place if difference.in_place else reasons).append(difference.text)
        if shape.disk_gb != want.disk_gb:
            reasons.append(f"disk {shape.disk_gb} -> {want.disk_gb} GiB")
        # A node made before vnode recorded its NICs has none recorded: not compared.
        if shape.networks and shape.networks != want.networks:
            reasons.append(f"networks {list(shape.networks)} -> {list(want.networks)}")
        if shape.tpm != want.tpm:
            reasons.append(f"tpm {'yes' if shape.tpm else 'no'} -> {'yes' if want.tpm else 'no'}")
        if shape.firmware != want.firmware:
            reasons.append(f"firmware {shape.firmware} -> {want.firmware}")
        if image and shape.image_sha256 and shape.image_sha256 != image:
            reasons.append(f"image {shape.image_sha256[:12]} -> {image[:12]}")
    if reasons:
        # Made anew, the node takes every change: none of them is made in place then.
        said = [text.removesuffix(" (in place)") for text in in_place]
        return attrs.evolve(want, action="replace", reasons=(*said, *reasons), host=view.name)
    if in_place:
        return attrs.evolve(
            want, action="update", reasons=tuple(in_place), host=view.name, growth=change
        )
    return attrs.evolve(want, action="keep", host=view.name)


def _check_maxima(labfile: LabFile, node: LabNode, want: LabAction) -> None:
    """A maximum below the node's own size is a mistake in the file."""
    for key, maximum, size in (
        ("max_memory", want.max_memory, want.memory_mib),
        ("max_vcpus", want.max_vcpus, want.vcpus),
    ):
        if maximum and maximum < size:
            what = key.removeprefix("max_")
            raise UsageError(
                f"{labfile.path}: {node.table}: {key} {maximum} is less than {what} {size}"
            )


def _networks(session: Session, node: LabNode, labfile: LabFile, default: str) -> tuple[str, ...]:
    """The node's NICs' networks as ``up`` plans them (bare names as their plugin says); a
    kind no plugin provides is bad input naming the file and the table."""
    if not node.shape.networks:
        return (default,)
    plugins = session.plugins
    kinds = plugins.network_kinds()
    chosen = []
    for network in node.shape.networks:
        try:
            choice = plugins.network_choice(network)
        except UsageError as exc:
            raise UsageError(f"{labfile.path}: {node.table}: networks: {exc}") from None
        if choice.partition(":")[0] not in kinds:
            raise UsageError(
                f"{labfile.path}: {node.table}: networks: unknown network {network!r}; "
                f"kinds: {', '.join(kinds) or 'none'}"
            )
        chosen.append(choice)
    return tuple(chosen)


def check_apply(plan: LabPlan, *, wait: bool) -> None:
    """What :func:`apply_lab` refuses before it changes anything: ``run`` commands on a node
    it would make, without the wait that must come before them."""
    if wait:
        return
    nodes = {node.name: node for node in plan.lab.nodes}
    needing = [a.node for a in plan.of("create", "replace") if nodes[a.node].shape.run]
    if needing:
        raise UsageError(
            f"{plan.lab.path}: {', '.join(needing)}: run commands need the wait (not --no-wait)"
        )


def apply_lab(
    plan: LabPlan,
    session: Session,
    *,
    timeout: float | None = None,
    reporter: Reporter | None = None,
    wait: bool = True,
) -> list[NodeResult]:
    """Carry the plan out: grow what it updates in place, remove what it removes, make
    what it creates or replaces (one ``up``), run each node's ``run`` commands on the nodes
    made, write the lock. Kept nodes are not touched. Returns the results of the nodes
    grown, then of those made. Without ``wait`` (``up --no-wait``) the nodes made are
    "started" once their domains run; a node with ``run`` commands needs the wait."""
    from vnode import execute, nodeops, planning
    from vnode.inplace import apply_growth
    from vnode.progress import SilentReporter

    reporter = reporter or SilentReporter()
    check_apply(plan, wait=wait)
    nodes = {node.name: node for node in plan.lab.nodes}
    made = plan.of("create", "replace")
    grown = apply_growth(session, [(a.node, a.growth) for a in plan.of("update") if a.growth])
    removed = [a.node for a in plan.of("remove")]
    if removed:
        nodeops.destroy(session, removed)
    results: list[NodeResult] = []
    if made:
        specs = [_spec(nodes[a.node]) for a in made]
        shapes = {
            a.node: attrs.evolve(
                _shape(nodes[a.node], plan.lab), image_sha256=plan.lock.get(a.distro, "")
            )
            for a in made
        }
        options = UpOptions(timeout=timeout, wait=wait)
        up = planning.plan_up(specs, options, session=session, shapes=shapes)
        results = execute.execute_up(up, session=session, reporter=reporter)
        results = _run_steps(session, results, nodes, timeout, reporter)
    results = [*grown, *results]
    if all(result.state in ("ready", "started") for result in results):
        write_lock(plan.lab.lock_path, plan.lab.name, plan.lock)
        from vnode import imagestore

        imagestore.register_pin(session.config.paths.state, plan.lab.lock_path)
    return results


def _run_steps(
    session: Session,
    results: list[NodeResult],
    nodes: dict[str, LabNode],
    timeout: float | None,
    reporter: Reporter,
) -> list[NodeResult]:
    """Each node's ``run`` commands, as ``--run`` runs them, on the nodes that are ready;
    nodes with the same commands run them together."""
    from vnode import waiting
    from vnode.planning import After, run_steps

    groups: dict[tuple[str, ...], list[str]] = {}
    for result in results:
        commands = nodes[result.name].shape.run
        if result.state == "ready" and commands:
            groups.setdefault(commands, []).append(result.name)
    ran: dict[str, NodeResult] = {}
    for commands, names in groups.items():
        after = After(run_steps(commands, ()))
        started = time.monotonic()
        for result in waiting.wait(
            session, names, timeout=timeout, after=after, reporter=reporter, started=started
        ):
            ran[result.name] = result
    return [ran.get(result.name, result) for result in results]


def _spec(node: LabNode) -> str:
    return f"{node.name}@{node.ref.host}" if node.ref.host else node.name


def _shape(node: LabNode, labfile: LabFile) -> NodeShape:
    shape = node.shape
    return NodeShape(
        distro=node.ref.distro or shape.distro,
        memory=shape.memory,
        vcpus=shape.vcpus,
        disk=shape.disk,
        disks=shape.disks,
        warm=shape.warm,
        cloud_config=tuple(str(p) for p in shape.cloud_config),
        lab=labfile.name,
        tpm=shape.tpm,
        networks=shape.networks or None,
        firmware=shape.firmware,
        max_memory=shape.max_memory,
        max_vcpus=shape.max_vcpus,
    )


# -- lab.lock ---------------------------------------------------------------------------


def read_lock(path: Path, lab_name: str) -> dict[str, str]:
    """The images a lab's lock pins ({distro: sha256}); {} without a lock. A lock that is not
    vnode's form is bad input: it is never silently replaced."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{path}: not a lab lock ({exc}); remove it to pin the current images"
        ) from None
    images = data.get("images") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("version") != LOCK_VERSION
        or not isinstance(images, dict)
    ):
        raise UsageError(f"{path}: not a lab lock of this vnode (version {LOCK_VERSION})")
    if data.get("lab") != lab_name:
        raise UsageError(f"{path}: the lock of lab {data.get('lab')!r}, not {lab_name!r}")
    for distro, digest in images.items():
        if (
            not isinstance(distro, str)
            or not isinstance(digest, str)
            or not _SHA256.fullmatch(digest)
        ):
            raise UsageError(f"{path}: images: {distro!r} is not pinned to a sha256")
    return dict(images)


def write_lock(path: Path, lab_name: str, images: dict[str, str]) -> None:
    data = {"version": LOCK_VERSION, "lab": lab_name, "images": dict(sorted(images.items()))}
    write_atomic(path, json.dumps(data, indent=2) + "\n")

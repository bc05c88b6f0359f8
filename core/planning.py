"""Planning ``up``: every decision about every node, for any number of hosts, made before
anything is created or destroyed (:func:`plan_up`). All plugin calls of ``up`` happen here,
in the main thread; the executor (:mod:`vnode.execute`) works from the :class:`UpPlan` alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode import hypervisor, lab
from vnode.config import Defaults
from vnode.domainxml import domain_xml, plugin_adjusted
from vnode.errors import EnvironmentProblem, UsageError, VnodeError
from vnode.hosts import LOCAL, Request, capacity_of, place
from vnode.model import ConsoleSetup, Distro, Interface, Nic, NodeIdentity, NodePlan
from vnode.network import NetworkBackend
from vnode.spec import NodeRef, parse_specs

if TYPE_CHECKING:
    from vnode.lab import HostView
    from vnode.remote import RunStep
    from vnode.session import Session
    from vnode.userconfig import CloudConfigSource
    from vnode.warmstore import TemplateSpec, WarmChoice


@attrs.frozen
class UpOptions:
    """Overrides of the configured defaults for one ``up``; None means "as configured"."""

    distro: str | None = None
    memory: int | None = None
    vcpus: int | None = None
    disk: int | None = None
    timeout: float | None = None
    virt_type: str | None = None
    network: str | None = None
    # (KIND, ARG) from an alias option (--bridge BR is ("bridge", "BR")); mapped through the
    # plugin host, which refuses a kind no plugin provides.
    network_alias: tuple[str, str] | None = None
    # Further NICs of every node, in order (a repeated --network): KIND[:ARG] or a bare name
    # each, as ``network`` is.
    extra_networks: tuple[str, ...] = ()
    wait: bool = True
    keep_failed: bool = False
    # Download missing images (verified) before anything is created.
    fetch: bool = False
    # The lab's own cloud-config files, after those of [defaults] and the node's pool.
    cloud_config: tuple[str, ...] = ()
    # vnode's own cloud-config keys the user's files may override (see vnode.userconfig).
    override_keys: tuple[str, ...] = ()
    # Commands, then scripts (their paths), run on every node once it is ready.
    run: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ()
    # Ready means cloud-init reports done, not only SSH answering.
    wait_cloud_init: bool = False
    # Make nodes from a warm template where they can be (made first if missing), else cold;
    # None: as [defaults] warm says.
    warm: bool | None = None

    # Extra disks (GiB) for every node: vdb, vdc, ...
    disks: tuple[int, ...] = ()
    # A TPM 2.0 (swtpm) in every node.
    tpm: bool = False
    # Every node's firmware: "bios", "uefi" or "uefi-secure" (vnode.firmware).
    firmware: str = "bios"

    # Put every node without an @HOST on this host.
    host: str | None = None
    # A host that fails its preflight or preparation fails the whole command before any
    # node is made, instead of only its own nodes.
    all_or_nothing: bool = False


@attrs.frozen
class NodeShape:
    """One node's own shape over the command's options (a lab file's ``[[nodes]]`` table);
    None and empty mean "as the command says"."""

    distro: str | None = None
    memory: int | None = None
    vcpus: int | None = None
    disk: int | None = None
    # Extra disks (GiB); they replace the command's --disk-extra for this node.
    disks: tuple[int, ...] | None = None
    warm: bool | None = None
    # The node's own cloud-config files, merged after the command's.
    cloud_config: tuple[str, ...] = ()
    # The lab file that names the node, recorded in its metadata.
    lab: str = ""
    tpm: bool | None = None
    # Every NIC's network, the node's own first; None: as the command says.
    networks: tuple[str, ...] | None = None
    firmware: str | None = None
    # The image version (sha256) to make the node from: a lab.lock's pin; "" for the current.
    image_sha256: str = ""
    # The domain's maximum memory (MiB) and vCPUs, for growth in place; None: its own size.
    max_memory: int | None = None
    max_vcpus: int | None = None


@attrs.frozen
class After:
    """What happens to each node once it answers SSH (``up`` and ``wait`` alike)."""

    # --run and --script, in order, on every node.
    steps: tuple[RunStep, ...] = ()
    # Ready means cloud-init reports done, not only SSH answering.
    wait_cloud_init: bool = False


@attrs.frozen
class UpPlan:
    """Everything ``up`` decided; :func:`vnode.execute.execute_up` works from this alone."""

    nodes: tuple[NodePlan, ...]
    timeout: float
    wait: bool
    keep_failed: bool
    fetch: bool
    started: float  # time.monotonic() when the command began: the timeout counts from it
    after: After = After()
    # Per host the nodes are on: its view, and its network backend.
    hosts: dict[str, HostView] = attrs.field(factory=dict, eq=False)
    backends: dict[str, NetworkBackend] = attrs.field(factory=dict, eq=False)
    # Nodes that fail before anything is made (their host failed preflight), and nodes
    # moving hosts (name: the host they are on now).
    failed: dict[str, str] = attrs.field(factory=dict)
    moves: dict[str, str] = attrs.field(factory=dict)
    # A moving node's network backend on the host it leaves (None: its plugin is gone).
    move_backends: dict[str, NetworkBackend | None] = attrs.field(factory=dict, eq=False)
    all_or_nothing: bool = False
    # --warm: per node, from which template or cold and why; empty without --warm.
    warm: tuple[WarmChoice, ...] = ()

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    @property
    def steps(self) -> tuple[RunStep, ...]:
        return self.after.steps

    @property
    def wait_cloud_init(self) -> bool:
        return self.after.wait_cloud_init


def plan_up(
    specs: list[str],
    options: UpOptions | None = None,
    *,
    session: Session,
    shapes: Mapping[str, NodeShape] | None = None,
) -> UpPlan:
    """Decide everything about the nodes (host, distro, network, address, console, domain
    XML) and check the hosts; nothing is created or destroyed. ``shapes``: per node name, its
    own shape over the options (``vnode apply`` of a lab file)."""
    started = time.monotonic()
    options = options or UpOptions()
    config = session.config
    defaults = effective_defaults(config.defaults, options)
    refs = parse_specs(specs, config.pools)
    shapes = shapes or {}
    own = {ref.name: node_defaults(defaults, shapes.get(ref.name)) for ref in refs}
    after = After(run_steps(options.run, options.scripts), options.wait_cloud_init)
    if (after.steps or after.wait_cloud_init) and not options.wait:
        raise UsageError("--run, --script and --wait-cloud-init need the wait (not --no-wait)")
    cloud_config = cloud_config_sources(session, defaults, options, refs)
    _check_local_dirs(session)
    views = lab.survey(session)
    failed: dict[str, VnodeError] = {}
    placed, moves = _placement(refs, views, own, options, failed)
    choice = (
        session.plugins.network_alias(*options.network_alias)
        if options.network_alias is not None
        else session.plugins.network_choice(defaults.network)
    )
    networks = node_networks(session, refs, choice, options, shapes)
    backends: dict[str, NetworkBackend] = {}
    nodes: list[NodePlan] = []
    by_ref = {ref.name: ref for ref in refs}
    for name, view in views.items():
        mine = [by_ref[node] for node, host in placed.items() if host == name]
        if not mine:
            continue
        try:
            backend, planned = _plan_host(
                session, view, mine, networks, own, cloud_config, options, shapes
            )
        except UsageError:
            raise
        except VnodeError as exc:
            failed.update(dict.fromkeys((ref.name for ref in mine), _on_host(exc, name, views)))
            continue
        backends[name] = backend
        nodes.extend(planned)
    _stop_if_contained_nowhere(failed, views, options.all_or_nothing)
    # Nodes that fail before anything is made still get a plan (for the report).
    from vnode.images import resolve_distro, warn_end_of_life

    for name in failed:
        ref = by_ref[name]
        distro = resolve_distro(ref.distro or own[name].distro, session)
        nodes.append(_stub(ref, distro, session))
    order = {ref.name: i for i, ref in enumerate(refs)}
    nodes.sort(key=lambda node: order[node.name])
    warn_end_of_life({node.distro.name: node.distro for node in nodes}.values())
    if not options.fetch:
        check_images(session, [node for node in nodes if node.name not in failed], views)
    warm = config.defaults.warm if options.warm is None else options.warm

    def wants_warm(name: str) -> bool:
        shape = shapes.get(name)
        return warm if shape is None or shape.warm is None else shape.warm

    warm_nodes = tuple(n for n in nodes if n.name not in failed and wants_warm(n.name))
    warm_choices: tuple[WarmChoice, ...] = ()
    if warm_nodes:
        warm_choices, files = _plan_warm(session, warm_nodes, views, backends, after)
        nodes = [
            attrs.evolve(node, guest_network_files=files[node.name]) if node.name in files else node
            for node in nodes
        ]
    return UpPlan(
        nodes=tuple(nodes),
        timeout=defaults.timeout,
        wait=options.wait,
        keep_failed=options.keep_failed,
        fetch=options.fetch,
        started=started,
        after=after,
        hosts=views,
        backends=backends,
        failed={name: str(exc) for name, exc in failed.items()},
        moves=moves,
        move_backends=_move_backends(session, moves, views),
        all_or_nothing=options.all_or_nothing,
        warm=warm_choices,
    )


def _plan_host(
    session: Session,
    view: HostView,
    refs: list[NodeRef],
    networks: Mapping[str, tuple[str, ...]],
    own: Mapping[str, Defaults],
    cloud_config: dict[str, tuple[CloudConfigSource, ...]],
    options: UpOptions,
    shapes: Mapping[str, NodeShape],
) -> tuple[NetworkBackend, list[NodePlan]]:
    """One host's nodes, each in its own shape, planned against the host's network backends
    (one per network its nodes' NICs are on) and storage, and checked there."""
    from vnode.nics import HostNetworks

    context = lab.context_for(session, view)
    by_choice: dict[str, NetworkBackend] = {}
    for choice in dict.fromkeys(c for ref in refs for c in networks[ref.name]):
        by_choice[choice] = session.plugins.network_backend(choice, context)
    # virt_type is not a per-node key: every node of a command asks for the same one.
    virt_type = hypervisor.resolve_virt_type(view.conn, own[refs[0].name].virt_type)
    planned = [
        plan_node(
            session,
            ref,
            own[ref.name],
            by_choice[networks[ref.name][0]],
            virt_type,
            cloud_config,
            options.override_keys,
            host=view.name,
            volume_dir=lab.volume_dir(view),
            shape=_extras(options, shapes.get(ref.name)),
            further=[by_choice[choice] for choice in networks[ref.name][1:]],
            networks=networks[ref.name],
        )
        for ref in refs
    ]
    backend = HostNetworks(
        {b.describe(): b for b in by_choice.values()},
        by_choice[networks[refs[0].name][0]],
        first_nics=[node.network for node in planned],
    )
    _preflight(session, view, planned, backend)
    return backend, planned


def node_networks(
    session: Session,
    refs: list[NodeRef],
    choice: str,
    options: UpOptions,
    shapes: Mapping[str, NodeShape],
) -> dict[str, tuple[str, ...]]:
    """Per node, every NIC's network as asked for (``KIND[:ARG]`` or a bare kind), its own
    first: the lab file's ``networks``, else the command's network and repeated --network."""
    from vnode.pools import MAX_NICS

    plugins = session.plugins
    further = tuple(plugins.network_choice(network) for network in options.extra_networks)
    chosen = {}
    for ref in refs:
        shape = shapes.get(ref.name)
        if shape is not None and shape.networks:
            chosen[ref.name] = tuple(plugins.network_choice(n) for n in shape.networks)
        else:
            chosen[ref.name] = (choice, *further)
        if len(chosen[ref.name]) > MAX_NICS:
            raise UsageError(
                f"{ref.name}: at most {MAX_NICS} NICs (networks), not {len(chosen[ref.name])}"
            )
    return chosen


def nothing_made(failed: dict[str, Any]) -> str:
    """One line for --all-or-nothing: the first host's reason, how many nodes it concerns."""
    first = next(iter(failed.values()))
    return f"nothing made (--all-or-nothing): {first}" + (
        f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    )


def _stop_if_contained_nowhere(
    failed: dict[str, VnodeError], views: dict[str, HostView], all_or_nothing: bool
) -> None:
    if not failed:
        return
    if all_or_nothing:
        raise EnvironmentProblem(nothing_made(failed))
    if not lab.contains_failures(views):
        raise next(iter(failed.values()))


def _on_host(exc: VnodeError, host: str, views: dict[str, HostView]) -> VnodeError:
    """The error as the node's result says it: naming its host where there are several."""
    if not lab.contains_failures(views):
        return exc
    return EnvironmentProblem(f"host {host}: {exc}")


def _placement(
    refs: list[NodeRef],
    views: dict[str, HostView],
    own: Mapping[str, Defaults],
    options: UpOptions,
    failed: dict[str, VnodeError],
) -> tuple[dict[str, str], dict[str, str]]:
    """Each node's host (a node whose host cannot be used goes into ``failed``), and the
    nodes that move from the host they are on."""
    reachable = [name for name, view in views.items() if view.problem is None]
    existing = lab.loads(views)
    requests = []
    for ref in refs:
        pin = ref.host or options.host
        if pin is not None and pin not in views:
            raise UsageError(f"{ref.name}: no host {pin!r} in [[hosts]]")
        for bound in ref.pool.hosts:
            if bound not in views:
                raise UsageError(f"pool {ref.pool.stem}: no host {bound!r} in [[hosts]]")
        target = pin
        if target is None and ref.name in existing:
            target = existing[ref.name][0]
        if target is not None and views[target].problem is not None:
            failed[ref.name] = EnvironmentProblem(f"host {target}: {views[target].problem}")
            continue
        allowed = tuple(h for h in ref.pool.hosts if h in reachable)
        if ref.pool.hosts and not allowed:
            failed[ref.name] = EnvironmentProblem(f"no host of pool {ref.pool.stem} answers")
            continue
        shape = own[ref.name]
        requests.append(Request(ref.name, shape.memory, shape.vcpus, pin=pin, allowed=allowed))
    capacity = {
        name: capacity_of(view.host, view.memory_mib, view.cpus)
        for name, view in views.items()
        if view.problem is None
    }
    placed = place(requests, reachable, capacity, existing) if requests else {}
    moves = {
        name: existing[name][0]
        for name, host in placed.items()
        if name in existing and existing[name][0] != host
    }
    return placed, moves


def _move_backends(
    session: Session, moves: dict[str, str], views: dict[str, HostView]
) -> dict[str, NetworkBackend | None]:
    backends: dict[str, NetworkBackend | None] = {}
    cache: dict[tuple[str, str], NetworkBackend | None] = {}
    for name, old in moves.items():
        found = lab.find_node(views, name)
        backends[name] = (
            lab.removal_backend(session, views[old], found[1], found[2], cache) if found else None
        )
    return backends


def _check_local_dirs(session: Session) -> None:
    """The state directory (keys, node files) and the image store belong to root, whatever
    the hosts: another user able to write there could swap what vnode boots or trusts."""
    from vnode.files import untrusted

    for path in (session.config.paths.state, session.config.paths.images):
        if problem := untrusted(path):
            raise EnvironmentProblem(
                f"{problem}: vnode keeps keys and disks there; fix its owner or mode"
            )


def _preflight(
    session: Session, view: HostView, nodes: list[NodePlan], backend: NetworkBackend
) -> None:
    """What can be known wrong on one host before anything is created or destroyed."""
    for node in nodes:  # a domain of that name vnode did not make: not ours
        if hypervisor.lookup(view.conn, node.name) is not None:
            lab.store_for(session, view, make_pool=False).owned(node.name)
    if view.host.pool is None:  # QEMU reads the node files in the state directory
        state = session.config.paths.state.resolve()
        if state == Path("/root") or Path("/root") in state.parents:
            raise EnvironmentProblem(
                f"paths.state {state} is under /root, which the qemu user cannot read"
            )
    _check_firmware(view, nodes)
    backend.check(nodes)


def _check_firmware(view: HostView, nodes: list[NodePlan]) -> None:
    """UEFI nodes need the host to have the firmware: asked of the host's own libvirt, which
    is what picks the build when the domain starts."""
    from vnode import firmware

    for wanted in sorted({node.firmware for node in nodes} & set(firmware.UEFI_FIRMWARES)):
        capabilities = hypervisor.domain_capabilities(
            view.conn, nodes[0].virt_type, firmware.machine(wanted)
        )
        if problem := firmware.missing_in_capabilities(capabilities, wanted):
            raise EnvironmentProblem(f"firmware {wanted}: {problem}")


def check_images(
    session: Session, nodes: Sequence[NodePlan], views: dict[str, HostView] | None = None
) -> None:
    """Every node's image is in the store; QEMU itself reads it where a host uses it in
    place (a host without a pool), elsewhere vnode uploads it."""
    # Imported here: the image store pulls in the HTTP client, which `vnode list` never needs.
    from vnode import images
    from vnode.disks import unreadable_by_qemu

    in_place = {
        node.distro
        for node in nodes
        if views is None or node.host not in views or views[node.host].host.pool is None
    }
    for distro in {node.distro for node in nodes}:
        image = images.image_path(distro, session.config)
        if not image.exists():
            raise EnvironmentProblem(images.missing_message(distro, image, session))
        if distro in in_place and (problem := unreadable_by_qemu(image)):
            raise EnvironmentProblem(f"image for {distro.name}: {problem}")
    # An older vnode's plain image file becomes a version before anything is made on it.
    images.migrate_store(session, {node.distro.image_filename for node in nodes})
    for node in nodes:
        if node.image_sha256:
            images.planned_version(session, node.distro, node.image_sha256)


def _stub(ref: NodeRef, distro: Any, session: Session) -> NodePlan:
    """The plan of a node that fails before anything is made: only what its report needs."""
    return NodePlan(
        name=ref.name,
        number=ref.number,
        pool=ref.pool.stem,
        mac=ref.mac,
        distro=distro,
        memory_mib=1,
        vcpus=1,
        disk_gb=1,
        network="-",
        virt_type="qemu",
        node_dir=session.config.paths.nodes / ref.name,
        host="-",
    )


def run_steps(run: tuple[str, ...], scripts: tuple[str, ...]) -> tuple[RunStep, ...]:
    """--run commands, then --script files (read now: a missing one is bad input)."""
    from vnode.remote import command_step, script_step

    return (
        *(command_step(command) for command in run),
        *(script_step(path) for path in scripts),
    )


def cloud_config_sources(
    session: Session, defaults: Defaults, options: UpOptions, refs: list[NodeRef]
) -> dict[str, tuple[CloudConfigSource, ...]]:
    """Per pool stem, the user's cloud-config files in merge order: [defaults], the pool's,
    then the command line's; each file read once."""
    from vnode.userconfig import PROTECTED_KEYS, read_sources

    unknown = sorted(set(options.override_keys) - set(PROTECTED_KEYS))
    if unknown:
        raise UsageError(
            f"--override-key {unknown[0]}: not one of vnode's keys ({', '.join(PROTECTED_KEYS)})"
        )
    common = read_sources(defaults.cloud_config)
    given = read_sources(options.cloud_config)
    return {
        ref.pool.stem: (*common, *read_sources(ref.pool.cloud_config), *given)
        for ref in {ref.pool.stem: ref for ref in refs}.values()
    }


def _user_cloud_config(
    ref: NodeRef,
    distro: str,
    address: str | None,
    fqdn: str,
    sources: tuple[CloudConfigSource, ...],
    overrides: tuple[str, ...],
) -> str:
    """The node's own merged cloud-config; bad input (a vnode key not overridden) stops the
    plan before anything is made."""
    if not sources:
        return ""
    from vnode.userconfig import check_conflicts, dump, node_values, render_sources

    values = node_values(
        name=ref.name,
        number=ref.number,
        pool=ref.pool.stem,
        distro=distro,
        address=address,
        fqdn=fqdn,
    )
    merged = render_sources(sources, values)
    check_conflicts(merged, overrides)
    return dump(merged)


def plan_node(
    session: Session,
    ref: NodeRef,
    defaults: Defaults,
    backend: NetworkBackend,
    virt_type: str,
    cloud_config: dict[str, tuple[CloudConfigSource, ...]] | None = None,
    overrides: tuple[str, ...] = (),
    *,
    host: str = LOCAL,
    volume_dir: Path | None = None,
    shape: Extras | None = None,
    further: Sequence[NetworkBackend] = (),
    networks: tuple[str, ...] = (),
) -> NodePlan:
    """One node's plan on one host: distro, NICs, addresses, cloud-config, console, domain.
    ``backend`` attaches the node's own NIC, ``further`` its further NICs in order;
    ``networks`` names every NIC's network as asked for (recorded in the node's shape)."""
    from vnode import images

    extras = shape or Extras()
    distro = images.resolve_distro(ref.distro or defaults.distro, session)
    identity = NodeIdentity(name=ref.name, number=ref.number, pool=ref.pool.stem, mac=ref.mac)
    interface = _interface(backend, identity)
    nics = _further_nics(session, identity, backend, further)
    plan = NodePlan(
        name=ref.name,
        number=ref.number,
        pool=ref.pool.stem,
        mac=ref.mac,
        distro=distro,
        memory_mib=defaults.memory,
        vcpus=defaults.vcpus,
        disk_gb=max(defaults.disk, distro.disk_gb),
        network=backend.describe(),
        virt_type=virt_type,  # type: ignore[arg-type]
        node_dir=session.config.paths.nodes / ref.name,
        host=host,
        volume_dir=volume_dir,
        interface=interface,
        address=backend.static_address(identity),
        dns_domain=backend.dns_domain(),
        extra_disks=extras.disks,
        lab=extras.lab,
        tpm=extras.tpm,
        firmware=extras.firmware,
        max_memory=extras.max_memory,
        max_vcpus=extras.max_vcpus,
        image_sha256=_image_version(session, distro, extras.image_sha256),
        nics=nics,
        networks=networks,
    )
    fqdn = f"{plan.name}.{plan.dns_domain}" if plan.dns_domain else plan.name
    user_cloud_config = _user_cloud_config(
        ref,
        distro.name,
        plan.address.ip if plan.address else None,
        fqdn,
        (*(cloud_config or {}).get(ref.pool.stem, ()), *extras.cloud_config),
        overrides,
    )
    if user_cloud_config:
        plan = attrs.evolve(
            plan, user_cloud_config=user_cloud_config, cloud_config_overrides=tuple(overrides)
        )
    context = session.plugin_context(connect=False)
    console = session.plugins.console_setup(plan, context) or ConsoleSetup(
        log_path=plan.node_dir / "console.log"
    )
    plan = attrs.evolve(plan, console=console)
    return attrs.evolve(plan, domain_xml=domain_xml(session.plugins, plan))


def _interface(backend: NetworkBackend, identity: NodeIdentity) -> Interface:
    interface = backend.interface(identity)
    if not isinstance(interface, Interface):
        raise EnvironmentProblem(
            f"network {backend.describe()}: no interface for {identity.name}"
            + (f"'s NIC {identity.nic + 1}" if identity.nic else "")
        )
    return interface


def _further_nics(
    session: Session,
    identity: NodeIdentity,
    backend: NetworkBackend,
    further: Sequence[NetworkBackend],
) -> tuple[Nic, ...]:
    """The node's further NICs, each with its own MAC (:func:`vnode.pools.nic_mac`) and
    planned by its network's backend; two NICs on one network, or a MAC another pool's node
    has, are bad input."""
    from vnode.pools import check_nic_macs, nic_mac

    if not further:
        return ()
    macs = tuple(nic_mac(identity.mac, index) for index in range(len(further) + 1))
    check_nic_macs(identity.name, macs, session.config.pools)
    seen = [backend.describe()]
    nics = []
    for index, nic_backend in enumerate(further, start=1):
        network = nic_backend.describe()
        if network in seen:
            raise UsageError(
                f"{identity.name}: NICs {seen.index(network) + 1} and {index + 1} are both on "
                f"{network}; give each NIC a network of its own"
            )
        seen.append(network)
        view = attrs.evolve(identity, mac=macs[index], nic=index)
        nics.append(
            Nic(
                network=network,
                mac=macs[index],
                interface=_interface(nic_backend, view),
                address=nic_backend.static_address(view),
            )
        )
    return tuple(nics)


def _image_version(session: Session, distro: Distro, pinned: str = "") -> str:
    """The digest of the image version the node is made from: ``pinned`` (a lab.lock's),
    checked present, else the current one (an older vnode's plain image file is made a
    version first, hashed: from now on the node's disk is backed by it)."""
    from vnode import images

    if pinned:
        images.planned_version(session, distro, pinned)
        return pinned
    images.migrate_store(session, [distro.image_filename])
    return images.recorded_sha256(images.image_path(distro, session.config))


def _plan_warm(
    session: Session,
    nodes: tuple[NodePlan, ...],
    views: dict[str, HostView],
    backends: dict[str, NetworkBackend],
    after: After,
) -> tuple[tuple[WarmChoice, ...], dict[str, dict[str, str]]]:
    """Per node: the template it is cloned from (made first if missing), or cold and why;
    and each warm node's network files (a plugin's, see vnode_guest_network_files)."""
    from vnode import images, warmstore

    config = session.config
    # Per host: a template is made and cloned on the host its clones run on.
    storages = {host: lab.templates_for(session, views[host]) for host in backends}
    versions = {host: warmstore.host_versions(views[host].conn) for host in backends}
    made = {host: storage.list() for host, storage in storages.items()}
    specs: dict[tuple[str, str, warmstore.Shape], warmstore.TemplateSpec] = {}
    choices = []
    network_files: dict[str, dict[str, str]] = {}
    for node in nodes:
        if reason := _cold_only(node):
            choices.append(warmstore.WarmChoice(node.name, None, reason))
            continue
        if not images.image_path(node.distro, config).is_file():
            reason = "its image is fetched by this command; a template can be made next time"
            choices.append(warmstore.WarmChoice(node.name, None, reason))
            continue
        # The template's disk is backed by the version, which stays while it does.
        image = images.planned_version(session, node.distro, node.image_sha256)
        shape = warmstore.Shape(node.memory_mib, node.vcpus, node.virt_type, node.disk_gb)
        where = (node.host, node.distro.name, shape)
        if where not in specs:
            specs[where] = warmstore.plan_template(
                storage=storages[node.host],
                distro=node.distro,
                image=image,
                shape=shape,
                versions=versions[node.host],
                stem=config.pools[0].stem,
            )
        files = session.plugins.guest_network_files(node)
        if files is None:
            reason = "no plugin writes the guest's network files (vnode_guest_network_files)"
            choices.append(warmstore.WarmChoice(node.name, None, reason))
            continue
        choice = warmstore.warm_choice(
            node,
            specs[where],
            plugin_adjusted=plugin_adjusted(session.plugins, node),
            wait_cloud_init=after.wait_cloud_init,
            others=made[node.host],
            hot_pluggable=node.interface is not None
            and _backend_of(backends[node.host], node.network).hot_pluggable(node.interface),
        )
        choices.append(choice)
        if choice.warm:
            network_files[node.name] = files
    return tuple(choices), network_files


@attrs.frozen
class Extras:
    """What a node gets beyond its Defaults: extra disks, its own cloud-config, its lab."""

    disks: tuple[int, ...] = ()
    cloud_config: tuple[CloudConfigSource, ...] = ()
    lab: str = ""
    tpm: bool = False
    firmware: str = "bios"
    image_sha256: str = ""  # a pinned image version; "": the distro's current one
    max_memory: int = 0  # MiB; 0: the node's own memory
    max_vcpus: int = 0


def _extras(options: UpOptions, shape: NodeShape | None) -> Extras:
    from vnode.firmware import checked
    from vnode.userconfig import read_sources

    firmware = checked(options.firmware)
    if shape is None:
        return Extras(disks=options.disks, tpm=options.tpm, firmware=firmware)
    return Extras(
        disks=options.disks if shape.disks is None else shape.disks,
        cloud_config=tuple(read_sources(shape.cloud_config)),
        lab=shape.lab,
        tpm=options.tpm if shape.tpm is None else shape.tpm,
        firmware=firmware if shape.firmware is None else checked(shape.firmware, "firmware"),
        image_sha256=shape.image_sha256,
        max_memory=shape.max_memory or 0,
        max_vcpus=shape.max_vcpus or 0,
    )


def node_defaults(defaults: Defaults, shape: NodeShape | None) -> Defaults:
    """A node's own Defaults: the command's, with its shape laid over them."""
    if shape is None:
        return defaults
    return _laid_over(defaults, shape, ("distro", "memory", "vcpus", "disk"), "bad shape")


def _backend_of(backend: NetworkBackend, network: str) -> NetworkBackend:
    from vnode.nics import HostNetworks

    return backend.of(network) if isinstance(backend, HostNetworks) else backend


def _cold_only(node: NodePlan) -> str | None:
    """Why a node cannot be a warm clone of a template made in another shape, or None."""
    if node.nics:
        return (
            "a warm clone has one NIC (its template's hot-plug and identity script know one); "
            "nodes with several NICs boot cold"
        )
    if node.extra_disks:
        return "extra disks are not part of a template"
    if node.tpm:
        return "a TPM is not part of a template"
    if node.firmware != "bios":
        return "templates are saved from BIOS nodes; a UEFI node (its own NVRAM) boots cold"
    if node.address is not None and node.address.ip6:
        return "a warm clone takes its IPv4 address only; IPv6 nodes boot cold"
    if node.max_memory_mib > node.memory_mib or node.max_vcpu_count > node.vcpus:
        return "a template is saved at its own size: a node with room to grow boots cold"
    return None


def effective_defaults(defaults: Defaults, options: UpOptions) -> Defaults:
    """The configured defaults with the command's options laid over them."""
    keys = ("distro", "memory", "vcpus", "disk", "timeout", "virt_type", "network")
    return _laid_over(defaults, options, keys, "bad option")


def _laid_over(defaults: Defaults, source: object, keys: Sequence[str], bad: str) -> Defaults:
    """``defaults`` with ``source``'s values for ``keys`` that are not None, checked by
    Defaults' own validators (a bad value is one line: ``bad: why``)."""
    overrides = {key: value for key in keys if (value := getattr(source, key)) is not None}
    try:
        return attrs.evolve(defaults, **overrides)
    except (TypeError, ValueError) as exc:
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc
        raise UsageError(f"{bad}: {message}") from None


def plan_template(
    distro: str, options: UpOptions | None = None, *, session: Session
) -> TemplateSpec:
    """Decide the warm template of ``distro`` in the shape the options (or the configured
    defaults) give, on the host ``options.host`` names (needed only when the lab has
    several); nothing is made. Bad input is a UsageError, a missing image or a host that
    does not answer an EnvironmentProblem."""
    from vnode import images, warmstore
    from vnode.disks import unreadable_by_qemu

    options = options or UpOptions()
    config = session.config
    defaults = effective_defaults(config.defaults, attrs.evolve(options, distro=distro))
    resolved = images.resolve_distro(defaults.distro, session)
    view = template_host(session, options.host)
    virt_type = hypervisor.resolve_virt_type(view.conn, defaults.virt_type)
    image = images.image_path(resolved, config)
    if not image.exists():
        raise EnvironmentProblem(images.missing_message(resolved, image, session))
    if view.host.pool is None and (problem := unreadable_by_qemu(image)):
        raise EnvironmentProblem(f"image for {resolved.name}: {problem}")
    image = images.current_version(session, resolved)
    shape = warmstore.Shape(
        memory_mib=defaults.memory,
        vcpus=defaults.vcpus,
        virt_type=virt_type,  # type: ignore[arg-type]
        disk_gb=max(defaults.disk, resolved.disk_gb),
    )
    return warmstore.plan_template(
        storage=lab.templates_for(session, view),
        distro=resolved,
        image=image,
        shape=shape,
        versions=warmstore.host_versions(view.conn),
        stem=config.pools[0].stem,
    )


def template_host(session: Session, name: str | None) -> HostView:
    """The host a template is made on: the one named, or the lab's only one. UsageError for
    a host the lab does not have, or none named in a lab of several; EnvironmentProblem
    when it does not answer."""
    views = lab.survey(session)
    if name is None:
        if len(views) > 1:
            names = ", ".join(views)
            raise UsageError(f"the lab has several hosts: name one with --host ({names})")
        name = next(iter(views))
    if name not in views:
        raise UsageError(f"no host {name!r} in [[hosts]] (configured: {', '.join(views)})")
    view = views[name]
    if view.error is not None:
        raise view.error
    return view

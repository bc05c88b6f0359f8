"""``up`` over several hypervisor hosts (``[[hosts]]``): plan once (each node's host, its
host's network backend, volumes in the host's pool), then execute host by host in parallel.

A host that fails (unreachable, preflight, image upload) fails only its own nodes, each with
one line; the other hosts' nodes go on.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode import fleet, hypervisor
from vnode.errors import EnvironmentProblem, UsageError, VnodeError
from vnode.hosts import Request, capacity_of, place
from vnode.logs import get_logger
from vnode.model import NodeResult

if TYPE_CHECKING:
    from vnode.api import UpOptions, UpPlan
    from vnode.config import Defaults
    from vnode.progress import Reporter
    from vnode.remote import RunStep
    from vnode.session import Session
    from vnode.spec import NodeRef
    from vnode.userconfig import CloudConfigSource

log = get_logger("vnode.spread")


def plan_spread(
    session: Session,
    refs: list[NodeRef],
    defaults: Defaults,
    options: UpOptions,
    started: float,
    cloud_config: dict[str, tuple[CloudConfigSource, ...]],
    steps: tuple[RunStep, ...],
) -> UpPlan:
    from vnode import api
    from vnode.images import resolve_distro, warn_end_of_life

    views = fleet.survey(session)
    reachable = [name for name, view in views.items() if view.problem is None]
    existing = fleet.loads(views)
    failed: dict[str, str] = {}
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
            failed[ref.name] = f"host {target}: {views[target].problem}"
            continue
        allowed = tuple(h for h in ref.pool.hosts if h in reachable) or (
            () if not ref.pool.hosts else ("-",)
        )
        if allowed == ("-",):
            failed[ref.name] = f"no host of pool {ref.pool.stem} answers"
            continue
        requests.append(
            Request(ref.name, defaults.memory, defaults.vcpus, pin=pin, allowed=allowed)
        )
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
    choice = api._network_choice(session, defaults.network)
    backends: dict[str, Any] = {}
    nodes = []
    by_ref = {ref.name: ref for ref in refs}
    for host_name in reachable:
        mine = [by_ref[name] for name, host in placed.items() if host == host_name]
        if not mine:
            continue
        view = views[host_name]
        try:
            backend = session.plugins.network_backend(choice, fleet.context_for(session, view))
            virt_type = hypervisor.resolve_virt_type(view.conn, defaults.virt_type)
            volume_dir = Path(_pool_dir(view))
            planned = [
                api._plan_node(
                    session,
                    ref,
                    defaults,
                    backend,
                    virt_type,
                    cloud_config,
                    options.override_keys,
                    host=host_name,
                    volume_dir=volume_dir,
                )
                for ref in mine
            ]
            for node in planned:  # a domain of that name vnode did not make: not ours
                if hypervisor.lookup(view.conn, node.name) is not None:
                    fleet.store_for(session, view, pool=False).owned(node.name)
            backend.check(planned)
        except UsageError:
            raise
        except VnodeError as exc:
            for ref in mine:
                failed[ref.name] = f"host {host_name}: {exc}"
            continue
        backends[host_name] = backend
        nodes.extend(planned)
    # Nodes that fail before anything is made still get a plan (for the report): planned
    # against no host, with the first backend for the interface.
    order = {ref.name: i for i, ref in enumerate(refs)}
    if failed:
        for name in failed:
            ref = by_ref[name]
            distro = resolve_distro(ref.distro or defaults.distro, session)
            nodes.append(_stub(ref, distro, session))
    nodes.sort(key=lambda node: order[node.name])
    if options.all_or_nothing and failed:
        raise EnvironmentProblem(_nothing_made(failed))
    warn_end_of_life({node.distro.name: node.distro for node in nodes}.values())
    if not options.fetch:
        api._check_images(session, _Nodes(tuple(nodes)))
    return api.UpPlan(
        nodes=tuple(nodes),
        backend=next(iter(backends.values()), None),  # type: ignore[arg-type]
        timeout=defaults.timeout,
        wait=options.wait,
        keep_failed=options.keep_failed,
        fetch=options.fetch,
        started=started,
        steps=steps,
        wait_cloud_init=options.wait_cloud_init,
        hosts=views,
        backends=backends,
        failed=failed,
        moves=moves,
        all_or_nothing=options.all_or_nothing,
    )


@attrs.frozen
class _Nodes:
    """What the image check reads of a plan."""

    nodes: tuple[Any, ...]


def _stub(ref: NodeRef, distro: Any, session: Session) -> Any:
    from vnode.model import NodePlan

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


def _nothing_made(failed: dict[str, str]) -> str:
    """One line for --all-or-nothing: the first host's reason, how many nodes it concerns."""
    first = next(iter(failed.values()))
    return f"nothing made (--all-or-nothing): {first}" + (
        f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    )


def _pool_dir(view: fleet.HostView) -> str:
    """The pool's directory: the existing pool's own, else the configured one."""
    try:
        pool = view.conn.storagePoolLookupByName(view.host.pool)
    except Exception:  # not there yet: made with the configured directory
        return view.host.pool_dir
    return hypervisor.pool_path(pool) or view.host.pool_dir


def execute_spread(plan: UpPlan, *, session: Session, reporter: Reporter) -> list[NodeResult]:
    from vnode import images
    from vnode.disks import qcow2_virtual_size
    from vnode.scheduler import run_up

    if plan.fetch:
        images.ensure_images({node.distro for node in plan.nodes}, session, reporter)
    failed = dict(plan.failed)
    stores: dict[str, Any] = {}
    hosts = {node.host for node in plan.nodes if node.name not in failed}

    def prepare(host_name: str) -> None:
        """The host's pool, its base images (uploaded once, verified), its network."""
        view = plan.hosts[host_name]
        nodes = [n for n in plan.nodes if n.host == host_name and n.name not in failed]
        store = fleet.store_for(session, view)
        for distro in {node.distro for node in nodes}:
            path = images.image_path(distro, session.config)
            volume, uploaded = hypervisor.ensure_image(
                view.conn, store.pool, distro.image_filename, path, _sha256(path)
            )
            store.base_volumes[distro.image_filename] = volume
            store.base_sizes[distro.image_filename] = qcow2_virtual_size(path)
            if uploaded:
                log.info("image uploaded", host=host_name, image=distro.image_filename)
        plan.backends[host_name].prepare(nodes)
        stores[host_name] = store

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {pool.submit(prepare, host): host for host in hosts}
        for future, host in futures.items():
            try:
                future.result()
            except VnodeError as exc:
                for node in plan.nodes:
                    if node.host == host:
                        failed[node.name] = f"host {host}: {exc}"
    if plan.all_or_nothing and failed:
        reason = _nothing_made(failed)
        failed = {node.name: failed.get(node.name, reason) for node in plan.nodes}
    _move(plan, session, failed)
    jumps = {
        name: fleet.jump_for(plan.hosts[name], plan.backends[name].describe()) for name in stores
    }
    return run_up(
        stores,
        session.config.paths.locks,
        list(plan.nodes),
        plan.backends,
        session.client_key(),
        started=plan.started,
        timeout=plan.timeout,
        wait=plan.wait,
        keep_failed=plan.keep_failed,
        reporter=reporter,
        steps=plan.steps,
        wait_cloud_init=plan.wait_cloud_init,
        jumps={name: jump for name, jump in jumps.items() if jump is not None},
        failed=failed,
    )


def _move(plan: UpPlan, session: Session, failed: dict[str, str]) -> None:
    """A node named on another host than the one it is on: removed there first (names are
    unique across the lab)."""
    from vnode.nodes import remove_node

    for name, old in plan.moves.items():
        if name in failed:
            continue
        view = plan.hosts[old]
        try:
            store = fleet.store_for(session, view)
            owned = store.owned(name)
            if owned is None:
                continue
            backend = session.plugins.network_backend(
                owned[1].network, fleet.context_for(session, view)
            )
            remove_node(store, _identity(owned[1]), backend, quiet=True)
        except VnodeError as exc:
            failed[name] = f"could not remove it from {old} to move it: {exc}"


def _identity(mark: Any) -> Any:
    from vnode.model import NodeIdentity

    return NodeIdentity(name=mark.name, number=mark.number, pool=mark.pool, mac=mark.mac)


def _sha256(path: Path) -> str:
    """The image's sha256: from its record while the record vouches for it, else hashed."""
    from vnode import images
    from vnode.checksums import hash_file

    record = images.read_record(path)
    if record is not None and record.describes(path):
        return record.sha256
    return hash_file(path, ["sha256"])["sha256"]


# -- the other commands: find the node's host ----------------------------------------------


def list_lab(session: Session) -> tuple[list[Any], dict[str, str]]:
    """Every node on every host that answers, and why the others did not."""

    views = fleet.survey(session)
    nodes = [
        hypervisor.node_info(domain, mark, view.name)
        for view in views.values()
        for domain, mark in view.domains
    ]
    problems = {name: view.problem for name, view in views.items() if view.problem}
    return sorted(nodes, key=lambda node: node.name), problems


def destroy(session: Session, names: list[str] | None) -> dict[str, str]:
    """Destroy nodes wherever they are (``names`` None: all of them), hosts in parallel.

    A node on a host that does not answer is reported as such (``unreachable: ...``): vnode
    cannot know whether it is there."""
    from vnode.locks import file_lock, node_lock_path
    from vnode.nodes import remove_node

    views = fleet.survey(session)
    if names is None:
        names = sorted(mark.name for view in views.values() for _, mark in view.domains)
    down = {name: view.problem for name, view in views.items() if view.problem}
    stores: dict[str, Any] = {}

    def destroy_one(name: str) -> str:
        found = fleet.find_node(views, name)
        if found is None:
            if down:
                hosts = ", ".join(f"{h} ({why})" for h, why in down.items())
                return f"not found on the hosts that answer; not checked: {hosts}"
            return "absent"
        view, _, mark = found
        with file_lock(node_lock_path(session.config.paths.locks, name)):
            try:
                store = stores.get(view.name) or fleet.store_for(session, view)
                stores[view.name] = store
                if store.owned(name) is None:
                    return "absent"
                backend = None
                try:
                    backend = session.plugins.network_backend(
                        mark.network, fleet.context_for(session, view)
                    )
                except VnodeError as exc:
                    log.warning("network gone", node=name, error=str(exc))
                remove_node(store, _identity(mark), backend, quiet=True)
            except VnodeError as exc:
                return f"not cleaned on {view.name}: {exc}"
        return "destroyed"

    # Ownership first, for all of them: a domain vnode did not make stops everything.
    for name in names:
        found = fleet.find_node(views, name)
        if found is None:
            for view in views.values():
                if view.conn is not None and hypervisor.lookup(view.conn, name) is not None:
                    raise UsageError(
                        f"domain {name} exists on {view.name} and vnode did not create it; "
                        "not touching it"
                    )
    workers = min(32, len(names) or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(names, pool.map(destroy_one, names), strict=True))


def locate(session: Session, name: str) -> tuple[fleet.HostView, Any]:
    """The node's host and mark; UsageError when no host that answers has it."""
    views = fleet.survey(session)
    found = fleet.find_node(views, name)
    if found is None:
        down = [f"{h} ({v.problem})" for h, v in views.items() if v.problem]
        unchecked = f"; not checked: {', '.join(down)}" if down else ""
        raise UsageError(f"no node {name} made by vnode{unchecked}")
    return found[0], found[2]


def read_console(session: Session, name: str, offset: int) -> bytes:
    """What the node's console printed from ``offset`` on, read back from its host's pool."""
    view, _ = locate(session, name)
    store = fleet.store_for(session, view)
    hypervisor.refresh_pool(store.pool)
    volume = hypervisor.find_volume(store.pool, f"{name}-console.log")
    if volume is None:
        return b""
    _, size, _ = volume.info()
    if size <= offset:
        return b""
    return hypervisor.download(store.conn, volume, offset=offset, length=size - offset)

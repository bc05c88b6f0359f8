"""What is done to nodes that exist, wherever they are in the lab: list, destroy, power
(start, stop, reboot), read the console. Hosts are asked in parallel; a node on a host that
does not answer is reported as such (vnode cannot know whether it is there)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vnode import hypervisor, lab
from vnode.errors import EnvironmentProblem, UsageError, VnodeError
from vnode.logs import get_logger
from vnode.spec import parse_spec, parse_specs

if TYPE_CHECKING:
    from vnode.access import Credentials, NodeAccess
    from vnode.model import NodeInfo
    from vnode.nodes import NodeStore
    from vnode.session import Session

log = get_logger("vnode.nodeops")

POWER_ACTIONS = ("start", "stop", "reboot")


def list_lab(session: Session) -> tuple[list[NodeInfo], dict[str, str]]:
    """Every node on every host that answers, and {host: why} for those that did not."""
    views = lab.survey(session)
    nodes = [
        hypervisor.node_info(domain, mark, view.name)
        for view in views.values()
        for domain, mark in view.domains
    ]
    return sorted(nodes, key=lambda node: node.name), lab.problems(views)


def destroy(session: Session, specs: list[str], *, all_nodes: bool = False) -> dict[str, str]:
    """Destroy nodes wherever they are (``all_nodes``: every one of vnode's), hosts in
    parallel; {name: "destroyed" | "absent" | why not}. A named domain vnode did not make is
    a UsageError, raised before anything is destroyed."""
    from vnode.locks import file_lock, node_lock_path
    from vnode.nodes import leftover_dirs, leftover_host_keys, remove_leftovers, remove_node

    if all_nodes and specs:
        raise UsageError("give node names or --all, not both")
    config = session.config
    chosen = [] if all_nodes else parse_specs(specs, config.pools, allow_distro=False)
    views = lab.survey(session)
    if all_nodes:
        names = sorted(mark.name for view in views.values() for _, mark in view.domains)
        # What a vnode killed while making or removing a node left in the state directory.
        domains = set(names)
        names += leftover_dirs(config.paths.nodes, domains)
        if not lab.problems(views):  # a host that did not answer may hold the domain
            names += leftover_host_keys(session.known_hosts, config.paths.nodes, domains)
    else:
        names = [ref.name for ref in chosen]
    # Ownership first, for all of them: a domain vnode did not make stops everything.
    found = {name: lab.find_node(views, name) for name in names}
    for name, hit in found.items():
        if hit is None:
            lab.refuse_foreign(views, name)
    # Backends are resolved here, in the main thread: removal runs in worker threads.
    cache: dict[tuple[str, str], Any] = {}
    backends = {
        mark.name: lab.removal_backend(session, view, domain, mark, cache)
        for view, domain, mark in (hit for hit in found.values() if hit is not None)
    }
    stores = _Stores(session)
    down = lab.problems(views)

    def destroy_one(name: str) -> str:
        hit = found[name]
        if hit is None:
            if down:
                hosts = ", ".join(f"{h} ({why})" for h, why in down.items())
                return f"not found on the hosts that answer; not checked: {hosts}"
            with file_lock(node_lock_path(config.paths.locks, name)):
                local = stores.of(next(iter(views.values())))  # node files are kept here
                return remove_leftovers(local, name) or "absent"
        view, _, mark = hit
        # The node's lock makes destroy wait for an `up` still working on the same node.
        with file_lock(node_lock_path(config.paths.locks, name)):
            try:
                store = stores.of(view)
                if store.owned(name) is None:
                    return "absent"
                backend = backends.get(mark.name)
                remove_node(store, lab.identity(mark), backend, quiet=True)
            except VnodeError as exc:
                if not lab.contains_failures(views):
                    raise
                return f"not cleaned on {view.name}: {exc}"
        return "destroyed"

    # Each removal mostly waits on libvirt (QEMU's exit, dnsmasq's reload): all at once.
    workers = min(32, len(names) or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        outcome = dict(zip(names, pool.map(destroy_one, names), strict=True))
    if any(state == "destroyed" for state in outcome.values()):
        prune_images(session, stores.made())
    return outcome


def prune_images(session: Session, stores: list[NodeStore]) -> list[str]:
    """The image versions nothing uses any more removed, here and in the given hosts'
    pools; one line per removal. A failure is logged: the versions stay for `images prune`."""
    from vnode import imagestore

    removed = []
    try:
        removed += [f"version {d}" for d in imagestore.prune_local(session.config)]
        keep = imagestore.current_digests(session.config.paths.images)
        for store in stores:
            if store.pool is not None:
                gone = imagestore.prune_pool(store.pool, keep)
                removed += [f"volume {v} on {store.host}" for v in gone]
    except (VnodeError, OSError) as exc:
        log.warning("unused image versions not removed", error=str(exc), fix="vnode images prune")
    return removed


class _Stores:
    """Each host's store, made once (its pool ensured) by whichever worker asks first."""

    def __init__(self, session: Session) -> None:
        import threading

        self._session = session
        self._stores: dict[str, NodeStore] = {}
        self._lock = threading.Lock()

    def made(self) -> list[NodeStore]:
        with self._lock:
            return list(self._stores.values())

    def of(self, view: lab.HostView) -> NodeStore:
        with self._lock:
            if view.name not in self._stores:
                self._stores[view.name] = lab.store_for(self._session, view)
            return self._stores[view.name]


def power(
    session: Session, action: str, specs: list[str], *, stop_timeout: float = 60.0
) -> dict[str, str]:
    """Start, stop (ACPI shutdown, forced off after ``stop_timeout`` seconds) or reboot
    (such a stop, then a start) vnode's nodes, all at once; returns {name: what happened}."""
    if action not in POWER_ACTIONS:
        raise UsageError(f"unknown power action {action!r}: use {', '.join(POWER_ACTIONS)}")
    if stop_timeout <= 0:
        raise UsageError("--timeout must be positive")
    if not specs:
        raise UsageError(f"name nodes to {action}, e.g. `vnode {action} 1-3`")
    located = lab.locate(session, specs)
    domains = {place.mark.name: place.domain for place in located}
    acts: dict[str, Callable[[Any], str]] = {
        "start": lambda d: "started" if hypervisor.power_on(d) else "already running",
        "stop": lambda d: hypervisor.shutdown(d, stop_timeout),
        "reboot": lambda d: hypervisor.reboot(d, stop_timeout),
    }

    from vnode.locks import file_lock, node_lock_path

    def one(name: str) -> str:
        domain = domains.get(name)
        if domain is None:
            return "absent"
        # The node's lock, as up and destroy take it: a stop while up is still making or
        # waiting for the node waits for up, which would otherwise see it fail.
        with file_lock(node_lock_path(session.config.paths.locks, name)):
            domain = hypervisor.lookup(domain.connect(), name)  # up may have made it again
            return "absent" if domain is None else acts[action](domain)

    names = [place.mark.name for place in located]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(names) or 1)) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def locate_one(session: Session, node: str) -> lab.Located:
    """The one node a spec names; UsageError when no host that answers has it."""
    ref = parse_spec(node, session.config.pools, allow_distro=False)
    (place,) = lab.locate(session, [ref.name])
    return place


def address_of(place: lab.Located) -> str:
    """Where the node answers; EnvironmentProblem while that is not known yet."""
    if place.mark.damage:
        raise EnvironmentProblem(
            f"{place.mark.name}: its vnode mark is damaged ({place.mark.damage}); "
            "only `vnode destroy` uses it"
        )
    address = place.address()
    if not address:
        raise EnvironmentProblem(f"{place.mark.name}: its address is not known yet")
    return address


def node_access(session: Session, specs: list[str] | None) -> tuple[list[NodeAccess], Credentials]:
    """The named nodes (or all of vnode's) with the address and family ssh and Ansible need;
    a node whose address is not known yet is left out with a warning."""
    from vnode.access import Credentials

    nodes = []
    for place in lab.locate(session, specs):
        mark = place.mark
        if mark.damage:
            log.warning("left out: damaged vnode mark", node=mark.name, problem=mark.damage)
            continue
        address = place.address()
        if not address:
            log.warning("left out: address not known yet", node=mark.name)
            continue
        distro = session.plugins.find_distro(mark.distro) if mark.distro else None
        family = distro.family if distro is not None else "unknown"
        nodes.append(_access(place, address, family))
    creds = Credentials(
        identity_file=session.client_key().private_path, known_hosts=session.known_hosts.path
    )
    return nodes, creds


def _access(place: lab.Located, address: str, family: str) -> NodeAccess:
    from vnode.access import NodeAccess, jump_options

    mark = place.mark
    return NodeAccess(
        name=mark.name,
        address=address,
        pool=mark.pool,
        distro=mark.distro,
        family=family,
        via=jump_options(place.jump),
    )


def ssh_argv(session: Session, node: str, command: list[str]) -> list[str]:
    """The ``ssh`` command line that reaches a node as root, checking its host key strictly."""
    from vnode.access import Credentials, ssh_argv

    place = locate_one(session, node)
    creds = Credentials(
        identity_file=session.client_key().private_path, known_hosts=session.known_hosts.path
    )
    return ssh_argv(_access(place, address_of(place), "unknown"), creds, command)


def console_log(session: Session, node: str) -> Path:
    """The file holding the node's serial console since boot (on its host)."""
    return Path(locate_one(session, node).mark.console)


def read_console(session: Session, node: str, offset: int = 0) -> bytes:
    """What the node's serial console printed from ``offset`` on: read in place on a host
    that is this machine, else back from its host's pool through libvirt (a download)."""
    place = locate_one(session, node)
    if not place.mark.console:
        return b""
    if place.view.host.is_local:
        return _read_file(Path(place.mark.console), offset)
    store = lab.store_for(session, place.view)
    hypervisor.refresh_pool(store.pool)
    volume = hypervisor.find_volume(store.pool, f"{place.mark.name}-console.log")
    if volume is None:
        return b""
    _, size, _ = volume.info()
    if size <= offset:
        return b""
    return hypervisor.download(store.conn, volume, offset=offset, length=size - offset)


def _read_file(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""

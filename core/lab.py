"""The lab's hypervisor hosts as vnode finds them: connected (all at once), what each holds,
and per host the store, the plugins' view and the way to reach its nodes.

A lab is always a fleet: without ``[[hosts]]`` it has one host, ``local``
(:func:`vnode.hosts.lab_hosts`). A host that does not answer is a reason, not an exception,
while another host answers; when none does, its error is the command's.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode import hypervisor
from vnode.errors import EnvironmentProblem, UsageError, VnodeError
from vnode.hosts import Host, Load, adopt_legacy_state, lab_hosts, state_dir
from vnode.model import NodeIdentity, PluginContext
from vnode.spec import parse_specs

if TYPE_CHECKING:
    from vnode.network import NetworkBackend
    from vnode.nodes import NodeStore
    from vnode.session import Session
    from vnode.sshwait import Jump
    from vnode.warmstorage import TemplateStorage


@attrs.frozen
class HostView:
    """One host as vnode found it."""

    host: Host
    index: int
    conn: Any = attrs.field(default=None, eq=False)
    problem: str | None = None  # why it cannot be used (unreachable, ...)
    error: VnodeError | None = attrs.field(default=None, eq=False)  # the problem, whole
    domains: tuple[tuple[Any, hypervisor.DomainMark], ...] = attrs.field(default=(), eq=False)
    memory_mib: int | None = None
    cpus: int | None = None

    @property
    def name(self) -> str:
        return self.host.name


def survey(session: Session) -> dict[str, HostView]:
    """Every host of the lab: connect (all at once), list vnode's domains, read capacity.
    EnvironmentProblem (the first host's own) when no host answers."""
    hosts = lab_hosts(session.config)
    nodes_dir = session.config.paths.nodes

    def look(index: int, host: Host) -> HostView:
        try:
            conn = session.connection_to(host.name, host.uri)
            domains = tuple(hypervisor.vnode_domains(conn, nodes_dir))
            memory, cpus = hypervisor.host_resources(conn)
        except EnvironmentProblem as exc:
            reason = str(exc).split(": start it with")[0]
            return HostView(host=host, index=index, problem=reason, error=exc)
        return HostView(
            host=host, index=index, conn=conn, domains=domains, memory_mib=memory, cpus=cpus
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        views = list(pool.map(look, range(len(hosts)), hosts))
    if all(view.error is not None for view in views):
        raise views[0].error  # type: ignore[misc]
    return {view.name: view for view in views}


def contains_failures(views: dict[str, HostView]) -> bool:
    """Whether a host's failure fails only its own nodes (the others go on): when the lab
    has other hosts to go on with. A lab of one host fails the command with the host's own
    error, as a lone hypervisor always did."""
    return len(views) > 1


def problems(views: dict[str, HostView]) -> dict[str, str]:
    """{host: why} for the hosts that did not answer."""
    return {name: view.problem for name, view in views.items() if view.problem}


def unchecked(views: dict[str, HostView]) -> str:
    """ "; not checked: HOST (why), ..." for a message about a node not found, or ""."""
    down = [f"{name} ({why})" for name, why in problems(views).items()]
    return f"; not checked: {', '.join(down)}" if down else ""


def loads(views: dict[str, HostView]) -> dict[str, tuple[str, Load]]:
    """Every node vnode has on a reachable host: its host and what it claims there."""
    found: dict[str, tuple[str, Load]] = {}
    for view in views.values():
        for domain, mark in view.domains:
            try:
                _, _, memory_kib, vcpus, _ = domain.info()
            except Exception:  # gone meanwhile: it claims nothing
                continue
            found[mark.name] = (view.name, Load(mark.name, memory_kib // 1024, vcpus))
    return found


def find_node(views: dict[str, HostView], name: str) -> tuple[HostView, Any, Any] | None:
    """(host, domain, mark) of a node, searched on every reachable host."""
    for view in views.values():
        for domain, mark in view.domains:
            if mark.name == name:
                return view, domain, mark
    return None


def context_for(session: Session, view: HostView) -> PluginContext:
    """What plugins see for one host: its connection, and its state directory (a network
    plugin's records, such as the network it created, are per host; see
    :func:`vnode.hosts.state_dir`)."""
    base = session.plugin_context(connect=False)
    config = session.config
    adopt_legacy_state(config.paths.state, view.host, config.defaults.uri)
    return attrs.evolve(
        base,
        state_dir=state_dir(config.paths.state, view.host, config.defaults.uri),
        uri=view.host.uri,
        connection=view.conn,
        host=view.name,
        host_index=view.index,
        host_subnet=view.host.subnet,
    )


def store_for(session: Session, view: HostView, *, make_pool: bool = True) -> NodeStore:
    """Where the host's nodes are made: its storage pool (made on first use unless
    ``make_pool`` is False, for a check that makes nothing), or the lab's node directory for
    a host without one."""
    from vnode.nodes import NodeStore

    pool = None
    if view.host.pool is not None and make_pool:
        pool = hypervisor.ensure_pool(view.conn, view.host.pool, view.host.pool_dir)
    return NodeStore(
        conn=view.conn,
        nodes_dir=session.config.paths.nodes,
        images_dir=session.config.paths.images,
        known_hosts=session.known_hosts,
        host=view.name,
        pool=pool,
    )


def templates_for(
    session: Session, view: HostView, store: NodeStore | None = None
) -> TemplateStorage:
    """Where the host keeps its warm templates, as it keeps its nodes (:func:`store_for`):
    volumes of its pool (``store``'s, made and holding the base images, when templates are
    to be made; else the pool as it is, or none yet), or for a host without one the lab's
    state directory."""
    from vnode import warmstorage

    if view.host.pool is None:
        return warmstorage.StateFiles(
            conn=view.conn,
            root=session.config.paths.state / "templates",
            nodes_dir=session.config.paths.nodes,
            host=view.name,
        )
    if store is not None and store.pool is not None:
        pool, bases = store.pool, store.base_volumes
    else:
        pool, bases = _existing_pool(view), {}
    directory = volume_dir(view)
    assert directory is not None
    return warmstorage.PoolVolumes(
        conn=view.conn, pool=pool, directory=directory, host=view.name, base_volumes=bases
    )


def _existing_pool(view: HostView) -> Any:
    assert view.host.pool is not None
    try:
        pool = view.conn.storagePoolLookupByName(view.host.pool)
        return pool if pool.isActive() else None
    except Exception:  # not made (or started) yet: no template there either
        return None


def volume_dir(view: HostView) -> Path | None:
    """The directory of the host's pool (the existing pool's own, else the configured one);
    None for a host whose node files are the lab's own."""
    if view.host.pool is None:
        return None
    try:
        pool = view.conn.storagePoolLookupByName(view.host.pool)
    except Exception:  # not there yet: made with the configured directory
        return Path(view.host.pool_dir)
    return Path(hypervisor.pool_path(pool) or view.host.pool_dir)


def jump_for(view: HostView, backend: NetworkBackend | None) -> Jump | None:
    """How to reach the host's nodes on this network: through the host (SSH jump) when the
    backend says its nodes are reached through their host and the host is reached over SSH;
    else None (directly)."""
    from vnode.sshwait import Jump

    where = view.host.jump()
    if where is None or backend is None or not backend.reached_through_host:
        return None
    user, address, port = where
    return Jump(
        host=address,
        user=user,
        port=port,
        known_hosts=view.host.known_hosts,
        identity=view.host.identity,
    )


def backend_for(session: Session, view: HostView, network: str) -> NetworkBackend | None:
    """The backend of a network a node is on (resolved in the main thread); None, with a
    warning, when its plugin cannot give it any more (the reservation is left in place)."""
    try:
        return session.plugins.network_backend(network, context_for(session, view))
    except (UsageError, EnvironmentProblem) as exc:
        from vnode.logs import get_logger

        get_logger("vnode.lab").warning(
            "reservation left in place", network=network, host=view.name, reason=str(exc)
        )
        return None


def removal_backend(
    session: Session,
    view: HostView,
    domain: Any,
    mark: hypervisor.DomainMark,
    cache: dict[tuple[str, str], NetworkBackend | None],
) -> NetworkBackend | None:
    """What releases a made node's reservations when it is removed: its network's backend,
    and for a node with several NICs (as its shape records them) every NIC's network's
    (resolved in the main thread; ``cache``: the backends by host and network)."""

    def backend(network: str) -> NetworkBackend | None:
        if (view.name, network) not in cache:
            cache[view.name, network] = backend_for(session, view, network)
        return cache[view.name, network]

    primary = backend(mark.network) if mark.network else None
    shape = hypervisor.read_shape(domain) if domain is not None and not mark.damage else None
    if primary is None or shape is None or len(shape.networks) < 2:
        return primary
    from vnode.nics import HostNetworks, recorded_views

    further, backends = [], {primary.describe(): primary}
    for network, view_identity in recorded_views(identity(mark), shape.networks, shape.macs):
        if (nic_backend := backend(network)) is not None:
            backends[nic_backend.describe()] = nic_backend
            further.append((nic_backend.describe(), view_identity))
    return HostNetworks(backends, primary, {mark.name: further})


def identity(mark: hypervisor.DomainMark) -> NodeIdentity:
    return NodeIdentity(name=mark.name, number=mark.number, pool=mark.pool, mac=mark.mac)


@attrs.frozen
class Located:
    """A node vnode made, where it is: its mark, its domain (None: gone meanwhile), its
    host, the backend of its network there (None: its plugin is gone) and how to reach it."""

    mark: hypervisor.DomainMark
    domain: Any
    view: HostView
    backend: NetworkBackend | None = attrs.field(default=None, eq=False)
    jump: Jump | None = None

    @property
    def host(self) -> str:
        return self.view.name

    def address(self) -> str | None:
        """Where the node answers: recorded by the wait, else asked of its network (a node
        made with ``up --no-wait``)."""
        if self.mark.ip:
            return self.mark.ip
        if self.backend is None or self.mark.damage:
            return None  # a damaged mark's number or pool would find another node's address
        console = Path(self.mark.console) if self.mark.console else None
        return self.backend.discover_address(identity(self.mark), console)


def locate(session: Session, specs: list[str] | None) -> list[Located]:
    """The nodes the specs name (each must exist and be vnode's; UsageError before anything
    is done), or all of vnode's nodes when no spec is given, on every host of the lab."""
    views = survey(session)
    if not specs:
        found = [(view, domain, mark) for view in views.values() for domain, mark in view.domains]
        found.sort(key=lambda item: item[2].name)
    else:
        found, missing = [], []
        for ref in parse_specs(specs, session.config.pools, allow_distro=False):
            hit = find_node(views, ref.name)
            if hit is None:
                refuse_foreign(views, ref.name)
                missing.append(ref.name)
            else:
                found.append(hit)
        if missing:
            raise UsageError(f"no node made by vnode: {', '.join(missing)}{unchecked(views)}")
    return list(_located(session, found))


def _located(session: Session, found: list[tuple[HostView, Any, Any]]) -> Iterator[Located]:
    backends: dict[tuple[str, str], NetworkBackend | None] = {}
    for view, domain, mark in found:
        # Only asked when needed (an address to learn, a host to jump through): a node with
        # its address recorded on a host reached directly needs no plugin loaded.
        if mark.ip and view.host.jump() is None:
            yield Located(mark, domain, view)
            continue
        if (view.name, mark.network) not in backends:
            backends[view.name, mark.network] = backend_for(session, view, mark.network)
        backend = backends[view.name, mark.network]
        yield Located(mark, domain, view, backend, jump_for(view, backend))


def refuse_foreign(views: dict[str, HostView], name: str) -> None:
    """UsageError when a domain of this name exists on a host and vnode did not make it."""
    for view in views.values():
        if view.conn is not None and hypervisor.lookup(view.conn, name) is not None:
            raise UsageError(
                f"domain {name} exists on {view.name} and vnode did not create it; not touching it"
            )

"""The hosts of a lab with ``[[hosts]]``: their connections, opened in parallel, and what each
holds. A host that does not answer is reported with its reason; the others carry on."""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any

import attrs

from vnode import hypervisor
from vnode.errors import EnvironmentProblem
from vnode.hosts import Host, Load
from vnode.model import PluginContext

if TYPE_CHECKING:
    from vnode.session import Session


@attrs.frozen
class HostView:
    """One host as vnode found it."""

    host: Host
    index: int
    conn: Any = attrs.field(default=None, eq=False)
    problem: str | None = None  # why it cannot be used (unreachable, ...)
    domains: tuple[tuple[Any, hypervisor.DomainMark], ...] = attrs.field(default=(), eq=False)
    memory_mib: int | None = None
    cpus: int | None = None

    @property
    def name(self) -> str:
        return self.host.name


def multi_host(session: Session) -> bool:
    return bool(session.config.hosts)


def survey(session: Session) -> dict[str, HostView]:
    """Every configured host: connect (all at once), list vnode's domains, read capacity."""
    hosts = session.config.hosts
    nodes_dir = session.config.paths.nodes

    def look(index: int, host: Host) -> HostView:
        try:
            conn = session.host_connections.get(host.name)
            if conn is None:
                conn = hypervisor.connect(host.uri)
                session.host_connections[host.name] = conn
            domains = tuple(hypervisor.vnode_domains(conn, nodes_dir))
            memory, cpus = hypervisor.host_resources(conn)
        except EnvironmentProblem as exc:
            reason = str(exc).split(": start it with")[0]
            return HostView(host=host, index=index, problem=reason)
        return HostView(
            host=host, index=index, conn=conn, domains=domains, memory_mib=memory, cpus=cpus
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        views = list(pool.map(look, range(len(hosts)), hosts))
    return {view.name: view for view in views}


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
    """What plugins see for one host: its connection, and a state directory of its own (a
    network plugin's records, such as the network it created, are per host)."""
    base = session.plugin_context(connect=False)
    return attrs.evolve(
        base,
        state_dir=session.config.paths.state / "hosts" / view.name,
        uri=view.host.uri,
        connection=view.conn,
        host=view.name,
        host_index=view.index,
        host_subnet=view.host.subnet,
    )


def store_for(session: Session, view: HostView, *, pool: Any = None) -> Any:
    from vnode.nodes import NodeStore

    if pool is None:
        pool = hypervisor.ensure_pool(view.conn, view.host.pool, view.host.pool_dir)
    elif pool is False:  # only for ownership checks: nothing is made with it
        pool = None
    return NodeStore(
        conn=view.conn,
        nodes_dir=session.config.paths.nodes,
        images_dir=session.config.paths.images,
        known_hosts=session.known_hosts,
        host=view.name,
        pool=pool,
    )


def jump_for(view: HostView, network: str) -> Any:
    """How to reach the host's nodes on its own libvirt network (not routable from here);
    None for nodes on the site network (bridge, direct), reached directly."""
    from vnode.sshwait import Jump

    where = view.host.jump()
    if where is None or not network.startswith("libvirt"):
        return None
    user, address, port = where
    return Jump(
        host=address,
        user=user,
        port=port,
        known_hosts=view.host.known_hosts,
        identity=view.host.identity,
    )

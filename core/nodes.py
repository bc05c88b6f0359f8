"""Making and removing one node. Runs in worker threads; the scheduler runs many at once."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import attrs

from vnode import hypervisor
from vnode.cloudinit import render_seed, write_seed_iso
from vnode.config import Config
from vnode.disks import create_overlay
from vnode.errors import EnvironmentProblem, UsageError
from vnode.keys import ClientKey, KnownHosts, generate_keypair
from vnode.logs import get_logger
from vnode.model import ConsoleSetup, NodeIdentity, NodePlan
from vnode.network import NetworkBackend
from vnode.plugins import first_answer, network_backend
from vnode.templating import render_xml

log = get_logger("vnode.nodes")


@attrs.frozen
class Workspace:
    """What every node operation of one command shares."""

    config: Config
    conn: Any
    known_hosts: KnownHosts

    @classmethod
    def open(cls, config: Config) -> Workspace:
        conn = hypervisor.connect(config.defaults.uri)
        return cls(
            config=config, conn=conn, known_hosts=KnownHosts(config.paths.ssh / "known_hosts")
        )


@attrs.frozen
class CreatedNode:
    plan: NodePlan
    domain: Any
    ip: str | None
    host_key: str


def create_node(
    ws: Workspace,
    plan: NodePlan,
    backend: NetworkBackend,
    client: ClientKey,
    *,
    paused: bool = False,
) -> CreatedNode:
    """Replace any earlier incarnation vnode made, then build and start this one.

    ``paused`` starts QEMU with the vCPUs stopped (:func:`hypervisor.resume` lets it run).
    The caller holds the node's lock. On failure everything this call made is removed
    again, so a node is whole or absent.
    """
    existing = hypervisor.lookup(ws.conn, plan.name)
    if existing is not None:
        if hypervisor.owned_mark(existing, ws.config.paths.nodes) is None:
            raise UsageError(f"domain {plan.name} exists and vnode did not create it")
        remove_node(ws, existing)
    try:
        return _build(ws, plan, backend, client, paused)
    except BaseException:
        discard_node(ws, plan, backend)
        raise


def _build(
    ws: Workspace, plan: NodePlan, backend: NetworkBackend, client: ClientKey, paused: bool
) -> CreatedNode:
    _fresh_dir(plan.node_dir)
    base = ws.config.paths.images / plan.distro.image_filename
    disk = plan.node_dir / "disk.qcow2"
    create_overlay(base, disk, plan.disk_gb)
    host_key = generate_keypair(f"{plan.name} host key")
    address = backend.static_address(plan)
    seed = render_seed(
        plan,
        authorized_key=client.public_openssh,
        host_key=host_key,
        address=address,
        domain=ws.config.libvirt_network.domain if address else None,
    )
    seed_path = plan.node_dir / "seed.iso"
    write_seed_iso(seed_path, seed)
    console = first_answer(
        "vnode_console_setup", lambda c: isinstance(c, ConsoleSetup), node=plan
    ) or ConsoleSetup(log_path=plan.node_dir / "console.log")
    backend.reserve(plan)
    xml = render_xml(
        "domain.xml.j2",
        node=plan,
        virt_type=plan.virt_type,
        namespace=hypervisor.NAMESPACE,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        ip=address.ip if address else None,
        disk=disk,
        seed=seed_path,
        interface=backend.interface(plan),
        console=console,
    )
    # The host key is trusted before the guest exists, so the first connection is verified.
    ws.known_hosts.set(plan.name, host_key.public_openssh)
    domain = ws.conn.defineXML(xml)
    hypervisor.start(domain, paused=paused)
    log.debug("started", node=plan.name, virt_type=plan.virt_type, paused=paused)
    return CreatedNode(
        plan=plan,
        domain=domain,
        ip=address.ip if address else None,
        host_key=host_key.public_openssh,
    )


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o755, parents=True)


def discard_node(ws: Workspace, plan: NodePlan, backend: NetworkBackend) -> None:
    """Remove a node by its plan: domain, reservation, files, known_hosts entry.

    Works on a half-made node, and on one whose domain is already gone."""
    domain = hypervisor.lookup(ws.conn, plan.name)
    if domain is not None and hypervisor.owned_mark(domain, ws.config.paths.nodes) is not None:
        hypervisor.remove_domain(domain)
    try:
        backend.release(plan)
    except Exception as exc:  # the original failure matters more
        log.warning("could not release the reservation", node=plan.name, error=str(exc))
    _remove_dir(ws.config, plan.node_dir)
    ws.known_hosts.remove(plan.name)


def remove_node(ws: Workspace, domain: Any) -> None:
    """Destroy a domain vnode made, with its reservation, files and known_hosts entry."""
    mark = hypervisor.owned_mark(domain, ws.config.paths.nodes)
    if mark is None:
        raise UsageError(f"domain {domain.name()} was not made by vnode; not touching it")
    hypervisor.remove_domain(domain)
    identity = NodeIdentity(name=mark.name, number=mark.number, pool=mark.pool, mac=mark.mac)
    try:
        network_backend(mark.network, ws.config).release(identity)
    except (UsageError, EnvironmentProblem) as exc:
        log.warning("reservation left in place", node=mark.name, reason=str(exc))
    if mark.node_dir:
        _remove_dir(ws.config, Path(mark.node_dir))
    ws.known_hosts.remove(mark.name)


def _remove_dir(config: Config, path: Path) -> None:
    # Only ever delete inside vnode's own node directory, whatever the metadata says.
    nodes = config.paths.nodes.resolve()
    target = path.resolve()
    if target.parent == nodes and target.exists():
        shutil.rmtree(target, ignore_errors=True)

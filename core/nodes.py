"""Making and removing one node from its plan. Runs in worker threads, many at once; calls no
plugin hook (the network backend's per-node duties are documented in :mod:`vnode.network`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import attrs

from vnode import hypervisor, imagestore
from vnode.cloudinit import render_seed, seed_iso, write_seed_iso
from vnode.disks import GIB, MAX_EXTRA_DISKS, create_blank, create_overlay
from vnode.errors import EnvironmentProblem, UsageError
from vnode.hosts import LOCAL
from vnode.keys import ClientKey, KnownHosts, generate_keypair
from vnode.logs import get_logger
from vnode.model import NodeIdentity, NodePlan, extra_disk_volume, nvram_volume
from vnode.network import NetworkBackend

log = get_logger("vnode.nodes")


@attrs.frozen
class NodeStore:
    """What making and removing nodes shares within one command: libvirt, where node files
    live, and vnode's known_hosts."""

    conn: Any
    nodes_dir: Path
    images_dir: Path
    known_hosts: KnownHosts
    host: str = LOCAL
    # vnode's storage pool on the host (libvirt's storage API) and the base images' volumes
    # there, by image version (sha256); None: node files are made locally (no [[hosts]]).
    pool: Any = None
    base_volumes: dict[str, Any] = attrs.field(factory=dict)
    base_sizes: dict[str, int] = attrs.field(factory=dict)  # virtual sizes, bytes

    def base_version(self, plan: NodePlan) -> str:
        """The image version a node is made from: the one planned, else the name's now."""
        digest = plan.image_sha256 or imagestore.current(
            self.images_dir, plan.distro.image_filename
        )
        if digest is None:
            raise EnvironmentProblem(f"no image for {plan.distro.name} in {self.images_dir}")
        return digest

    def owned(self, name: str) -> tuple[Any, hypervisor.DomainMark] | None:
        """The domain named ``name`` if this vnode made it; UsageError if someone else did."""
        domain = hypervisor.lookup(self.conn, name)
        if domain is None:
            return None
        mark = hypervisor.owned_mark(domain, self.nodes_dir)
        if mark is None:
            raise UsageError(f"domain {name} exists and vnode did not create it; not touching it")
        return domain, mark


@attrs.frozen
class CreatedNode:
    plan: NodePlan
    domain: Any
    host_key: str


def create_node(
    store: NodeStore,
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
    if store.owned(plan.name) is not None:
        remove_node(store, plan, backend)
    try:
        return _build(store, plan, backend, client, paused)
    except Exception as exc:
        try:
            remove_node(store, plan, backend, quiet=True)
        except Exception as cleanup:  # the host is gone: say what may be left there
            raise hypervisor.HypervisorError(
                f"{exc}; could not be removed from {store.host}: {cleanup}"
            ) from None
        raise
    except BaseException:
        remove_node(store, plan, backend, quiet=True)
        raise


def _build(
    store: NodeStore, plan: NodePlan, backend: NetworkBackend, client: ClientKey, paused: bool
) -> CreatedNode:
    host_key = generate_keypair(f"{plan.name} host key")
    seed = render_seed(plan, authorized_key=client.public_openssh, host_key=host_key)
    if store.pool is not None:
        _build_volumes(store, plan, seed)
    else:
        _fresh_dir(plan.node_dir)
        _overlay_on_version(store, plan)
        for path, size_gb in zip(plan.extra_disk_paths, plan.extra_disks, strict=True):
            create_blank(path, size_gb)
        write_seed_iso(plan.seed_path, seed)
    backend.reserve(plan)
    # The host key is trusted before the guest exists, so the first connection is verified.
    store.known_hosts.set(plan.name, host_key.public_openssh)
    domain = hypervisor.define(store.conn, plan.domain_xml, plan.name)
    hypervisor.start(domain, paused=paused)
    log.debug("started", node=plan.name, virt_type=plan.virt_type, paused=paused)
    return CreatedNode(plan=plan, domain=domain, host_key=host_key.public_openssh)


def _overlay_on_version(store: NodeStore, plan: NodePlan) -> None:
    """The node's disk backed by its image version's file (not by the distro's name, which
    moves on when the image is replaced); the version cannot go while this is made."""
    digest = store.base_version(plan)
    base = imagestore.version_path(store.images_dir, digest)
    with imagestore.store_lock(store.images_dir, shared=True):
        if not base.is_file():
            raise EnvironmentProblem(
                f"image version {digest[:12]} of {plan.distro.name} is no longer in the store "
                "(replaced and pruned since this was planned); run again"
            )
        create_overlay(base, plan.disk_path, plan.disk_gb)


def _build_volumes(store: NodeStore, plan: NodePlan, seed: Any) -> None:
    """Disk and seed as volumes in the host's vnode pool, through libvirt alone."""
    digest = store.base_version(plan)
    base = store.base_volumes[digest]
    size = max(plan.disk_gb * GIB, store.base_sizes.get(digest, 0))
    with imagestore.store_lock(store.images_dir, shared=True):
        hypervisor.create_overlay_volume(store.pool, plan.disk_volume, base, size)
    for volume, size_gb in zip(plan.extra_disk_volumes, plan.extra_disks, strict=True):
        hypervisor.create_blank_volume(store.pool, volume, size_gb * GIB)
    hypervisor.upload_bytes(store.conn, store.pool, plan.seed_volume, seed_iso(seed), mode="0600")
    # virtlogd makes the console log afresh; an earlier one would be read by `vnode log`.
    hypervisor.delete_volume(store.pool, plan.console_volume)
    # libvirt copies the firmware's variable store only where there is none: an earlier
    # node's would keep its boot entries and keys.
    hypervisor.delete_volume(store.pool, plan.nvram_volume)


def remove_volumes(store: NodeStore, name: str) -> None:
    """The node's volumes in the host's pool (disk, extra disks, seed, console log, UEFI
    NVRAM, a warm clone's identity and restore image); absent ones are fine."""
    if store.pool is None:
        return
    hypervisor.refresh_pool(store.pool)
    extra = [extra_disk_volume(name, i) for i in range(1, MAX_EXTRA_DISKS + 1)]
    # A warm clone's identity disk and restore image too (vnode.warmstorage.CLONE_VOLUMES).
    clone = [f"{name}-identity.tar", f"{name}-restore.save"]
    own = (f"{name}-disk.qcow2", f"{name}-seed.iso", f"{name}-console.log", nvram_volume(name))
    for volume in (*own, *extra, *clone):
        hypervisor.delete_volume(store.pool, volume)


# A node's directory lets the qemu user through to the files libvirt hands it (it chowns
# each one to qemu when the domain starts), and lets no other user list or read anything:
# the disk holds the guest's host keys, the seed vnode's key for the guest.
NODE_DIR_MODE = 0o711


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=NODE_DIR_MODE, parents=True)
    path.chmod(NODE_DIR_MODE)  # whatever the umask


def remove_node(
    store: NodeStore,
    node: NodeIdentity,
    backend: NetworkBackend | None,
    *,
    node_dir: Path | None = None,
    console: Path | None = None,
    quiet: bool = False,
) -> None:
    """Remove a node vnode made: domain, reservation, files, console log, known_hosts entry.

    The one way nodes are removed (destroy, re-create, a failed or interrupted create): works
    on a half-made node and on one whose domain is already gone. ``quiet``: a failure to
    release the reservation is logged, not raised (an earlier failure matters more).
    """
    owned = store.owned(node.name)
    if owned is not None:
        domain, mark = owned
        node_dir = node_dir or (Path(mark.node_dir) if mark.node_dir else None)
        console = console or (Path(mark.console) if mark.console else None)
        hypervisor.remove_domain(domain)
    remove_volumes(store, node.name)
    if isinstance(node, NodePlan):
        node_dir = node_dir or node.node_dir
        console = console or (node.console.log_path if node.console else None)
    if backend is not None:
        try:
            backend.release(node)
        except Exception as exc:
            if not quiet:
                raise
            log.warning("could not release the reservation", node=node.name, error=str(exc))
    if node_dir is not None:
        _remove_inside(store.nodes_dir, node_dir)
    # A console kept outside the node's directory (where virtlogd may write) goes too, but
    # only a file named after this node.
    # (A pooled node's console is a volume, removed above; its path may not be local.)
    outside = (
        store.pool is None
        and console is not None
        and node_dir is not None
        and console.parent != node_dir
    )
    if outside and console.name.startswith(node.name) and console.is_file():
        console.unlink(missing_ok=True)
    store.known_hosts.remove(node.name)


def leftover_dirs(nodes_dir: Path, domains: set[str]) -> list[str]:
    """Node directories without a domain (a vnode killed while making or removing a node)."""
    if not nodes_dir.is_dir():
        return []
    return sorted(
        path.name
        for path in nodes_dir.iterdir()
        if path.is_dir() and not path.is_symlink() and path.name not in domains
    )


def leftover_host_keys(known_hosts: KnownHosts, nodes_dir: Path, domains: set[str]) -> list[str]:
    """known_hosts entries of nodes with neither a domain nor a directory (a vnode killed
    after removing a node's files, before its entry)."""
    return sorted(
        name
        for name in set(known_hosts.names())
        if name not in domains and not (nodes_dir / name).exists()
    )


def remove_leftovers(store: NodeStore, name: str) -> str | None:
    """What a killed vnode left of a node whose domain is gone (its directory, its known_hosts
    entry), removed; a line saying what, or None if nothing was left."""
    removed = []
    directory = store.nodes_dir / name
    if directory.is_dir() and not directory.is_symlink():
        _remove_inside(store.nodes_dir, directory)
        removed.append("its directory")
    if store.known_hosts.get(name) is not None:
        store.known_hosts.remove(name)
        removed.append("its known_hosts entry")
    return f"removed what was left without a domain: {', '.join(removed)}" if removed else None


def _remove_inside(nodes_dir: Path, path: Path) -> None:
    # Only ever delete inside vnode's own node directory, whatever the metadata says.
    target = path.resolve()
    if target.parent == nodes_dir.resolve() and target.exists():
        shutil.rmtree(target, ignore_errors=True)

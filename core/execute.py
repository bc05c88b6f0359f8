"""Executing an ``up`` plan: prepare the hosts (pool, base images, network), make missing warm
templates, move nodes named on another host, then hand everything to the scheduler. Calls no
plugin hook: the network backends' duties are methods of the objects the plan carries.

A host whose preparation fails fails only its own nodes where the lab has other hosts to go
on with (:func:`vnode.lab.contains_failures`); in a lab of one host its error is the
command's.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING

from vnode import hypervisor, lab
from vnode.errors import VnodeError
from vnode.logs import get_logger
from vnode.model import NodeResult
from vnode.planning import UpPlan, nothing_made
from vnode.progress import Reporter, SilentReporter

if TYPE_CHECKING:
    from collections.abc import Callable

    from vnode.nodes import NodeStore
    from vnode.session import Session
    from vnode.warm import WarmSource
    from vnode.warmstore import TemplateRecord, TemplateSpec

log = get_logger("vnode.execute")


def execute_up(
    plan: UpPlan, *, session: Session, reporter: Reporter | None = None
) -> list[NodeResult]:
    """Make the planned nodes and wait for them; calls no plugin hook."""
    from vnode.scheduler import run_up

    reporter = reporter or SilentReporter()
    failed = dict(plan.failed)
    if plan.fetch:
        from vnode import images
        from vnode.planning import check_images

        images.ensure_images({node.distro for node in plan.nodes}, session, reporter)
        check_images(session, [n for n in plan.nodes if n.name not in failed], plan.hosts)
    stores = _prepare_hosts(plan, session, failed)
    if plan.all_or_nothing and failed:
        reason = nothing_made(failed)
        failed = {node.name: failed.get(node.name, reason) for node in plan.nodes}
    _move(plan, session, stores, failed)
    warm, making = _templates(plan, session, stores, reporter, failed)
    jumps = {
        name: jump
        for name, view in plan.hosts.items()
        if name in stores and (jump := lab.jump_for(view, plan.backends[name])) is not None
    }
    return run_up(
        stores,
        session.config.paths.locks,
        list(plan.nodes),
        plan.backends,
        session.client_key(),
        started=plan.started,
        timeout=plan.timeout + making,
        wait=plan.wait,
        keep_failed=plan.keep_failed,
        reporter=reporter,
        after=plan.after,
        jumps=jumps,
        failed=failed,
        warm=warm,
    )


def _prepare_hosts(plan: UpPlan, session: Session, failed: dict[str, str]) -> dict[str, NodeStore]:
    """Every host with nodes to make, in parallel: its store, base images and network."""
    stores: dict[str, NodeStore] = {}
    hosts = {node.host for node in plan.nodes if node.name not in failed}

    def prepare(host: str) -> None:
        view = plan.hosts[host]
        nodes = [n for n in plan.nodes if n.host == host and n.name not in failed]
        store = lab.store_for(session, view)
        if store.pool is not None:
            upload_images(session, store, {store.base_version(node) for node in nodes})
        plan.backends[host].prepare(nodes)
        stores[host] = store

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {pool.submit(prepare, host): host for host in hosts}
        for future, host in futures.items():
            try:
                future.result()
            except VnodeError as exc:
                if not lab.contains_failures(plan.hosts):
                    raise
                for node in plan.nodes:
                    if node.host == host:
                        failed[node.name] = f"host {host}: {exc}"
    return stores


def upload_images(session: Session, store: NodeStore, digests: set[str]) -> None:
    """These image versions in the host's pool: uploaded once, verified."""
    from vnode import imagestore
    from vnode.disks import qcow2_virtual_size

    for digest in digests:
        path = imagestore.version_path(store.images_dir, digest)
        if not path.is_file():
            raise VnodeError(f"image version {digest[:12]} is no longer in {store.images_dir}")
        # Named by its digest on the host too: a newer version is another volume, and the
        # volumes of nodes made from this one stay backed by it.
        volume, uploaded = hypervisor.ensure_image(
            store.conn, store.pool, imagestore.volume_name(digest), path, digest
        )
        store.base_volumes[digest] = volume
        store.base_sizes[digest] = qcow2_virtual_size(path)
        if uploaded:
            log.info("image uploaded", host=store.host, sha256=digest[:12])


def _move(
    plan: UpPlan, session: Session, stores: dict[str, NodeStore], failed: dict[str, str]
) -> None:
    """A node named on another host than the one it is on: removed there first (names are
    unique across the lab). The backend of its network there was resolved while planning
    (``plan.hosts``); none: its reservation is left."""
    from vnode.nodes import remove_node

    for name, old in plan.moves.items():
        if name in failed:
            continue
        view = plan.hosts[old]
        try:
            store = stores.get(old) or lab.store_for(session, view)
            owned = store.owned(name)
            if owned is None:
                continue
            backend = plan.move_backends.get(name)
            remove_node(store, lab.identity(owned[1]), backend, quiet=True)
        except VnodeError as exc:
            failed[name] = f"could not remove it from {old} to move it: {exc}"


def _templates(
    plan: UpPlan,
    session: Session,
    stores: dict[str, NodeStore],
    reporter: Reporter,
    failed: dict[str, str],
) -> tuple[dict[str, WarmSource], float]:
    """The warm templates the plan's warm nodes need, made first where missing, each on
    its nodes' host; and how long making them took (a boot each: the nodes' own wait is not
    cut short by it)."""
    choices = tuple(
        choice
        for choice in plan.warm
        if choice.node not in failed and (choice.template is None or choice.template.host in stores)
    )
    if not choices:
        return {}, 0.0
    from vnode.warmstore import ensure_templates

    storages = {
        host: lab.templates_for(session, plan.hosts[host], stores[host])
        for host in {c.template.host for c in choices if c.template is not None}
    }
    begun = time.monotonic()
    warm, cold = ensure_templates(choices, storages, session.config.paths.locks, reporter.phase)
    for node, reason in cold.items():
        reporter.phase(node, f"cold boot: {reason}")
    return warm, time.monotonic() - begun


def make_template(
    spec: TemplateSpec, *, session: Session, progress: Callable[[str], None] | None = None
) -> TemplateRecord:
    """Make (or find made) one template on its host: the host's pool and base image first
    where it keeps them in a pool, as for its nodes."""
    from vnode.locks import file_lock
    from vnode.warmstore import make_template as make

    view = lab.survey(session)[spec.host]
    store = lab.store_for(session, view)
    if store.pool is not None:
        from vnode import imagestore

        digest = imagestore.digest_of(spec.image)
        if digest is None:
            raise VnodeError(f"{spec.image}: not an image version of {store.images_dir}")
        upload_images(session, store, {digest})
    storage = lab.templates_for(session, view, store)
    if progress is not None and storage.read(spec.key) is None:
        progress(f"making template {spec.key} of {spec.distro.name} on {spec.host}: one boot")
    with file_lock(session.config.paths.locks / storage.lock_name(spec.key)):
        return make(storage, spec)

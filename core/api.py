"""The library: everything the CLI does, as documented Python calls (the public facade; the
work is done in the modules named for it: :mod:`vnode.planning`, :mod:`vnode.execute`,
:mod:`vnode.waiting`, :mod:`vnode.nodeops`, :mod:`vnode.lab`).

Every call takes an optional :class:`~vnode.session.Session` (configuration, plugins, libvirt);
without one it opens its own from the configuration files and closes it again.

>>> from vnode import api
>>> results = api.up(["3:d12", "vnode4"], api.UpOptions(timeout=180))
>>> [r.state for r in results]
['ready', 'ready']

``up`` is :func:`plan_up` (everything decided, nothing touched), then :func:`execute_up`.
A lab is always a fleet of hosts: without ``[[hosts]]`` it has one, ``local``; every call
takes the same path for one host or many.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from vnode.errors import UsageError
from vnode.model import NodeInfo, NodeResult
from vnode.nodeops import POWER_ACTIONS
from vnode.planning import UpOptions, UpPlan, plan_template, plan_up
from vnode.progress import Reporter, SilentReporter
from vnode.session import Session
from vnode.warmstore import pick_templates

if TYPE_CHECKING:
    from vnode.images import (
        FetchOutcome,
        ImageEntry,
        ImageRecord,
        ImageSource,
        RefreshOutcome,
        VersionEntry,
    )
    from vnode.labplan import LabPlan
    from vnode.model import Verdict
    from vnode.plugins import PluginInfo
    from vnode.warmstore import TemplateRecord

__all__ = [
    "POWER_ACTIONS",
    "UpOptions",
    "UpPlan",
    "apply_lab",
    "build_image",
    "check_apply",
    "console_log",
    "destroy",
    "distro_names",
    "doctor",
    "execute_up",
    "fetch_images",
    "import_image",
    "inventory",
    "list_image_versions",
    "list_images",
    "list_lab",
    "list_nodes",
    "list_templates",
    "list_templates_of_lab",
    "make_template",
    "plan_lab",
    "plan_template",
    "plan_up",
    "plugins",
    "power",
    "prune_images",
    "read_console",
    "refresh_catalogs",
    "remove_templates",
    "show_image",
    "ssh_argv",
    "ssh_config",
    "up",
    "wait",
]


@contextlib.contextmanager
def _session(session: Session | None) -> Iterator[Session]:
    """The caller's session, or one of our own for the length of the call."""
    if session is not None:
        yield session
        return
    with Session.open() as own:
        yield own


def up(
    specs: list[str],
    options: UpOptions | None = None,
    *,
    session: Session | None = None,
    reporter: Reporter | None = None,
) -> list[NodeResult]:
    """Create (or re-create) the nodes in parallel; return when all are ready or given up on.

    Raises UsageError for bad input and EnvironmentProblem for an unready host, both before
    anything is created or destroyed.
    """
    with _session(session) as own:
        plan = plan_up(specs, options, session=own)
        return execute_up(plan, session=own, reporter=reporter)


def execute_up(
    plan: UpPlan, *, session: Session, reporter: Reporter | None = None
) -> list[NodeResult]:
    """Make the planned nodes and wait for them; calls no plugin hook."""
    from vnode.execute import execute_up as execute

    return execute(plan, session=session, reporter=reporter)


def destroy(
    specs: list[str], *, all_nodes: bool = False, session: Session | None = None
) -> dict[str, str]:
    """Destroy nodes vnode made; returns {name: "destroyed" | "absent"}. Idempotent.

    A named domain vnode did not make is a UsageError, raised before anything is destroyed.
    """
    from vnode import nodeops

    with _session(session) as own:
        return nodeops.destroy(own, specs, all_nodes=all_nodes)


def list_nodes(session: Session | None = None) -> list[NodeInfo]:
    """Every node vnode made on every host of the lab that answers (:func:`list_lab` also
    says which did not)."""
    return list_lab(session)[0]


def list_lab(session: Session | None = None) -> tuple[list[NodeInfo], dict[str, str]]:
    """Every node vnode made, and {host: why} for configured hosts that did not answer."""
    from vnode import nodeops

    with _session(session) as own:
        return nodeops.list_lab(own)


def ssh_argv(node: str, command: list[str], session: Session | None = None) -> list[str]:
    """The ``ssh`` command line that reaches a node as root, checking its host key strictly."""
    from vnode import nodeops

    with _session(session) as own:
        return nodeops.ssh_argv(own, node, command)


def power(
    action: str,
    specs: list[str],
    *,
    stop_timeout: float = 60.0,
    session: Session | None = None,
) -> dict[str, str]:
    """Start, stop (ACPI shutdown, forced off after ``stop_timeout`` seconds) or reboot
    (such a stop, then a start) vnode's nodes, all at once; returns {name: what happened}.
    Idempotent: a running node is not started again, a stopped one not stopped again. Only
    nodes vnode made: any other named domain is a UsageError before anything is done."""
    from vnode import nodeops

    with _session(session) as own:
        return nodeops.power(own, action, specs, stop_timeout=stop_timeout)


def wait(
    specs: list[str],
    *,
    timeout: float | None = None,
    wait_cloud_init: bool = False,
    run: tuple[str, ...] = (),
    scripts: tuple[str, ...] = (),
    session: Session | None = None,
    reporter: Reporter | None = None,
) -> list[NodeResult]:
    """Wait for existing nodes as ``up`` does (same states and results): ready when root
    logs in over SSH with the host key vnode recorded; with ``wait_cloud_init`` also when
    cloud-init reports done; then ``run`` and ``scripts`` run as with ``up``. A stopped node
    fails at once. ``timeout`` counts from now."""
    from vnode import waiting
    from vnode.planning import After, run_steps

    started = time.monotonic()
    after = After(run_steps(run, scripts), wait_cloud_init)
    with _session(session) as own:
        return waiting.wait(
            own,
            specs,
            timeout=timeout,
            after=after,
            reporter=reporter or SilentReporter(),
            started=started,
        )


def plan_lab(
    path: Path,
    *,
    prune: bool = False,
    update: bool = False,
    session: Session | None = None,
) -> LabPlan:
    """What applying the lab file at ``path`` would do, per node (create, replace and why,
    keep; with ``prune``, remove); reads only."""
    from vnode.labplan import plan_lab as plan

    with _session(session) as own:
        return plan(path, own, prune=prune, update=update)


def check_apply(plan: LabPlan, *, wait: bool = True) -> None:
    """Raise :class:`UsageError` for what :func:`apply_lab` would refuse (``run`` commands
    without the wait), before anything is changed or printed."""
    from vnode.labplan import check_apply as check

    check(plan, wait=wait)


def apply_lab(
    plan: LabPlan,
    *,
    session: Session,
    timeout: float | None = None,
    reporter: Reporter | None = None,
    wait: bool = True,
) -> list[NodeResult]:
    """Carry out a lab plan (:func:`plan_lab`): kept nodes untouched, the rest made in one
    ``up``; the lab's lock written when every node is ready (without ``wait``: started)."""
    from vnode.labplan import apply_lab as apply

    return apply(plan, session, timeout=timeout, reporter=reporter, wait=wait)


def ssh_config(specs: list[str] | None = None, session: Session | None = None) -> str:
    """An OpenSSH config with one ``Host`` block per node (all of vnode's nodes when no spec
    is given), as strict as ``vnode ssh``: ``ssh -F <(vnode ssh-config) vnode03`` works."""
    from vnode.access import render_ssh_config
    from vnode.nodeops import node_access

    with _session(session) as own:
        return render_ssh_config(*node_access(own, specs))


def inventory(
    specs: list[str] | None = None, fmt: str = "ini", session: Session | None = None
) -> str:
    """An Ansible inventory (``ini``, ``yaml``, or ``json`` as a dynamic inventory script
    prints for ``--list``): groups per pool and per distro family, connection vars set."""
    from vnode.access import INVENTORY_FORMATS, render_inventory
    from vnode.nodeops import node_access

    if fmt not in INVENTORY_FORMATS:
        raise UsageError(f"unknown inventory format {fmt!r}: use {', '.join(INVENTORY_FORMATS)}")
    with _session(session) as own:
        nodes, creds = node_access(own, specs)
        return render_inventory(nodes, creds, fmt)


def console_log(node: str, session: Session | None = None) -> Path:
    """The file holding the node's serial console since boot (on its host)."""
    from vnode import nodeops

    with _session(session) as own:
        return nodeops.console_log(own, node)


def read_console(node: str, offset: int = 0, session: Session | None = None) -> bytes:
    """What the node's serial console printed from ``offset`` on; read in place on this
    machine, else back from its host through libvirt (a volume download)."""
    from vnode import nodeops

    with _session(session) as own:
        return nodeops.read_console(own, node, offset)


def plugins(session: Session | None = None) -> list[PluginInfo]:
    """Every plugin found through the ``vnode.plugins`` entry points, broken and disabled
    ones included."""
    with _session(session) as own:
        return list(own.plugins.infos)


def doctor(network: str | None = None, session: Session | None = None) -> list[Verdict]:
    """One verdict (ok, warn, fail) per host check; ``network`` overrides the configured one."""
    from vnode.doctor import run_checks

    return run_checks(session, network)


def list_images(session: Session | None = None) -> list[ImageEntry]:
    """Per distro the plugins know: whether its image is present, its size, its record."""
    from vnode import images

    with _session(session) as own:
        return images.list_images(own)


def list_image_versions(session: Session | None = None) -> list[VersionEntry]:
    """Every image version in the store and what uses it (names, nodes, templates, locks)."""
    from vnode import images

    with _session(session) as own:
        return images.list_versions(own)


def prune_images(session: Session | None = None) -> tuple[list[str], dict[str, str]]:
    """Remove the image versions nothing uses, locally and in every host's pool that
    answers; (what was removed, {host: why not checked})."""
    from vnode import lab, nodeops

    with _session(session) as own:
        views = lab.survey(own)
        pooled = [
            lab.store_for(own, view)
            for view in views.values()
            if view.conn is not None and view.host.pool is not None
        ]
        return nodeops.prune_images(own, pooled), lab.problems(views)


def distro_names(session: Session | None = None) -> list[str]:
    """Every distro name the plugins list, family aliases (``fedora``, ``fedora~1``)
    included; no network."""
    with _session(session) as own:
        return list(dict.fromkeys(own.plugins.distro_names()))


def fetch_images(
    names: list[str],
    *,
    force: bool = False,
    session: Session | None = None,
    reporter: Reporter | None = None,
) -> list[FetchOutcome]:
    """Download images in parallel, each verified against the distro's published checksum."""
    from vnode import images

    with _session(session) as own:
        return images.fetch_images(names, own, force=force, reporter=reporter)


def refresh_catalogs(session: Session | None = None) -> tuple[list[RefreshOutcome], list[str]]:
    """Learn each family's releases from upstream's metadata and cache them; returns the
    families refreshed and one line per failure (those keep their cached catalog)."""
    from vnode import images

    with _session(session) as own:
        return images.refresh_catalogs(own)


def show_image(name: str, *, session: Session | None = None) -> ImageSource:
    """The exact image URL, checksum URL and format ``fetch`` would use, without downloading."""
    from vnode import images

    with _session(session) as own:
        return images.show_image(name, own)


def build_image(
    name: str, *, force: bool = False, session: Session | None = None
) -> tuple[Path, bool]:
    """Build a distro's image with the plugin that can; (path, whether it was built now)."""
    from vnode import images

    with _session(session) as own:
        return images.build_image(name, own, force=force)


def import_image(
    path: Path,
    name: str,
    *,
    force: bool = False,
    allow_backing: bool = False,
    session: Session | None = None,
) -> tuple[Path, ImageRecord]:
    """Copy or convert a user's image into the store as distro ``name``'s image; one that
    reads other files (backing, data file) only with ``allow_backing``."""
    from vnode import images

    with _session(session) as own:
        return images.import_image(path, name, own, force=force, allow_backing=allow_backing)


def make_template(
    distro: str,
    options: UpOptions | None = None,
    *,
    session: Session | None = None,
    progress: Callable[[str], None] | None = None,
) -> TemplateRecord:
    """Make (or find already made) the warm template ``up --warm`` clones nodes of
    ``distro`` from, in the shape the options give, on the host ``options.host`` names (the
    lab's only one by default): one boot of the image there, saved there. ``progress``
    hears one line when a template is really made (it takes a boot)."""
    from vnode import execute

    with _session(session) as own:
        spec = plan_template(distro, options, session=own)
        return execute.make_template(spec, session=own, progress=progress)


def list_templates(session: Session | None = None) -> list[TemplateRecord]:
    """The warm templates made on every host of the lab that answers (each record's
    ``host``), damaged ones too (``damage``); :func:`list_templates_of_lab` also says which
    hosts did not answer."""
    return list_templates_of_lab(session)[0]


def list_templates_of_lab(
    session: Session | None = None,
) -> tuple[list[TemplateRecord], dict[str, str]]:
    """Every host's templates, and {host: why} for hosts that did not answer."""
    from vnode import lab

    with _session(session) as own:
        views = lab.survey(own)
        found = [
            record
            for view in views.values()
            if view.error is None
            for record in lab.templates_for(own, view).list(damaged=True)
        ]
        return found, lab.problems(views)


def remove_templates(
    which: str, *, host: str | None = None, session: Session | None = None
) -> list[TemplateRecord]:
    """Remove the template with this key (or key prefix), or every template of this distro,
    on every host of the lab (or only on ``host``). A template some node is still made from
    is a UsageError, raised before anything is removed."""
    import contextlib

    from vnode import lab, nodeops
    from vnode.locks import file_lock

    with _session(session) as own, contextlib.ExitStack() as held:
        views = lab.survey(own)
        if host is not None and host not in views:
            raise UsageError(f"no host {host!r} in [[hosts]] (configured: {', '.join(views)})")
        chosen = []
        for view in views.values():
            if view.error is not None or host not in (None, view.name):
                continue
            storage = lab.templates_for(own, view)
            for record in pick_templates(storage.list(damaged=True), which):
                chosen.append((storage, record))
        if not chosen:
            where = f" on {host}" if host is not None else ""
            raise UsageError(
                f"no template {which!r}{where}: `vnode template list` shows the keys"
                + lab.unchecked(views)
            )
        # The locks template make takes: a template being made is not removed under it.
        for storage, record in sorted(chosen, key=lambda pair: pair[0].lock_name(pair[1].key)):
            held.enter_context(file_lock(own.config.paths.locks / storage.lock_name(record.key)))
        for storage, record in chosen:
            if users := storage.users(record):
                raise UsageError(
                    f"template {record.key} on {record.host} is the base of "
                    f"{', '.join(users)}: destroy them first"
                )
        for storage, record in chosen:
            storage.remove(record)
        # The image versions only these templates were made on go with them.
        nodeops.prune_images(own, [])
        return [record for _, record in chosen]

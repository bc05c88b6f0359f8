"""The library: everything the CLI does, as documented Python calls.

Every call takes an optional :class:`~vnode.session.Session` (configuration, plugins, libvirt);
without one it opens its own from the configuration files and closes it again.

>>> from vnode import api
>>> results = api.up(["3:d12", "vnode4"], api.UpOptions(timeout=180))
>>> [r.state for r in results]
['ready', 'ready']

``up`` is :func:`plan_up` (everything decided, nothing touched), then :func:`execute_up`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode import hypervisor
from vnode.config import Defaults
from vnode.errors import EnvironmentProblem, UsageError
from vnode.model import (
    ConsoleSetup,
    Interface,
    NodeIdentity,
    NodeInfo,
    NodePlan,
    NodeResult,
    PluginContext,
)
from vnode.network import NetworkBackend
from vnode.progress import Reporter, SilentReporter
from vnode.session import Session
from vnode.spec import NodeRef, parse_spec, parse_specs

# Imported where used: a quick command such as `vnode list` should not pay for them.
if TYPE_CHECKING:
    from vnode.access import Credentials, NodeAccess
    from vnode.images import (
        FetchOutcome,
        ImageEntry,
        ImageRecord,
        ImageSource,
        RefreshOutcome,
    )
    from vnode.model import Verdict
    from vnode.nodes import NodeStore
    from vnode.plugins import PluginInfo
    from vnode.remote import RunStep
    from vnode.sshwait import Jump
    from vnode.userconfig import CloudConfigSource
    from vnode.warmstore import TemplateRecord, TemplateSpec, WarmChoice

_INTERFACE_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_-]*")


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

    # With [[hosts]]: put every node without an @HOST on this host.
    host: str | None = None
    # With [[hosts]]: a host that fails its preflight or preparation fails the whole command
    # before any node is made, instead of only its own nodes.
    all_or_nothing: bool = False


@attrs.frozen
class UpPlan:
    """Everything ``up`` decided; :func:`execute_up` works from this alone."""

    nodes: tuple[NodePlan, ...]
    backend: NetworkBackend = attrs.field(eq=False)
    timeout: float
    wait: bool
    keep_failed: bool
    fetch: bool
    started: float  # time.monotonic() when the command began: the timeout counts from it
    steps: tuple[RunStep, ...] = ()  # --run and --script, in order, on every node
    wait_cloud_init: bool = False
    # With [[hosts]] (see vnode.spread): per host, its view and network backend; nodes that
    # fail before anything is made (their host failed preflight), and nodes moving hosts.
    hosts: dict[str, Any] = attrs.field(factory=dict, eq=False)
    backends: dict[str, NetworkBackend] = attrs.field(factory=dict, eq=False)
    failed: dict[str, str] = attrs.field(factory=dict)
    moves: dict[str, str] = attrs.field(factory=dict)
    all_or_nothing: bool = False
    # --warm: per node, from which template or cold and why; empty without --warm.
    warm: tuple[WarmChoice, ...] = ()

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]


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


def plan_up(specs: list[str], options: UpOptions | None = None, *, session: Session) -> UpPlan:
    """Decide everything about the nodes (distro, network, address, console, domain XML)
    and check the host; nothing is created or destroyed."""
    started = time.monotonic()
    options = options or UpOptions()
    config = session.config
    defaults = _effective_defaults(config.defaults, options)
    refs = parse_specs(specs, config.pools)
    steps = _run_steps(options)
    if (steps or options.wait_cloud_init) and not options.wait:
        raise UsageError("--run, --script and --wait-cloud-init need the wait (not --no-wait)")
    cloud_config = _cloud_config_sources(session, defaults, options, refs)
    warm = config.defaults.warm if options.warm is None else options.warm
    if config.hosts:
        from vnode.spread import plan_spread

        plan = plan_spread(session, refs, defaults, options, started, cloud_config, steps)
        if warm:
            from vnode.warmstore import WarmChoice

            # Templates live in the local state directory; remote hosts have no copy.
            reason = "warm clones are made on the local host only, not with [[hosts]] yet"
            plan = attrs.evolve(
                plan, warm=tuple(WarmChoice(node.name, None, reason) for node in plan.nodes)
            )
        return plan
    if options.host is not None or any(ref.host for ref in refs):
        raise UsageError("--host and NUM@HOST need [[hosts]] in the config")
    context = session.plugin_context()
    backend = session.plugins.network_backend(_network_choice(session, defaults.network), context)
    virt_type = hypervisor.resolve_virt_type(session.conn, defaults.virt_type)
    nodes = tuple(
        _plan_node(session, ref, defaults, backend, virt_type, cloud_config, options.override_keys)
        for ref in refs
    )
    from vnode.images import warn_end_of_life

    warn_end_of_life({node.distro.name: node.distro for node in nodes}.values())
    plan = UpPlan(
        nodes=nodes,
        backend=backend,
        timeout=defaults.timeout,
        wait=options.wait,
        keep_failed=options.keep_failed,
        fetch=options.fetch,
        started=started,
        steps=steps,
        wait_cloud_init=options.wait_cloud_init,
        warm=_plan_warm(session, nodes, options) if warm else (),
    )
    _preflight(session, plan)
    return plan


def execute_up(
    plan: UpPlan, *, session: Session, reporter: Reporter | None = None
) -> list[NodeResult]:
    """Make the planned nodes and wait for them; calls no plugin hook."""
    from vnode.scheduler import run_up

    reporter = reporter or SilentReporter()
    if plan.hosts:
        from vnode.spread import execute_spread

        return execute_spread(plan, session=session, reporter=reporter)
    if plan.fetch:
        from vnode import images

        images.ensure_images({node.distro for node in plan.nodes}, session, reporter)
        _check_images(session, plan)
    client = session.client_key()
    plan.backend.prepare(plan.nodes)
    warm: dict[str, TemplateRecord] = {}
    making = 0.0
    if plan.warm:
        from vnode.warmstore import ensure_templates

        begun = time.monotonic()
        warm, cold = ensure_templates(
            session.conn, plan.warm, session.config.paths.locks, reporter.phase
        )
        # Making templates is a boot each: the nodes' own wait is not cut short by it.
        making = time.monotonic() - begun
        for node, reason in cold.items():
            reporter.phase(node, f"cold boot: {reason}")
    return run_up(
        {"local": _store(session)},
        session.config.paths.locks,
        list(plan.nodes),
        {"local": plan.backend},
        client,
        started=plan.started,
        timeout=plan.timeout + making,
        wait=plan.wait,
        keep_failed=plan.keep_failed,
        reporter=reporter,
        steps=plan.steps,
        wait_cloud_init=plan.wait_cloud_init,
        warm=warm,
    )


def destroy(
    specs: list[str], *, all_nodes: bool = False, session: Session | None = None
) -> dict[str, str]:
    """Destroy nodes vnode made; returns {name: "destroyed" | "absent"}. Idempotent.

    A named domain vnode did not make is a UsageError, raised before anything is destroyed.
    """
    with _session(session) as own:
        if all_nodes and specs:
            raise UsageError("give node names or --all, not both")
        config = own.config
        if config.hosts:
            from vnode import spread

            chosen = (
                None
                if all_nodes
                else [ref.name for ref in parse_specs(specs, config.pools, allow_distro=False)]
            )
            return spread.destroy(own, chosen)
        from vnode import nodes

        store = _store(own)
        if all_nodes:
            found = hypervisor.vnode_domains(own.conn, config.paths.nodes)
            names = [mark.name for _, mark in found]
            names += nodes.leftover_dirs(config.paths.nodes, set(names))
        else:
            names = [ref.name for ref in parse_specs(specs, config.pools, allow_distro=False)]
        marks = {name: found[1] for name in names if (found := store.owned(name)) is not None}
        backends = _backends_of(own, [_Located(mark, None) for mark in marks.values()])

        def destroy_one(name: str) -> str:
            # The node's lock makes destroy wait for an `up` still working on the same node.
            with file_lock(node_lock_path(config.paths.locks, name)):
                found = store.owned(name)
                if found is None:
                    return nodes.remove_leftovers(store, name) or "absent"
                mark = found[1]
                backend = backends.get(("local", mark.network))
                remove_node(store, _identity(mark), backend, quiet=True)
                return "destroyed"

        import concurrent.futures

        from vnode.locks import file_lock, node_lock_path
        from vnode.nodes import remove_node

        # Each removal mostly waits on libvirt (QEMU's exit, dnsmasq's reload): all at once.
        workers = min(32, len(names) or 1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(names, pool.map(destroy_one, names), strict=True))


def list_nodes(session: Session | None = None) -> list[NodeInfo]:
    """Every node vnode made on the configured libvirt URI (or on every [[hosts]] host that
    answers: :func:`list_lab` also says which did not)."""
    return list_lab(session)[0]


def list_lab(session: Session | None = None) -> tuple[list[NodeInfo], dict[str, str]]:
    """Every node vnode made, and {host: why} for configured hosts that did not answer."""
    with _session(session) as own:
        if own.config.hosts:
            from vnode import spread

            return spread.list_lab(own)
        nodes = [
            hypervisor.node_info(domain, mark)
            for domain, mark in hypervisor.vnode_domains(own.conn, own.config.paths.nodes)
        ]
        return nodes, {}


def ssh_argv(node: str, command: list[str], session: Session | None = None) -> list[str]:
    """The ``ssh`` command line that reaches a node as root, checking its host key strictly."""
    with _session(session) as own:
        jump: list[str] = []
        if own.config.hosts:
            from vnode import fleet, spread
            from vnode.access import jump_options

            ref = parse_spec(node, own.config.pools, allow_distro=False)
            view, mark = spread.locate(own, ref.name)
            jump = [
                f"-o{key}={value}"
                for key, value in jump_options(fleet.jump_for(view, mark.network))
            ]
            address = mark.ip
        else:
            mark = _mark_of(node, own)
            address = mark.ip or _discover(own, mark)
        if not address:
            raise EnvironmentProblem(f"{mark.name}: its address is not known yet")
        key = own.client_key()
        return [
            "ssh",
            *jump,
            "-i",
            str(key.private_path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={own.known_hosts.path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"HostKeyAlias={mark.name}",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "LogLevel=ERROR",
            f"root@{address}",
            *command,
        ]


POWER_ACTIONS = ("start", "stop", "reboot")


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
    if action not in POWER_ACTIONS:
        raise UsageError(f"unknown power action {action!r}: use {', '.join(POWER_ACTIONS)}")
    if stop_timeout <= 0:
        raise UsageError("--timeout must be positive")
    if not specs:
        raise UsageError(f"name nodes to {action}, e.g. `vnode {action} 1-3`")
    with _session(session) as own:
        located = _locate(own, specs)
        domains = {place.mark.name: place.domain for place in located}

        from vnode.locks import file_lock, node_lock_path

        def one(name: str) -> str:
            domain = domains.get(name)
            if domain is None:
                return "absent"
            # The node's lock, as up and destroy take it: a stop while up is still making or
            # waiting for the node waits for up, which would otherwise see it fail.
            with file_lock(node_lock_path(own.config.paths.locks, name)):
                # up may have made the node again meanwhile: act on the domain there now.
                domain = hypervisor.lookup(domain.connect(), name)
                if domain is None:
                    return "absent"
                if action == "start":
                    return "started" if hypervisor.power_on(domain) else "already running"
                if action == "stop":
                    return hypervisor.shutdown(domain, stop_timeout)
                return hypervisor.reboot(domain, stop_timeout)

        import concurrent.futures

        names = [place.mark.name for place in located]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(names) or 1)) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))


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
    import asyncio

    started = time.monotonic()
    reporter = reporter or SilentReporter()
    if not specs:
        raise UsageError("name nodes to wait for, e.g. `vnode wait 1-3`")
    steps = _run_steps(UpOptions(run=run, scripts=scripts))
    with _session(session) as own:
        timeout = timeout if timeout is not None else own.config.defaults.timeout
        if timeout <= 0:
            raise UsageError("--timeout must be positive")
        located = _locate(own, specs)
        backends = _backends_of(own, located)
        client = own.client_key()
        targets = [(place, own.known_hosts.get(place.mark.name)) for place in located]
        deadline = started + timeout
        return asyncio.run(
            _wait_all(
                targets,
                backends,
                client.private_path,
                started,
                deadline,
                (wait_cloud_init, steps),
                reporter,
            )
        )


async def _wait_all(
    targets: list[tuple[_Located, str | None]],
    backends: dict[tuple[str, str], NetworkBackend],
    client_key: Path,
    started: float,
    deadline: float,
    after: tuple[bool, tuple[RunStep, ...]],  # --wait-cloud-init, then --run/--script
    reporter: Reporter,
) -> list[NodeResult]:
    import asyncio

    from vnode.remote import RemoteTarget
    from vnode.scheduler import after_ready, domain_problem
    from vnode.sshwait import WaitTarget, wait_ready

    async def one(place: _Located, host_key: str | None) -> NodeResult:
        mark, domain = place.mark, place.domain

        def result(state: str, ip: str | None, detail: str | None, **extra: object) -> NodeResult:
            reporter.phase(mark.name, state if not detail else f"{state}: {detail}")
            return NodeResult(
                name=mark.name,
                distro=mark.distro,
                mac=mark.mac,
                ip=ip,
                state=state,  # type: ignore[arg-type]
                seconds=round(time.monotonic() - started, 2) if state == "ready" else None,
                detail=detail,
                **extra,  # type: ignore[arg-type]
            )

        if domain is None:
            return result("failed", mark.ip or None, "the node is gone")
        if host_key is None:
            return result("failed", mark.ip or None, "no host key recorded for it")
        backend = backends.get((place.host, mark.network))
        console = Path(mark.console) if mark.console else None

        def address() -> str | None:
            if mark.ip:
                return mark.ip
            return backend.discover_address(_identity(mark), console) if backend else None

        target = WaitTarget(
            name=mark.name,
            host_key=host_key,
            client_key=client_key,
            domain_problem=lambda: domain_problem(domain, "qemu"),
            address=address,
            jump=place.jump,
        )
        outcome = await wait_ready(target, deadline, lambda text: reporter.phase(mark.name, text))
        if outcome.state != "ready":
            return result(outcome.state, outcome.ip, outcome.detail)
        assert outcome.ip is not None
        remote = RemoteTarget(mark.name, outcome.ip, host_key, client_key, jump=place.jump)
        cloud_init, steps = after
        state, detail, extra = await after_ready(remote, steps, cloud_init, deadline, reporter)
        return result(state, outcome.ip, detail, **extra)

    return await asyncio.gather(*(one(*target) for target in targets))


def ssh_config(specs: list[str] | None = None, session: Session | None = None) -> str:
    """An OpenSSH config with one ``Host`` block per node (all of vnode's nodes when no spec
    is given), as strict as ``vnode ssh``: ``ssh -F <(vnode ssh-config) vnode03`` works."""
    from vnode.access import render_ssh_config

    with _session(session) as own:
        nodes, creds = _access(own, specs)
        return render_ssh_config(nodes, creds)


def inventory(
    specs: list[str] | None = None, fmt: str = "ini", session: Session | None = None
) -> str:
    """An Ansible inventory (``ini``, ``yaml``, or ``json`` as a dynamic inventory script
    prints for ``--list``): groups per pool and per distro family, connection vars set."""
    from vnode.access import INVENTORY_FORMATS, render_inventory

    if fmt not in INVENTORY_FORMATS:
        raise UsageError(f"unknown inventory format {fmt!r}: use {', '.join(INVENTORY_FORMATS)}")
    with _session(session) as own:
        nodes, creds = _access(own, specs)
        return render_inventory(nodes, creds, fmt)


def _access(session: Session, specs: list[str] | None) -> tuple[list[NodeAccess], Credentials]:
    """The named nodes (or all of vnode's) with the address and family ssh and Ansible need;
    a node whose address is not known yet is left out with a warning."""
    from vnode.access import Credentials, NodeAccess, jump_options
    from vnode.logs import get_logger

    nodes = []
    for place in _locate(session, specs):
        mark = place.mark
        address = mark.ip or _discover(session, mark, place.context)
        if not address:
            get_logger("vnode.api").warning("left out: address not known yet", node=mark.name)
            continue
        distro = session.plugins.find_distro(mark.distro) if mark.distro else None
        family = distro.family if distro is not None else "unknown"
        nodes.append(
            NodeAccess(
                name=mark.name,
                address=address,
                pool=mark.pool,
                distro=mark.distro,
                family=family,
                via=jump_options(place.jump),
            )
        )
    creds = Credentials(
        identity_file=session.client_key().private_path, known_hosts=session.known_hosts.path
    )
    return nodes, creds


@attrs.frozen
class _Located:
    """A node vnode made, where it is: its mark, its domain (None: gone meanwhile), its host,
    how to reach it through that host, and the plugin context for that host (None: the
    session's, for a lab without [[hosts]])."""

    mark: hypervisor.DomainMark
    domain: Any
    host: str = "local"
    jump: Jump | None = None
    context: PluginContext | None = None


def _locate(session: Session, specs: list[str] | None) -> list[_Located]:
    """The nodes the specs name (each must exist and be vnode's; UsageError before anything
    is done), or all of vnode's nodes when no spec is given, on every host of the lab."""
    if not session.config.hosts:
        store = _store(session)
        return [
            _Located(mark, (store.owned(mark.name) or (None,))[0])
            for mark in _owned_marks(session, specs)
        ]
    from vnode import fleet

    views = fleet.survey(session)
    if not specs:
        found = [(view, domain, mark) for view in views.values() for domain, mark in view.domains]
        found.sort(key=lambda item: item[2].name)
    else:
        found, missing = [], []
        for ref in parse_specs(specs, session.config.pools, allow_distro=False):
            hit = fleet.find_node(views, ref.name)
            if hit is None:
                missing.append(ref.name)
            else:
                found.append(hit)
        if missing:
            down = [f"{name} ({view.problem})" for name, view in views.items() if view.problem]
            unchecked = f"; not checked: {', '.join(down)}" if down else ""
            raise UsageError(f"no node made by vnode: {', '.join(missing)}{unchecked}")
    return [
        _Located(
            mark,
            domain,
            view.name,
            fleet.jump_for(view, mark.network),
            fleet.context_for(session, view),
        )
        for view, domain, mark in found
    ]


def _owned_marks(session: Session, specs: list[str] | None) -> list[hypervisor.DomainMark]:
    """The marks of the nodes the specs name (every one must exist and be vnode's), or of
    all of vnode's nodes when no spec is given; sorted by name when all."""
    if not specs:
        found = hypervisor.vnode_domains(session.conn, session.config.paths.nodes)
        return sorted((mark for _, mark in found), key=lambda mark: mark.name)
    refs = parse_specs(specs, session.config.pools, allow_distro=False)
    store = _store(session)
    marks, missing = [], []
    for ref in refs:
        owned = store.owned(ref.name)
        if owned is None:
            missing.append(ref.name)
        else:
            marks.append(owned[1])
    if missing:
        raise UsageError(f"no node made by vnode: {', '.join(missing)}")
    return marks


def console_log(node: str, session: Session | None = None) -> Path:
    """The file holding the node's serial console since boot (on its host)."""
    with _session(session) as own:
        if own.config.hosts:
            from vnode import spread

            ref = parse_spec(node, own.config.pools, allow_distro=False)
            return Path(spread.locate(own, ref.name)[1].console)
        return Path(_mark_of(node, own).console)


def read_console(node: str, offset: int = 0, session: Session | None = None) -> bytes:
    """What the node's serial console printed from ``offset`` on; with [[hosts]] read back
    from its host through libvirt (a volume download), else from the local file."""
    with _session(session) as own:
        if own.config.hosts:
            from vnode import spread

            ref = parse_spec(node, own.config.pools, allow_distro=False)
            return spread.read_console(own, ref.name, offset)
        path = Path(_mark_of(node, own).console)
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                return handle.read()
        except FileNotFoundError:
            return b""


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


def plan_template(
    distro: str, options: UpOptions | None = None, *, session: Session
) -> TemplateSpec:
    """Decide the warm template of ``distro`` in the shape the options (or the configured
    defaults) give; nothing is made. Bad input is a UsageError, a missing image an
    EnvironmentProblem."""
    from vnode import images, warmstore
    from vnode.disks import unreadable_by_qemu

    options = options or UpOptions()
    config = session.config
    defaults = _effective_defaults(config.defaults, attrs.evolve(options, distro=distro))
    resolved = images.resolve_distro(defaults.distro, session)
    virt_type = hypervisor.resolve_virt_type(session.conn, defaults.virt_type)
    image = images.image_path(resolved, config)
    if not image.exists():
        raise EnvironmentProblem(images.missing_message(resolved, image, session))
    if problem := unreadable_by_qemu(image):
        raise EnvironmentProblem(f"image for {resolved.name}: {problem}")
    shape = warmstore.Shape(
        memory_mib=defaults.memory,
        vcpus=defaults.vcpus,
        virt_type=virt_type,  # type: ignore[arg-type]
        disk_gb=max(defaults.disk, resolved.disk_gb),
    )
    return warmstore.plan_template(
        state=config.paths.state,
        distro=resolved,
        image=image,
        shape=shape,
        versions=warmstore.host_versions(session.conn),
        stem=config.pools[0].stem,
    )


def make_template(
    distro: str,
    options: UpOptions | None = None,
    *,
    session: Session | None = None,
    progress: Callable[[str], None] | None = None,
) -> TemplateRecord:
    """Make (or find already made) the warm template ``up --warm`` clones nodes of
    ``distro`` from, in the shape the options give: one boot of the image, saved.
    ``progress`` hears one line when a template is really made (it takes a boot)."""
    from vnode.locks import file_lock
    from vnode.warmstore import make_template as make
    from vnode.warmstore import read_template

    with _session(session) as own:
        spec = plan_template(distro, options, session=own)
        if progress is not None and read_template(spec.directory) is None:
            progress(f"making template {spec.key} of {spec.distro.name}: one boot of its image")
        with file_lock(own.config.paths.locks / f"template-{spec.key}.lock"):
            return make(own.conn, spec)


def list_templates(session: Session | None = None) -> list[TemplateRecord]:
    """The warm templates made in this state directory, damaged ones too (``damage``)."""
    from vnode import warmstore

    with _session(session) as own:
        return warmstore.list_templates(own.config.paths.state, damaged=True)


def remove_templates(which: str, *, session: Session | None = None) -> list[TemplateRecord]:
    """Remove the template with this key (or key prefix), or every template of this distro.
    A template some node is still made from is a UsageError, raised before anything is
    removed."""
    import contextlib

    from vnode import warmstore
    from vnode.locks import file_lock

    with _session(session) as own, contextlib.ExitStack() as held:
        chosen = warmstore.select_templates(own.config.paths.state, which)
        # The locks template make takes: a template being made is not removed under it.
        for record in sorted(chosen, key=lambda r: r.key):
            held.enter_context(file_lock(own.config.paths.locks / f"template-{record.key}.lock"))
        for record in chosen:
            if users := warmstore.users_of(record, own.config.paths.nodes):
                raise UsageError(
                    f"template {record.key} is the base of {', '.join(users)}: destroy them first"
                )
        for record in chosen:
            warmstore.remove_template(record, own.config.paths.nodes)
        return chosen


# -- planning ----------------------------------------------------------------------------


def _run_steps(options: UpOptions) -> tuple[RunStep, ...]:
    from vnode.remote import command_step, script_step

    return (
        *(command_step(command) for command in options.run),
        *(script_step(path) for path in options.scripts),
    )


def _cloud_config_sources(
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


def _plan_node(
    session: Session,
    ref: NodeRef,
    defaults: Defaults,
    backend: NetworkBackend,
    virt_type: str,
    cloud_config: dict[str, tuple[CloudConfigSource, ...]] | None = None,
    overrides: tuple[str, ...] = (),
    *,
    host: str = "local",
    volume_dir: Path | None = None,
) -> NodePlan:
    from vnode.images import resolve_distro

    distro = resolve_distro(ref.distro or defaults.distro, session)
    identity = NodeIdentity(name=ref.name, number=ref.number, pool=ref.pool.stem, mac=ref.mac)
    interface = backend.interface(identity)
    if not isinstance(interface, Interface):
        raise EnvironmentProblem(f"network {backend.describe()}: no interface for {ref.name}")
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
    )
    fqdn = f"{plan.name}.{plan.dns_domain}" if plan.dns_domain else plan.name
    user_cloud_config = _user_cloud_config(
        ref,
        distro.name,
        plan.address.ip if plan.address else None,
        fqdn,
        (cloud_config or {}).get(ref.pool.stem, ()),
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
    return attrs.evolve(plan, domain_xml=_domain_xml(session, plan))


def _domain_xml(session: Session, plan: NodePlan) -> str:
    """The domain as libvirt will get it: the core's template, the NIC the network plugin
    described, then every plugin's adjustments."""
    root = _core_domain(plan, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    session.plugins.adjust_domain(plan, root)
    return ET.tostring(root, encoding="unicode")


def _core_domain(plan: NodePlan, created: str) -> ET.Element:
    """The domain before plugins adjust it: the core's template and the NIC."""
    from vnode.templating import render_xml

    rendered = render_xml(
        "domain.xml.j2", node=plan, namespace=hypervisor.NAMESPACE, created=created
    )
    root = ET.fromstring(rendered)
    devices = root.find("devices")
    assert devices is not None and plan.interface is not None
    devices.insert(2, _interface_element(plan))
    return root


def _plugin_adjusted(plan: NodePlan) -> bool:
    """Whether a plugin's vnode_domain_xml changed the node's domain (a warm template, saved
    from the core's domain, would lack the change)."""
    ns = hypervisor.NAMESPACE
    created = ET.fromstring(plan.domain_xml).findtext(f"metadata/{{{ns}}}node/{{{ns}}}created")
    core = ET.tostring(_core_domain(plan, created or ""), encoding="unicode")
    return core != plan.domain_xml


def _plan_warm(
    session: Session, nodes: tuple[NodePlan, ...], options: UpOptions
) -> tuple[WarmChoice, ...]:
    """Per node: the template it is cloned from (made first if missing), or cold and why."""
    from vnode import images, warmstore

    config = session.config
    versions = warmstore.host_versions(session.conn)
    made = warmstore.list_templates(config.paths.state)
    specs: dict[tuple[str, warmstore.Shape], warmstore.TemplateSpec] = {}
    choices = []
    for node in nodes:
        image = images.image_path(node.distro, config)
        if not image.is_file():
            reason = "its image is fetched by this command; a template can be made next time"
            choices.append(warmstore.WarmChoice(node.name, None, reason))
            continue
        shape = warmstore.Shape(node.memory_mib, node.vcpus, node.virt_type, node.disk_gb)
        if (node.distro.name, shape) not in specs:
            specs[node.distro.name, shape] = warmstore.plan_template(
                state=config.paths.state,
                distro=node.distro,
                image=image,
                shape=shape,
                versions=versions,
                stem=config.pools[0].stem,
            )
        choice = warmstore.warm_choice(
            node,
            specs[node.distro.name, shape],
            plugin_adjusted=_plugin_adjusted(node),
            wait_cloud_init=options.wait_cloud_init,
            others=made,
        )
        choices.append(choice)
    return tuple(choices)


def _interface_element(plan: NodePlan) -> ET.Element:
    interface = plan.interface
    assert interface is not None
    for attribute in interface.source:
        if not _INTERFACE_ATTRIBUTE.fullmatch(attribute):
            raise EnvironmentProblem(
                f"network {plan.network}: {attribute!r} is not a libvirt <source> attribute"
            )
    element = ET.Element("interface", type=interface.type)
    ET.SubElement(element, "source", dict(interface.source))
    ET.SubElement(element, "mac", address=plan.mac)
    ET.SubElement(element, "model", type=interface.model)
    return element


def _effective_defaults(defaults: Defaults, options: UpOptions) -> Defaults:
    overrides = {
        key: value
        for key in ("distro", "memory", "vcpus", "disk", "timeout", "virt_type", "network")
        if (value := getattr(options, key)) is not None
    }
    try:
        return attrs.evolve(defaults, **overrides)
    except (TypeError, ValueError) as exc:
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc
        raise UsageError(f"bad option: {message}") from None


def _network_choice(session: Session, network: str) -> str:
    """``--network NAME`` names a libvirt network unless it says ``KIND:ARG`` or a bare kind."""
    if ":" in network:
        return network
    return network if network in session.plugins.network_kinds() else f"libvirt:{network}"


def _preflight(session: Session, plan: UpPlan) -> None:
    """Everything that can be known wrong before anything is created or destroyed."""
    store = _store(session)
    for node in plan.nodes:
        if hypervisor.lookup(store.conn, node.name) is not None:
            store.owned(node.name)  # UsageError if vnode did not make it
    if not plan.fetch:
        _check_images(session, plan)
    state = session.config.paths.state.resolve()
    if state == Path("/root") or Path("/root") in state.parents:
        raise EnvironmentProblem(
            f"paths.state {state} is under /root, which the qemu user cannot read"
        )
    from vnode.files import untrusted

    for path in (state, session.config.paths.images):
        if problem := untrusted(path):
            raise EnvironmentProblem(
                f"{problem}: vnode keeps keys and disks there; fix its owner or mode"
            )
    plan.backend.check(plan.nodes)


def _check_images(session: Session, plan: UpPlan) -> None:
    # Imported here: the image store pulls in the HTTP client, which `vnode list` never needs.
    from vnode import images
    from vnode.disks import unreadable_by_qemu

    for distro in {node.distro for node in plan.nodes}:
        image = images.image_path(distro, session.config)
        if not image.exists():
            raise EnvironmentProblem(images.missing_message(distro, image, session))
        if problem := unreadable_by_qemu(image):
            raise EnvironmentProblem(f"image for {distro.name}: {problem}")


# -- helpers -----------------------------------------------------------------------------


def _store(session: Session) -> NodeStore:
    from vnode.nodes import NodeStore

    return NodeStore(
        conn=session.conn,
        nodes_dir=session.config.paths.nodes,
        images_dir=session.config.paths.images,
        known_hosts=session.known_hosts,
    )


def _identity(mark: hypervisor.DomainMark) -> NodeIdentity:
    return NodeIdentity(name=mark.name, number=mark.number, pool=mark.pool, mac=mark.mac)


def _backends_of(
    session: Session, located: Iterable[_Located]
) -> dict[tuple[str, str], NetworkBackend]:
    """The backend of each (host, network) the nodes are on (resolved here, in the main
    thread)."""
    backends: dict[tuple[str, str], NetworkBackend] = {}
    for place in located:
        mark = place.mark
        if (place.host, mark.network) in backends:
            continue
        context = place.context or session.plugin_context()
        try:
            backends[place.host, mark.network] = session.plugins.network_backend(
                mark.network, context
            )
        except (UsageError, EnvironmentProblem) as exc:
            from vnode.logs import get_logger

            get_logger("vnode.api").warning(
                "reservation left in place", network=mark.network, reason=str(exc)
            )
    return backends


def _mark_of(node: str, session: Session) -> hypervisor.DomainMark:
    ref = parse_spec(node, session.config.pools, allow_distro=False)
    found = _store(session).owned(ref.name)
    if found is None:
        raise UsageError(f"no node {ref.name} made by vnode")
    return found[1]


def _discover(
    session: Session, mark: hypervisor.DomainMark, context: PluginContext | None = None
) -> str | None:
    """A node whose address the wait did not record (``up --no-wait``): ask its network (on
    its host: ``context``, by default the session's)."""
    if mark.damage:
        return None  # a wrong number or pool would find another node's address
    try:
        backend = session.plugins.network_backend(mark.network, context or session.plugin_context())
    except (UsageError, EnvironmentProblem):
        return None
    console = Path(mark.console) if mark.console else None
    return backend.discover_address(_identity(mark), console)

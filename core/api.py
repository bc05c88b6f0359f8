"""The library: everything the CLI does, as documented Python calls.

>>> from vnode import api
>>> results = api.up(["3:d12", "vnode4"], api.UpOptions(timeout=180))
>>> [r.state for r in results]
['ready', 'ready']
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from vnode import hypervisor
from vnode.config import Config, Defaults, load_config
from vnode.disks import unreadable_by_qemu
from vnode.errors import EnvironmentProblem, UsageError
from vnode.keys import client_key
from vnode.locks import file_lock, node_lock_path
from vnode.model import NodeIdentity, NodeInfo, NodePlan, NodeResult
from vnode.network import NetworkBackend
from vnode.nodes import Workspace, remove_node
from vnode.plugins import (
    PluginInfo,
    all_answers,
    load_plugins,
    network_backend,
    resolve_distro,
)
from vnode.progress import Reporter, SilentReporter
from vnode.spec import NodeRef, parse_specs

# Imported where used: a quick command such as `vnode list` should not pay for them.
if TYPE_CHECKING:
    from vnode.doctor import Verdict
    from vnode.hostbridge import BridgePlan, Step


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


def up(
    specs: list[str],
    options: UpOptions | None = None,
    *,
    config: Config | None = None,
    reporter: Reporter | None = None,
) -> list[NodeResult]:
    """Create (or re-create) the nodes in parallel; return when all are ready or given up on.

    Raises UsageError for bad input and EnvironmentProblem for an unready host, both before
    anything is created or destroyed.
    """
    started = time.monotonic()
    options = options or UpOptions()
    config = config or load_config()
    defaults = _effective_defaults(config.defaults, options)
    refs = parse_specs(specs, config.pools)
    backend = network_backend(_network_choice(defaults.network), config)
    plans = [_plan(ref, defaults, config, backend) for ref in refs]
    ws = Workspace.open(config)
    virt_type = hypervisor.resolve_virt_type(ws.conn, defaults.virt_type)
    plans = [attrs.evolve(plan, virt_type=virt_type) for plan in plans]
    _preflight(ws, plans, backend, fetch=options.fetch, reporter=reporter)
    from vnode.scheduler import run_up

    client = client_key(config.paths.ssh, config.ssh.key)
    backend.prepare(plans)
    return run_up(
        ws,
        plans,
        backend,
        client,
        started=started,
        timeout=defaults.timeout,
        wait=options.wait,
        keep_failed=options.keep_failed,
        reporter=reporter or SilentReporter(),
    )


def destroy(
    specs: list[str], *, all_nodes: bool = False, config: Config | None = None
) -> dict[str, str]:
    """Destroy nodes vnode made; returns {name: "destroyed" | "absent"}. Idempotent.

    A named domain vnode did not make is a UsageError, raised before anything is destroyed.
    """
    config = config or load_config()
    if all_nodes and specs:
        raise UsageError("give node names or --all, not both")
    names = (
        []
        if all_nodes
        else [ref.name for ref in parse_specs(specs, config.pools, allow_distro=False)]
    )
    ws = Workspace.open(config)
    if all_nodes:
        names = [mark.name for _, mark in hypervisor.vnode_domains(ws.conn, config.paths.nodes)]
    for name in names:
        domain = hypervisor.lookup(ws.conn, name)
        if domain is not None and hypervisor.owned_mark(domain, config.paths.nodes) is None:
            raise UsageError(f"domain {name} was not made by vnode here; not touching it")
    # Each removal mostly waits on libvirt (QEMU's exit, dnsmasq's reload): do them together.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(names) or 1)) as pool:
        outcomes = pool.map(lambda name: _destroy_one(ws, name), names)
        return dict(zip(names, outcomes, strict=True))


def _destroy_one(ws: Workspace, name: str) -> str:
    # The node's lock makes destroy wait for an `up` still working on the same node.
    with file_lock(node_lock_path(ws.config.paths.locks, name)):
        domain = hypervisor.lookup(ws.conn, name)
        if domain is None:
            return "absent"
        remove_node(ws, domain)
        return "destroyed"


def list_nodes(config: Config | None = None) -> list[NodeInfo]:
    """Every node vnode made on the configured libvirt URI."""
    config = config or load_config()
    ws = Workspace.open(config)
    nodes = []
    for domain, mark in hypervisor.vnode_domains(ws.conn, config.paths.nodes):
        state, _ = hypervisor.state_of(domain)
        nodes.append(
            NodeInfo(
                name=mark.name,
                distro=mark.distro,
                state=state,
                mac=mark.mac,
                ip=_known_address(mark, config),
                network=mark.network,
                created=mark.created,
            )
        )
    return nodes


def ssh_argv(node: str, command: list[str], config: Config | None = None) -> list[str]:
    """The ``ssh`` command line that reaches a node as root, checking its host key strictly."""
    config = config or load_config()
    mark = _mark_of(node, config)
    address = _known_address(mark, config)
    if not address:
        raise EnvironmentProblem(f"{mark.name}: its address is not known yet")
    key = client_key(config.paths.ssh, config.ssh.key)
    return [
        "ssh",
        "-i",
        str(key.private_path),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={config.paths.ssh / 'known_hosts'}",
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


def console_log(node: str, config: Config | None = None) -> Path:
    """The file holding the node's serial console since boot."""
    config = config or load_config()
    return Path(_mark_of(node, config).console)


def plugins() -> list[PluginInfo]:
    """Every plugin found through the ``vnode.plugins`` entry points, broken ones included."""
    return list(load_plugins().infos)


def doctor(network: str | None = None, config: Config | None = None) -> list[Verdict]:
    """One verdict (ok, warn, fail) per host check; ``network`` overrides the configured one."""
    from vnode.doctor import run_checks

    return run_checks(config, network)


def bridge_plan(iface: str, name: str = "br0", zone: str | None = None) -> BridgePlan:
    """The commands that make bridge ``name`` out of host NIC ``iface``; nothing is run."""
    from vnode.hostbridge import plan_for_host

    return plan_for_host(iface, name, zone)


def bridge_create(
    plan: BridgePlan, on_step: Callable[[Step, str], None] = lambda step, outcome: None
) -> None:
    """Run a :func:`bridge_plan` through NetworkManager (EnvironmentProblem if it is absent)."""
    from vnode.hostbridge import apply_plan

    apply_plan(plan, on_step)


def _mark_of(node: str, config: Config) -> hypervisor.DomainMark:
    ref = parse_specs([node], config.pools, allow_distro=False)[0]
    ws = Workspace.open(config)
    domain = hypervisor.lookup(ws.conn, ref.name)
    mark = hypervisor.owned_mark(domain, config.paths.nodes) if domain is not None else None
    if mark is None:
        raise UsageError(f"no node {ref.name} made by vnode")
    return mark


def _known_address(mark: hypervisor.DomainMark, config: Config) -> str | None:
    if mark.ip:
        return mark.ip
    identity = NodeIdentity(name=mark.name, number=mark.number, pool=mark.pool, mac=mark.mac)
    try:
        return network_backend(mark.network, config).discover_address(identity)
    except (UsageError, EnvironmentProblem):
        return None


def _effective_defaults(defaults: Defaults, options: UpOptions) -> Defaults:
    overrides = {
        key: value
        for key in ("distro", "memory", "vcpus", "disk", "timeout", "virt_type", "network")
        if (value := getattr(options, key)) is not None
    }
    try:
        return attrs.evolve(defaults, **overrides)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad option: {exc}") from None


def _network_choice(network: str) -> str:
    """``--network NAME`` names a libvirt network unless it says ``KIND:ARG`` or a bare kind."""
    if ":" in network:
        return network
    kinds = all_answers("vnode_network_kinds")
    return network if network in kinds else f"libvirt:{network}"


def _plan(ref: NodeRef, defaults: Defaults, config: Config, backend: NetworkBackend) -> NodePlan:
    distro = resolve_distro(ref.distro or defaults.distro)
    return NodePlan(
        name=ref.name,
        number=ref.number,
        pool=ref.pool.stem,
        mac=ref.mac,
        distro=distro,
        memory_mib=defaults.memory,
        vcpus=defaults.vcpus,
        disk_gb=defaults.disk,
        network=backend.describe(),
        virt_type=defaults.virt_type,
        node_dir=config.paths.nodes / ref.name,
    )


def _preflight(
    ws: Workspace,
    plans: list[NodePlan],
    backend: NetworkBackend,
    *,
    fetch: bool = False,
    reporter: Reporter | None = None,
) -> None:
    """Everything that can be known wrong before anything is created or destroyed."""
    # Imported here: the image store pulls in the HTTP client, which `vnode list` never needs.
    from vnode import images

    for plan in plans:
        domain = hypervisor.lookup(ws.conn, plan.name)
        if domain is not None and hypervisor.owned_mark(domain, ws.config.paths.nodes) is None:
            raise UsageError(
                f"domain {plan.name} exists and vnode did not create it; refusing to replace it"
            )
    distros = {plan.distro for plan in plans}
    if fetch:
        images.ensure_images(distros, ws.config, reporter)
    for distro in distros:
        image = images.image_path(distro, ws.config)
        if not image.exists():
            raise EnvironmentProblem(images.missing_message(distro, image))
        if problem := unreadable_by_qemu(image):
            raise EnvironmentProblem(f"image for {distro.name}: {problem}")
    state = ws.config.paths.state.resolve()
    if state == Path("/root") or Path("/root") in state.parents:
        raise EnvironmentProblem(
            f"paths.state {state} is under /root, which the qemu user cannot read"
        )
    backend.check(plans)

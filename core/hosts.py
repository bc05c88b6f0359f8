"""Several hypervisor hosts: ``[[hosts]]`` in the config, and where each node goes.

Placement is pure logic, decided once while planning (the plan holds each node's host):

1. a node pinned with ``--host`` or ``NUM@host`` goes there;
2. a node that exists already goes back to the host it is on (a re-create does not move it);
3. a new node goes to the allowed host with the most free capacity (memory budget first,
   then node slots), counting what this same ``up`` has already put there.

A pool may be bound to hosts (``[[pools]] hosts = [...]``): its nodes go nowhere else.
Budgets are respected: a node that fits on no allowed host is a UsageError before anything
is created.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from vnode.errors import UsageError

LOCAL = "local"  # the host's name when the config has no [[hosts]]


def _check_subnet(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return
    try:
        ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise UsageError(f"host {instance.name}: subnet {value!r}: {exc}") from None


@attrs.frozen
class Host:
    """One ``[[hosts]]`` table: a libvirt host vnode drives over its URI."""

    name: str = attrs.field(validator=attrs.validators.matches_re(r"^[A-Za-z][A-Za-z0-9_.-]*$"))
    uri: str = "qemu:///system"
    # Budgets; None means "from the host's own capacity" (memory, CPUs) or "no limit" (nodes).
    max_nodes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    max_memory: int | None = attrs.field(  # MiB
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    max_vcpus: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    # The subnet of vnode's libvirt network on this host; None: vnode picks a disjoint one.
    subnet: str | None = attrs.field(default=None, validator=_check_subnet)
    # vnode's storage pool there (a directory pool, made on first use); None only for the
    # implicit host of a lab without [[hosts]], whose node files live in the state directory.
    pool: str | None = attrs.field(
        default="vnode",
        validator=attrs.validators.optional(attrs.validators.matches_re(r"^[\w.-]+$")),
    )
    pool_dir: str = "/var/lib/vnode/pool"
    # For reaching nodes through the host (SSH jump): its host key is checked against this
    # file (default ~/.ssh/known_hosts), with this key (default: the user's own keys).
    known_hosts: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    identity: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))

    @property
    def is_local(self) -> bool:
        """Whether the hypervisor runs on this machine (its files are this machine's)."""
        return not urlsplit(self.uri).hostname

    def jump(self) -> tuple[str, str, int] | None:
        """(user, address, port) to reach this host by SSH when its URI goes over SSH."""
        parts = urlsplit(self.uri)
        if not parts.scheme.endswith("+ssh") or not parts.hostname:
            return None
        return parts.username or "root", parts.hostname, parts.port or 22


def lab_hosts(config: Any) -> tuple[Host, ...]:
    """The lab's hosts: the ``[[hosts]]`` of the config, or with none the one implicit host
    ``local`` at ``[defaults] uri``, whose node files stay in the state directory as they
    always did. The one place that reads ``config.hosts``: everything else sees a fleet."""
    if config.hosts:
        return tuple(config.hosts)
    return (Host(name=LOCAL, uri=config.defaults.uri, pool=None),)


def check_hosts(hosts: Sequence[Host]) -> None:
    """Names and URIs are unique; configured subnets do not overlap."""
    names = [h.name for h in hosts]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"config: [[hosts]] name {name!r} is used twice")
    uris = [h.uri for h in hosts]
    for uri in uris:
        if uris.count(uri) > 1:
            raise UsageError(f"config: [[hosts]] uri {uri!r} is used twice")
    nets = [(h.name, ipaddress.IPv4Network(h.subnet)) for h in hosts if h.subnet]
    for i, (name, net) in enumerate(nets):
        for other, other_net in nets[i + 1 :]:
            if net.overlaps(other_net):
                raise UsageError(f"config: hosts {name} and {other} have overlapping subnets")


def state_dir(state: Path, host: Host, local_uri: str) -> Path:
    """Where vnode and the plugins keep what they record about one host (a network they
    created, ...). The host a lab without ``[[hosts]]`` uses (``local_uri``) keeps the lab's
    own state directory whatever the host is called, so naming it in ``[[hosts]]`` later
    finds what was made before; every other host has a directory of its own."""
    if host.uri == local_uri:
        return state
    return state / "hosts" / host.name


def adopt_legacy_state(state: Path, host: Host, local_uri: str) -> None:
    """Earlier versions kept a listed host's records under ``hosts/NAME`` even for the lab's
    own host: move what is there and not in its state directory now, so nothing made then is
    taken for someone else's."""
    target = state_dir(state, host, local_uri)
    legacy = state / "hosts" / host.name
    if target == legacy or not legacy.is_dir():
        return
    import shutil  # only for this one-time move: quick commands do not pay for it

    for path in sorted(legacy.rglob("*")):
        moved = target / path.relative_to(legacy)
        if path.is_file() and not moved.exists():
            moved.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, moved)
    # What both places hold stays where it is: the one in use wins, the other is not lost.
    for path in sorted(legacy.rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if not any(legacy.iterdir()):
        legacy.rmdir()


@attrs.frozen
class Capacity:
    """A host's budgets as placement uses them (None: no limit)."""

    nodes: int | None = None
    memory_mib: int | None = None
    vcpus: int | None = None


def capacity_of(host: Host, memory_mib: int | None, cpus: int | None) -> Capacity:
    """The configured budgets, else the host's own memory; vCPUs are not limited unless the
    config says so (TCG and KVM guests overcommit CPUs routinely, memory they cannot). The
    implicit host of a lab without [[hosts]] has no budget: there is no other host to choose,
    and libvirt says when QEMU cannot have the memory."""
    if host.pool is None:
        return Capacity()
    return Capacity(
        nodes=host.max_nodes,
        memory_mib=host.max_memory if host.max_memory is not None else memory_mib,
        vcpus=host.max_vcpus,
    )


@attrs.frozen
class Load:
    """One node's claim on a host."""

    name: str
    memory_mib: int
    vcpus: int


@attrs.frozen
class Request:
    """A node ``up`` is about to make."""

    name: str
    memory_mib: int
    vcpus: int
    pin: str | None = None  # --host or NUM@host
    allowed: tuple[str, ...] = ()  # the pool's hosts; empty: any


def place(
    requests: Sequence[Request],
    hosts: Sequence[str],
    capacity: Mapping[str, Capacity],
    existing: Mapping[str, tuple[str, Load]],
) -> dict[str, str]:
    """Each requested node's host (see the module's docstring for the rules).

    ``existing`` maps every node vnode has on any host to (its host, its load); the nodes
    being re-created free their share first.
    """
    known = set(hosts)
    requested = {r.name for r in requests}
    used: dict[str, list[Load]] = {h: [] for h in hosts}
    for name, (host, load) in existing.items():
        if name not in requested and host in used:
            used[host].append(load)
    placed: dict[str, str] = {}

    def fits(host: str, request: Request) -> str | None:
        cap = capacity.get(host, Capacity())
        loads = used[host]
        if cap.nodes is not None and len(loads) + 1 > cap.nodes:
            return f"{host} has room for {cap.nodes} node(s)"
        memory = sum(load.memory_mib for load in loads) + request.memory_mib
        if cap.memory_mib is not None and memory > cap.memory_mib:
            return f"{host}'s memory budget is {cap.memory_mib} MiB"
        vcpus = sum(load.vcpus for load in loads) + request.vcpus
        if cap.vcpus is not None and vcpus > cap.vcpus:
            return f"{host}'s vCPU budget is {cap.vcpus}"
        return None

    def free(host: str) -> tuple[float, float, int]:
        cap = capacity.get(host, Capacity())
        loads = used[host]
        memory = (
            cap.memory_mib - sum(load.memory_mib for load in loads)
            if cap.memory_mib is not None
            else float("inf")
        )
        slots = cap.nodes - len(loads) if cap.nodes is not None else float("inf")
        # Host order breaks ties: the first configured host fills first.
        return memory, slots, -hosts.index(host)

    for request in requests:
        for named in (request.pin, *request.allowed):
            if named is not None and named not in known:
                raise UsageError(
                    f"{request.name}: no host {named!r} in [[hosts]] "
                    f"(configured: {', '.join(hosts)})"
                )
        allowed = list(request.allowed) or list(hosts)
        if request.pin is not None:
            if request.pin not in allowed:
                raise UsageError(
                    f"{request.name}: its pool is bound to {', '.join(allowed)}, not {request.pin}"
                )
            choice = request.pin
        elif request.name in existing and existing[request.name][0] in allowed:
            choice = existing[request.name][0]
        else:
            fitting = [h for h in allowed if fits(h, request) is None]
            if not fitting:
                reasons = "; ".join(str(fits(h, request)) for h in allowed)
                raise UsageError(f"{request.name} fits on no host: {reasons}")
            choice = max(fitting, key=free)
        if problem := fits(choice, request):
            raise UsageError(f"{request.name} does not fit on {choice}: {problem}")
        used[choice].append(Load(request.name, request.memory_mib, request.vcpus))
        placed[request.name] = choice
    return placed

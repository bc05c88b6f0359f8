"""Making many nodes at once: create in worker threads, then wait for all of them concurrently."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vnode import hypervisor
from vnode.console import tail, tail_text
from vnode.errors import EnvironmentProblem
from vnode.keys import ClientKey
from vnode.locks import FileLock, node_lock_path
from vnode.logs import get_logger
from vnode.model import NodePlan, NodeResult
from vnode.network import NetworkBackend
from vnode.nodes import CreatedNode, NodeStore, create_node, remove_node
from vnode.progress import Reporter
from vnode.remote import RemoteTarget
from vnode.sshwait import Jump, WaitTarget, wait_ready
from vnode.waiting import after_ready, domain_problem

if TYPE_CHECKING:
    from vnode.planning import After
    from vnode.warm import WarmSource

log = get_logger("vnode.scheduler")


def run_up(
    stores: Mapping[str, NodeStore],
    locks_dir: Path,
    plans: list[NodePlan],
    backends: Mapping[str, NetworkBackend],
    client: ClientKey,
    *,
    started: float,
    timeout: float,
    wait: bool,
    keep_failed: bool,
    reporter: Reporter,
    after: After | None = None,
    jumps: Mapping[str, Jump] | None = None,
    failed: Mapping[str, str] | None = None,
    warm: Mapping[str, WarmSource] | None = None,
) -> list[NodeResult]:
    """Make and wait for the nodes; ``stores``, ``backends`` and ``jumps`` (how to reach a
    host's nodes through it) are per host, by the plan's ``host``. Nodes in ``failed`` (their
    host failed its preflight) are only reported. ``after``: what follows SSH answering
    (--wait-cloud-init, --run, --script). ``warm``: the nodes made from a template
    (vnode.warm) instead of booted cold."""
    from vnode.planning import After

    scheduler = _Scheduler(
        stores,
        locks_dir,
        backends,
        client,
        started,
        started + timeout,
        wait,
        keep_failed,
        reporter,
        after or After(),
        jumps or {},
        failed or {},
        dict(warm or {}),
    )
    return asyncio.run(scheduler.run(plans))


class _StartingGate:
    """Holds started-but-paused nodes until every node of the command has been made.

    Making a node costs host CPU (QEMU's start-up, libvirt's probing of the new guest);
    guests that already boot would compete for it, and under plain emulation they take
    all they get. So all nodes are made first and then released together.
    """

    def __init__(self, nodes: int) -> None:
        self._left = nodes
        self._open = asyncio.Event()
        if nodes == 0:
            self._open.set()

    def arrive(self) -> None:
        """One node is made (or failed, or will not wait here)."""
        self._left -= 1
        if self._left <= 0:
            self._open.set()

    async def opened(self) -> None:
        await self._open.wait()


@attrs.frozen
class _Scheduler:
    stores: Mapping[str, NodeStore]
    locks_dir: Path
    backends: Mapping[str, NetworkBackend]
    client: ClientKey
    started: float
    deadline: float
    wait: bool
    keep_failed: bool
    reporter: Reporter
    after: After
    jumps: Mapping[str, Jump] = attrs.field(factory=dict)
    failed: Mapping[str, str] = attrs.field(factory=dict)
    warm: dict[str, WarmSource] = attrs.field(factory=dict)

    async def run(self, plans: list[NodePlan]) -> list[NodeResult]:
        # One thread per node: creation is mostly waiting on libvirt and qemu-img.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(64, len(plans) + 4))
        asyncio.get_running_loop().set_default_executor(pool)
        gate = _StartingGate(len(plans))
        try:
            # return_exceptions: on Ctrl-C, gather then waits for every node's task to finish
            # its cleanup, instead of ending with the first one cancelled.
            outcomes = await asyncio.gather(
                *(self._one(plan, gate) for plan in plans), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            return outcomes
        finally:
            pool.shutdown(wait=True)

    async def _one(self, plan: NodePlan, gate: _StartingGate) -> NodeResult:
        lock = FileLock(node_lock_path(self.locks_dir, plan.name))
        if not lock.try_acquire():
            # Another vnode holds this node, maybe for minutes: the others do not wait for it.
            gate.arrive()
            gate = _StartingGate(0)  # open: this node starts as soon as it is made
            self.reporter.phase(plan.name, "waiting for another vnode working on it")
            await asyncio.to_thread(lock.acquire)
        try:
            return await self._make_and_wait(plan, gate)
        finally:
            lock.release()

    async def _make_and_wait(self, plan: NodePlan, gate: _StartingGate) -> NodeResult:
        if plan.name in self.failed:
            gate.arrive()
            return self._result(plan, None, "failed", self.failed[plan.name])
        self.reporter.phase(plan.name, "creating")
        try:
            created = await self._make(plan, gate)
        except Exception as exc:
            log.bind(node=plan.name).warning("create failed", error=str(exc))
            return self._result(plan, None, "failed", f"create failed: {exc}")
        if not self.wait:
            return self._result(plan, plan.address.ip if plan.address else None, "started", None)
        outcome = await wait_ready(
            self._target(created), self.deadline, lambda text: self.reporter.phase(plan.name, text)
        )
        detail = outcome.detail
        if outcome.state == "ready" and outcome.ip and not plan.address:
            await asyncio.to_thread(_record_address, created, outcome.ip)
        if outcome.state != "ready":
            detail = self._explain(created, detail)
            if not self.keep_failed:
                try:
                    await asyncio.to_thread(
                        remove_node,
                        self.stores[plan.host],
                        plan,
                        self.backends[plan.host],
                        quiet=True,
                    )
                    detail += " (node removed; --keep-failed keeps it)"
                except Exception as exc:  # its host is gone: say what is left there
                    detail += f" (left on {plan.host}, could not be removed: {exc})"
            return self._result(plan, outcome.ip, outcome.state, detail)
        assert outcome.ip is not None
        target = RemoteTarget(
            plan.name,
            outcome.ip,
            created.host_key,
            self.client.private_path,
            jump=self.jumps.get(plan.host),
        )
        state, detail, extra = await after_ready(target, self.after, self.deadline, self.reporter)
        return self._result(plan, outcome.ip, state, detail, **extra)

    async def _make(self, plan: NodePlan, gate: _StartingGate) -> CreatedNode:
        """Make the node paused, then let it run once the gate opens.

        On Ctrl-C (this task cancelled) the thread making the node still finishes or rolls
        back, and a node it made is let run: whatever is left behind is whole and running.
        """
        making = asyncio.ensure_future(asyncio.to_thread(self._create, plan))
        try:
            try:
                await asyncio.shield(making)
            finally:
                gate.arrive()
            self.reporter.phase(plan.name, "made; starting with the others")
            await gate.opened()
        finally:
            await asyncio.wait([making])
            if not making.cancelled() and making.exception() is None:
                resume = _resume_clone if plan.name in self.warm else _resume
                await asyncio.shield(asyncio.to_thread(resume, making.result()))
        return making.result()

    def _create(self, plan: NodePlan) -> CreatedNode:
        """Make the node paused: from its warm template, or booted cold."""
        store, backend = self.stores[plan.host], self.backends[plan.host]
        source = self.warm.get(plan.name)
        if source is None:
            return create_node(store, plan, backend, self.client, paused=True)
        from vnode.warm import create_clone

        with held_template(self.locks_dir, source, plan.name):
            return create_clone(store, plan, source, backend, self.client, paused=True)

    def _result(
        self, plan: NodePlan, ip: str | None, state: str, detail: str | None, **extra: Any
    ) -> NodeResult:
        seconds = round(time.monotonic() - self.started, 2)
        self.reporter.phase(
            plan.name, state if not detail else f"{state}: {detail.splitlines()[0]}"
        )
        return NodeResult(
            name=plan.name,
            distro=plan.distro.name,
            mac=plan.mac,
            ip=ip,
            state=state,
            seconds=seconds if state in ("ready", "started") else None,
            detail=detail,
            boot="warm" if plan.name in self.warm else "cold",
            **extra,
        )

    def _target(self, created: CreatedNode) -> WaitTarget:
        plan = created.plan
        return WaitTarget(
            name=plan.name,
            host_key=created.host_key,
            client_key=self.client.private_path,
            domain_problem=lambda: domain_problem(
                created.domain, plan.virt_type, local=self.stores[plan.host].pool is None
            ),
            address=lambda: self.backends[plan.host].discover_address(plan, _console_path(plan)),
            jump=self.jumps.get(plan.host),
        )

    def _explain(self, created: CreatedNode, detail: str | None) -> str:
        store = self.stores[created.plan.host]
        if store.pool is not None:
            lines = pooled_console_tail(store, created.plan.name, 5)
        else:
            console_path = _console_path(created.plan)
            lines = tail(console_path, 5) if console_path else []
        console = "\n".join(f"    console| {line}" for line in lines) or "    (console is empty)"
        return f"{detail}\n{console}"


def _console_path(plan: NodePlan) -> Path | None:
    return plan.console.log_path if plan.console else None


def _record_address(created: CreatedNode, ip: str) -> None:
    try:
        hypervisor.record_address(created.domain, ip)
    except hypervisor.HypervisorError as exc:  # list and ssh will learn it again
        log.bind(node=created.plan.name).warning("could not record the address", error=str(exc))


@contextlib.contextmanager
def held_template(locks_dir: Path, source: WarmSource, node: str) -> Iterator[None]:
    """The template's lock, shared with the other clones and exclusive for `template
    remove`: the template cannot go from under a clone until its overlay exists (from then
    on the clone is one of its users). A template removed before is one line."""
    from vnode.locks import file_lock

    template, storage = source.template, source.storage
    with file_lock(locks_dir / storage.lock_name(template.key), shared=True):
        still = storage.read(template.key)
        if still is None or still.damage is not None:
            raise EnvironmentProblem(
                f"template {template.key} was removed before {node} could be cloned from it; "
                "run again"
            )
        yield


def _resume_clone(created: CreatedNode) -> None:
    from vnode.warm import resume_clone

    try:
        resume_clone(created.domain)
    except hypervisor.HypervisorError as exc:
        log.bind(node=created.plan.name).warning("could not resume", error=str(exc))


def _resume(created: CreatedNode) -> None:
    try:
        hypervisor.resume(created.domain)
    except hypervisor.HypervisorError as exc:
        # The wait sees the domain still paused and fails the node with the reason.
        log.bind(node=created.plan.name).warning("could not resume", error=str(exc))


def pooled_console_tail(store: NodeStore, name: str, lines: int) -> list[str]:
    """The last lines of a node's console log kept as a volume in its host's pool."""
    try:
        data = hypervisor.volume_tail(store.conn, store.pool, f"{name}-console.log")
    except hypervisor.HypervisorError:
        return []
    return tail_text(data.decode(errors="replace"), lines) if data else []

"""The wait, for ``up`` (the nodes it makes, :mod:`vnode.scheduler`) and ``vnode wait`` (nodes
that exist, wherever they are in the lab) alike: the SSH wait (:mod:`vnode.sshwait`), what a
domain that stopped running says (:func:`domain_problem`), and what follows SSH answering
(:func:`after_ready`: --wait-cloud-init, --run, --script)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vnode import hypervisor, lab
from vnode.console import qemu_error
from vnode.errors import UsageError
from vnode.model import NodeResult
from vnode.planning import After
from vnode.remote import RemoteTarget, run_steps, wait_cloud_init

if TYPE_CHECKING:
    from vnode.progress import Reporter
    from vnode.session import Session


def wait(
    session: Session,
    specs: list[str],
    *,
    timeout: float | None,
    after: After,
    reporter: Reporter,
    started: float,
) -> list[NodeResult]:
    """Ready when root logs in over SSH with the host key vnode recorded, then ``after``. A
    stopped node fails at once. ``timeout`` counts from ``started``."""
    if not specs:
        raise UsageError("name nodes to wait for, e.g. `vnode wait 1-3`")
    timeout = timeout if timeout is not None else session.config.defaults.timeout
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    located = lab.locate(session, specs)
    client = session.client_key()
    targets = [(place, session.known_hosts.get(place.mark.name)) for place in located]
    return asyncio.run(
        _wait_all(targets, client.private_path, started, started + timeout, after, reporter)
    )


async def _wait_all(
    targets: list[tuple[lab.Located, str | None]],
    client_key: Path,
    started: float,
    deadline: float,
    after: After,
    reporter: Reporter,
) -> list[NodeResult]:
    from vnode.sshwait import WaitTarget, wait_ready

    async def one(place: lab.Located, host_key: str | None) -> NodeResult:
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
        target = WaitTarget(
            name=mark.name,
            host_key=host_key,
            client_key=client_key,
            domain_problem=lambda: domain_problem(domain, "qemu", local=place.view.host.is_local),
            address=place.address,
            jump=place.jump,
        )
        outcome = await wait_ready(target, deadline, lambda text: reporter.phase(mark.name, text))
        if outcome.state != "ready":
            return result(outcome.state, outcome.ip, outcome.detail)
        assert outcome.ip is not None
        remote = RemoteTarget(mark.name, outcome.ip, host_key, client_key, jump=place.jump)
        state, detail, extra = await after_ready(remote, after, deadline, reporter)
        return result(state, outcome.ip, detail, **extra)

    return await asyncio.gather(*(one(*target) for target in targets))


async def after_ready(
    target: RemoteTarget, after: After, deadline: float, reporter: Reporter
) -> tuple[str, str | None, dict[str, Any]]:
    """What follows SSH answering: cloud-init's end (--wait-cloud-init), then the lab's
    commands. (state, detail, result extras); a failure is "failed", the node is kept."""
    steps = after.steps
    if after.wait_cloud_init:
        reporter.phase(target.name, "waiting for cloud-init")
        if problem := await wait_cloud_init(target, deadline):
            return "failed", f"{problem} (node kept)", {}
    if not steps:
        return "ready", None, {}
    reporter.phase(target.name, "running " + ", ".join(step.label for step in steps))
    output = getattr(reporter, "output", None)

    def on_line(line: str) -> None:
        if output is not None:
            output(target.name, line)

    try:
        outcome = await run_steps(target, steps, on_line)
    except Exception as exc:  # asyncssh's and the socket's errors: the node is still there
        return "failed", f"run: {type(exc).__name__}: {exc} (node kept)", {}
    extra = {"exit_status": outcome.exit_status, "output": outcome.output}
    if outcome.exit_status != 0:
        detail = f"{outcome.failed_step}: exit status {outcome.exit_status} (node kept)"
        return "failed", detail, extra
    return "ready", None, extra


def domain_problem(domain: Any, virt_type: str, *, local: bool = True) -> str | None:
    """Why a started domain is no longer running, in words a user can act on; None if fine."""
    try:
        state, reason = hypervisor.state_of(domain)
    except hypervisor.HypervisorError as exc:
        return f"domain vanished: {exc}"
    if state in ("running", "blocked"):
        return None
    name = domain.name()
    words = f"domain {state}" + (f" ({reason})" if reason else "")
    # QEMU's own log is a local file: only the local host's (file-based) nodes have it here.
    if local and (error := qemu_error(name)):
        words += f": {error}"
    if virt_type == "kvm":
        words += "; KVM may not work for guests on this host (nested?): try --virt-type qemu"
    return words

"""``vnode wait``: wait for nodes that exist as ``up`` waits for the nodes it makes (the same
SSH wait, the same steps after it, the same results), wherever they are in the lab."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vnode import lab
from vnode.errors import UsageError
from vnode.model import NodeResult
from vnode.planning import After

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
    from vnode.remote import RemoteTarget
    from vnode.scheduler import after_ready, domain_problem
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

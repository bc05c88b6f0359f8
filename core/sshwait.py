"""Waiting until a node answers an authenticated SSH command, while watching its domain.

Ready means: root logged in with vnode's key, the host key matched the one vnode generated,
and ``hostname`` printed the node's name. A cheap TCP probe comes first so that the costly
handshake only starts once sshd listens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from vnode.logs import get_logger

log = get_logger("vnode.wait")

_PROBE_INTERVAL = 0.5


@attrs.frozen
class WaitOutcome:
    state: str  # "ready", "timeout" or "failed"
    ip: str | None
    detail: str | None = None


@attrs.frozen
class WaitTarget:
    name: str
    host_key: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    # Blocking callables, run in threads: the domain's health and the node's address.
    domain_problem: Callable[[], str | None]
    address: Callable[[], str | None]
    port: int = 22


async def wait_ready(
    target: WaitTarget, deadline: float, on_phase: Callable[[str], None]
) -> WaitOutcome:
    import asyncssh

    host_key = asyncssh.import_public_key(target.host_key)
    client_key = asyncssh.read_private_key(target.client_key)
    ip: str | None = None
    last_error = "no address yet"
    phase = ""

    def enter(new: str) -> None:
        nonlocal phase
        if new != phase:
            phase = new
            on_phase(new)

    while time.monotonic() < deadline:
        problem = await asyncio.to_thread(target.domain_problem)
        if problem:
            return WaitOutcome(state="failed", ip=ip, detail=problem)
        ip = ip or await asyncio.to_thread(target.address)
        if ip is None:
            enter("waiting for address")
            await asyncio.sleep(1.0)
            continue
        enter("booting")
        if not await _port_open(ip, target.port, deadline):
            last_error = f"{ip}:{target.port} not answering"
            await asyncio.sleep(_PROBE_INTERVAL)
            continue
        enter("ssh handshake")
        try:
            name = await _run_hostname(asyncssh, ip, target.port, host_key, client_key, deadline)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            # sshd can be up before cloud-init installed the key; try again.
            last_error = f"ssh {ip}: {type(exc).__name__}: {exc}".strip()
            log.debug("ssh not ready", node=target.name, error=last_error)
            await asyncio.sleep(_PROBE_INTERVAL)
            continue
        if name == target.name:
            return WaitOutcome(state="ready", ip=ip)
        last_error = f"ssh {ip}: hostname is {name!r}, not {target.name!r}"
        await asyncio.sleep(_PROBE_INTERVAL)
    return WaitOutcome(state="timeout", ip=ip, detail=last_error)


async def _port_open(ip: str, port: int, deadline: float) -> bool:
    timeout = max(0.1, min(1.0, deadline - time.monotonic()))
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _run_hostname(asyncssh, ip, port, host_key, client_key, deadline: float) -> str:
    timeout = max(1.0, deadline - time.monotonic())
    async with asyncio.timeout(timeout):
        async with asyncssh.connect(
            ip,
            port=port,
            username="root",
            client_keys=[client_key],
            known_hosts=([host_key], [], []),
            server_host_key_algs=[host_key.get_algorithm()],
            agent_path=None,
            preferred_auth=("publickey",),
            login_timeout=timeout,
        ) as conn:
            result = await conn.run("hostname", check=True)
    return str(result.stdout).strip()

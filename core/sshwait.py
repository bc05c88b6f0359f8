"""Waiting until a node answers an authenticated SSH command, while watching its domain.

Ready means: root logged in with vnode's key, the host key matched the one vnode generated,
and ``hostname`` printed the node's name. A cheap TCP connection comes first so that the costly
handshake only starts once sshd listens; on a direct path that connection is the one the
handshake then uses (a probe closed at once costs the guest's sshd a fork and re-exec of
itself: a second or more under plain emulation, right when the guest is busiest).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from vnode.logs import get_logger

log = get_logger("vnode.wait")

# A refused connection costs the guest's kernel a reset, no process: probe often.
_PROBE_INTERVAL = 0.25


@attrs.frozen
class WaitOutcome:
    state: str  # "ready", "timeout" or "failed"
    ip: str | None
    detail: str | None = None


@attrs.frozen
class Jump:
    """A hypervisor to reach its nodes through (their network is not routable from here):
    an SSH connection to it carries the probes and the handshake (direct-tcpip channels).
    Its host key is checked strictly against ``known_hosts`` (None: ~/.ssh/known_hosts)."""

    host: str
    user: str = "root"
    port: int = 22
    known_hosts: Path | None = None
    identity: Path | None = None  # None: the user's default keys


@attrs.frozen
class WaitTarget:
    name: str
    host_key: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    # Blocking callables, run in threads: the domain's health and the node's address.
    domain_problem: Callable[[], str | None]
    address: Callable[[], str | None]
    jump: Jump | None = None
    port: int = 22


async def wait_ready(
    target: WaitTarget, deadline: float, on_phase: Callable[[str], None]
) -> WaitOutcome:
    import asyncssh

    tunnel = JumpTunnel(asyncssh, target.jump) if target.jump else None
    try:
        return await _wait(asyncssh, target, deadline, on_phase, tunnel)
    finally:
        if tunnel is not None:
            tunnel.close()


class JumpTunnel:
    """One SSH connection to the jump host, opened on first use, opened again once lost."""

    def __init__(self, asyncssh: Any, jump: Jump) -> None:
        self._asyncssh = asyncssh
        self._jump = jump
        self._conn: Any = None

    async def get(self, deadline: float) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        jump = self._jump
        timeout = max(1.0, min(10.0, deadline - time.monotonic()))
        options: dict[str, Any] = {}
        if jump.known_hosts is not None:
            options["known_hosts"] = str(jump.known_hosts)
        if jump.identity is not None:
            options["client_keys"] = [str(jump.identity)]
        async with asyncio.timeout(timeout):
            self._conn = await self._asyncssh.connect(
                jump.host,
                port=jump.port,
                username=jump.user,
                agent_path=None,
                preferred_auth=("publickey",),
                login_timeout=timeout,
                **options,
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def _wait(
    asyncssh: Any,
    target: WaitTarget,
    deadline: float,
    on_phase: Callable[[str], None],
    tunnel: JumpTunnel | None,
) -> WaitOutcome:
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
        via = None
        if tunnel is not None:
            try:
                via = await tunnel.get(deadline)
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                last_error = f"ssh to the hypervisor {target.jump.host}: {exc}"  # type: ignore[union-attr]
                await asyncio.sleep(_PROBE_INTERVAL)
                continue
        opened = await _port_open(ip, target.port, deadline, via)
        if not opened:
            last_error = f"{ip}:{target.port} not answering"
            await asyncio.sleep(_PROBE_INTERVAL)
            continue
        enter("ssh handshake")
        sock = opened if isinstance(opened, socket.socket) else None
        try:
            name = await _run_hostname(
                asyncssh, ip, target.port, host_key, client_key, deadline, via, sock
            )
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


async def _port_open(ip: str, port: int, deadline: float, via: Any = None) -> socket.socket | bool:
    """Whether the port answers: through the hypervisor, a channel opened and closed (True);
    directly, the connected socket itself, for the handshake to use; False if not."""
    timeout = max(0.1, min(1.0, deadline - time.monotonic()))
    if via is not None:  # a direct-tcpip channel from the hypervisor
        try:
            _, writer = await asyncio.wait_for(via.open_connection(ip, port), timeout)
        except Exception:  # refused, unreachable, timed out, or the channel was refused
            return False
        writer.close()
        return True
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), timeout)
    except Exception:  # refused, unreachable or timed out
        sock.close()
        return False
    return sock


async def _run_hostname(
    asyncssh,
    ip,
    port,
    host_key,
    client_key,
    deadline: float,
    via: Any = None,
    sock: socket.socket | None = None,
) -> str:
    timeout = max(1.0, deadline - time.monotonic())
    try:
        return await _hostname_over(
            asyncssh, ip, port, host_key, client_key, timeout, via or (), sock
        )
    finally:
        if sock is not None:
            sock.close()  # asyncssh's transport owns it once made; before that, nobody does


async def _hostname_over(asyncssh, ip, port, host_key, client_key, timeout, tunnel, sock) -> str:
    async with asyncio.timeout(timeout):
        async with asyncssh.connect(
            ip,
            port=port,
            tunnel=tunnel,
            sock=sock,
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

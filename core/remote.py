"""Running the lab's commands on a ready node over vnode's verified SSH (``--run``,
``--script``, ``--wait-cloud-init``).

The connection checks the host key vnode generated for the node, exactly as the ready check
does; output is streamed line by line to the caller, which prefixes it with the node's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from vnode.errors import UsageError
from vnode.sshwait import Jump, JumpTunnel

_OUTPUT_KEPT = 64 * 1024
# Runs the script given on stdin as a file, so its #! line chooses the interpreter.
_SCRIPT_RUNNER = 'f=$(mktemp) && cat > "$f" && chmod 700 "$f" && "$f"; rc=$?; rm -f "$f"; exit $rc'
# `cloud-init status --wait` exits 0 when done, 1 on error, 2 when done with recoverable
# errors (newer releases); the status line says which.
CLOUD_INIT_WAIT = "cloud-init status --wait >/dev/null 2>&1; rc=$?; cloud-init status; exit $rc"


@attrs.frozen
class RunStep:
    """One thing to run on every node: a command line, or a script fed on stdin."""

    label: str  # what the user gave: the command, or "script PATH"
    command: str
    stdin: str | None = None


def command_step(command: str) -> RunStep:
    if not command.strip():
        raise UsageError("--run: the command is empty")
    return RunStep(label=command, command=command)


def script_step(path: Path | str) -> RunStep:
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--script {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.startswith("#!"):
        text = "#!/bin/sh\n" + text
    return RunStep(label=f"script {shlex.quote(str(path))}", command=_SCRIPT_RUNNER, stdin=text)


@attrs.frozen
class RemoteTarget:
    name: str
    ip: str
    host_key: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    port: int = 22
    jump: Jump | None = None  # the node's hypervisor, when its network is not routable here


@attrs.frozen
class StepsOutcome:
    exit_status: int  # of the first step that failed; 0 when all passed
    output: str
    failed_step: str | None = None


@contextlib.asynccontextmanager
async def connect(target: RemoteTarget, timeout: float) -> AsyncIterator[Any]:
    """An SSH connection to the node (an SSHClientConnection), through its hypervisor when it
    has a jump; both are closed on exit."""
    import asyncssh

    tunnel = JumpTunnel(asyncssh, target.jump) if target.jump else None
    try:
        via = await tunnel.get(time.monotonic() + timeout) if tunnel else None
        async with await _connect_node(asyncssh, target, timeout, via) as conn:
            yield conn
    finally:
        if tunnel is not None:
            tunnel.close()


async def _connect_node(asyncssh: Any, target: RemoteTarget, timeout: float, via: Any) -> Any:
    host_key = asyncssh.import_public_key(target.host_key)
    return await asyncssh.connect(
        target.ip,
        tunnel=via,
        port=target.port,
        username="root",
        client_keys=[asyncssh.read_private_key(target.client_key)],
        known_hosts=([host_key], [], []),
        server_host_key_algs=[host_key.get_algorithm()],
        agent_path=None,
        preferred_auth=("publickey",),
        login_timeout=timeout,
    )


async def run_steps(
    target: RemoteTarget, steps: Sequence[RunStep], on_line: Callable[[str], None]
) -> StepsOutcome:
    """Run the steps in order on one node; stop at the first that fails."""
    import asyncssh

    kept: list[str] = []
    size = 0

    def take(line: str) -> None:
        nonlocal size
        on_line(line)
        kept.append(line)
        size += len(line) + 1
        while size > _OUTPUT_KEPT and len(kept) > 1:
            size -= len(kept.pop(0)) + 1

    async with connect(target, 60) as conn:
        for step in steps:
            async with conn.create_process(step.command, stderr=asyncssh.STDOUT) as process:
                if step.stdin is not None:
                    process.stdin.write(step.stdin)
                process.stdin.write_eof()
                async for line in process.stdout:
                    if line:  # the reader ends with an empty read at EOF
                        take(line.rstrip("\n"))
                await process.wait()
            status = process.exit_status
            if status is None:  # killed by a signal
                status = 128 + 15 if process.exit_signal else 255
            if status != 0:
                return StepsOutcome(status, "\n".join(kept), failed_step=step.label)
    return StepsOutcome(0, "\n".join(kept))


async def wait_cloud_init(target: RemoteTarget, deadline: float) -> str | None:
    """None once cloud-init reports done; otherwise why not (error, or the deadline)."""
    import asyncssh

    timeout = max(1.0, deadline - time.monotonic())
    try:
        async with asyncio.timeout(timeout):
            async with connect(target, timeout) as conn:
                async with conn.create_process(CLOUD_INIT_WAIT) as process:
                    process.stdin.write_eof()  # nothing to read: an open stdin may block
                    output = await process.stdout.read()
                    await process.wait()
                exit_status = process.exit_status
    except TimeoutError:
        return "cloud-init was not done before the timeout"
    except (OSError, asyncssh.Error) as exc:
        return f"waiting for cloud-init: {type(exc).__name__}: {exc}"
    status = str(output).strip().replace("\n", "; ")
    if exit_status in (0, 2):
        return None
    return f"cloud-init reports {status or f'exit status {exit_status}'}"

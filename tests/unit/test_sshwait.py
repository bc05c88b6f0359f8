"""Waiting for SSH, against a real SSH server in this process (asyncssh's), on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh

from tests.sshserver import RootKeyServer
from vnode.keys import generate_keypair, write_private
from vnode.sshwait import WaitOutcome, WaitTarget, wait_ready


async def _serve(
    name: str, host_key: str, client_public: str, connections: list[object] | None = None
) -> asyncssh.SSHAcceptor:
    authorized = asyncssh.import_authorized_keys(client_public + "\n")

    async def hostname(process: asyncssh.SSHServerProcess) -> None:
        process.stdout.write(name + "\n" if process.command == "hostname" else "")
        process.exit(0)

    return await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.import_private_key(host_key)],
        server_factory=lambda: _counted(RootKeyServer(authorized), connections),
        process_factory=hostname,
    )


def _counted(server: RootKeyServer, connections: list[object] | None) -> RootKeyServer:
    """asyncssh makes one server object per TCP connection it accepts."""
    if connections is not None:
        connections.append(server)
    return server


def _wait(
    tmp_path: Path,
    *,
    served_name: str = "vnode03",
    trusted_key: str | None = None,
    domain_problem: Callable[[], str | None] = lambda: None,
    address_after: float = 0.0,
    timeout: float = 20.0,
    serve: bool = True,
    connections: list[object] | None = None,
) -> WaitOutcome:
    host = generate_keypair("host")
    client = generate_keypair("client")
    client_path = tmp_path / "id_ed25519"
    write_private(client_path, client.private_openssh)
    started = time.monotonic()

    async def run() -> WaitOutcome:
        server = await _serve(served_name, host.private_openssh, client.public_openssh, connections)
        port = server.sockets[0].getsockname()[1]
        if not serve:
            server.close()
            await server.wait_closed()
        target = WaitTarget(
            name="vnode03",
            host_key=trusted_key or host.public_openssh,
            client_key=client_path,
            domain_problem=domain_problem,
            address=lambda: "127.0.0.1" if time.monotonic() - started >= address_after else None,
            port=port,
        )
        try:
            return await wait_ready(target, time.monotonic() + timeout, lambda text: None)
        finally:
            server.close()

    return asyncio.run(run())


def test_ready_once_root_logs_in_with_the_expected_host_key_and_name(tmp_path: Path) -> None:
    outcome = _wait(tmp_path, address_after=1.5)
    assert outcome == WaitOutcome(state="ready", ip="127.0.0.1")


def test_the_probe_connection_is_the_one_the_handshake_uses(tmp_path: Path) -> None:
    # A probe closed at once costs a guest's sshd a fork and re-exec (seconds under TCG).
    connections: list[object] = []
    outcome = _wait(tmp_path, connections=connections)
    assert outcome.state == "ready"
    assert len(connections) == 1


def test_a_different_host_key_is_never_ready(tmp_path: Path) -> None:
    impostor = generate_keypair("impostor").public_openssh
    outcome = _wait(tmp_path, trusted_key=impostor, timeout=4)
    assert outcome.state == "timeout"
    assert "host key" in (outcome.detail or "").lower()


def test_another_machine_answering_at_the_address_is_not_the_node(tmp_path: Path) -> None:
    outcome = _wait(tmp_path, served_name="vnode04", timeout=4)
    assert outcome.state == "timeout"
    assert outcome.detail == "ssh 127.0.0.1: hostname is 'vnode04', not 'vnode03'"


def test_nothing_listening_is_a_timeout_naming_the_port(tmp_path: Path) -> None:
    outcome = _wait(tmp_path, serve=False, timeout=3)
    assert outcome.state == "timeout"
    assert outcome.detail.startswith("127.0.0.1:") and outcome.detail.endswith("not answering")


def test_a_domain_that_stopped_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = _wait(tmp_path, domain_problem=lambda: "domain shutoff (crashed)", timeout=60)
    assert outcome == WaitOutcome(state="failed", ip=None, detail="domain shutoff (crashed)")
    assert time.monotonic() - started < 30  # not the whole timeout


def test_no_address_yet_is_said_as_such(tmp_path: Path) -> None:
    outcome = _wait(tmp_path, address_after=3600, timeout=2)
    assert outcome == WaitOutcome(state="timeout", ip=None, detail="no address yet")

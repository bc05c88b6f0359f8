"""Run steps (--run, --script): pure logic."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncssh
import pytest

from tests.sshserver import RootKeyServer
from vnode.errors import UsageError
from vnode.keys import generate_keypair, write_private
from vnode.remote import (
    RemoteTarget,
    RunStep,
    StepsOutcome,
    command_step,
    run_steps,
    script_step,
    wait_cloud_init,
)


def test_a_command_runs_as_given() -> None:
    step = command_step("apt-get update && echo ok")
    assert (step.label, step.command, step.stdin) == (
        "apt-get update && echo ok",
        step.command,
        None,
    )
    with pytest.raises(UsageError, match="empty"):
        command_step("  ")


def test_a_script_is_fed_on_stdin_and_keeps_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "setup.py"
    script.write_text("#!/usr/bin/python3\nprint('hi')\n")
    step = script_step(script)
    assert step.stdin == "#!/usr/bin/python3\nprint('hi')\n"
    assert step.label == f"script {script}"
    assert 'cat > "$f"' in step.command


def test_a_script_without_interpreter_line_runs_with_sh(tmp_path: Path) -> None:
    script = tmp_path / "s"
    script.write_text("echo hi\n")
    assert script_step(script).stdin == "#!/bin/sh\necho hi\n"


def test_a_missing_script_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--script"):
        script_step(tmp_path / "nope")


# -- against an SSH server in this process that runs commands with the local sh ---------------


async def _sh(process: asyncssh.SSHServerProcess) -> None:
    data = await process.stdin.read()
    child = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        process.command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await child.communicate(data.encode())
    process.stdout.write(out.decode())
    process.exit(child.returncode)


def _run(tmp_path: Path, steps: list[RunStep]) -> tuple[StepsOutcome, list[str]]:
    host = generate_keypair("host")
    client = generate_keypair("client")
    client_path = tmp_path / "id_ed25519"
    write_private(client_path, client.private_openssh)
    lines: list[str] = []

    async def run() -> StepsOutcome:
        authorized = asyncssh.import_authorized_keys(client.public_openssh + "\n")
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.import_private_key(host.private_openssh)],
            server_factory=lambda: RootKeyServer(authorized),
            process_factory=_sh,
        )
        port = server.sockets[0].getsockname()[1]
        target = RemoteTarget("vnode03", "127.0.0.1", host.public_openssh, client_path, port)
        try:
            return await run_steps(target, steps, lines.append)
        finally:
            server.close()

    return asyncio.run(run()), lines


def test_steps_run_in_order_and_stream_their_output(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("echo from script; echo to stderr >&2\n")
    outcome, lines = _run(tmp_path, [command_step("echo one; echo two"), script_step(script)])
    assert outcome == StepsOutcome(0, "one\ntwo\nfrom script\nto stderr")
    assert lines == ["one", "two", "from script", "to stderr"]


def test_the_first_failing_step_stops_the_node_with_its_status(tmp_path: Path) -> None:
    outcome, lines = _run(
        tmp_path, [command_step("echo before; exit 3"), command_step("echo never")]
    )
    assert outcome == StepsOutcome(3, "before", failed_step="echo before; exit 3")
    assert lines == ["before"]


def _wait_cloud_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int) -> str | None:
    fake = tmp_path / "bin" / "cloud-init"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\n[ "$2" = --wait ] && exit {status}\necho "status: x{status}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    host = generate_keypair("host")
    client = generate_keypair("client")
    client_path = tmp_path / "id_ed25519"
    write_private(client_path, client.private_openssh)

    async def run() -> str | None:
        authorized = asyncssh.import_authorized_keys(client.public_openssh + "\n")
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.import_private_key(host.private_openssh)],
            server_factory=lambda: RootKeyServer(authorized),
            process_factory=_sh,
        )
        port = server.sockets[0].getsockname()[1]
        target = RemoteTarget("vnode03", "127.0.0.1", host.public_openssh, client_path, port)
        try:
            return await wait_cloud_init(target, time.monotonic() + 20)
        finally:
            server.close()

    return asyncio.run(run())


def test_cloud_init_done_is_ready_and_an_error_says_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _wait_cloud_init(tmp_path / "a", monkeypatch, 0) is None
    assert _wait_cloud_init(tmp_path / "b", monkeypatch, 1) == "cloud-init reports status: x1"

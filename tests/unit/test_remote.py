"""Run steps (--run, --script): pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode.errors import UsageError
from vnode.remote import command_step, script_step


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

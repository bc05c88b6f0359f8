"""vnode's logging: plain stdlib records from the library; structlog rendering in the CLI,
loaded only when a line is really written."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from vnode.logs import get_logger

CLI_SCRIPT = """
import sys
from vnode import logs
logs.configure()
log = logs.get_logger("vnode.test").bind(node="vnode03")
log.debug("making", step=1)
print("structlog loaded:", "structlog" in sys.modules)
log.warning("slow", seconds=2)
"""


def _run_cli_logging(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT],
        env={**os.environ, "VNODE_LOG": "", **env},
        capture_output=True,
        text=True,
        check=True,
    )


def test_the_library_logs_stdlib_records_with_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="vnode"):
        get_logger("vnode.test").bind(node="vnode03").info("made", seconds=2)
    (record,) = caplog.records
    assert record.name == "vnode.test" and record.levelno == logging.INFO
    assert record.getMessage() == "made node=vnode03 seconds=2"
    assert record.vnode_fields == {"node": "vnode03", "seconds": 2}


def test_a_dropped_debug_line_does_not_load_structlog_and_warnings_show() -> None:
    result = _run_cli_logging()
    assert "structlog loaded: False" in result.stdout
    assert "making" not in result.stderr
    assert "slow" in result.stderr
    assert "node=vnode03" in result.stderr
    assert "seconds=2" in result.stderr


def test_vnode_log_debug_shows_debug_lines_with_their_context() -> None:
    result = _run_cli_logging(VNODE_LOG="DEBUG")
    assert "making" in result.stderr
    assert "step=1" in result.stderr
    assert "node=vnode03" in result.stderr

"""vnode's logging: quiet by default, structlog only loaded when a line is really written."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
from vnode.logs import get_logger
log = get_logger("vnode.test").bind(node="vnode03")
log.debug("making", step=1)
print("structlog loaded:", "structlog" in sys.modules)
log.warning("slow", seconds=2)
"""


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "VNODE_LOG": "", **env},
        capture_output=True,
        text=True,
        check=True,
    )


def test_a_dropped_debug_line_does_not_load_structlog_and_warnings_show() -> None:
    result = _run()
    assert "structlog loaded: False" in result.stdout
    assert "making" not in result.stderr
    assert "slow" in result.stderr
    assert "node=vnode03" in result.stderr
    assert "seconds=2" in result.stderr


def test_vnode_log_debug_shows_debug_lines_with_their_context() -> None:
    result = _run(VNODE_LOG="DEBUG")
    assert "making" in result.stderr
    assert "step=1" in result.stderr
    assert "node=vnode03" in result.stderr

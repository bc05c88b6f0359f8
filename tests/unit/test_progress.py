"""The terminal progress display and the final table."""

from __future__ import annotations

import io

from vnode.model import NodeResult
from vnode.progress import LiveReporter, results_table


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_per_node_redrawn_in_place() -> None:
    screen = _Terminal()
    with LiveReporter(["vnode01", "vnode02"], stream=screen, width=60) as reporter:
        reporter.phase("vnode01", "creating")
        reporter.phase("vnode02", "booting")
    out = screen.getvalue()
    assert "\x1b[1A\x1b[2K" in out  # moved up over its own line to redraw it
    last = out.rsplit("vnode01", 1)[-1]
    assert "creating" in last and "vnode02" in last and "booting" in last


def test_a_reason_wider_than_the_terminal_is_cut_not_wrapped() -> None:
    screen = _Terminal()
    reason = "failed: " + "the console said something very long " * 5
    with LiveReporter(["vnode01", "vnode02"], stream=screen, width=50) as reporter:
        reporter.phase("vnode01", reason)
        reporter.phase("vnode02", "ready")
    import re

    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", screen.getvalue())
    rows = [line for line in plain.splitlines() if "vnode0" in line]
    assert rows and all(len(line) <= 50 for line in rows), rows
    assert any(line.rstrip().endswith("…") for line in rows if "vnode01" in line)


def test_a_pipe_gets_one_plain_line_per_change() -> None:
    log = io.StringIO()
    reporter = LiveReporter(["vnode01"], stream=log)
    reporter.phase("vnode01", "creating")
    reporter.phase("vnode01", "ready")
    lines = log.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["vnode01: creating", "vnode01: ready"]
    assert "\x1b" not in log.getvalue()


def test_the_final_table_has_every_node_and_the_details_of_failures() -> None:
    results = [
        NodeResult("vnode01", "d12", "52:54:00:00:00:01", "10.0.0.101", "ready", 41.25),
        NodeResult("vnode02", "d12", "52:54:00:00:00:02", None, "timeout", None, "no answer"),
    ]
    lines = results_table(results).splitlines()
    assert lines[0].split() == ["NODE", "DISTRO", "IP", "STATE", "SECONDS"]
    assert lines[1].split() == ["vnode01", "d12", "10.0.0.101", "ready", "41.2"]
    assert lines[2].split() == ["vnode02", "d12", "-", "timeout", "-"]
    assert lines[3] == "vnode02: no answer"

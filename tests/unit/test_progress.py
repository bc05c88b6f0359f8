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
    reporter = LiveReporter(["vnode01", "vnode02"], stream=screen)
    reporter.phase("vnode01", "creating")
    reporter.phase("vnode02", "booting")
    out = screen.getvalue()
    assert out.count("\x1b[2F") == 1  # the second update moved up over the two lines
    last = out.split("\x1b[2F")[-1]
    assert "vnode01      creating" in last and "vnode02      booting" in last


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

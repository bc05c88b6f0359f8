"""Live per-node progress on the terminal, and the final table."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Protocol, TextIO

from vnode.model import NodeResult


class Reporter(Protocol):
    def phase(self, node: str, text: str) -> None: ...


class SilentReporter:
    def phase(self, node: str, text: str) -> None:
        pass


class LiveReporter:
    """Redraws one line per node in place on a terminal; prints one line per change elsewhere."""

    def __init__(self, nodes: Sequence[str], stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.phases = dict.fromkeys(nodes, "queued")
        self.lock = threading.Lock()
        self.drawn = 0

    def phase(self, node: str, text: str) -> None:
        with self.lock:
            self.phases[node] = text
            if self.tty:
                self._redraw()
            else:
                self.stream.write(f"{self._elapsed()} {node}: {text}\n")
                self.stream.flush()

    def _elapsed(self) -> str:
        return f"[{time.monotonic() - self.start:6.1f}s]"

    def _redraw(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F")
        for node, text in self.phases.items():
            self.stream.write(f"\x1b[2K{self._elapsed()} {node:<12} {text}\n")
        self.drawn = len(self.phases)
        self.stream.flush()


def format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(v)) for v in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def results_table(results: Sequence[NodeResult]) -> str:
    rows = [
        (
            r.name,
            r.distro,
            r.ip or "-",
            r.state,
            f"{r.seconds:.1f}" if r.seconds is not None else "-",
        )
        for r in results
    ]
    table = format_table(rows, ("NODE", "DISTRO", "IP", "STATE", "SECONDS"))
    details = [f"{r.name}: {r.detail}" for r in results if r.detail]
    return "\n".join([table, *details])

"""Live per-node progress on the terminal, and the final table."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from vnode.model import NodeResult


class Reporter(Protocol):
    def phase(self, node: str, text: str) -> None: ...

    # Optional: a line of a node's --run output (reporters without it drop the output).
    # def output(self, node: str, line: str) -> None: ...


class SilentReporter:
    def phase(self, node: str, text: str) -> None:
        pass


class LiveReporter:
    """One line per node, redrawn in place on a terminal (rich: a line wider than the
    terminal is cut with an ellipsis, never wrapped into garbage); one plain line per change
    elsewhere (a pipe, a log file). Use as a context manager, or call :meth:`close`."""

    def __init__(
        self, nodes: Sequence[str], stream: TextIO = sys.stderr, width: int | None = None
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.phases = dict.fromkeys(nodes, "queued")
        self.lock = threading.Lock()
        self._live: Any = None
        if self.tty:
            # Imported only for a live display: rich costs ~50 ms, which pipes need not pay.
            from rich.console import Console
            from rich.live import Live

            console = Console(file=stream, force_terminal=True, width=width, highlight=False)
            self._live = Live(self._lines(), console=console, auto_refresh=False)
            self._live.start()

    def phase(self, node: str, text: str) -> None:
        with self.lock:
            self.phases[node] = text
            if self._live is not None:
                self._live.update(self._lines(), refresh=True)
            elif not self.tty:
                self.stream.write(f"{self._elapsed()} {node}: {text}\n")
                self.stream.flush()

    def output(self, node: str, line: str) -> None:
        """A line of a node's --run output, prefixed with the node, above the live lines."""
        with self.lock:
            text = f"{node}| {line}"
            if self._live is not None:
                self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def close(self) -> None:
        with self.lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    def __enter__(self) -> LiveReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _elapsed(self) -> str:
        return f"[{time.monotonic() - self.start:6.1f}s]"

    def _lines(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(no_wrap=True, min_width=9)
        table.add_column(no_wrap=True, min_width=12)
        table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        for node, text in self.phases.items():
            table.add_row(self._elapsed(), node, text.replace("\n", " "))
        return table


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
    headers: tuple[str, ...] = ("NODE", "DISTRO", "IP", "STATE", "SECONDS")
    if any(r.exit_status is not None for r in results):  # --run / --script ran
        rows = [
            (*row, "-" if r.exit_status is None else str(r.exit_status))
            for row, r in zip(rows, results, strict=True)
        ]
        headers = (*headers, "RUN")
    table = format_table(rows, headers)
    details = [f"{r.name}: {r.detail}" for r in results if r.detail]
    return "\n".join([table, *details])

"""Reading what a node printed: the last lines of a console, escapes removed."""

from __future__ import annotations

from pathlib import Path

from vnode.console import tail, tail_text


def test_the_last_lines_without_terminal_escapes_or_blank_lines() -> None:
    text = "boot\n\x1b[1;32m[  OK  ]\x1b[0m Started ssh.\r\n\n   \nlogin: \x1b(B\n"
    assert tail_text(text, 2) == ["[  OK  ] Started ssh.", "login:"]


def test_a_large_console_is_read_from_its_end(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("".join(f"line {n}\n" for n in range(100_000)))
    assert tail(log, 3) == ["line 99997", "line 99998", "line 99999"]


def test_a_console_not_written_yet_is_empty(tmp_path: Path) -> None:
    assert tail(tmp_path / "missing.log") == []

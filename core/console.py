"""Reading what a node printed: its captured serial console and QEMU's own log."""

from __future__ import annotations

import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")


def tail(path: Path, lines: int = 10) -> list[str]:
    """The last non-empty lines of a log, terminal escapes removed."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return tail_text(text, lines)


def tail_text(text: str, lines: int = 10) -> list[str]:
    """The last non-empty lines of a log's text, terminal escapes removed."""
    cleaned = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    return [line for line in cleaned if line.strip()][-lines:]


def qemu_error(domain_name: str) -> str | None:
    """The last error QEMU logged for a domain (e.g. "KVM internal error..."), if any."""
    for line in reversed(tail(QEMU_LOG_DIR / f"{domain_name}.log", 40)):
        lowered = line.lower()
        if "error" in lowered or "failure" in lowered:
            return line.strip()
    return None

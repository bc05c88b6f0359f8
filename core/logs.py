"""structlog set-up: key=value lines on stderr, the node as context, quiet unless asked.

structlog is imported on the first log call, not at start-up: it pulls in rich, which costs
more than a quick command such as ``vnode list`` takes in all.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

_level: int | None = None  # what configure() asked for; None: VNODE_LOG or warnings only


def configure(verbose: bool = False) -> None:
    """vnode's own log output: debug with ``verbose``, else ``VNODE_LOG`` (default WARNING)."""
    global _level
    name = "DEBUG" if verbose else os.environ.get("VNODE_LOG", "WARNING").upper()
    _level = logging.getLevelNamesMapping().get(name, logging.WARNING)
    if "structlog" in sys.modules:
        _apply(_level)


def _apply(level: int) -> None:
    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class _Logger:
    """A structlog logger, made when first used. An application that configured structlog
    itself keeps its set-up; otherwise vnode's quiet default applies."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        import structlog

        if not structlog.is_configured():
            if _level is None:
                configure()
            else:
                _apply(_level)
        return getattr(structlog.get_logger(self._name), method)


def get_logger(name: str) -> Any:
    return _Logger(name)

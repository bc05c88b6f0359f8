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


# structlog's level methods; a call below the wanted level is dropped without importing it.
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _wanted_level() -> int:
    if _level is None:
        configure()
    assert _level is not None
    return _level


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


class _Logger:
    """A structlog logger, made when first used. An application that configured structlog
    itself keeps its set-up; otherwise vnode's quiet default applies."""

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}

    def bind(self, **values: Any) -> _Logger:
        return _Logger(self._name, {**self._context, **values})

    def __getattr__(self, method: str) -> Any:
        level = _METHOD_LEVELS.get(method)
        if "structlog" not in sys.modules and level is not None and level < _wanted_level():
            return _ignore
        import structlog

        if not structlog.is_configured():
            _apply(_wanted_level())
        return getattr(structlog.get_logger(self._name).bind(**self._context), method)


def get_logger(name: str) -> Any:
    return _Logger(name)

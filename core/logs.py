"""Logging. The library logs through the standard :mod:`logging` module, under ``vnode.*``
loggers, and renders nothing itself: an application chooses handlers and levels as for any
library. Each record carries the event and its key=value fields (``record.vnode_fields``),
and its message reads ``event key=value ...`` so any handler shows them.

The command line (and anyone who wants vnode's own look) calls :func:`configure`: one handler
on the ``vnode`` logger that renders with structlog, imported on the first line really
written (it pulls in rich, which costs more than a quick command such as ``vnode list``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

ROOT = "vnode"


class Logger:
    """A stdlib logger with bound context and keyword fields, structlog-style."""

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._logger = logging.getLogger(name)
        self._context = context or {}

    def bind(self, **values: Any) -> Logger:
        return Logger(self._logger.name, {**self._context, **values})

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        fields = {**self._context, **fields}
        message = " ".join([event, *(f"{key}={value}" for key, value in fields.items())])
        self._logger.log(
            level, message, extra={"vnode_event": event, "vnode_fields": fields}, stacklevel=3
        )


def get_logger(name: str) -> Logger:
    return Logger(name)


class _StructlogHandler(logging.Handler):
    """Writes vnode's records to stderr through structlog's console renderer."""

    def __init__(self) -> None:
        super().__init__()
        self._render: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._render is None:
                import structlog

                self._render = structlog.dev.ConsoleRenderer(colors=False)
            import time

            event = {
                "timestamp": time.strftime("%H:%M:%S", time.localtime(record.created)),
                "level": record.levelname.lower(),
                "event": getattr(record, "vnode_event", record.getMessage()),
                **getattr(record, "vnode_fields", {}),
            }
            sys.stderr.write(self._render(None, record.levelname.lower(), event) + "\n")
            sys.stderr.flush()
        except Exception:  # a log line must never break a command
            self.handleError(record)


def configure(verbose: bool = False) -> None:
    """vnode's own rendering on stderr: debug with ``verbose``, else ``VNODE_LOG`` (default
    WARNING). Called by the command line; idempotent."""
    name = "DEBUG" if verbose else os.environ.get("VNODE_LOG", "WARNING").upper() or "WARNING"
    level = logging.getLevelNamesMapping().get(name, logging.WARNING)
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, _StructlogHandler) for h in logger.handlers):
        logger.addHandler(_StructlogHandler())

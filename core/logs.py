"""structlog set-up: key=value lines on stderr, the node as context, quiet unless asked."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(verbose: bool = False) -> None:
    level_name = "DEBUG" if verbose else os.environ.get("VNODE_LOG", "WARNING").upper()
    level = logging.getLevelNamesMapping().get(level_name, logging.WARNING)
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


def ensure_configured() -> None:
    """Quiet defaults for library use; an application's own structlog set-up is kept."""
    if not structlog.is_configured():
        configure()

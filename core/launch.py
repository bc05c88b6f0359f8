"""The ``vnode`` console script. ``vnode --help`` (and a bare ``vnode``) answer from a cache
of the screen last rendered for the same installation, configuration and terminal; every
other command, and help on a miss, goes through :mod:`vnode.cli`.

Rendering the top-level help needs every plugin (their sub-commands are listed) and the
command-line framework: about 0.25 s on a small host, where a quick command has 0.2 s. What
the screen depends on is cheap to check instead: vnode's own files, the directories Python
imports from (installing or removing a plugin changes them), the config files (a disabled
plugin's commands are not shown) and the terminal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

HELP_FORMS = ([], ["--help"], ["-h"])
_TERMINAL_ENV = ("TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")


def main() -> int:
    tokens = sys.argv[1:]
    if tokens in HELP_FORMS:
        screen = cached_help(tokens)
        if screen is not None:
            sys.stdout.write(screen)
            return 0
    from vnode.cli import main as run

    return run(tokens)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(base) / "vnode" / "help"


def help_key(tokens: list[str]) -> str:
    """What the help screen depends on, hashed: a change to any of it is a miss."""
    import vnode
    import vnode_plugins
    from vnode.config import config_files

    parts = [vnode.__version__, sys.executable, repr(tokens), repr(sys.stdout.isatty())]
    parts.append(repr(tuple(shutil.get_terminal_size())))
    parts += [f"{name}={os.environ.get(name)}" for name in _TERMINAL_ENV]
    for package in (vnode, vnode_plugins):
        directory = Path(package.__file__).parent
        parts += [_stamp(path) for path in sorted(directory.iterdir()) if path.suffix == ".py"]
    parts += [_stamp(Path(entry)) for entry in sys.path if entry]
    parts += [_stamp(path) for path in config_files()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cached_help(tokens: list[str]) -> str | None:
    try:
        return (cache_dir() / help_key(tokens)).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def store_help(tokens: list[str], screen: str) -> None:
    """Keep ``screen`` for the next ``vnode --help``; a cache that cannot be written (a
    read-only home) only costs the next call its speed."""
    from vnode.files import write_atomic

    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in directory.iterdir():  # one screen per terminal shape is plenty
            stale.unlink(missing_ok=True)
        write_atomic(directory / help_key(tokens), screen, mode=0o600)
    except OSError:
        pass


def _stamp(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return f"{path}:-"
    return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"


if __name__ == "__main__":
    sys.exit(main())

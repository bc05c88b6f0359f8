"""The console script: `vnode --help` answers from its cache, and the cache never shows a
screen that another installation, configuration or terminal would not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import VNODE

# Runs the console script's main() and says on stderr whether the command line was loaded.
SCRIPT = (
    "import sys\nfrom vnode.launch import main\ncode = main()\n"
    "print('cli loaded' if 'vnode.cli' in sys.modules else 'cli not loaded', file=sys.stderr)\n"
    "sys.exit(code)"
)


def _vnode(tmp_path: Path, *args: str, config: str = "", script: bool = True):
    config_file = tmp_path / "config.toml"
    if not config_file.exists() or config_file.read_text() != config:
        config_file.write_text(config)
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "VNODE_CONFIG": str(config_file),
        "COLUMNS": "100",
    }
    argv = [sys.executable, "-c", SCRIPT, *args] if script else [*VNODE, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)


def test_help_is_rendered_once_then_answered_from_the_cache(tmp_path: Path) -> None:
    rendered = _vnode(tmp_path, "--help", script=False).stdout
    first, second = _vnode(tmp_path, "--help"), _vnode(tmp_path, "--help")
    assert (first.stdout, first.stderr) == (rendered, "cli loaded\n")
    assert (second.stdout, second.stderr) == (rendered, "cli not loaded\n")
    assert "bridge" in rendered and "Commands" in rendered
    assert _vnode(tmp_path).stdout == rendered  # a bare `vnode` is the same screen
    [kept] = (tmp_path / "cache/vnode/help").iterdir()
    assert kept.stat().st_mode & 0o777 == 0o600


def test_a_change_of_configuration_or_terminal_renders_again(tmp_path: Path) -> None:
    _vnode(tmp_path, "--help")
    disabled = _vnode(tmp_path, "--help", config='[plugins]\ndisable = ["bridge"]\n')
    assert disabled.stderr == "cli loaded\n"
    assert "One-time host set-up of a bridge" not in disabled.stdout
    again = _vnode(tmp_path, "--help", config='[plugins]\ndisable = ["bridge"]\n')
    assert again.stderr == "cli not loaded\n"
    env_changed = subprocess.run(
        [sys.executable, "-c", SCRIPT, "--help"],
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "140"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert env_changed.stderr == "cli loaded\n"


def test_other_commands_never_use_the_cache(tmp_path: Path) -> None:
    _vnode(tmp_path, "--help")
    assert _vnode(tmp_path, "--version").stderr.endswith("cli loaded\n")
    assert _vnode(tmp_path, "images", "--help").stderr.endswith("cli loaded\n")

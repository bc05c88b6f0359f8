"""The command line's start-up: quiet, whatever vnode imports."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import vnode
import vnode_plugins
from tests.conftest import VNODE


def test_every_module_imports_without_a_warning() -> None:
    # A dependency's deprecation (asyncssh naming cryptography's DSA classes) would print
    # lines before vnode's first one at every command: every warning is an error here.
    modules = [
        f"{package.__name__}.{info.name}"
        for package in (vnode, vnode_plugins)
        for info in pkgutil.iter_modules(package.__path__)
    ]
    assert "vnode.sshwait" in modules and "vnode_plugins.fedora" in modules
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, *modules],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_help_writes_nothing_on_stderr() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", *VNODE[1:], "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "up" in result.stdout

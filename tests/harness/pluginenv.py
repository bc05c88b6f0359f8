"""A Python environment of one test module's own, for installing third-party plugins.

pip-installing a plugin into the suite's venv would make every vnode the other parallel
workers run load it too. Instead each module gets an empty venv whose only link to the
suite's is a ``.pth`` line adding the suite's site-packages (vnode, editable, and its
dependencies): vnode run by this venv's python sees the suite's plugins plus the ones pip
installs here, and nobody else sees those.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def make_plugin_env(root: Path) -> str:
    """A venv at ``root``; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir, not a plain path line: the suite's site-packages has .pth files of its
    # own (the editable install's finder) that only a site directory's processing runs.
    suite = sysconfig.get_paths()["purelib"]
    Path(own, "vnode-suite.pth").write_text(f"import site; site.addsitedir({suite!r})\n")
    return str(python)


def pip(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The suite's pip, acting on the environment of ``python``."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    return subprocess.run(
        [*command, "--python", python, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

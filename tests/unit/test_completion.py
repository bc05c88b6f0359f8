"""Shell completion scripts generated from the command line's definition."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from vnode.cli import app
from vnode.completion import command_tree, render


def test_the_tree_has_commands_options_and_groups() -> None:
    options, groups = command_tree(app)
    assert "--cloud-config" in options["up"]
    assert "--timeout" in options["stop"]
    assert "--format" in options["inventory"]
    assert set(groups["images"]) >= {"list", "fetch", "build", "import"}
    assert "--force" in options["images fetch"]


def complete(words: list[str], script: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _vnode; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_commands_options_and_sub_commands() -> None:
    script = render("bash", app)
    assert {"start", "stop"} <= set(complete(["vnode", "st"], script))
    assert complete(["vnode", "up", "--wait-c"], script) == ["--wait-cloud-init"]
    assert complete(["vnode", "images", "fe"], script) == ["fetch"]
    assert "--force" in complete(["vnode", "images", "fetch", "--f"], script)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh")
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n", "-c", render("zsh", app)], check=True)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_distro_names_aliases_included(tmp_path) -> None:
    # `vnode images list --names` answers from the plugins' catalogs: no network, no libvirt.
    launcher = tmp_path / "vnode"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -m vnode.cli "$@"\n')
    launcher.chmod(0o755)
    script = render("bash", app)
    path = f"PATH={tmp_path}:$PATH"

    def offered(words: list[str]) -> set[str]:
        return set(complete(words, f"export {path}\n{script}"))

    assert offered(["vnode", "up", "3", ":", "fedora"]) == {"fedora", "fedora~1"}
    assert {"fedora~1", "f45", "f44"} <= offered(["vnode", "up", "--distro", "f"])
    assert {"ubuntu", "ubuntu~1", "u26.04", "u24.04"} <= offered(["vnode", "images", "fetch", "u"])
    assert "debian~1" in offered(["vnode", "template", "make", "deb"])

"""The command line's one rewrite: `vnode ssh NODE ...` keeps the remote command verbatim."""

from __future__ import annotations

import pytest

from vnode.cli import remote_command_verbatim


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["ssh", "3", "uname", "-a"], ["ssh", "3", "--", "uname", "-a"]),
        (["ssh", "3", "--", "uname", "-a"], ["ssh", "3", "--", "uname", "-a"]),
        (["ssh", "3", "--help"], ["ssh", "3", "--", "--help"]),
        (["ssh", "3"], ["ssh", "3"]),
        (["ssh", "--help"], ["ssh", "--help"]),
        (["up", "3", "-d", "d12"], ["up", "3", "-d", "d12"]),
        ([], []),
    ],
)
def test_only_an_ssh_remote_command_is_protected(tokens: list[str], expected: list[str]) -> None:
    assert remote_command_verbatim(tokens) == expected

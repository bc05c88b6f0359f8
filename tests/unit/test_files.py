"""Atomic state files and the trust vnode puts in its directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vnode.errors import EnvironmentProblem
from vnode.files import untrusted, write_atomic
from vnode.locks import file_lock

NOBODY = 65534


def test_a_root_owned_private_tree_is_trusted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    assert untrusted(state) is None
    assert untrusted(state / "not" / "made" / "yet") is None  # judged by what will hold it


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_directory_others_may_write_is_not(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    assert "writable by" in str(untrusted(state))
    assert "writable by" in str(untrusted(state / "nodes"))


def test_a_directory_above_writable_by_all_is_trusted_only_when_sticky(tmp_path: Path) -> None:
    above = tmp_path / "shared"
    above.mkdir()
    (above / "state").mkdir(mode=0o755)
    above.chmod(0o1777)  # as /tmp
    assert untrusted(above / "state") is None
    above.chmod(0o777)  # anyone may rename state away and put their own in its place
    assert "shared is writable by others" in str(untrusted(above / "state"))


def test_a_directory_of_another_user_is_not(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chown(state, NOBODY, NOBODY)
    assert f"belongs to uid {NOBODY}" in str(untrusted(state / "images"))


def test_a_lock_file_is_never_opened_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "vnode03.lock").symlink_to(target)
    with pytest.raises(EnvironmentProblem, match="is a symlink"), file_lock(locks / "vnode03.lock"):
        pass
    assert target.read_text() == "keep\n"
    with file_lock(locks / "vnode04.lock"):
        assert (locks / "vnode04.lock").stat().st_mode & 0o777 == 0o600


def test_write_atomic_leaves_the_new_file_whole_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    write_atomic(path, "old\n")
    write_atomic(path, "new\n", 0o600)
    assert path.read_text() == "new\n" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]

"""Key pairs vnode makes: OpenSSH's own tools and asyncssh must read them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from vnode.errors import UsageError
from vnode.keys import client_key, generate_keypair, write_private


def test_ssh_keygen_derives_the_same_public_key(tmp_path: Path) -> None:
    pair = generate_keypair("vnode07 host key")
    private = tmp_path / "key"
    write_private(private, pair.private_openssh)
    assert private.stat().st_mode & 0o777 == 0o600
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert derived[:2] == pair.public_openssh.split()[:2]
    assert pair.public_openssh.startswith("ssh-ed25519 ")
    assert pair.public_openssh.endswith(" vnode07 host key")


def test_asyncssh_loads_the_private_key_vnode_authenticates_with() -> None:
    pair = generate_keypair("vnode")
    key = asyncssh.import_private_key(pair.private_openssh)
    exported = key.export_public_key("openssh").decode().split()
    assert exported[:2] == pair.public_openssh.split()[:2]


def test_every_key_is_new() -> None:
    assert generate_keypair("a").private_openssh != generate_keypair("a").private_openssh


def test_a_private_key_without_its_public_half_gets_it_back(tmp_path: Path) -> None:
    # A kill between the two writes once left id_ed25519 alone: every later command failed.
    first = client_key(tmp_path, None)
    (tmp_path / "id_ed25519.pub").unlink()
    again = client_key(tmp_path, None)
    assert again.public_openssh.split()[:2] == first.public_openssh.split()[:2]
    (tmp_path / "id_ed25519.pub").write_text("")  # truncated
    assert client_key(tmp_path, None).public_openssh.split()[:2] == first.public_openssh.split()[:2]
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(tmp_path / "id_ed25519")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert derived.stdout.split()[:2] == first.public_openssh.split()[:2]


def test_a_corrupt_private_key_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n")
    with pytest.raises(UsageError, match=r"id_ed25519 is not a readable OpenSSH private key"):
        client_key(tmp_path, None)

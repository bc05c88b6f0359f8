"""Key pairs vnode makes: OpenSSH's own tools and asyncssh must read them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh

from vnode.keys import generate_keypair, write_private


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

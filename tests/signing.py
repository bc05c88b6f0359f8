"""A local OpenPGP key that plays a distro's signing key in tests: made by gpg in a temporary
GNUPGHOME, never a real distro key, never published."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class LocalKey:
    def __init__(self, home: Path, uid: str) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True)
        self._gpg(
            "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"
        )  # fmt: skip
        listing = self._gpg("--with-colons", "--list-keys").stdout.decode()
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        self.public = home / "public.asc"  # armoured, as Fedora ships its RPM-GPG-KEY files
        self.public.write_bytes(self._gpg("--armor", "--export").stdout)
        self.public_binary = home / "public.gpg"  # binary, as Ubuntu's and Debian's keyrings
        self.public_binary.write_bytes(self._gpg("--export").stdout)

    def detach_sign(self, data: bytes) -> bytes:
        return self._gpg("--detach-sign", input=data).stdout

    def clearsign(self, text: str) -> str:
        return self._gpg("--clearsign", input=text.encode()).stdout.decode()

    def _gpg(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        argv = ["gpg", "--batch", "--pinentry-mode", "loopback", *args]
        return subprocess.run(argv, input=input, capture_output=True, env=env, check=True)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKey]:
    home = tmp_path_factory.mktemp("gnupg") / "home"
    key = LocalKey(home, "vnode test distro <signing@example.invalid>")
    yield key
    # gpg-agent was started for this home; it exits when its socket directory goes away.
    subprocess.run(
        ["gpgconf", "--kill", "gpg-agent"],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=False,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKey]:
    home = tmp_path_factory.mktemp("gnupg-other") / "home"
    key = LocalKey(home, "someone else <other@example.invalid>")
    yield key
    subprocess.run(
        ["gpgconf", "--kill", "gpg-agent"],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=False,
        capture_output=True,
    )

"""An SSH server class for tests that run asyncssh servers in their own process: it lets in
root with one of the authorized keys, and nobody else."""

from __future__ import annotations

import asyncssh


class RootKeyServer(asyncssh.SSHServer):
    def __init__(self, authorized: asyncssh.SSHAuthorizedKeys) -> None:
        self.authorized = authorized

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == "root" and self.authorized.validate(key, "127.0.0.1", None) is not None

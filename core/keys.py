"""SSH keys: the client key root accepts, per-node host keys, and vnode's own known_hosts.

Host keys are generated here, so the host key of a node is known before it boots: the wait
and ``vnode ssh`` check it strictly, and re-creating a node replaces its entry instead of
tripping "host key changed".
"""

from __future__ import annotations

from pathlib import Path

import attrs

from vnode.errors import UsageError
from vnode.files import write_atomic
from vnode.locks import file_lock


@attrs.frozen
class KeyPair:
    private_openssh: str = attrs.field(repr=False)
    public_openssh: str  # "ssh-ed25519 AAAA... comment"


def generate_keypair(comment: str) -> KeyPair:
    """A new ed25519 key pair in OpenSSH formats; the comment goes on the public line."""
    # cryptography directly: importing asyncssh for this costs 0.18 s, cryptography 0.01 s.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(
        private_openssh=private.decode(),
        public_openssh=f"{public.decode()} {comment}".strip(),
    )


def write_private(path: Path, text: str) -> None:
    """Write a secret 0600 from the first byte, never world-readable even briefly."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, text, 0o600)


@attrs.frozen
class ClientKey:
    private_path: Path
    public_openssh: str


def client_key(ssh_dir: Path, configured: Path | None) -> ClientKey:
    """The user's configured key, or vnode's own, generated on first use."""
    if configured is not None:
        private = configured.expanduser()
        public = private.with_name(private.name + ".pub")
        if not private.is_file() or not public.is_file():
            raise UsageError(f"ssh.key {private}: need both the private key and {public.name}")
        return ClientKey(private_path=private, public_openssh=public.read_text().strip())
    private = ssh_dir / "id_ed25519"
    public = ssh_dir / "id_ed25519.pub"
    with file_lock(ssh_dir / ".lock"):
        if not private.exists():
            pair = generate_keypair("vnode")
            # The public half first: the private key's presence says the pair is whole.
            write_atomic(public, pair.public_openssh + "\n")
            write_private(private, pair.private_openssh)
        elif not _public_line(public):
            # Killed between the two writes (an older vnode wrote the private one first), or
            # the .pub removed: it is derived again, as nodes trust the private key already.
            write_atomic(public, _derive_public(private) + "\n")
    return ClientKey(private_path=private, public_openssh=public.read_text().strip())


def _public_line(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return text if text.startswith("ssh-ed25519 ") else None


def _derive_public(private: Path) -> str:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise UsageError(
            f"{private} is not a readable OpenSSH private key ({exc}); remove it and "
            f"{private.name}.pub to have vnode make a new pair (nodes made with it then "
            "refuse the new key: re-create them)"
        ) from None
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{public.decode()} vnode"


class KnownHosts:
    """vnode's known_hosts: one line per node, keyed by node name (ssh uses HostKeyAlias)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, name: str, public_openssh: str) -> None:
        key = " ".join(public_openssh.split()[:2])
        self._rewrite(name, f"{name} {key}")

    def remove(self, name: str) -> None:
        self._rewrite(name, None)

    def names(self) -> list[str]:
        return [line.partition(" ")[0] for line in self._lines()]

    def get(self, name: str) -> str | None:
        """The host key recorded for ``name`` ("ssh-ed25519 AAAA..."), or None."""
        for line in self._lines():
            host, _, key = line.partition(" ")
            if host == name:
                return key
        return None

    def _lines(self) -> list[str]:
        try:
            return [line for line in self.path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def _rewrite(self, name: str, replacement: str | None) -> None:
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            lines = [line for line in self._lines() if line.partition(" ")[0] != name]
            if replacement:
                lines.append(replacement)
            write_atomic(self.path, "".join(line + "\n" for line in lines))

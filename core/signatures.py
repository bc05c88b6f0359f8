"""OpenPGP signatures on checksum files, checked with ``gpgv`` (GnuPG's verify-only tool).

A distro plugin says how upstream signs its checksum file (:attr:`Distro.signature`: a
cleartext signature inside the file, as Fedora's ``CHECKSUM``, or a detached one next to it,
as Ubuntu's ``SHA256SUMS.gpg``), which key files vouch for it (:attr:`Distro.keyrings`: files
a host package installs, e.g. ``/etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-44-primary``, or public
keys shipped with the plugin) and, optionally, which primary key fingerprints may sign
(:attr:`Distro.signers`, to pin one key of a larger keyring). The user may name the key file
of a family instead (``[images] keyring.FAMILY``).

When a key file is on the host the signature must verify, or nothing is downloaded; what is
read from a signed file afterwards is only the signed text gpgv hands back, never the bytes
around it. When no key file is there, the image is fetched on its checksum alone and its
record says so (``images list``: ``unsigned``). vnode parses no OpenPGP itself: armoured key
files are converted with ``gpg --dearmor`` (gpgv reads binary keyrings only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import attrs

from vnode.errors import EnvironmentProblem, VnodeError

CLEARSIGNED = "clearsigned"
TIMEOUT = 60.0
_ARMOUR = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"


class SignatureError(VnodeError):
    """A checksum file whose signature is missing, bad, or by a key not trusted for it."""


@attrs.frozen
class Checked:
    """A checksum file after its signature was looked at."""

    text: bytes  # what may be parsed: the signed text, or the whole file if unsigned
    signer: str | None = None  # the signing primary key's fingerprint; None: not checked
    note: str = ""  # why it was not checked, or which key file vouched for it


def normal_fingerprint(text: str) -> str:
    """``"DF9B 9C49 ..."`` -> ``"DF9B9C49..."``; anything but 40 (v4) or 64 (v5/v6) hex digits
    is refused, so that a short key id can never pass for a fingerprint."""
    compact = "".join(text.split()).upper()
    if len(compact) not in (40, 64) or any(c not in "0123456789ABCDEF" for c in compact):
        raise ValueError(f"{text!r} is not an OpenPGP fingerprint")
    return compact


def present(keyrings: Iterable[str | Path]) -> list[Path]:
    """The key files of ``keyrings`` that exist on this host."""
    return [Path(path) for path in keyrings if Path(path).is_file()]


def check(
    data: bytes,
    *,
    what: str,
    signature: bytes | None,
    keyrings: list[Path],
    signers: Iterable[str] = (),
) -> Checked:
    """Verify ``data`` (clearsigned when ``signature`` is None) with the keys in ``keyrings``.

    Returns the signed text and the signer's fingerprint; raises :class:`SignatureError`
    when the signature does not verify, or is by a key outside ``signers`` (when given).
    """
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise EnvironmentProblem(
            "gpgv is not installed: it checks the signature of the checksum file "
            "(apt-get install gpgv, or dnf install gnupg2; install/setup-host.sh does it)"
        )
    allowed = {normal_fingerprint(f) for f in signers}
    with tempfile.TemporaryDirectory(prefix="vnode-gpgv-") as work:
        home = Path(work)
        argv = [gpgv, "--status-fd", "1"]
        for index, keyring in enumerate(keyrings):
            argv += ["--keyring", str(_binary_keyring(keyring, home / f"k{index}.gpg", home))]
        (home / "data").write_bytes(data)
        output = home / "signed"
        if signature is None:
            argv += ["--output", str(output), str(home / "data")]
        else:
            (home / "data.sig").write_bytes(signature)
            argv += [str(home / "data.sig"), str(home / "data")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GNUPGHOME": str(home)}
        env["LC_ALL"] = "C"
        try:
            result = subprocess.run(
                argv, capture_output=True, env=env, timeout=TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise SignatureError(f"{what}: gpgv did not finish in {TIMEOUT:.0f} s") from None
        status = result.stdout.decode("utf-8", errors="replace").splitlines()
        good = _good_signers(status)
        if not good:
            raise SignatureError(f"{what}: {_reason(status, keyrings)}; nothing was downloaded")
        trusted = [fpr for fpr in good if not allowed or fpr in allowed]
        if not trusted:
            raise SignatureError(
                f"{what}: signed by {', '.join(good)}, not by a key trusted for it "
                f"({', '.join(sorted(allowed))}); nothing was downloaded"
            )
        signer = trusted[0]
        text = output.read_bytes() if signature is None else data
    return Checked(text=text, signer=signer, note=f"signed by {signer}")


def _binary_keyring(keyring: Path, dest: Path, home: Path) -> Path:
    with keyring.open("rb") as handle:
        armoured = _ARMOUR in handle.read(4096)
    if not armoured:
        return keyring
    gpg = shutil.which("gpg")
    if gpg is None:
        raise EnvironmentProblem(
            f"{keyring} is an armoured key and gpg, which converts it for gpgv, is not "
            "installed (apt-get install gpg, or dnf install gnupg2)"
        )
    argv = [gpg, "--batch", "--no-options", "--homedir", str(home)]
    result = subprocess.run(
        [*argv, "--dearmor", "--output", str(dest), str(keyring)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise SignatureError(f"{keyring}: not an OpenPGP key file gpg can read")
    return dest


def _good_signers(status: list[str]) -> list[str] | None:
    """The primary key fingerprints of the good signatures (gpgv's status lines, as GnuPG's
    doc/DETAILS describes them); None if any signature is bad: the file was altered.

    A file may carry several signatures (an old and a new key): one by a key not on the host
    is no failure while another one is good.
    """
    signers: list[str] = []
    good = False
    for line in status:
        words = line.split()
        if len(words) < 2 or words[0] != "[GNUPG:]":
            continue
        keyword = words[1]
        if keyword == "BADSIG":
            return None
        if keyword == "NEWSIG":
            good = False
        elif keyword == "GOODSIG":
            good = True  # EXPKEYSIG and REVKEYSIG take its place for keys no longer valid
        elif keyword == "VALIDSIG" and good and len(words) > 3:
            signers.append(words[-1].upper())  # the last field: the primary key's
    return signers


def _reason(status: list[str], keyrings: list[Path]) -> str:
    keywords = {line.split()[1] for line in status if len(line.split()) > 1}
    if "BADSIG" in keywords:
        return "BAD signature (the file was changed after it was signed)"
    if "NO_PUBKEY" in keywords:
        return f"signed by a key not in {', '.join(map(str, keyrings))}"
    if "EXPKEYSIG" in keywords or "REVKEYSIG" in keywords:
        return "signed by an expired or revoked key"
    if "NODATA" in keywords or not keywords:
        return "no OpenPGP signature found"
    return "the signature does not verify"

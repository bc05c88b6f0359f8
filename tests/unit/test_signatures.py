"""Checksum file signatures, checked by the real gpgv against local keys made for the test."""

from __future__ import annotations

import hashlib

import pytest

from tests.signing import LocalKey
from vnode.signatures import SignatureError, check, normal_fingerprint, present

LINE = f"SHA256 (a.qcow2) = {hashlib.sha256(b'image').hexdigest()}\n"


def test_a_good_detached_signature_gives_its_signer(signing_key: LocalKey) -> None:
    data = LINE.encode()
    checked = check(
        data,
        what="SUMS",
        signature=signing_key.detach_sign(data),
        keyrings=[signing_key.public_binary],
        signers=[signing_key.fingerprint],
    )
    assert (checked.text, checked.signer) == (data, signing_key.fingerprint)


def test_an_armoured_key_file_is_read_too(signing_key: LocalKey) -> None:
    text = signing_key.clearsign(LINE)
    checked = check(text.encode(), what="CHECKSUM", signature=None, keyrings=[signing_key.public])
    assert checked.signer == signing_key.fingerprint
    assert checked.text.decode() == LINE


def test_only_the_signed_text_of_a_clearsigned_file_is_handed_back(
    signing_key: LocalKey,
) -> None:
    evil = f"SHA512 (a.qcow2) = {hashlib.sha512(b'evil').hexdigest()}\n"
    text = evil + signing_key.clearsign(LINE) + evil
    checked = check(text.encode(), what="CHECKSUM", signature=None, keyrings=[signing_key.public])
    assert checked.text.decode() == LINE


def test_a_changed_file_is_a_bad_signature(signing_key: LocalKey) -> None:
    signature = signing_key.detach_sign(LINE.encode())
    changed = LINE.replace("a.qcow2", "b.qcow2").encode()
    with pytest.raises(SignatureError, match="BAD signature"):
        check(changed, what="SUMS", signature=signature, keyrings=[signing_key.public_binary])
    clearsigned = signing_key.clearsign(LINE).replace("a.qcow2", "b.qcow2")
    with pytest.raises(SignatureError, match="BAD signature"):
        check(clearsigned.encode(), what="CHECKSUM", signature=None, keyrings=[signing_key.public])


def test_a_signature_by_a_key_not_in_the_keyring_is_refused(
    signing_key: LocalKey, other_key: LocalKey
) -> None:
    signature = other_key.detach_sign(LINE.encode())
    with pytest.raises(SignatureError, match="signed by a key not in"):
        check(LINE.encode(), what="SUMS", signature=signature, keyrings=[signing_key.public])


def test_a_key_of_the_keyring_outside_the_pinned_fingerprints_is_refused(
    signing_key: LocalKey, other_key: LocalKey
) -> None:
    signature = other_key.detach_sign(LINE.encode())
    keyrings = [signing_key.public, other_key.public]
    with pytest.raises(SignatureError, match="not by a key trusted for it"):
        check(
            LINE.encode(),
            what="SUMS",
            signature=signature,
            keyrings=keyrings,
            signers=[signing_key.fingerprint],
        )


def test_an_unsigned_file_where_a_signature_is_expected_is_refused(
    signing_key: LocalKey,
) -> None:
    with pytest.raises(SignatureError, match="no OpenPGP signature"):
        check(LINE.encode(), what="CHECKSUM", signature=None, keyrings=[signing_key.public])
    with pytest.raises(SignatureError):
        check(
            LINE.encode(), what="SUMS", signature=b"not a signature", keyrings=[signing_key.public]
        )


def test_fingerprints_are_40_or_64_hex_digits_never_a_short_key_id() -> None:
    assert normal_fingerprint("df9b 9c49 eaa9 2984 3258  9d76 da87 e80d 6294 be9b") == (
        "DF9B9C49EAA9298432589D76DA87E80D6294BE9B"
    )
    for bad in ("6294BE9B", "DA87E80D6294BE9B", "Z" * 40):
        with pytest.raises(ValueError):
            normal_fingerprint(bad)


def test_only_key_files_on_the_host_are_used(signing_key: LocalKey) -> None:
    assert present(["/nonexistent/key.gpg", str(signing_key.public)]) == [signing_key.public]

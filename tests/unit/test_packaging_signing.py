"""Ed25519 signing keys, public keys and their ids; the development key; the Prefect block."""

from __future__ import annotations

import base64
import hashlib
import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr, ValidationError

from blocks.signing_key import PackageSigningKey
from modelferry.errors import PackageVerificationError, PackagingError
from modelferry.packaging import SigningKey, VerifyKey, development_signing_key, key_id
from modelferry.packaging.signing import DEV_PRIVATE_KEY_FILE, DEV_PUBLIC_KEY_FILE

DATA = b'{"package_id": "x"}\n'


def test_sign_and_verify() -> None:
    key = SigningKey.generate()
    signature = key.sign(DATA)

    assert len(signature) == 64
    assert key.sign(DATA) == signature  # Ed25519 is deterministic
    assert key.verify_key.is_valid_signature(DATA, signature)
    assert not key.verify_key.is_valid_signature(DATA + b" ", signature)
    assert not SigningKey.generate().verify_key.is_valid_signature(DATA, signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not key.verify_key.is_valid_signature(DATA, flipped)


def test_key_id_is_the_start_of_the_public_key_hash() -> None:
    key = SigningKey.generate()
    raw = base64.b64decode(key.verify_key.public_base64)

    assert len(raw) == 32
    assert key.key_id == key.verify_key.key_id == key_id(raw)
    assert key.key_id == hashlib.sha256(raw).hexdigest()[:16]


def test_private_key_round_trips_as_pem_and_base64() -> None:
    key = SigningKey.generate()

    pem = key.private_pem()
    assert pem.get_secret_value().startswith("-----BEGIN PRIVATE KEY-----")
    assert SigningKey.from_pem(pem).sign(DATA) == key.sign(DATA)
    raw = key.private_base64()
    assert len(base64.b64decode(raw.get_secret_value())) == 32
    assert SigningKey.from_base64(raw).sign(DATA) == key.sign(DATA)
    # `load` tells the two forms apart.
    assert SigningKey.load(pem).key_id == SigningKey.load(raw).key_id == key.key_id


def test_encrypted_pem_needs_its_password() -> None:
    private = Ed25519PrivateKey.generate()
    key = SigningKey(private)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    secret = SecretStr(encrypted.decode())

    assert SigningKey.load(secret, SecretStr("s3cret")).key_id == key.key_id
    with pytest.raises(PackagingError, match="password is wrong"):
        SigningKey.load(secret, SecretStr("wrong"))


def test_public_key_round_trips_as_base64_and_pem() -> None:
    verify_key = SigningKey.generate().verify_key

    assert VerifyKey.from_base64(verify_key.public_base64) == verify_key
    assert VerifyKey.load(verify_key.public_pem()) == verify_key
    assert VerifyKey.load(verify_key.public_base64 + "\n") == verify_key
    assert len({verify_key, VerifyKey.load(verify_key.public_pem())}) == 1


def test_bad_keys_are_refused_without_echoing_them() -> None:
    garbage = "c2VjcmV0LWJ1dC1ub3QtYS1rZXk="  # base64, but not 32 bytes
    with pytest.raises(PackagingError) as caught:
        SigningKey.load(SecretStr(garbage))
    assert garbage not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    with pytest.raises(PackagingError, match="not a readable PEM"):
        SigningKey.load(SecretStr("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"))
    ec_pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(PackagingError, match="not Ed25519"):
        SigningKey.load(SecretStr(ec_pem.decode()))
    with pytest.raises(PackageVerificationError, match="32 raw Ed25519 bytes"):
        VerifyKey.load("AAAA")


def test_reprs_show_the_key_id_only() -> None:
    key = SigningKey.generate()
    secret = key.private_base64().get_secret_value()

    assert repr(key) == f"SigningKey(key_id={key.key_id!r})"
    assert repr(key.verify_key) == f"VerifyKey(key_id={key.key_id!r})"
    assert secret not in repr(key)
    assert secret not in repr(key.private_base64())


def test_development_key_is_created_once_with_private_permissions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / ".modelferry"

    with caplog.at_level(logging.WARNING, logger="modelferry.packaging.signing"):
        first = development_signing_key(home)
    second = development_signing_key(home)

    private = home / "keys" / DEV_PRIVATE_KEY_FILE
    public = home / "keys" / DEV_PUBLIC_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert second.key_id == first.key_id
    assert VerifyKey.load(public.read_text()) == first.verify_key
    assert public.read_text() == first.verify_key.public_base64 + "\n"
    assert "DEVELOPMENT key" in caplog.text
    assert first.key_id in caplog.text
    assert first.private_base64().get_secret_value() not in caplog.text
    # A lost public key is written again from the private one.
    public.unlink()
    assert development_signing_key(home).key_id == first.key_id
    assert VerifyKey.load(public.read_text()) == first.verify_key


def test_development_key_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    key = development_signing_key()

    assert (tmp_path / ".modelferry" / "keys" / DEV_PRIVATE_KEY_FILE).is_file()
    assert development_signing_key(tmp_path / ".modelferry").key_id == key.key_id


def test_block_builds_the_signing_key() -> None:
    key = SigningKey.generate()

    block = PackageSigningKey(
        private_key=key.private_pem(), public_key=key.verify_key.public_base64
    )

    assert block.get_signing_key().key_id == key.key_id
    assert block.get_verify_key() == key.verify_key
    assert key.private_pem().get_secret_value() not in repr(block)
    assert key.private_pem().get_secret_value() not in str(block.model_dump())
    raw_only = PackageSigningKey(private_key=key.private_base64())
    assert raw_only.get_signing_key().sign(DATA) == key.sign(DATA)


def test_block_refuses_a_mismatched_public_key_or_a_bad_private_key() -> None:
    key = SigningKey.generate()
    other = SigningKey.generate().verify_key.public_base64

    with pytest.raises(ValidationError, match="does not belong to the private key") as caught:
        PackageSigningKey(private_key=key.private_pem(), public_key=other)
    assert key.private_pem().get_secret_value() not in str(caught.value)
    with pytest.raises(ValidationError, match="base64 of 32 raw Ed25519 bytes") as caught:
        PackageSigningKey(private_key=SecretStr("not-a-key"))
    assert "not-a-key" not in str(caught.value)

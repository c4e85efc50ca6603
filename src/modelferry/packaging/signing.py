"""Ed25519 keys: the cloud signs a package's manifest, devices verify it with public keys.

A key is known by its id: the first 16 hex characters of the SHA-256 of the raw 32-byte
public key. Private keys come in as PEM (PKCS#8, optionally encrypted) or as the base64 of
the raw 32 bytes, always wrapped in `SecretStr`; they are unwrapped only to build the key,
and never appear in a repr, a log line or an error message.

With no key configured, a development key is generated once under `.modelferry/keys/`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from modelferry.errors import PackageVerificationError, PackagingError

logger = logging.getLogger(__name__)

#: Why a package whose signature does not verify is refused (format 1 and 2 alike).
INVALID_SIGNATURE = (
    "manifest signature is invalid: the package was altered or signed with another key"
)

#: File names of the development key pair under `<home>/keys/`.
DEV_PRIVATE_KEY_FILE = "package-signing-dev.pem"
DEV_PUBLIC_KEY_FILE = "package-signing-dev.pub"

_RAW = serialization.Encoding.Raw


def key_id(public_raw: bytes) -> str:
    """The id of a public key: first 16 hex characters of SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


class VerifyKey:
    """An Ed25519 public key that devices trust to verify package manifests."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        """Wrap a `cryptography` public key."""
        self._key = public_key
        self._raw = public_key.public_bytes(_RAW, serialization.PublicFormat.Raw)

    @classmethod
    def from_base64(cls, text: str) -> VerifyKey:
        """A key from the base64 of its 32 raw bytes (the form `public_base64` gives).

        Raises:
            PackageVerificationError: not base64, or not 32 bytes.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError):
            raise PackageVerificationError(
                "a public key must be the base64 of 32 raw Ed25519 bytes, or a PEM public key"
            ) from None

    @classmethod
    def from_pem(cls, pem: str | bytes) -> VerifyKey:
        """A key from a PEM `PUBLIC KEY` block.

        Raises:
            PackageVerificationError: not a PEM Ed25519 public key.
        """
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise PackageVerificationError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise PackageVerificationError(f"{type(key).__name__} is not an Ed25519 public key")
        return cls(key)

    @classmethod
    def load(cls, text: str | bytes) -> VerifyKey:
        """A key from either PEM or base64 raw bytes, whichever `text` holds."""
        value = text.decode("ascii", "replace") if isinstance(text, bytes) else text
        if "-----BEGIN" in value:
            return cls.from_pem(value)
        return cls.from_base64(value)

    @property
    def key_id(self) -> str:
        """First 16 hex characters of the SHA-256 of the raw public key."""
        return key_id(self._raw)

    @property
    def public_base64(self) -> str:
        """The base64 of the 32 raw bytes: the form devices are given."""
        return base64.b64encode(self._raw).decode("ascii")

    def public_pem(self) -> str:
        """The key as a PEM `PUBLIC KEY` block."""
        pem = self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    def is_valid_signature(self, data: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature of exactly `data`."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"VerifyKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)


class SigningKey:
    """An Ed25519 private key that signs package manifests. Its repr shows the key id only."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        """Wrap a `cryptography` private key."""
        self._key = private_key
        self.verify_key = VerifyKey(private_key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: SecretStr, password: SecretStr | None = None) -> SigningKey:
        """A key from a PEM `PRIVATE KEY` (PKCS#8) block, encrypted when `password` is given.

        Raises:
            PackagingError: not a PEM Ed25519 private key, or the wrong password.
        """
        secret = password.get_secret_value().encode("utf-8") if password else None
        try:
            key = serialization.load_pem_private_key(
                pem.get_secret_value().encode("utf-8"), password=secret
            )
        except (ValueError, TypeError):
            # The cause may quote the key material: it is dropped on purpose.
            raise PackagingError(
                "the signing key is not a readable PEM private key (or its password is wrong)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise PackagingError(f"the signing key is {type(key).__name__}, not Ed25519")
        return cls(key)

    @classmethod
    def from_base64(cls, raw: SecretStr) -> SigningKey:
        """A key from the base64 of its 32 raw private bytes.

        Raises:
            PackagingError: not base64 of 32 bytes.
        """
        try:
            data = base64.b64decode(raw.get_secret_value().strip(), validate=True)
            return cls(Ed25519PrivateKey.from_private_bytes(data))
        except (binascii.Error, ValueError):
            raise PackagingError(
                "the signing key must be a PEM private key or the base64 of 32 raw Ed25519 bytes"
            ) from None

    @classmethod
    def load(cls, secret: SecretStr, password: SecretStr | None = None) -> SigningKey:
        """A key from PEM or base64 raw bytes, whichever `secret` holds."""
        if "-----BEGIN" in secret.get_secret_value():
            return cls.from_pem(secret, password)
        return cls.from_base64(secret)

    @property
    def key_id(self) -> str:
        """The id of this key's public half."""
        return self.verify_key.key_id

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data` (deterministic: same data, same bytes)."""
        return self._key.sign(data)

    def private_pem(self) -> SecretStr:
        """The key as unencrypted PKCS#8 PEM, for storing it in a secret store."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return SecretStr(pem.decode("ascii"))

    def private_base64(self) -> SecretStr:
        """The base64 of the 32 raw private bytes."""
        raw = self._key.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return SecretStr(base64.b64encode(raw).decode("ascii"))

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"


def development_signing_key(home: Path | None = None) -> SigningKey:
    """The embedded default key, generated on first use under `<home>/keys/`.

    The private key is written with mode 0600 and its public key beside it (base64, one
    line) for devices to trust. Concurrent first uses agree on one key. Fine for a laptop
    or a test bench; production signs with a key from a `PackageSigningKey` block.

    Args:
        home: the modelferry folder; default `.modelferry` in the working directory.
    """
    if home is None:
        from modelferry.registry.tracking import DEFAULT_HOME

        home = DEFAULT_HOME
    keys = home / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    private = keys / DEV_PRIVATE_KEY_FILE
    if not private.exists():
        _create_exclusively(private, SigningKey.generate().private_pem())
    mode = stat.S_IMODE(private.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s is readable by other users (mode %o); chmod 600 it", private, mode)
    key = SigningKey.from_pem(SecretStr(private.read_text(encoding="ascii")))
    public = keys / DEV_PUBLIC_KEY_FILE
    if not public.exists() or VerifyKey.load(public.read_text()) != key.verify_key:
        public.write_text(key.verify_key.public_base64 + "\n", encoding="ascii")
    logger.warning(
        "Signing with the DEVELOPMENT key %s (key id %s); devices must trust %s. "
        "Use a PackageSigningKey block for anything beyond development.",
        private,
        key.key_id,
        public,
    )
    return key


def _create_exclusively(path: Path, pem: SecretStr) -> None:
    """Write `pem` to `path` with mode 0600, unless another process created it first."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(pem.get_secret_value())
        with contextlib.suppress(FileExistsError):  # another process got there first
            os.link(tmp, path)
    finally:
        os.unlink(tmp)

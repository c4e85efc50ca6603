"""Prefect block: the Ed25519 key that signs model packages."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from modelferry.errors import PackageVerificationError, PackagingError
from modelferry.packaging import SigningKey, VerifyKey


class PackageSigningKey(Block):
    """The private key model packages are signed with, and its public half for devices.

    Generate a key once, keep the private half here, give devices the public half:

        key = SigningKey.generate()
        PackageSigningKey(private_key=key.private_pem(),
                          public_key=key.verify_key.public_base64).save("production")

    Then name the block in the flows' `targets.signing_key`.
    """

    _block_type_name = "modelferry Package Signing Key"
    _block_type_slug = "modelferry-package-signing-key"
    _description = "Ed25519 key that signs modelferry model packages for edge devices."
    # A validation error would otherwise echo the raw input, private key included.
    model_config = ConfigDict(hide_input_in_errors=True)

    private_key: SecretStr = Field(
        description="Ed25519 private key: PEM (PKCS#8) or the base64 of its 32 raw bytes."
    )
    password: SecretStr | None = Field(
        default=None, description="Password of an encrypted PEM private key."
    )
    public_key: str | None = Field(
        default=None,
        description="Its public key (base64 of the 32 raw bytes, or PEM), the one devices "
        "trust; checked against the private key.",
    )

    @model_validator(mode="after")
    def _public_key_matches(self) -> PackageSigningKey:
        try:
            key = SigningKey.load(self.private_key, self.password)
            public = VerifyKey.load(self.public_key) if self.public_key is not None else None
        except (PackagingError, PackageVerificationError) as exc:
            raise ValueError(str(exc)) from None
        if public is not None and public != key.verify_key:
            raise ValueError(
                f"public_key does not belong to the private key (whose key id is {key.key_id})"
            )
        return self

    def get_signing_key(self) -> SigningKey:
        """The library's signing key; the secret is unwrapped here and nowhere else."""
        return SigningKey.load(self.private_key, self.password)

    def get_verify_key(self) -> VerifyKey:
        """The public key devices must trust."""
        return self.get_signing_key().verify_key

"""What a device trusts: keys with roles, revoked key ids, a signature threshold.

Only keys holding the `package-signing` role may sign packages; a revoked key id is refused
even when the same key is also listed as trusted (revocation wins). A trust file is JSON:

    {
      "format": "modelferry-trust/1",
      "keys": [
        {"public_key": "<base64 of 32 raw bytes, or PEM>", "roles": ["package-signing"],
         "key_id": "<optional: checked against the key>", "name": "<optional label>"}
      ],
      "revoked_key_ids": ["0123456789abcdef"],
      "threshold": 1,
      "minimum_package_format": 1
    }

Devices given plain public keys (`--public-key`) trust each for package signing, as
before; `TrustPolicy.from_keys` builds that policy. docs/package-format.md describes how
the policy is applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from modelferry.errors import (
    KeyRoleError,
    PackageVerificationError,
    RevokedKeyError,
    TrustFileError,
    UntrustedKeyError,
)
from modelferry.json_depth import nesting_depth
from modelferry.packaging.envelope import Envelope
from modelferry.packaging.signing import INVALID_SIGNATURE, VerifyKey

__all__ = [
    "PACKAGE_SIGNING_ROLE",
    "TRUST_FORMAT",
    "TrustPolicy",
    "TrustedKey",
    "trust_policy",
]

PACKAGE_SIGNING_ROLE: Final = "package-signing"
TRUST_FORMAT: Final = "modelferry-trust/1"
#: The newest package format this reader knows; `minimum_package_format` may not exceed it.
NEWEST_FORMAT: Final = 2
_MAX_TRUST_FILE_BYTES = 1024 * 1024
_MAX_TRUST_FILE_DEPTH = 8
_KEY_ID = r"^[0-9a-f]{16}$"


@dataclass(frozen=True)
class TrustedKey:
    """A public key and the roles it is trusted for."""

    key: VerifyKey
    roles: frozenset[str]
    name: str = ""

    @property
    def key_id(self) -> str:
        """The key's id."""
        return self.key.key_id

    @property
    def signs_packages(self) -> bool:
        """True when the key holds the package-signing role."""
        return PACKAGE_SIGNING_ROLE in self.roles


@dataclass(frozen=True)
class TrustPolicy:
    """The keys a device trusts, what for, which are revoked, and what it requires.

    Attributes:
        keys: trusted keys with their roles.
        revoked: key ids that are refused whatever else says.
        threshold: distinct package-signing keys that must sign a package.
        minimum_format: the oldest package format accepted (1, or 2 to refuse format 1).
    """

    keys: tuple[TrustedKey, ...] = ()
    revoked: frozenset[str] = frozenset()
    threshold: int = 1
    minimum_format: int = 1
    _by_id: dict[str, TrustedKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        if self.minimum_format not in range(1, NEWEST_FORMAT + 1):
            raise ValueError(f"minimum_format must be between 1 and {NEWEST_FORMAT}")
        by_id: dict[str, TrustedKey] = {}
        for entry in self.keys:
            known = by_id.get(entry.key_id)
            roles = entry.roles | (known.roles if known else frozenset())
            by_id[entry.key_id] = replace(entry, roles=roles)
        object.__setattr__(self, "_by_id", by_id)

    @classmethod
    def from_keys(cls, keys: Iterable[VerifyKey]) -> TrustPolicy:
        """A policy trusting each of `keys` to sign packages (the plain `--public-key` way)."""
        return cls(tuple(TrustedKey(key, frozenset({PACKAGE_SIGNING_ROLE})) for key in keys))

    @classmethod
    def load(cls, path: Path) -> TrustPolicy:
        """Read a trust file.

        Raises:
            TrustFileError: unreadable, not JSON, or not a valid trust file; names the path.
        """
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TrustFileError(
                f"cannot read the trust file {path}: {exc.strerror}", path=str(path)
            ) from None
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "the trust file") -> TrustPolicy:
        """Parse a trust file's bytes; `source` names it in messages.

        Raises:
            TrustFileError: too large or deep, not JSON, an unknown field, a bad key, a key
                id that does not match its key, or an impossible threshold.
        """

        def refuse(problem: str) -> TrustFileError:
            return TrustFileError(f"{source} is not a valid trust file: {problem}", path=source)

        if len(data) > _MAX_TRUST_FILE_BYTES:
            raise refuse(f"larger than {_MAX_TRUST_FILE_BYTES} bytes")
        if nesting_depth(data, stop_above=_MAX_TRUST_FILE_DEPTH) > _MAX_TRUST_FILE_DEPTH:
            raise refuse(f"nests deeper than {_MAX_TRUST_FILE_DEPTH} levels")
        try:
            document = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
            parsed = _TrustFile.model_validate(document)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            if isinstance(exc, ValidationError):
                raise refuse(_problems(exc)) from None
            raise refuse("not UTF-8 JSON") from None
        keys = []
        for number, item in enumerate(parsed.keys, 1):
            try:
                key = VerifyKey.load(item.public_key)
            except PackageVerificationError as exc:
                raise refuse(f"keys[{number}]: {exc}") from None
            if item.key_id is not None and item.key_id != key.key_id:
                raise refuse(
                    f"keys[{number}] says key_id {item.key_id} but its public key has id "
                    f"{key.key_id}"
                )
            keys.append(TrustedKey(key, frozenset(item.roles), item.name))
        signers = {k.key_id for k in keys if k.signs_packages} - set(parsed.revoked_key_ids)
        if parsed.threshold > max(len(signers), 1):
            raise refuse(
                f"threshold {parsed.threshold} exceeds the {len(signers)} unrevoked "
                f"{PACKAGE_SIGNING_ROLE} key(s) it lists"
            )
        return cls(
            tuple(keys),
            frozenset(parsed.revoked_key_ids),
            parsed.threshold,
            parsed.minimum_package_format,
        )

    def with_keys(self, keys: Iterable[VerifyKey]) -> TrustPolicy:
        """This policy, also trusting `keys` to sign packages (unless revoked)."""
        added = tuple(TrustedKey(key, frozenset({PACKAGE_SIGNING_ROLE})) for key in keys)
        return replace(self, keys=self.keys + added)

    def requiring_format(self, minimum: int) -> TrustPolicy:
        """This policy, refusing packages older than format `minimum` (never lowering it)."""
        return replace(self, minimum_format=max(self.minimum_format, minimum))

    @property
    def signers(self) -> dict[str, VerifyKey]:
        """Unrevoked keys with the package-signing role, by key id."""
        return {
            key_id: entry.key
            for key_id, entry in self._by_id.items()
            if entry.signs_packages and key_id not in self.revoked
        }

    def __iter__(self) -> Iterator[VerifyKey]:
        return iter(self.signers.values())

    def __len__(self) -> int:
        return len(self.signers)

    def signer_for(self, key_id: str) -> VerifyKey:
        """The key that may verify a format 1 package naming `key_id` as its signer.

        Raises:
            RevokedKeyError, KeyRoleError, UntrustedKeyError: naming the key and what to do.
        """
        self._refuse_unusable(key_id)
        key = self.signers.get(key_id)
        if key is None:
            raise self._untrusted(key_id)
        if self.threshold > 1:
            raise UntrustedKeyError(
                f"this device requires {self.threshold} signatures by {PACKAGE_SIGNING_ROLE} "
                "keys and a format 1 package carries one: ask for a format 2 package signed "
                f"by {self.threshold} of its keys",
                key_id=key_id,
            )
        return key

    def accepted_signers(self, envelope: Envelope) -> tuple[str, ...]:
        """The ids of the distinct package-signing keys whose signatures verify.

        Every signature is checked against the key its `keyid` names first, then against
        every other known key: the keyid is only a hint (DSSE). Signatures by revoked or
        role-less keys count for nothing.

        Raises:
            RevokedKeyError, KeyRoleError, UntrustedKeyError: fewer than `threshold`
                signatures verify, naming the first key at fault and what to do.
            PackageVerificationError: no signature verifies against any known key.
        """
        signed = envelope.signed_bytes
        accepted: dict[str, None] = {}
        unusable: list[str] = []
        unknown: list[str] = []
        for signature in envelope.signatures:
            hinted = self._by_id.get(signature.keyid or "")
            candidates = [hinted] if hinted else []
            candidates += [e for e in self._by_id.values() if e is not hinted]
            match = next(
                (e for e in candidates if e.key.is_valid_signature(signed, signature.sig)), None
            )
            if match is None:
                claimed = signature.keyid or ""
                if claimed in self.revoked:
                    unusable.append(claimed)
                elif claimed and hinted is None:
                    unknown.append(claimed)
            elif match.key_id in self.revoked or not match.signs_packages:
                unusable.append(match.key_id)
            else:
                accepted[match.key_id] = None
        if len(accepted) >= self.threshold:
            return tuple(accepted)
        if unusable:
            self._refuse_unusable(unusable[0])
        if accepted:
            found = ", ".join(accepted)
            raise UntrustedKeyError(
                f"the package carries {len(accepted)} valid signature(s) by "
                f"{PACKAGE_SIGNING_ROLE} keys ({found}); this device requires "
                f"{self.threshold}: ask for a package signed by {self.threshold} of its keys",
                key_id=next(iter(accepted)),
            )
        if unknown:
            raise self._untrusted(unknown[0])
        raise PackageVerificationError(INVALID_SIGNATURE)

    def _refuse_unusable(self, key_id: str) -> None:
        if key_id in self.revoked:
            raise RevokedKeyError(
                f"the package is signed with key {key_id}, which this device's trust file "
                "revokes: ask for the package to be signed again with a current key",
                key_id=key_id,
            )
        entry = self._by_id.get(key_id)
        if entry is not None and not entry.signs_packages:
            held = ", ".join(sorted(entry.roles)) or "no role"
            raise KeyRoleError(
                f"the package is signed with key {key_id}, which is trusted here for {held} "
                f"but not for {PACKAGE_SIGNING_ROLE}: ask for a package signed with a "
                f"{PACKAGE_SIGNING_ROLE} key, or give this key that role in the trust file "
                "if it is meant to sign packages",
                key_id=key_id,
                role=PACKAGE_SIGNING_ROLE,
            )

    def _untrusted(self, key_id: str) -> UntrustedKeyError:
        known = ", ".join(sorted(self.signers)) or "none"
        return UntrustedKeyError(
            f"the package is signed with key {key_id}, which is not trusted here "
            f"(trusted key ids: {known}); add that key's public key to the trusted keys "
            "if it is yours, or ask for a package signed with a trusted key",
            key_id=key_id,
        )


def trust_policy(keys: Iterable[VerifyKey] | TrustPolicy) -> TrustPolicy:
    """`keys` as a policy: a policy as it is, plain keys each trusted to sign packages."""
    return keys if isinstance(keys, TrustPolicy) else TrustPolicy.from_keys(keys)


class _TrustFileKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    public_key: str = Field(min_length=1, max_length=4096)
    roles: tuple[str, ...] = Field(max_length=16)
    key_id: str | None = Field(default=None, pattern=_KEY_ID)
    name: str = Field(default="", max_length=256)


class _TrustFile(BaseModel):
    # Strict: a misspelt field in a file that decides what a device installs must not
    # silently mean "no revocations".
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["modelferry-trust/1"]
    keys: tuple[_TrustFileKey, ...] = Field(min_length=1, max_length=256)
    revoked_key_ids: tuple[Annotated[str, StringConstraints(pattern=_KEY_ID)], ...] = Field(
        default=(), max_length=4096
    )
    threshold: int = Field(default=1, ge=1, le=16)
    minimum_package_format: int = Field(default=1, ge=1, le=NEWEST_FORMAT)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
        for err in exc.errors()[:5]
    )


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")

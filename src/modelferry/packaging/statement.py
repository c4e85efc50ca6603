"""The signed statement of a format 2 package: what it is, until when, and the version floor.

The statement is the payload of the package's DSSE envelope (`manifest.dsse.json`). It
names the package, the model version it carries, the SHA-256 of the exact bytes of
`manifest.json` (which lists every other file), when it stops being installable
(`expires`) and, optionally, `min_version`: the lowest version of this model a device may
install once it has accepted this package (anti-rollback). docs/package-format.md is the
specification.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelferry.errors import PackageVerificationError, PackagingError, VersionFloorError
from modelferry.packaging.manifest import ID_PATTERN, validation_problems
from modelferry.packaging.signing import INVALID_SIGNATURE

__all__ = [
    "DEFAULT_EXPIRY_DAYS",
    "STATEMENT_TYPE",
    "PackageStatement",
    "StatementModel",
    "check_version_floor",
    "check_version_text",
    "default_expiry",
    "is_below",
    "parse_utc",
]

#: The envelope's payloadType: the encoding and schema of the statement, versioned.
STATEMENT_TYPE: Final = "application/vnd.modelferry.package-statement.v1+json"
#: How long a package stays installable when the builder is not told otherwise.
DEFAULT_EXPIRY_DAYS: Final = 90
#: Versions the floor compares: dot-separated decimal numbers, e.g. `7` or `2026.1.3`.
VERSION_PATTERN: Final = r"^\d{1,18}(\.\d{1,18}){0,7}$"
_UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


class StatementModel(BaseModel):
    """The model the package carries (a registered model and its version)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    version: str = Field(min_length=1, max_length=128)


class PackageStatement(BaseModel):
    """What the package's signers vouch for.

    Attributes:
        statement: always `modelferry-package-statement/1`.
        package_id: the package's id, as in its manifest.
        version: the package version, as in its manifest.
        model: the model name and version, as in its manifest.
        manifest_sha256: SHA-256 (lowercase hex) of the exact bytes of `manifest.json`.
        expires: ISO-8601 UTC to the second; a device refuses the package from then on.
        min_version: the lowest version of `model.name` a device accepts after this
            package, or None for no floor.
    """

    # Unknown keys are ignored, as in the manifest: signed additions old readers can skip.
    model_config = ConfigDict(frozen=True, extra="ignore")

    statement: Literal["modelferry-package-statement/1"] = "modelferry-package-statement/1"
    package_id: str = Field(pattern=ID_PATTERN)
    version: str = Field(pattern=ID_PATTERN)
    model: StatementModel
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    expires: str = Field(pattern=_UTC_PATTERN)
    min_version: str | None = Field(default=None, pattern=VERSION_PATTERN)

    @property
    def label(self) -> str:
        """`package_id/version`, for messages."""
        return f"{self.package_id}/{self.version}"

    @property
    def expires_at(self) -> datetime:
        """`expires` as an aware datetime."""
        return parse_utc(self.expires)

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, 2-space indent, UTF-8, a trailing newline."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> PackageStatement:
        """Parse the (already authenticated) payload of the envelope.

        Raises:
            PackageVerificationError: not a JSON object, another statement kind, a field
                missing or wrong. The envelope reader bounds size and depth beforehand.
        """
        try:
            document = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise PackageVerificationError("the signed statement is not UTF-8 JSON") from None
        if not isinstance(document, dict):
            raise PackageVerificationError("the signed statement must be a JSON object")
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise PackageVerificationError(
                "the signed statement is not a modelferry-package-statement/1: "
                + validation_problems(exc, "statement")
            ) from None

    def check_manifest(self, manifest_sha256: str) -> None:
        """Refuse a `manifest.json` other than the one the statement names."""
        if manifest_sha256 != self.manifest_sha256:
            # The manifest is signed through its digest: another one is simply unsigned.
            raise PackageVerificationError(INVALID_SIGNATURE)


def default_expiry(
    anchor: datetime, now: datetime | None = None, days: int = DEFAULT_EXPIRY_DAYS
) -> datetime:
    """The end of the first `days`-long period from `anchor` that ends a third of it after `now`.

    The periods are counted from `anchor`, the model version's creation time, so a package
    rebuilt on another day (a delivery run again, a CI job repeated) gets the same expiry,
    hence the same bytes, which a package store requires of a published version. Building a
    long-lived champion again after its period runs out gives the next period, never one
    that is about to end.
    """
    period = timedelta(days=days)
    start = anchor.astimezone(UTC).replace(microsecond=0)
    ahead = (now or datetime.now(UTC)) + period / 3 - start
    periods = max(1, math.ceil(ahead / period))
    return start + periods * period


def parse_utc(text: str) -> datetime:
    """`YYYY-MM-DDTHH:MM:SSZ` as an aware datetime.

    Raises:
        PackageVerificationError: another form, or not a date.
    """
    if not re.fullmatch(_UTC_PATTERN, text):
        raise PackageVerificationError(
            f"{text!r} is not an ISO-8601 UTC time like 2026-05-01T12:00:00Z"
        )
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise PackageVerificationError(f"{text!r} is not a valid date and time") from None


def check_version_text(value: str, what: str) -> str:
    """`value` if the floor can compare it, else `PackagingError` saying what is allowed."""
    if not re.fullmatch(VERSION_PATTERN, value):
        raise PackagingError(
            f"{what} {value!r} cannot be compared as a version: use decimal numbers "
            "separated by dots (e.g. 7 or 2026.1.3), as MLflow model versions are"
        )
    return value


def is_below(version: str, floor: str) -> bool | None:
    """True when `version` sorts before `floor`; None when either cannot be compared.

    Numbers are compared part by part, and missing parts count as 0 (`7` == `7.0`).
    """
    if not (re.fullmatch(VERSION_PATTERN, version) and re.fullmatch(VERSION_PATTERN, floor)):
        return None
    left = [int(part) for part in version.split(".")]
    right = [int(part) for part in floor.split(".")]
    width = max(len(left), len(right))
    return left + [0] * (width - len(left)) < right + [0] * (width - len(right))


def check_version_floor(model_name: str, model_version: str, floors: Mapping[str, str]) -> None:
    """Refuse `model_version` of `model_name` when it is below that model's floor.

    Raises:
        VersionFloorError: below the floor, or not comparable with it.
    """
    floor = floors.get(model_name)
    if floor is None:
        return
    below = is_below(model_version, floor)
    if below is None:
        raise VersionFloorError(
            f"{model_name} version {model_version!r} cannot be compared with {floor}, the "
            f"lowest version of {model_name} this device accepts (anti-rollback); deliver a "
            f"numbered version {floor} or newer",
            model_name=model_name,
            model_version=model_version,
            floor=floor,
        )
    if below:
        raise VersionFloorError(
            f"{model_name} version {model_version} is below {floor}, the lowest version of "
            f"{model_name} this device accepts (anti-rollback: a package it installed set "
            f"min_version {floor}); deliver version {floor} or newer, or register the older "
            "model again as a new version to go back to it",
            model_name=model_name,
            model_version=model_version,
            floor=floor,
        )


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")

"""The package manifest: what a package holds, in canonical JSON, covered by the signature.

docs/package-format.md is the specification devices and the edge agent rely on; keep the
two in step.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelferry.errors import PackageVerificationError, PackagingError
from modelferry.json_depth import nesting_depth

FORMAT: Literal["modelferry-package/1"] = "modelferry-package/1"
#: Signed by a DSSE envelope with an expiry and a version floor (see `statement`).
FORMAT_2: Literal["modelferry-package/2"] = "modelferry-package/2"
ManifestFormat = Literal["modelferry-package/1", "modelferry-package/2"]
#: Every format this reader understands, by number.
FORMATS: dict[int, ManifestFormat] = {1: FORMAT, 2: FORMAT_2}
MANIFEST_NAME = "manifest.json"
#: Format 1: the Ed25519 signature of `manifest.json`.
SIGNATURE_NAME = "manifest.sig"
#: Format 2: the DSSE envelope of the signed statement, which names `manifest.json`.
ENVELOPE_NAME = "manifest.dsse.json"
#: Entries of the zip that the manifest does not list (it cannot list itself).
METADATA_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME, ENVELOPE_NAME})

#: Package ids and versions become file names, store keys and URL parts.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Flavor = Literal["lightgbm", "sklearn"]

_CREATED_AT_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"

#: The largest `manifest.json` read at all (10,000 listed files take about 2 MB).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: How deep arrays and objects may nest; the format itself needs 3 levels.
MAX_MANIFEST_DEPTH = 32

# A JSON string (escapes included): brackets inside one do not nest anything.


class _Part(BaseModel):
    # Readers ignore keys they do not know: additions that old readers may safely skip
    # keep format 1; anything else bumps the format string.
    model_config = ConfigDict(frozen=True, extra="ignore")


class ModelInfo(_Part):
    """The registered model version a package was built from."""

    name: str
    version: str
    run_id: str | None
    flavor: Flavor


class InputColumn(_Part):
    """One input column of the model signature."""

    name: str
    type: str
    required: bool


class FileEntry(_Part):
    """One file of the package, with its size and SHA-256 (lowercase hex)."""

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(_Part):
    """The signed description of a package (`manifest.json`).

    `files` lists every entry of the zip except `manifest.json` and its signature
    (`manifest.sig` in format 1, `manifest.dsse.json` in format 2), sorted by path;
    `entry_point`, `requirements` and `input_example` name listed files.
    """

    format: ManifestFormat = FORMAT
    package_id: str = Field(pattern=ID_PATTERN)
    name: str
    version: str = Field(pattern=ID_PATTERN)
    model: ModelInfo
    dataset_digest: str | None
    created_at: str = Field(pattern=_CREATED_AT_PATTERN)
    python_version: str = Field(pattern=r"^\d+\.\d+$")
    entry_point: str
    requirements: str
    input_schema: tuple[InputColumn, ...]
    input_example: str | None
    class_names: tuple[str, ...]
    signing_key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    files: tuple[FileEntry, ...]

    @model_validator(mode="after")
    def _files_are_consistent(self) -> Manifest:
        paths = [entry.path for entry in self.files]
        for path in paths:
            problem = entry_name_problem(path)
            if problem:
                raise ValueError(f"files: {path!r} {problem}")
            if path in METADATA_NAMES:
                raise ValueError(f"files: {path!r} is package metadata and cannot be listed")
        if paths != sorted(set(paths)):
            raise ValueError("files must be sorted by path, each path once")
        named = {
            "entry_point": self.entry_point,
            "requirements": self.requirements,
            "input_example": self.input_example,
        }
        for field, named_path in named.items():
            if named_path is not None and named_path not in paths:
                raise ValueError(f"{field} {named_path!r} is not one of the listed files")
        return self

    @property
    def format_number(self) -> int:
        """1 or 2: how the package is signed."""
        return 2 if self.format == FORMAT_2 else 1

    @property
    def file_name(self) -> str:
        """The package's zip file name, `{package_id}-{version}.zip`."""
        return package_file_name(self.package_id, self.version)

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, 2-space indent, UTF-8, a trailing newline."""
        document = self.model_dump(mode="json")
        text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse `manifest.json`.

        Raises:
            PackageVerificationError: too large, nested too deep, not UTF-8 JSON, another
                format, or a field is wrong.
        """
        document = load_manifest_document(data)
        if not isinstance(document, dict):
            raise PackageVerificationError(f"{MANIFEST_NAME} must hold a JSON object")
        found = document.get("format")
        if found not in FORMATS.values():
            known = " and ".join(repr(name) for name in FORMATS.values())
            raise PackageVerificationError(
                f"{MANIFEST_NAME} has format {found!r}; this reader understands {known}. "
                "Update the reader (edge agent) or rebuild the package in a format it knows."
            )
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise PackageVerificationError(
                f"{MANIFEST_NAME} does not follow {found}: {validation_problems(exc, 'manifest')}"
            ) from None

    def summary(self) -> str:
        """The package in one line."""
        return (
            f"{self.file_name}: {self.model.name} v{self.model.version} ({self.model.flavor}), "
            f"{len(self.files)} files, signed by key {self.signing_key_id}"
        )


def load_manifest_document(data: bytes) -> object:
    """The JSON document in `manifest.json`, read within bounds; not yet checked further.

    The size and nesting depth are checked before the JSON is parsed (and without
    recursion), so a hostile manifest is a verification error, never a crash. `NaN` and
    `Infinity` are refused: canonical JSON cannot hold them.

    Raises:
        PackageVerificationError: larger than `MAX_MANIFEST_BYTES`, nested deeper than
            `MAX_MANIFEST_DEPTH`, or not UTF-8 JSON.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise PackageVerificationError(
            f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes; refusing to read it"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageVerificationError(f"{MANIFEST_NAME} is not UTF-8 JSON: {exc}") from None
    if nesting_depth(data, stop_above=MAX_MANIFEST_DEPTH) > MAX_MANIFEST_DEPTH:
        raise PackageVerificationError(
            f"{MANIFEST_NAME} nests deeper than {MAX_MANIFEST_DEPTH} levels; it is not a "
            f"{FORMAT} manifest, do not install the package"
        )
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise PackageVerificationError(f"{MANIFEST_NAME} is not UTF-8 JSON: {exc}") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def package_file_name(package_id: str, version: str) -> str:
    """`{package_id}-{version}.zip`."""
    return f"{package_id}-{version}.zip"


def check_package_id(value: str, what: str) -> str:
    """`value` if it is a valid package id or version, else `PackagingError` saying why."""
    if not re.fullmatch(ID_PATTERN, value):
        raise PackagingError(
            f"{what} {value!r} cannot name a package: use letters, digits, '.', '_' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return value


def format_created_at(moment: datetime) -> str:
    """ISO-8601 UTC to the second, e.g. `2026-05-01T12:00:00Z`.

    Raises:
        PackagingError: a naive datetime, whose time zone nobody can know.
    """
    if moment.tzinfo is None:
        raise PackagingError("created_at must be time-zone aware (e.g. datetime.now(UTC))")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_name_problem(name: str) -> str | None:
    """Why `name` is not a safe relative POSIX path for an archive entry, or None.

    Refused: empty names, absolute paths, drive letters, backslashes, NUL, empty, `.` and
    `..` components. A trailing `/` (a folder entry) is allowed.
    """
    if not name:
        return "is empty"
    if name.startswith("/"):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    if "\\" in name:
        return "holds a backslash (a Windows path separator)"
    if "\x00" in name:
        return "holds a NUL character"
    parts = name.removesuffix("/").split("/")
    if any(part in {"", ".", ".."} for part in parts):
        return "has an empty, '.' or '..' component"
    return None


def validation_problems(exc: ValidationError, document: str) -> str:
    """The first five problems of a signed document's validation, as `field: message`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or document}: {err['msg']}"
        for err in exc.errors()[:5]
    )

"""Model packages for edge devices: a deterministic, signed zip, verified before it is trusted.

Build with `build_package`; check with `verify_package` (the zip) and `verify_tree` (an
unpacked folder); unpack only with `safe_extract`, or all three at once with
`unpack_package`. The format is specified in docs/package-format.md.

The MLflow side (find the version, download it, record the package on it) is in
`modelferry.packaging.registry`, kept out of this import so that devices verifying
packages need neither MLflow nor the training stack.
"""

from modelferry.packaging.archive import (
    DEFAULT_LIMITS,
    ExtractionLimits,
    check_entries,
    write_deterministic_zip,
)
from modelferry.packaging.build import BuiltPackage, PackageInputs, build_package
from modelferry.packaging.extraction import safe_extract
from modelferry.packaging.manifest import (
    FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileEntry,
    InputColumn,
    Manifest,
    ModelInfo,
    package_file_name,
)
from modelferry.packaging.model_folder import ModelFolder, read_model_folder, score_requirements
from modelferry.packaging.signing import (
    SigningKey,
    VerifyKey,
    development_signing_key,
    key_id,
)
from modelferry.packaging.verification import (
    INVALID_SIGNATURE,
    file_sha256,
    unpack_package,
    verify_package,
    verify_tree,
)

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT",
    "INVALID_SIGNATURE",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "BuiltPackage",
    "ExtractionLimits",
    "FileEntry",
    "InputColumn",
    "Manifest",
    "ModelFolder",
    "ModelInfo",
    "PackageInputs",
    "SigningKey",
    "VerifyKey",
    "build_package",
    "check_entries",
    "development_signing_key",
    "file_sha256",
    "key_id",
    "package_file_name",
    "read_model_folder",
    "safe_extract",
    "score_requirements",
    "unpack_package",
    "verify_package",
    "verify_tree",
    "write_deterministic_zip",
]

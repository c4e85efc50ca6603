"""Model packages for edge devices: a deterministic, signed zip, verified before it is trusted.

Build with `build_package` (format 2 by default: a DSSE envelope with an expiry and an
optional anti-rollback version floor); check with `verify_package` or
`verify_signed_package` (the zip, against plain keys or a `TrustPolicy` of key roles and
revocations) and `verify_tree` (an unpacked folder); unpack only with `safe_extract`, or
all three at once with `unpack_package`. The format is specified in
docs/package-format.md.

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
from modelferry.packaging.envelope import Envelope, EnvelopeSignature, pae, sign_envelope
from modelferry.packaging.extraction import safe_extract
from modelferry.packaging.manifest import (
    ENVELOPE_NAME,
    FORMAT,
    FORMAT_2,
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
    INVALID_SIGNATURE,
    SigningKey,
    VerifyKey,
    development_signing_key,
    key_id,
)
from modelferry.packaging.statement import (
    DEFAULT_EXPIRY_DAYS,
    STATEMENT_TYPE,
    PackageStatement,
    default_expiry,
)
from modelferry.packaging.trust import (
    PACKAGE_SIGNING_ROLE,
    TrustedKey,
    TrustPolicy,
    trust_policy,
)
from modelferry.packaging.verification import (
    VerifiedPackage,
    file_sha256,
    unpack_package,
    verify_package,
    verify_signed_package,
    verify_tree,
)

__all__ = [
    "DEFAULT_EXPIRY_DAYS",
    "DEFAULT_LIMITS",
    "ENVELOPE_NAME",
    "FORMAT",
    "FORMAT_2",
    "INVALID_SIGNATURE",
    "MANIFEST_NAME",
    "PACKAGE_SIGNING_ROLE",
    "SIGNATURE_NAME",
    "STATEMENT_TYPE",
    "BuiltPackage",
    "Envelope",
    "EnvelopeSignature",
    "ExtractionLimits",
    "FileEntry",
    "InputColumn",
    "Manifest",
    "ModelFolder",
    "ModelInfo",
    "PackageInputs",
    "PackageStatement",
    "SigningKey",
    "TrustPolicy",
    "TrustedKey",
    "VerifiedPackage",
    "VerifyKey",
    "build_package",
    "check_entries",
    "default_expiry",
    "development_signing_key",
    "file_sha256",
    "key_id",
    "package_file_name",
    "pae",
    "read_model_folder",
    "safe_extract",
    "score_requirements",
    "sign_envelope",
    "trust_policy",
    "unpack_package",
    "verify_package",
    "verify_signed_package",
    "verify_tree",
    "write_deterministic_zip",
]

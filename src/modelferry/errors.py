"""The exception tree.

Every failure a user must act on has its own class; each message says what was wrong and
what to do about it.

    ModelferryError
    ├── MissingExtraError           an optional extra is not installed (also an ImportError)
    ├── InvalidConfigError          the model config file is missing or invalid
    ├── DataError                   the data cannot be loaded or is unfit for training
    ├── TrackingUnavailableError    the MLflow tracking server cannot be reached (transient)
    ├── RegistryError               the MLflow registry refused an operation
    ├── ApprovalError
    │   ├── ApprovalRejectedError   a reviewer or the gate rejected the challenger
    │   └── ApprovalTimedOutError   nobody answered before the approval timeout
    ├── OrchestratorError           the Prefect API refused or could not be reached
    │   ├── FlowRunNotFoundError    no flow run has that id
    │   └── FlowRunNotPausedError   the flow run is not waiting for approval
    ├── EndpointError
    │   ├── InvalidEndpointSpecError  a name, traffic split or model reference is invalid
    │   ├── EndpointNotFoundError     no endpoint or deployment has that name
    │   ├── DeploymentFailedError     a deployment did not start or failed its smoke test
    │   └── OperationNotSupportedError  the backend does not offer an optional operation
    ├── BatchScoringError           batch inputs missing or unreadable, or no file could be scored
    ├── PackagingError              a model package cannot be built
    ├── PackageVerificationError    a package's signature, checksums or layout are wrong
    │   ├── UnsafeArchiveError        an archive entry escapes its folder, is a link or too large
    │   ├── UntrustedKeyError         signed by a key the device does not trust
    │   │   ├── RevokedKeyError         ... by a key the trust file revokes
    │   │   └── KeyRoleError            ... by a key without the package-signing role
    │   ├── PackageExpiredError       the signed statement's expiry has passed
    │   ├── VersionFloorError         the model version is below the anti-rollback floor
    │   └── PackageFormatError        the device requires a newer package format
    ├── TrustFileError              a device's trust file is missing or invalid
    ├── PackageStoreError           a package store refused an upload, link or download
    └── DeliveryError               also: the delivery record store failed
        ├── MalformedMessageError     a protocol message lacks a property or has a bad body
        ├── ChannelError              a delivery channel cannot send or receive
        ├── DeliveryFailedError       a device reported Error, or a fleet rollout was aborted
        ├── DeliveryTimedOutError     a device went quiet or missed the delivery deadline
        └── (edge agent, in modelferry.edge) DownloadFailedError / LinkExpiredError,
            SmokeTestError, InstallError: the device-side failures it reports as `Error`

Errors about a named thing carry it as keyword-only attributes (`endpoint`, `deployment`,
`model_name`, `model_version`, `package`, `devices`, `flow_run_id`, `key`, ...), each
defaulting to empty, so a handler reads the context instead of parsing the message and
`raise X("message")` stays valid where there is none. No attribute ever holds a secret:
URLs are kept with their password and query cut out. Every error pickles with its
attributes (Prefect carries exceptions between processes): each `__init__` passes the
message alone to `super().__init__`, so `args` is `(message,)` and the default pickling
calls `cls(message)`, then restores the attributes; give every new keyword a default.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelferry.redaction import Redactor, without_query


def _shown_url(url: str) -> str:
    """`url` as an attribute may hold it: no password, no query (a SAS token)."""
    return Redactor()(without_query(url) if "://" in url else url)


class ModelferryError(Exception):
    """Base class of every error modelferry raises on purpose."""


class MissingExtraError(ModelferryError, ImportError):
    """A feature needs an optional extra that is not installed; `extra` names it.

    Also an `ImportError`, so code that guards an optional import keeps working.
    """

    def __init__(self, message: str, *, extra: str = "") -> None:
        super().__init__(message)
        self.extra = extra


class InvalidConfigError(ModelferryError):
    """The model config file is missing, unreadable or fails validation.

    Attributes:
        key: the field or setting at fault, dotted (e.g. "gate.metrics"); "" when unknown.
        path: the file, when the error is about one.
    """

    def __init__(self, message: str, *, key: str = "", path: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.path = path


class DataError(ModelferryError):
    """The data source cannot be read, or what it holds cannot train a model."""


class TrackingUnavailableError(ModelferryError):
    """The MLflow tracking server did not answer; retrying later may succeed.

    Attributes:
        tracking_uri: the server, without password or query.
    """

    def __init__(self, message: str, *, tracking_uri: str = "") -> None:
        super().__init__(message)
        self.tracking_uri = _shown_url(tracking_uri)


class RegistryError(ModelferryError):
    """The MLflow model registry refused an operation.

    Attributes:
        model_name: the registered model.
        model_version: the version, when the operation was about one.
    """

    def __init__(self, message: str, *, model_name: str = "", model_version: str = "") -> None:
        super().__init__(message)
        self.model_name = model_name
        self.model_version = model_version


class ApprovalError(ModelferryError):
    """Base class for a challenger that was not approved.

    Attributes:
        model_name: the registered model.
        model_version: the challenger's version.
    """

    def __init__(self, message: str, *, model_name: str = "", model_version: str = "") -> None:
        super().__init__(message)
        self.model_name = model_name
        self.model_version = model_version


class ApprovalRejectedError(ApprovalError):
    """The challenger was rejected, by the gate or by a reviewer."""


class ApprovalTimedOutError(ApprovalError):
    """No reviewer answered before the approval timeout."""


class OrchestratorError(ModelferryError):
    """The Prefect API refused a request or could not be reached.

    Attributes:
        flow_run_id: the flow run the request was about, when it was about one.
    """

    def __init__(self, message: str, *, flow_run_id: str = "") -> None:
        super().__init__(message)
        self.flow_run_id = flow_run_id


class FlowRunNotFoundError(OrchestratorError):
    """No flow run has the given id."""


class FlowRunNotPausedError(OrchestratorError):
    """The flow run exists but is not paused waiting for approval."""


class EndpointError(ModelferryError):
    """Base class for failures of online endpoints and their deployments.

    Attributes:
        endpoint: the endpoint, as the user named it.
        deployment: the deployment, when the failure is about one.
    """

    def __init__(self, message: str, *, endpoint: str = "", deployment: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.deployment = deployment


class InvalidEndpointSpecError(EndpointError):
    """An endpoint name, deployment spec or traffic split is invalid."""


class EndpointNotFoundError(EndpointError):
    """No endpoint (or deployment) has the given name."""


class DeploymentFailedError(EndpointError):
    """A deployment did not become ready, or failed its smoke request.

    Attributes:
        endpoint: the endpoint.
        deployment: the deployment that failed.
        model_name: the model it deploys, when known.
        model_version: the model version it deploys, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        deployment: str = "",
        model_name: str = "",
        model_version: str = "",
    ) -> None:
        super().__init__(message, endpoint=endpoint, deployment=deployment)
        self.model_name = model_name
        self.model_version = model_version


class OperationNotSupportedError(EndpointError):
    """An endpoint backend does not offer an optional operation (e.g. traffic rollback).

    Attributes:
        backend: the backend, as messages name it (e.g. "Azure ML").
        operation: what was asked of it (e.g. "rollback_traffic").
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        deployment: str = "",
        backend: str = "",
        operation: str = "",
    ) -> None:
        super().__init__(message, endpoint=endpoint, deployment=deployment)
        self.backend = backend
        self.operation = operation


class BatchScoringError(ModelferryError):
    """Batch inputs are missing or unreadable, or a batch run could score no file at all."""


class PackagingError(ModelferryError):
    """A model package cannot be built (model missing, files unreadable, bad signing key).

    Attributes:
        model_name: the model being packaged.
        model_version: its version.
    """

    def __init__(self, message: str, *, model_name: str = "", model_version: str = "") -> None:
        super().__init__(message)
        self.model_name = model_name
        self.model_version = model_version


class PackageVerificationError(ModelferryError):
    """A package failed verification: bad signature, checksum, size or layout.

    Attributes:
        package: the package (its id, or its file when no id is known yet).
    """

    def __init__(self, message: str, *, package: str = "") -> None:
        super().__init__(message)
        self.package = package


class UnsafeArchiveError(PackageVerificationError):
    """An archive entry is absolute, climbs out with `..`, is a link, or unpacks too large."""


class UntrustedKeyError(PackageVerificationError):
    """A package is signed by a key the device does not trust; `key_id` names it."""

    def __init__(self, message: str, *, key_id: str | None = None, package: str = "") -> None:
        super().__init__(message, package=package)
        self.key_id = key_id


class RevokedKeyError(UntrustedKeyError):
    """A package is signed by a key the device's trust file revokes."""


class KeyRoleError(UntrustedKeyError):
    """A package is signed by a trusted key that lacks the role (`role`) signing needs."""

    def __init__(
        self, message: str, *, key_id: str | None = None, role: str = "", package: str = ""
    ) -> None:
        super().__init__(message, key_id=key_id, package=package)
        self.role = role


class PackageExpiredError(PackageVerificationError):
    """A package's signed statement expired (`expires`, ISO-8601 UTC) before it was installed."""

    def __init__(self, message: str, *, package: str = "", expires: str = "") -> None:
        super().__init__(message, package=package)
        self.expires = expires


class VersionFloorError(PackageVerificationError):
    """A model version is below the anti-rollback floor the device accepted for that model.

    Attributes:
        model_name: the model.
        model_version: the version refused.
        floor: the lowest version the device still accepts.
    """

    def __init__(
        self,
        message: str,
        *,
        model_name: str = "",
        model_version: str = "",
        floor: str = "",
        package: str = "",
    ) -> None:
        super().__init__(message, package=package)
        self.model_name = model_name
        self.model_version = model_version
        self.floor = floor


class PackageFormatError(PackageVerificationError):
    """A package is in an older format than the device requires (`found` < `required`)."""

    def __init__(
        self, message: str, *, found: int = 0, required: int = 0, package: str = ""
    ) -> None:
        super().__init__(message, package=package)
        self.found = found
        self.required = required


class TrustFileError(ModelferryError):
    """A device's trust file (trusted keys, roles, revocations) is unreadable or invalid."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class PackageStoreError(ModelferryError):
    """A package store refused an upload, a link or a download.

    Attributes:
        package: the package id the operation was about.
        package_version: its version.
        store_url: where the store (or the package in it) is, without password or query
            (a SAS token).
    """

    def __init__(
        self, message: str, *, package: str = "", package_version: str = "", store_url: str = ""
    ) -> None:
        super().__init__(message)
        self.package = package
        self.package_version = package_version
        self.store_url = _shown_url(store_url)


class DeliveryError(ModelferryError):
    """Base class for failures of edge delivery.

    Attributes:
        package: the package id being delivered.
        package_version: its version.
        devices: the devices the failure is about (for a rollout: those that failed).
    """

    def __init__(
        self,
        message: str,
        *,
        package: str = "",
        package_version: str = "",
        devices: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.package = package
        self.package_version = package_version
        self.devices = tuple(devices)


class MalformedMessageError(DeliveryError):
    """A protocol message lacks a property, has a wrong one, or a body that is not valid JSON."""


class ChannelError(DeliveryError):
    """A delivery channel could not send or receive (broker or hub unreachable, refused)."""


class DeliveryFailedError(DeliveryError):
    """A device reported `Error`, or a fleet rollout stopped after too many failures."""


class DeliveryTimedOutError(DeliveryError):
    """A device sent nothing within the inactivity timeout, or missed the overall deadline."""


class DatabaseSchemaError(ModelferryError):
    """A database's schema was written by a newer modelferry, or cannot be migrated.

    Attributes:
        url: the database, without password or query.
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = _shown_url(url)

"""The model config file: one per model, JSON or YAML, validated before any work starts.

`load_config` is the only way in: it reads the file, validates it and turns every problem
into one `InvalidConfigError` whose message names the field, the value found and what is
allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from modelferry.config_files import read_mapping
from modelferry.delivery.plan import FleetPolicy
from modelferry.errors import InvalidConfigError
from modelferry.metrics import HIGHER_IS_BETTER, MetricName

ModelType = Literal["lightgbm", "random_forest", "logistic_regression"]
ApprovalMode = Literal["auto", "manual", "gate+manual"]
APPROVAL_MODES: tuple[ApprovalMode, ...] = ("auto", "manual", "gate+manual")

# MLflow registered-model names end up in URIs (models:/NAME@alias) and artifact keys.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class _Strict(BaseModel):
    """Base for config sections: unknown keys are typos, not extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BundledDataSource(_Strict):
    """A dataset that ships inside scikit-learn, so no download is ever needed."""

    kind: Literal["bundled"] = "bundled"
    name: Literal["breast_cancer"] = "breast_cancer"


class FileDataSource(_Strict):
    """A CSV or Parquet file; the format follows the suffix unless given."""

    kind: Literal["file"] = "file"
    path: Path
    format: Literal["csv", "parquet"] | None = None

    @model_validator(mode="after")
    def _format_known(self) -> FileDataSource:
        if self.format is None and self.path.suffix.lower() not in {".csv", ".parquet", ".pq"}:
            raise ValueError(
                f"cannot tell the format of {str(self.path)!r} from its suffix; "
                "use a .csv or .parquet file or set format to 'csv' or 'parquet'"
            )
        return self

    @property
    def resolved_format(self) -> Literal["csv", "parquet"]:
        """The file format, from `format` or else from the path's suffix."""
        if self.format is not None:
            return self.format
        return "csv" if self.path.suffix.lower() == ".csv" else "parquet"


class SqlDataSource(_Strict):
    """A query against any SQLAlchemy URL; the URL may hold a password, so it is secret."""

    kind: Literal["sql"] = "sql"
    url: SecretStr
    query: str = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, value: SecretStr) -> SecretStr:
        if "://" not in value.get_secret_value():
            raise ValueError(
                "not a SQLAlchemy URL; expected e.g. 'sqlite:///data.db' or "
                "'postgresql+psycopg://user@host:5432/db'"
            )
        return value


DataSource = Annotated[
    BundledDataSource | FileDataSource | SqlDataSource, Field(discriminator="kind")
]


class DataConfig(_Strict):
    """Where the data comes from and how to read its label."""

    source: DataSource = Field(default_factory=BundledDataSource)
    #: No default: a guess ("target") would train on whatever column happens to bear it.
    label_column: str = Field(min_length=1, description="the column that holds the label")
    #: Names of the classes for label values 0 and 1, in that order.
    class_names: tuple[str, str] = ("malignant", "benign")
    #: Fewer rows than this cannot give a trustworthy train/validation/test split.
    min_rows: int = Field(default=50, ge=10)


class SplitConfig(_Strict):
    """Held-out fractions; the rest trains. Stratified by label, seeded."""

    test_size: float = Field(default=0.2, gt=0.0, lt=0.5)
    validation_size: float = Field(default=0.1, gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitConfig:
        if self.test_size + self.validation_size >= 0.8:
            raise ValueError(
                f"test_size + validation_size is {self.test_size + self.validation_size:g}; "
                "keep it below 0.8 so at least 20% of rows train the model"
            )
        return self


class ModelSpec(_Strict):
    """Which estimator to train and its hyperparameters."""

    type: ModelType = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params_known(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # A table lookup: neither LightGBM nor scikit-learn is imported to validate a config.
        from modelferry.training.hyperparameters import check_params

        model_type = info.data.get("type")
        if model_type is not None:  # else the type's own error is the one to report
            check_params(model_type, value)
        return value


class MetricGate(_Strict):
    """The bar one metric must clear.

    Improvements are read in the metric's good direction (up for accuracy, down for log
    loss). `threshold` is an absolute bound on the challenger alone ("at least" for
    higher-is-better metrics, "at most" otherwise); `min_delta` and `min_relative_delta`
    are the improvement over the champion it must show, absolute and as a fraction of the
    champion's value. A negative delta tolerates a small regression.
    """

    threshold: float | None = Field(default=None, allow_inf_nan=False)
    min_delta: float | None = Field(default=0.0, allow_inf_nan=False)
    min_relative_delta: float | None = Field(default=None, allow_inf_nan=False)


def _gate_bounds(metric: str, gate: MetricGate) -> list[InitErrorDetails]:
    """The bounds `gate` breaks for `metric`: fractions lie in [0, 1], a log loss is >= 0.

    Checked here, where the metric's name is known, which a `MetricGate` alone does not know.
    """
    fraction = HIGHER_IS_BETTER.get(metric, True)  # every higher-is-better metric is a fraction
    problems: list[tuple[str, float, str]] = []
    if gate.threshold is not None:
        if fraction and not 0.0 <= gate.threshold <= 1.0:
            problems.append(("threshold", gate.threshold, f"{metric} lies in [0, 1]"))
        elif not fraction and gate.threshold < 0.0:
            problems.append(("threshold", gate.threshold, f"{metric} is never below 0"))
    if fraction and gate.min_delta is not None and abs(gate.min_delta) > 1.0:
        problems.append(
            ("min_delta", gate.min_delta, f"{metric} lies in [0, 1], so a change is within [-1, 1]")
        )
    relative = gate.min_relative_delta
    if relative is not None and not -1.0 <= relative <= 1.0:
        problems.append(
            ("min_relative_delta", relative, "a fraction of the champion's value, within [-1, 1]")
        )
    return [
        InitErrorDetails(
            type=PydanticCustomError("metric_bound", "{bound}", {"bound": bound}),
            loc=(metric, field),
            input=value,
        )
        for field, value, bound in problems
    ]


def _default_gate() -> dict[MetricName, MetricGate]:
    return {"roc_auc": MetricGate(threshold=0.9, min_delta=0.0)}


class GateConfig(_Strict):
    """The metric gate between challenger and champion."""

    metrics: dict[MetricName, MetricGate] = Field(default_factory=_default_gate)

    @field_validator("metrics")
    @classmethod
    def _not_empty(cls, value: dict[MetricName, MetricGate]) -> dict[MetricName, MetricGate]:
        if not value:
            allowed = ", ".join(sorted(HIGHER_IS_BETTER))
            raise ValueError(f"name at least one metric to gate on; allowed: {allowed}")
        problems = [error for name, gate in value.items() for error in _gate_bounds(name, gate)]
        if problems:
            # Raised as a ValidationError, so each problem is located at its metric's field.
            raise ValidationError.from_exception_data("GateConfig", problems)
        return value


class ApprovalConfig(_Strict):
    """Who decides, and how long a human has to answer."""

    mode: ApprovalMode = "auto"
    timeout_seconds: int = Field(default=24 * 3600, gt=0, le=30 * 24 * 3600)


_DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


class DeliveryConfig(FleetPolicy):
    """Where an approved champion goes at the edge, and how the fleet rollout behaves.

    The rollout keys (`max_parallel`, `retries`, ...) are `FleetPolicy`'s own, with its
    bounds: this section is a fleet policy plus the devices it applies to. With no
    devices, the nightly job stops after the online rollout. With the embedded default
    (local channel), `local_agents` starts an in-process reference agent for each device,
    so the whole path runs on one machine.
    """

    # Unknown keys are typos, as in every section (`_Strict`).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    devices: tuple[Annotated[str, Field(pattern=_DEVICE_ID_PATTERN)], ...] = ()
    deploy_env: str = Field(default="dev", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    model_type: str = Field(default="classification", min_length=1, max_length=64)
    package_name: str | None = Field(default=None, pattern=_NAME_PATTERN)
    local_agents: bool = True

    @field_validator("devices")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({device for device in value if value.count(device) > 1})
        if repeated:
            raise ValueError(f"device ids must be unique; repeated: {', '.join(repeated)}")
        return value


class ModelConfig(_Strict):
    """Everything modelferry needs to know about one model."""

    experiment_name: str = Field(pattern=_NAME_PATTERN)
    registered_model_name: str = Field(pattern=_NAME_PATTERN)
    seed: int = Field(default=42, ge=0)
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataConfig = Field(description="the data section, with at least its label_column")
    split: SplitConfig = Field(default_factory=SplitConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)


def load_config(path: str | Path) -> ModelConfig:
    """Read and validate a model config file (`.json`, `.yaml` or `.yml`).

    Relative data paths are resolved against the config file's folder.

    Raises:
        InvalidConfigError: the file is missing, unparsable or invalid; the message lists
            every bad field with the value found and what is allowed.
    """
    path = Path(path)
    raw = read_mapping(path)
    problem: str | None = None
    key = ""
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problem = format_validation_error(path, exc)
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        key = _display_location(errors[0]["loc"]) if errors else ""
    if problem is not None:
        # Raised outside the `except` block, so no ValidationError (whose text repeats
        # the input, passwords included) rides along as __context__.
        raise InvalidConfigError(problem, key=key, path=str(path))
    source = config.data.source
    if isinstance(source, FileDataSource) and not source.path.is_absolute():
        resolved = source.model_copy(update={"path": (path.parent / source.path).resolve()})
        config = config.model_copy(
            update={"data": config.data.model_copy(update={"source": resolved})}
        )
    return config


def with_approval_mode(config: ModelConfig, mode: str | None) -> ModelConfig:
    """Return `config` with its approval mode replaced, validating `mode`.

    Raises:
        InvalidConfigError: `mode` is not one of the approval modes.
    """
    if mode is None:
        return config
    if mode not in APPROVAL_MODES:
        allowed = ", ".join(repr(m) for m in APPROVAL_MODES)
        raise InvalidConfigError(f"approval: got {mode!r}; allowed: {allowed}", key="approval")
    approval = config.approval.model_copy(update={"mode": mode})
    return config.model_copy(update={"approval": approval})


def format_validation_error(path: Path, exc: ValidationError) -> str:
    """Render pydantic's errors on one line: each bad field, what was found, what fits.

    Built from `errors()` alone: pydantic's own text repeats whole inputs, which may hold
    a database password. Every value shown goes through `mask_value`.
    """
    # Imported here: the data package imports this module.
    from modelferry.data.masking import mask_value

    problems: list[str] = []
    for error in exc.errors(include_url=False, include_context=False):
        loc = _display_location(error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = _allowed_fields(error["loc"][:-1])
            problems.append(f"{loc}: unknown field; allowed fields here: {allowed}")
            continue
        if error["type"] == "missing":
            problems.append(f"{loc}: {_missing(error['loc'])}")
            continue
        field = error["loc"][-1] if error["loc"] else None
        message = " ".join(error["msg"].removeprefix("Value error, ").split())
        if error["type"] == "value_error" and isinstance(error.get("input"), dict | list):
            # "got a mapping" says nothing: the message names the offending entries.
            problems.append(f"{loc}: {message}")
            continue
        shown = mask_value(field, error.get("input"))
        problems.append(f"{loc}: got {shown}; {message}")
    return f"{path} is invalid ({exc.error_count()} problem(s)): " + " | ".join(problems)


def _display_location(loc: tuple[int | str, ...]) -> str:
    # Discriminated unions add the tag ("file", "sql") to the location; users never wrote it.
    parts = [str(p) for p in loc if p not in {"bundled", "file", "sql"}]
    return ".".join(parts) if parts else "(top level)"


def _missing(loc: tuple[int | str, ...]) -> str:
    """What a missing field's message says: its description where the model gives one."""
    field = _section_at(loc[:-1]).model_fields.get(str(loc[-1])) if loc else None
    if field is not None and field.description:
        return f"required: {field.description}"
    return "required field is missing"


def _allowed_fields(loc: tuple[int | str, ...]) -> str:
    """The field names of the config section at `loc`, for "unknown field" messages."""
    return ", ".join(_section_at(loc).model_fields)


def _section_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The config section (model class) at `loc`."""
    sources: dict[str, type[BaseModel]] = {
        "bundled": BundledDataSource,
        "file": FileDataSource,
        "sql": SqlDataSource,
    }
    model: type[BaseModel] = ModelConfig
    for part in loc:
        if model is GateConfig and part == "metrics":
            model = MetricGate  # the next part is a metric name, whose value is a MetricGate
            continue
        if model is MetricGate:
            continue
        if isinstance(part, str) and part in sources:
            model = sources[part]
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model

"""An MLflow model folder as a package needs it: flavor, input schema, example, requirements."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import yaml

from modelferry.errors import PackagingError
from modelferry.packaging.manifest import Flavor, InputColumn

FLAVORS: tuple[Flavor, ...] = ("lightgbm", "sklearn")

# What score.py imports to load and run a model of each flavor without MLflow; scipy is
# pinned too because scikit-learn and LightGBM are built against its ABI.
_SCORE_REQUIREMENTS = {
    "lightgbm": ("lightgbm", "numpy", "pyyaml", "scikit-learn", "scipy", "skops"),
    "sklearn": ("numpy", "pyyaml", "scikit-learn", "scipy", "skops"),
}


@dataclass(frozen=True)
class ModelFolder:
    """A downloaded MLflow model (the folder holding `MLmodel`).

    Attributes:
        path: the folder.
        flavor: `lightgbm` or `sklearn`, the flavor score.py loads it by.
        input_schema: the signature's named input columns; empty without a signature.
        input_example: the input example's path relative to the folder, or None.
    """

    path: Path
    flavor: Flavor
    input_schema: tuple[InputColumn, ...]
    input_example: str | None


def read_model_folder(path: Path) -> ModelFolder:
    """Read `path/MLmodel`.

    Raises:
        PackagingError: no readable `MLmodel`, or a flavor score.py cannot load.
    """
    mlmodel = path / "MLmodel"
    try:
        meta: Any = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PackagingError(f"{path} is not an MLflow model folder ({exc})") from None
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    flavor = next((f for f in FLAVORS if isinstance(flavors, dict) and f in flavors), None)
    if flavor is None:
        found = ", ".join(sorted(flavors)) if isinstance(flavors, dict) else "none"
        raise PackagingError(
            f"{mlmodel} has flavors {found}; a package needs a lightgbm or sklearn model"
        )
    return ModelFolder(path, flavor, _input_schema(meta, mlmodel), _input_example(meta, path))


def score_requirements(flavor: Flavor) -> tuple[str, ...]:
    """`name==version` of what score.py needs for `flavor`, as installed here.

    Raises:
        PackagingError: one of them is not installed, so its version is unknown.
    """
    pins = []
    for name in _SCORE_REQUIREMENTS[flavor]:
        try:
            pins.append(f"{name}=={installed_version(name)}")
        except PackageNotFoundError:
            raise PackagingError(
                f"{name} is not installed here, so the package cannot pin its version; "
                f"install it, or pass the requirements explicitly"
            ) from None
    return tuple(pins)


def _input_schema(meta: dict[str, Any], mlmodel: Path) -> tuple[InputColumn, ...]:
    signature = meta.get("signature") or {}
    inputs = signature.get("inputs") if isinstance(signature, dict) else None
    if not inputs:
        return ()
    try:
        specs = json.loads(inputs)
    except (TypeError, ValueError):
        raise PackagingError(f"{mlmodel}: the signature's inputs are not JSON") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) and "name" in s for s in specs):
        return ()  # tensors or unnamed columns: score.py falls back to feature names
    return tuple(
        InputColumn(
            name=str(spec["name"]),
            type=str(spec.get("type")),
            required=bool(spec.get("required", True)),
        )
        for spec in specs
    )


def _input_example(meta: dict[str, Any], folder: Path) -> str | None:
    info = meta.get("saved_input_example_info")
    path = info.get("artifact_path") if isinstance(info, dict) else None
    if isinstance(path, str) and (folder / path).is_file():
        return path
    return None

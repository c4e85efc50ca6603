"""The `modelferry` command loads only what the command it runs needs.

Start-up time is what a user feels on every command, and on this kind of machine it is
set by imports: pandas, scikit-learn, MLflow and friends cost seconds together. These
tests check the import graph of each light command in a fresh interpreter (behaviour, not
timing): a command that does not score, train or talk to MLflow never imports them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelferry.config import ModelConfig

# Libraries that together cost seconds at start-up, none of which these commands need.
HEAVY = ("pandas", "sklearn", "scipy", "mlflow", "lightgbm", "pyarrow", "prefect", "fastapi")

_PROBE = """
import json, sys
from modelferry.cli import main
libraries = set(json.loads(sys.argv.pop(1)))
code = main(sys.argv[1:])
loaded = sorted({name.split(".")[0] for name in sys.modules} & libraries)
print("\\nLOADED=" + json.dumps({"code": code, "loaded": loaded}))
"""


def _loaded_by(
    argv: list[str], cwd: Path, libraries: tuple[str, ...] = HEAVY
) -> tuple[int, list[str]]:
    """The exit code of `modelferry ARGV` and which of `libraries` it imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(libraries), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = [line for line in done.stdout.splitlines() if line.startswith("LOADED=")]
    assert marker, f"the probe printed no result; stderr: {done.stderr[-2000:]}"
    result = json.loads(marker[-1].removeprefix("LOADED="))
    return int(result["code"]), list(result["loaded"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["pending", "--help"],
        ["approve", "--help"],
        ["endpoints", "--help"],
        ["agent", "status", "--help"],
    ],
    ids=" ".join,
)
def test_help_loads_no_heavy_library(argv: list[str], tmp_path: Path) -> None:
    code, loaded = _loaded_by(argv, tmp_path)
    assert code == 0
    assert loaded == []


def test_endpoints_list_loads_no_heavy_library(tmp_path: Path) -> None:
    home = tmp_path / "endpoints"
    code, loaded = _loaded_by(["endpoints", "list", "--home", str(home)], tmp_path)
    assert code == 0
    assert loaded == []


def test_endpoints_list_of_a_migrated_state_loads_no_migration_library(tmp_path: Path) -> None:
    # The usual case: the state file exists at the newest revision; alembic and SQLAlchemy
    # would be about half of the command's start-up.
    home = tmp_path / "endpoints"
    assert _loaded_by(["endpoints", "list", "--home", str(home)], tmp_path)[0] == 0
    code, loaded = _loaded_by(
        ["endpoints", "list", "--home", str(home)], tmp_path, libraries=("alembic", "sqlalchemy")
    )
    assert (code, loaded) == (0, [])


def test_validate_loads_no_heavy_library(tmp_path: Path) -> None:
    config = tmp_path / "model.json"
    example = ModelConfig.model_validate(
        {
            "experiment_name": "startup",
            "registered_model_name": "startup-model",
            "model": {"type": "lightgbm", "params": {"n_estimators": 10}},
            "data": {"label_column": "target"},
        }
    )
    config.write_text(example.model_dump_json(), encoding="utf-8")
    code, loaded = _loaded_by(["validate", str(config)], tmp_path)
    assert code == 0
    assert loaded == []


@pytest.mark.parametrize("model_type", ["random_forest", "logistic_regression"])
def test_validate_of_a_scikit_learn_model_loads_no_heavy_library(
    model_type: str, tmp_path: Path
) -> None:
    config = tmp_path / "model.json"
    config.write_text(
        json.dumps(
            {
                "experiment_name": "startup",
                "registered_model_name": "startup-model",
                "model": {"type": model_type, "params": {}},
                "data": {"label_column": "target"},
            }
        ),
        encoding="utf-8",
    )
    code, loaded = _loaded_by(["validate", str(config)], tmp_path)
    assert code == 0
    assert loaded == []

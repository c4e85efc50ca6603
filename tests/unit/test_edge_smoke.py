"""The smoke prediction: a package's score.py in a child process, checked for probabilities.

The scoring scripts here are tiny stand-ins written by the tests (standard library only),
so that crashes, hangs and wrong answers can be produced on purpose and quickly; the real
score.py runs in test_edge_agent.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from modelferry.edge.smoke import (
    SmokeRunner,
    SmokeSettings,
    SmokeSpec,
    SmokeTestError,
    build_request,
    check_probabilities,
)

EXAMPLE = {"columns": ["a", "b"], "data": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}
SPEC = SmokeSpec("score.py", "model/input_example.json", ("a", "b"), ("no", "yes"))


def package(tmp_path: Path, score: str, example: Any = EXAMPLE) -> Path:
    """A staged package folder holding `score.py`, `model/` and an input example."""
    folder = tmp_path / "staging" / "x" / "package"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "input_example.json").write_text(json.dumps(example))
    (folder / "score.py").write_text(textwrap.dedent(score))
    return folder


GOOD = """
    import json, os
    from pathlib import Path

    def init():
        global weight
        model = Path(os.environ["AZUREML_MODEL_DIR"])
        assert model.name == "model", model
        with open(os.environ["CALLS_FILE"], "a") as calls:
            calls.write("init\\n")
        weight = 0.25

    def run(raw):
        rows = json.loads(raw)["input_data"]["data"]
        return {"predictions": [[1 - weight, weight] for _ in rows], "classes": ["no", "yes"]}
"""


def smoke(folder: Path, spec: SmokeSpec = SPEC, **settings: Any) -> Any:
    runner = SmokeRunner(SmokeSettings(**settings))
    return asyncio.run(runner.run(folder, spec))


@pytest.fixture(autouse=True)
def calls_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.txt"
    monkeypatch.setenv("CALLS_FILE", str(path))
    return path


def test_a_good_script_passes_and_leaves_the_package_untouched(tmp_path: Path) -> None:
    folder = package(tmp_path, GOOD)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    result = smoke(folder)

    assert (result.rows, result.classes) == (3, 2)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["package"]  # scratch removed


def test_a_passed_package_is_not_run_twice_by_one_runner(tmp_path: Path, calls_file: Path) -> None:
    folder = package(tmp_path, GOOD)
    runner = SmokeRunner()

    async def twice() -> None:
        await runner.run(folder, SPEC, cache_key="digest-1")
        await runner.run(folder, SPEC, cache_key="digest-1")

    asyncio.run(twice())
    asyncio.run(runner.run(folder, SPEC, cache_key="digest-1"))  # on another event loop too

    assert calls_file.read_text().splitlines() == ["init"]


def test_a_hanging_script_is_killed_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    folder = package(
        tmp_path,
        f"""
        import os, time
        def init():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(60)
        def run(raw):
            return []
        """,
    )
    started = time.monotonic()

    with pytest.raises(SmokeTestError, match="did not finish within 1 s"):
        smoke(folder, timeout=1.0)

    assert time.monotonic() - started < 20
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_crashing_script_is_reported(tmp_path: Path) -> None:
    folder = package(tmp_path, "import os\ndef init():\n    os._exit(3)\ndef run(raw):\n    pass\n")

    with pytest.raises(SmokeTestError, match=r"process died \(exit code 3\)"):
        smoke(folder)


def test_an_exception_is_reported_with_the_output(tmp_path: Path) -> None:
    folder = package(
        tmp_path,
        """
        def init():
            print("loading the model")
        def run(raw):
            raise ValueError("the model cannot score this")
        """,
    )

    with pytest.raises(SmokeTestError) as caught:
        smoke(folder)

    message = str(caught.value)
    assert "ValueError: the model cannot score this" in message
    assert "loading the model" in message


def test_a_missing_entry_point_is_reported(tmp_path: Path) -> None:
    folder = package(tmp_path, GOOD)
    (folder / "score.py").unlink()

    with pytest.raises(SmokeTestError, match=r"no scoring script 'score\.py'"):
        smoke(folder)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"predictions": [[0.5, 0.5]] * 2}, r"2 row\(s\) for an example of 3"),
        ({"predictions": [[0.5, 0.6]] * 3}, "row 0 sums to 1.100000"),
        ({"predictions": [[1.0]] * 3}, "not a list of class probabilities"),
        ({"predictions": [[0.2, 0.3, 0.5]] * 3}, "the package names 2 classes"),
        ({"predictions": [[1.5, -0.5]] * 3}, "1.5, which is not a probability"),
        ({"predictions": [[None, 1.0]] * 3}, "None, which is not a probability"),
        ({"label": "yes"}, "not class probabilities"),
    ],
)
def test_answers_that_are_not_probabilities_fail(answer: Any, message: str) -> None:
    with pytest.raises(SmokeTestError, match=message):
        check_probabilities(answer, rows=3, classes=2, tolerance=1e-3)


def test_nan_from_a_script_fails(tmp_path: Path) -> None:
    folder = package(
        tmp_path,
        "def init():\n    pass\ndef run(raw):\n    return [[float('nan'), 1.0]] * 3\n",
    )

    with pytest.raises(SmokeTestError, match="nan, which is not a probability"):
        smoke(folder)


def test_a_bare_list_of_rows_is_accepted() -> None:
    rows = check_probabilities([[0.1, 0.9], [1, 0]], rows=2, classes=0, tolerance=1e-3)
    assert rows == [[0.1, 0.9], [1.0, 0.0]]


@pytest.mark.parametrize(
    ("example", "request_key", "rows"),
    [
        (EXAMPLE, "input_data", 3),  # pandas split orient, as MLflow saves it
        ({"dataframe_split": EXAMPLE}, "dataframe_split", 3),
        ([{"a": 1, "b": 2}], "dataframe_records", 1),
        ([[1, 2], [3, 4]], "input_data", 2),
        ({"inputs": {"a": [1, 2], "b": [3, 4]}}, "inputs", 2),
    ],
)
def test_examples_become_scoring_requests(
    tmp_path: Path, example: Any, request_key: str, rows: int
) -> None:
    folder = package(tmp_path, GOOD, example)

    body, counted = build_request(folder, SPEC)

    assert list(json.loads(body)) == [request_key]
    assert counted == rows


def test_without_an_example_one_row_of_zeros_is_sent(tmp_path: Path) -> None:
    folder = package(tmp_path, GOOD)
    spec = SmokeSpec("score.py", None, ("a", "b", "c"))

    body, rows = build_request(folder, spec)

    assert json.loads(body) == {"input_data": {"columns": ["a", "b", "c"], "data": [[0, 0, 0]]}}
    assert rows == 1
    with pytest.raises(SmokeTestError, match="neither an input example nor input columns"):
        build_request(folder, SmokeSpec("score.py", None))


def test_an_unusable_example_is_reported(tmp_path: Path) -> None:
    folder = package(tmp_path, GOOD, {"something": "else"})

    with pytest.raises(SmokeTestError, match="not a table"):
        build_request(folder, SPEC)


def test_a_relative_interpreter_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child runs in a scratch folder, where a relative path would find nothing."""
    monkeypatch.chdir(tmp_path)
    assert SmokeSettings(python="venv/bin/python").python == str(tmp_path / "venv/bin/python")
    assert SmokeSettings(python="python3").python == "python3"

"""The smoke prediction: run a staged package's scoring script on its input example.

The script runs in a child process (`smoke_child.py`) with a timeout, `AZUREML_MODEL_DIR`
set to the package's `model/` folder and the package folder left untouched (no bytecode
is written). The answer must be class probabilities: one row per example row, every value
in [0, 1] and every row summing to 1 (within `tolerance`), with as many columns as the
package names classes. Anything else, a crash or a timeout raises `SmokeTestError` with
the reason and the end of the script's output.

A `SmokeRunner` bounds how many smoke tests run at once in a process and remembers the
packages that passed (by manifest digest), so many in-process agents receiving the same
package pay for one model load, not hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from modelferry.errors import DeliveryError

__all__ = ["SmokeResult", "SmokeRunner", "SmokeSettings", "SmokeSpec", "SmokeTestError"]

_CHILD: Final = Path(__file__).with_name("smoke_child.py")
_FORMATS: Final = ("input_data", "dataframe_split", "dataframe_records", "inputs")
_OUTPUT_TAIL: Final = 1200


class SmokeTestError(DeliveryError):
    """The package's scoring script failed, hung, or did not answer with probabilities."""


@dataclass(frozen=True)
class SmokeSettings:
    """How to run smoke predictions."""

    timeout: float = 120.0
    """Seconds for init() and run() together; the child is killed after that."""
    python: str = sys.executable
    """The interpreter that runs the scoring script (the device's model environment)."""
    tolerance: float = 1e-3
    max_concurrent: int = max(os.cpu_count() or 1, 1)
    """Smoke tests running at once in this process."""

    def __post_init__(self) -> None:
        # The child runs in a scratch folder: a relative interpreter path must not be
        # looked up there. A bare name ("python3") is still found on PATH.
        if os.sep in self.python and not os.path.isabs(self.python):
            object.__setattr__(self, "python", os.path.abspath(self.python))


@dataclass(frozen=True)
class SmokeSpec:
    """What the smoke test needs to know about a package (from its manifest)."""

    entry_point: str
    """The scoring script, relative to the package folder (`score.py`)."""
    input_example: str | None
    """The input example file, relative to the package folder, if the package has one."""
    columns: tuple[str, ...] = ()
    """Input column names: a one-row example of zeros is built from them when there is no
    example file."""
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmokeResult:
    """A passed smoke prediction."""

    rows: int
    classes: int
    seconds: float


class SmokeRunner:
    """Runs smoke predictions, a bounded number at a time; shareable between agents."""

    def __init__(self, settings: SmokeSettings | None = None) -> None:
        self.settings = settings or SmokeSettings()
        self._passed: dict[str, SmokeResult] = {}
        # asyncio primitives belong to one event loop; made afresh for each loop that
        # uses the runner, while the record of passed packages is kept.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max(self.settings.max_concurrent, 1))
        self._locks: dict[str, asyncio.Lock] = {}

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._slots = asyncio.Semaphore(max(self.settings.max_concurrent, 1))
            self._locks = {}

    async def run(
        self, package_dir: Path, spec: SmokeSpec, *, cache_key: str | None = None
    ) -> SmokeResult:
        """Smoke-test the package unpacked at `package_dir`.

        Args:
            package_dir: The verified, extracted package (it holds `model/` and the script).
            spec: The entry point, example and classes from the manifest.
            cache_key: The manifest's digest; a package that passed once in this runner
                passes again without a new child process.

        Raises:
            SmokeTestError: the script failed, timed out, or answered something else than
                one row of class probabilities per example row.
        """
        self._bind()
        if cache_key is None:
            return await self._run_bounded(package_dir, spec)
        lock = self._locks.setdefault(cache_key, asyncio.Lock())
        async with lock:
            if cache_key not in self._passed:
                self._passed[cache_key] = await self._run_bounded(package_dir, spec)
            return self._passed[cache_key]

    async def _run_bounded(self, package_dir: Path, spec: SmokeSpec) -> SmokeResult:
        request, rows = build_request(package_dir, spec)
        async with self._slots:
            started = time.monotonic()
            answer = await self._run_child(package_dir, spec, request)
        probabilities = check_probabilities(
            answer, rows, len(spec.class_names), self.settings.tolerance
        )
        return SmokeResult(rows, len(probabilities[0]), round(time.monotonic() - started, 3))

    async def _run_child(self, package_dir: Path, spec: SmokeSpec, request: str) -> Any:
        script = package_dir / spec.entry_point
        if not script.is_file():
            raise SmokeTestError(f"the package has no scoring script {spec.entry_point!r}")
        with tempfile.TemporaryDirectory(prefix=".smoke-", dir=package_dir.parent) as scratch:
            request_file = Path(scratch) / "request.json"
            result_file = Path(scratch) / "result.json"
            request_file.write_text(request, encoding="utf-8")
            env = dict(os.environ)
            env["AZUREML_MODEL_DIR"] = str(package_dir / "model")
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            process = await asyncio.create_subprocess_exec(
                self.settings.python,
                str(_CHILD),
                str(script),
                str(request_file),
                str(result_file),
                cwd=scratch,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # so a kill takes the script's own children too
            )
            try:
                output, _ = await asyncio.wait_for(
                    process.communicate(), timeout=self.settings.timeout
                )
            except TimeoutError:
                await _kill(process)
                raise SmokeTestError(
                    f"the smoke prediction did not finish within {self.settings.timeout:g} s"
                ) from None
            except BaseException:
                await _kill(process)
                raise
            tail = _tail(output)
            try:
                outcome = json.loads(result_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise SmokeTestError(
                    f"the scoring script's process died (exit code {process.returncode})"
                    + (f"; output: {tail}" if tail else "")
                ) from None
        if "error" in outcome:
            raise SmokeTestError(
                f"the scoring script failed: {outcome['error']}"
                + (f"; output: {tail}" if tail else "")
            )
        return outcome.get("result")


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()


def _tail(output: bytes | None) -> str:
    text = (output or b"").decode("utf-8", "replace").strip()
    return text if len(text) <= _OUTPUT_TAIL else "…" + text[-_OUTPUT_TAIL:]


def build_request(package_dir: Path, spec: SmokeSpec) -> tuple[str, int]:
    """The request body for `run()` and its number of rows.

    The example may be a scoring request already (`input_data`, `dataframe_split`,
    `dataframe_records` or `inputs`), a pandas split-orient table (`columns` + `data`),
    a list of records or a list of rows.
    """
    if spec.input_example is None:
        if not spec.columns:
            raise SmokeTestError("the package has neither an input example nor input columns")
        zeros = [[0.0] * len(spec.columns)]
        document: Any = {"input_data": {"columns": list(spec.columns), "data": zeros}}
    else:
        path = package_dir / spec.input_example
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SmokeTestError(
                f"cannot read the input example {spec.input_example}: {exc}"
            ) from None
        document = _as_request(document, spec.columns)
    rows = _count_rows(document)
    if rows < 1:
        raise SmokeTestError(f"the input example {spec.input_example} holds no rows")
    return json.dumps(document), rows


def _as_request(document: Any, columns: Sequence[str]) -> Any:
    if isinstance(document, dict):
        if any(key in document for key in _FORMATS):
            return document
        if "data" in document:
            return {"input_data": document}
    if isinstance(document, list) and document:
        if all(isinstance(row, dict) for row in document):
            return {"dataframe_records": document}
        if all(isinstance(row, list) for row in document):
            return {"input_data": {"columns": list(columns), "data": document}}
    raise SmokeTestError("the input example is not a table this agent knows how to send")


def _count_rows(document: dict[str, Any]) -> int:
    key = next(key for key in _FORMATS if key in document)
    value = document[key]
    if isinstance(value, dict):
        if "data" in value and isinstance(value["data"], list):
            return len(value["data"])
        lengths = {len(v) for v in value.values() if isinstance(v, list)}
        return lengths.pop() if len(lengths) == 1 else 0
    return len(value) if isinstance(value, list) else 0


def check_probabilities(
    answer: Any, rows: int, classes: int, tolerance: float
) -> list[list[float]]:
    """The probability rows of a `run()` answer; `SmokeTestError` saying what is wrong.

    Accepts `{"predictions": [[...], ...]}` or a bare list of rows.
    """
    predictions = answer.get("predictions") if isinstance(answer, dict) else answer
    if not isinstance(predictions, list):
        raise SmokeTestError(f"run() answered {_brief(answer)}, not class probabilities")
    if len(predictions) != rows:
        raise SmokeTestError(
            f"run() answered {len(predictions)} row(s) for an example of {rows} row(s)"
        )
    checked: list[list[float]] = []
    for index, row in enumerate(predictions):
        if not isinstance(row, list) or len(row) < 2:
            raise SmokeTestError(
                f"row {index} of the answer is {_brief(row)}, not a list of class probabilities"
            )
        if classes and len(row) != classes:
            raise SmokeTestError(
                f"row {index} has {len(row)} probabilities; the package names {classes} classes"
            )
        values = []
        for value in row:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not -tolerance <= value <= 1 + tolerance:
                raise SmokeTestError(f"row {index} holds {value!r}, which is not a probability")
            values.append(float(value))
        if abs(sum(values) - 1.0) > tolerance:
            raise SmokeTestError(f"row {index} sums to {sum(values):.6f}, not 1")
        checked.append(values)
    return checked


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:119] + "…"

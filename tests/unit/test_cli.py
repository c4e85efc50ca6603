"""The `modelferry` command line, against config files and a fake of the approvals client.

The fake keeps the signatures of `modelferry_prefect.approvals`; the real client is
tested against a real Prefect server in tests/integration.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from modelferry.cli import main
from modelferry.errors import (
    FlowRunNotFoundError,
    FlowRunNotPausedError,
    ModelferryError,
    OrchestratorError,
)
from modelferry_prefect import approvals
from modelferry_prefect.approvals import PausedRun

API_URL = "http://prefect.test/api"
PAUSED_SINCE = datetime(2026, 11, 22, 1, 57, 8, 515798, tzinfo=UTC)
TIMES_OUT = datetime(2126, 11, 22, 1, 58, 8, 506109, tzinfo=UTC)
MINIMAL_CONFIG = {
    "experiment_name": "demo",
    "registered_model_name": "demo-model",
    "data": {"label_column": "target"},
}

# --------------------------------------------------------------------------- validate


def _write(tmp_path: Path, content: Any, name: str = "model.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_validate_good_config_prints_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, MINIMAL_CONFIG)

    assert main(["validate", str(path)]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.strip().splitlines()) == 1
    assert "demo-model" in out
    assert "demo" in out


def test_validate_unknown_approval_mode_names_field_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, {**MINIMAL_CONFIG, "approval": {"mode": "sometimes"}})

    assert main(["validate", str(path)]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert "approval.mode" in err
    assert "'sometimes'" in err
    assert "gate+manual" in err  # says what is allowed
    assert "Traceback" not in err


def test_validate_misspelled_field_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, {**MINIMAL_CONFIG, "registred_model_name": "x"})

    assert main(["validate", str(path)]) == 2

    err = capsys.readouterr().err
    assert "registred_model_name" in err
    assert "unknown field" in err
    assert "registered_model_name" in err  # the allowed spelling is offered


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {**MINIMAL_CONFIG, "gate": {"metrics": {"roc_auc": {"threshold": 1.7}}}},
            "gate.metrics.roc_auc.threshold: got 1.7; roc_auc lies in [0, 1]",
        ),
        (
            {**MINIMAL_CONFIG, "model": {"type": "lightgbm", "params": {"n_estimator": 50}}},
            "model.params: unknown LightGBM parameter 'n_estimator' (did you mean 'n_estimators'?)",
        ),
        (
            {**MINIMAL_CONFIG, "data": {"source": {"kind": "bundled"}}},
            "data.label_column: required: the column that holds the label",
        ),
    ],
    ids=["threshold above 1", "lightgbm typo", "no label column"],
)
def test_validate_refuses_a_config_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], expected: str
) -> None:
    path = _write(tmp_path, config)

    assert main(["validate", str(path)]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert expected in err
    assert "Traceback" not in err


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"

    assert main(["validate", str(missing)]) == 2

    err = capsys.readouterr().err
    assert "nope.json" in err
    assert "does not exist" in err


# --------------------------------------------------------------------------- usage


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "modelferry" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["approve", str(uuid.uuid4())],  # --reviewer is required
        ["approve", str(uuid.uuid4()), "--reviewer", "  ", "--api-url", API_URL],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_pending_without_api_url_explains_how_to_start_a_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["pending"]) == 1

    err = capsys.readouterr().err
    assert "PREFECT_API_URL" in err
    assert "prefect server start" in err
    assert "prefect config set PREFECT_API_URL=" in err
    assert "Traceback" not in err


# Blocks `import prefect`, as on the core install, before modelferry's CLI runs.
_WITHOUT_PREFECT = """
import sys
from importlib.abc import MetaPathFinder

class NoPrefect(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPrefect())
from modelferry.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "argv",
    [["pending"], ["approve", str(uuid.uuid4()), "--reviewer", "alice"]],
    ids=["pending", "approve"],
)
def test_without_prefect_the_approval_commands_name_the_approval_extra(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PREFECT, *argv, "--api-url", API_URL],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"modelferry: error: modelferry {argv[0]} needs the 'approval' extra")
    assert "pip install 'modelferry[approval]'" in line


# ---------------------------------------------------------------- fake approvals client


def _paused(
    name: str, *, waits_for_input: bool = True, times_out: datetime | None = TIMES_OUT
) -> PausedRun:
    return PausedRun(
        id=str(uuid.uuid4()),
        flow_name="train-and-register",
        run_name=name,
        paused_since=PAUSED_SINCE,
        pause_timeout=times_out,
        waits_for_input=waits_for_input,
    )


class FakeApprovals:
    """Stands in for `PrefectApprovals`: holds paused runs, records resumes, fails on demand.

    Its `connect` replaces `modelferry_prefect.approvals.connect`; the real client is
    tested against a real Prefect server in tests/integration/test_approval_cli.py.
    """

    def __init__(self) -> None:
        self.runs: list[PausedRun] = []
        self.api_urls: list[str | None] = []
        self.resumed: list[tuple[str, dict[str, Any]]] = []
        self.error: ModelferryError | None = None

    def connect(self, api_url: str | None = None) -> FakeApprovals:
        self.api_urls.append(api_url)
        return self

    def __enter__(self) -> FakeApprovals:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def list_paused_runs(self) -> list[PausedRun]:
        if self.error is not None:
            raise self.error
        return list(self.runs)

    def resume(
        self,
        flow_run_id: str,
        run_input: dict[str, Any],
        *,
        schema_timeout: float = 10.0,
        poll_interval: float = 0.25,
    ) -> None:
        if self.error is not None:
            raise self.error
        self.resumed.append((flow_run_id, run_input))


def test_the_fake_keeps_the_real_clients_signatures() -> None:
    assert inspect.signature(FakeApprovals.connect).parameters.keys() - {"self"} == (
        inspect.signature(approvals.connect).parameters.keys()
    )
    for name in ("list_paused_runs", "resume"):
        fake, real = getattr(FakeApprovals, name), getattr(approvals.PrefectApprovals, name)
        assert inspect.signature(fake) == inspect.signature(real), name


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApprovals:
    """A fake that every `connect()` of the approval commands returns."""
    fake = FakeApprovals()
    monkeypatch.setattr(approvals, "connect", fake.connect)
    return fake


# --------------------------------------------------------------------------- pending


def test_pending_lists_runs_waiting_for_input(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = _paused("papaya-stork")
    fake.runs += [waiting, _paused("no-form", waits_for_input=False)]

    assert main(["pending"]) == 0

    out, err = capsys.readouterr()
    assert waiting.id in out
    assert "papaya-stork" in out
    assert "train-and-register" in out
    assert "2026-11-22 01:57:08 UTC" in out  # paused since
    assert "2126-11-22 01:58:08 UTC" in out  # times out
    assert "no-form" not in out
    assert "1 other paused run(s)" in out
    assert err == ""


def test_pending_gives_an_approve_command_runnable_from_here(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str], unactivated_venv: Path
) -> None:
    # `modelferry` alone would not be found.
    (unactivated_venv / "modelferry").write_text("#!/bin/sh\n", encoding="utf-8")
    fake.runs.append(_paused("papaya-stork"))

    assert main(["pending"]) == 0

    assert "Decide with: .venv/bin/modelferry approve FLOW_RUN_ID" in capsys.readouterr().out


def test_pending_without_a_deadline_says_never(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.runs.append(_paused("patient", times_out=None))

    assert main(["pending"]) == 0

    line = next(line for line in capsys.readouterr().out.splitlines() if "patient" in line)
    assert line.endswith("never")


def test_pending_with_none_waiting(fake: FakeApprovals, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pending"]) == 0

    assert capsys.readouterr().out.strip() == "No flow runs are waiting for approval."


def test_pending_passes_the_api_url_option_on(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pending", "--api-url", "http://other.test:4200/api"]) == 0
    assert main(["pending"]) == 0

    # Without the option, Prefect's settings (environment or profile) decide.
    assert fake.api_urls == ["http://other.test:4200/api", None]


def test_pending_json_lists_the_waiting_runs_for_scripts(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = _paused("papaya-stork")
    fake.runs += [waiting, _paused("no-form", waits_for_input=False)]

    assert main(["pending", "--output", "json"]) == 0

    out, err = capsys.readouterr()
    assert json.loads(out) == [
        {
            "id": waiting.id,
            "flow_name": "train-and-register",
            "run_name": "papaya-stork",
            "paused_since": "2026-11-22T01:57:08.515Z",
            "times_out_at": "2126-11-22T01:58:08.506Z",
        }
    ]
    assert err == ""


def test_pending_json_with_none_waiting_is_an_empty_list(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.runs.append(_paused("no-form", waits_for_input=False))

    assert main(["pending", "-o", "json"]) == 0

    assert json.loads(capsys.readouterr().out) == []


def test_pending_json_keeps_the_exit_code_and_one_line_error(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = OrchestratorError("cannot reach the Prefect API at http://prefect.test/api")

    assert main(["pending", "--output", "json"]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err == "modelferry: error: cannot reach the Prefect API at http://prefect.test/api\n"


def test_pending_refuses_an_unknown_output_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pending", "--output", "yaml"]) == 2
    assert "invalid choice: 'yaml' (choose from 'text', 'json')" in capsys.readouterr().err


# --------------------------------------------------------------------------- approve


def test_approve_resumes_with_the_decision(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = str(uuid.uuid4())

    code = main(["approve", f" {run_id} ", "--reviewer", " alice ", "--comment", "looks good"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert fake.resumed == [
        (f" {run_id} ", {"decision": "approve", "reviewer": "alice", "comment": "looks good"})
    ]
    assert out == f"Approved flow run {run_id} as alice (looks good); the flow resumes now.\n"


def test_reject_sends_the_reject_choice_and_empty_comment(
    fake: FakeApprovals, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = str(uuid.uuid4())

    assert main(["approve", run_id, "--reviewer", "bob", "--reject"]) == 0

    assert fake.resumed == [(run_id, {"decision": "reject", "reviewer": "bob", "comment": ""})]
    assert "Rejected" in capsys.readouterr().out


@pytest.mark.parametrize(
    "error",
    [
        FlowRunNotFoundError("flow run x not found; run `modelferry pending`"),
        FlowRunNotPausedError("flow run x is not paused: its state is Completed"),
        OrchestratorError("Prefect did not resume flow run x: REJECT: 'decision' is required"),
    ],
    ids=type,
)
def test_approve_failures_exit_1_with_one_line(
    fake: FakeApprovals, error: ModelferryError, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = error

    assert main(["approve", str(uuid.uuid4()), "--reviewer", "alice"]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"modelferry: error: {error}\n"


# ------------------------------------------------------------------- validate: hostile files

PG_PASSWORD = "hunter2-Secret"
PG_URL = f"postgresql+psycopg://app:{PG_PASSWORD}@db.example:5432/sales"


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "mysql", "url": PG_URL, "query": "select 1"},
        {"url": PG_URL, "query": "select 1"},
        PG_URL,
        {"kind": "sql", "url": PG_URL, "query": "", "extra": PG_URL},
    ],
    ids=["bad-kind", "missing-kind", "string", "bad-query"],
)
def test_validate_never_shows_a_database_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: Any
) -> None:
    path = _write(tmp_path, {**MINIMAL_CONFIG, "data": {"source": source}})

    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert PG_PASSWORD not in out + err
    assert "data.source" in err


def _validate_error(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0]
    return lines[0]


def test_validate_refuses_yaml_aliases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        laughs.append(
            f"{chr(97 + level)}: &{chr(97 + level)} ["
            + ", ".join([f"*{chr(96 + level)}"] * 9)
            + "]"
        )
    path = tmp_path / "model.yaml"
    path.write_text("\n".join(laughs) + "\n", encoding="utf-8")

    assert "anchor" in _validate_error(path, capsys)


def test_validate_refuses_an_oversized_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**MINIMAL_CONFIG, "pad": "x" * (2 * 1024 * 1024)}))

    assert "MiB" in _validate_error(path, capsys)


def test_validate_refuses_a_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(b'{"experiment_name": "d\xff\xfe"}')

    assert "UTF-8" in _validate_error(path, capsys)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("model.json", "[" * 200_000 + "]" * 200_000),
        ("model.json", '{"a":' * 100 + "1" + "}" * 100),
        ("model.yaml", "[" * 50_000 + "]" * 50_000),
        ("model.yaml", "".join(f"{' ' * i}a:\n" for i in range(100)) + " " * 100 + "b: 1\n"),
    ],
    ids=["json-200k", "json-100", "yaml-flow-50k", "yaml-block-100"],
)
def test_validate_refuses_deep_nesting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    assert "nest" in _validate_error(path, capsys)


def test_validate_yaml_syntax_error_does_not_quote_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(f"url: 'pg://a:{PG_PASSWORD}@h' x\n", encoding="utf-8")

    line = _validate_error(path, capsys)
    assert "YAML" in line
    assert PG_PASSWORD not in line


def test_validate_summary_masks_a_password_in_a_file_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        {
            **MINIMAL_CONFIG,
            "data": {
                "label_column": "target",
                "source": {"kind": "file", "path": f"{PG_URL}.csv"},
            },
        },
    )

    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert PG_PASSWORD not in out + err

"""The `modelferry` command line, against config files and a fake of the Prefect REST API.

The fake answers with the shapes a Prefect 3.8 server sends (recorded from a real one), so
these tests pin the client to the real API without starting a server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelferry.approval.pause import APPROVAL_PAUSE_KEY
from modelferry.cli import main
from modelferry.errors import FlowRunNotFoundError, OrchestratorError
from modelferry.prefect_api import PrefectApi

API_URL = "http://prefect.test/api"
API_KEY = "pnu_super-secret-key-1234"
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
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    assert main(["pending"]) == 1

    err = capsys.readouterr().err
    assert "PREFECT_API_URL" in err
    assert "prefect server start" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- fake API


@dataclass
class FakeRun:
    """One flow run held by the fake server."""

    name: str
    flow_id: str
    state_type: str = "PAUSED"
    state_name: str = "Paused"
    waits_for_input: bool = True
    schema_saved: bool = True
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    resumed_with: dict[str, Any] | None = None
    pause_key: str = "1"
    pause_timeout: str = "2126-11-22T01:58:08.506109Z"

    def as_json(self) -> dict[str, Any]:
        """The flow run as GET /flow_runs/{id} returns it (abridged, same shape)."""
        paused = self.state_type == "PAUSED"
        keyset = (
            {
                "description": "paused-1-description",
                "response": "paused-1-response",
                "schema": "paused-1-schema",
            }
            if paused and self.waits_for_input
            else None
        )
        return {
            "id": self.id,
            "created": "2026-11-22T01:57:08.339704Z",
            "updated": "2026-11-22T01:57:08.548000Z",
            "name": self.name,
            "flow_id": self.flow_id,
            "deployment_id": None,
            "parameters": {},
            "tags": [],
            "state_type": self.state_type,
            "state_name": self.state_name,
            "start_time": "2026-11-22T01:57:08.386146Z",
            "state": {
                "id": str(uuid.uuid4()),
                "type": self.state_type,
                "name": self.state_name,
                "timestamp": "2026-11-22T01:57:08.515798Z",
                "message": None,
                "data": None,
                "state_details": {
                    "flow_run_id": self.id,
                    "task_run_id": None,
                    "pause_timeout": self.pause_timeout if paused else None,
                    "pause_reschedule": False,
                    "pause_key": self.pause_key if paused else None,
                    "run_input_keyset": keyset,
                    "untrackable_result": False,
                },
            },
        }


class FakePrefect:
    """The few Prefect 3.8 endpoints the client uses, behind an `httpx.MockTransport`."""

    def __init__(self) -> None:
        self.flows = {str(uuid.uuid4()): "train-and-register"}
        self.runs: dict[str, FakeRun] = {}
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)
        # Replaces the resume endpoint's answer, for orchestration refusals.
        self.resume_answer: dict[str, Any] | None = None

    def add_run(self, name: str, **kwargs: Any) -> FakeRun:
        run = FakeRun(name=name, flow_id=next(iter(self.flows)), **kwargs)
        self.runs[run.id] = run
        return run

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/api")
        parts = path.strip("/").split("/")
        body = json.loads(request.content) if request.content else {}
        if request.method == "POST" and path == "/flow_runs/filter":
            wanted = body["flow_runs"]["state"]["type"]["any_"]
            runs = [r.as_json() for r in self.runs.values() if r.state_type in wanted]
            return httpx.Response(200, json=runs[body.get("offset", 0) :][: body["limit"]])
        if request.method == "POST" and path == "/flows/filter":
            ids = body["flows"]["id"]["any_"]
            flows = [{"id": i, "name": n, "tags": [], "labels": {}} for i, n in self.flows.items()]
            return httpx.Response(200, json=[f for f in flows if f["id"] in ids])
        if parts[0] == "flow_runs" and len(parts) >= 2:
            return self._handle_run(request, parts, body)
        return httpx.Response(404, json={"detail": "Not Found"})

    def _handle_run(
        self, request: httpx.Request, parts: list[str], body: dict[str, Any]
    ) -> httpx.Response:
        try:
            uuid.UUID(parts[1])
        except ValueError:
            return httpx.Response(404, json={"detail": "Not Found"})  # no route matches
        run = self.runs.get(parts[1])
        if run is None:
            if request.method == "GET":
                return httpx.Response(404, json={"detail": "Flow run not found"})
            return httpx.Response(500, json={"exception_message": "Internal Server Error"})
        if request.method == "GET" and len(parts) == 2:
            return httpx.Response(200, json=run.as_json())
        if request.method == "GET" and parts[2] == "input":
            if run.schema_saved and parts[3] == "paused-1-schema":
                return httpx.Response(200, text='{"type": "object"}')
            return httpx.Response(404, json={"detail": "Flow run input not found"})
        if request.method == "POST" and parts[2] == "resume":
            return self._resume(run, body)
        return httpx.Response(404, json={"detail": "Not Found"})

    def _resume(self, run: FakeRun, body: dict[str, Any]) -> httpx.Response:
        if run.state_type != "PAUSED":
            return httpx.Response(
                200,
                json={
                    "state": None,
                    "status": "ABORT",
                    "details": {
                        "type": "abort_details",
                        "reason": "Cannot resume a flow run that is not paused.",
                    },
                },
            )
        if self.resume_answer is not None:
            return httpx.Response(200, json=self.resume_answer)
        run.resumed_with = body["run_input"]
        run.state_type, run.state_name = "RUNNING", "Running"
        return httpx.Response(
            201,
            json={
                "state": run.as_json()["state"],
                "status": "ACCEPT",
                "details": {"type": "accept_details"},
            },
        )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePrefect]:
    """A fake Prefect API that every `PrefectApi.from_environment` call talks to."""
    fake = FakePrefect()
    monkeypatch.setenv("PREFECT_API_URL", API_URL)
    monkeypatch.setenv("PREFECT_API_KEY", API_KEY)
    real: Callable[..., PrefectApi] = PrefectApi.from_environment

    def from_environment(api_url: str | None = None, timeout: float = 10.0, **_: Any) -> PrefectApi:
        return real(api_url=api_url, timeout=timeout, transport=fake.transport)

    monkeypatch.setattr(PrefectApi, "from_environment", from_environment)
    yield fake
    for request in fake.requests:
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


# --------------------------------------------------------------------------- pending


def test_pending_lists_runs_waiting_for_input(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = fake.add_run("papaya-stork")
    fake.add_run("no-form", waits_for_input=False)

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
    _assert_no_secret(out, err)


def test_pending_gives_an_approve_command_runnable_from_here(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str], unactivated_venv: Path
) -> None:
    # `modelferry` alone would not be found.
    (unactivated_venv / "modelferry").write_text("#!/bin/sh\n", encoding="utf-8")
    fake.add_run("papaya-stork")

    assert main(["pending"]) == 0

    assert "Decide with: .venv/bin/modelferry approve FLOW_RUN_ID" in capsys.readouterr().out


def test_pending_shows_the_deadline_an_approval_run_logged(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    # The flow gives the server a deadline SERVER_GRACE_SECONDS past the reviewer's own.
    fake.add_run(
        "approval", pause_key=APPROVAL_PAUSE_KEY, pause_timeout="2126-11-22T02:02:00.000000Z"
    )

    assert main(["pending"]) == 0

    out, _ = capsys.readouterr()
    assert "2126-11-22 02:00:00 UTC" in out
    assert "02:02:00" not in out


def test_pending_with_none_waiting(fake: FakePrefect, capsys: pytest.CaptureFixture[str]) -> None:
    fake.add_run("done-already", state_type="COMPLETED", state_name="Completed")

    assert main(["pending"]) == 0

    assert capsys.readouterr().out.strip() == "No flow runs are waiting for approval."


def test_pending_api_url_option_overrides_environment(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pending", "--api-url", "http://other.test:4200/api"]) == 0

    assert {r.url.host for r in fake.requests} == {"other.test"}
    assert "No flow runs" in capsys.readouterr().out


def test_pending_json_lists_the_waiting_runs_for_scripts(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = fake.add_run("papaya-stork")
    fake.add_run("no-form", waits_for_input=False)

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
    _assert_no_secret(out, err)


def test_pending_json_with_none_waiting_is_an_empty_list(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add_run("done-already", state_type="COMPLETED", state_name="Completed")

    assert main(["pending", "-o", "json"]) == 0

    assert json.loads(capsys.readouterr().out) == []


def test_pending_json_keeps_the_exit_code_and_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    assert main(["pending", "--output", "json"]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "PREFECT_API_URL" in err


def test_pending_refuses_an_unknown_output_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pending", "--output", "yaml"]) == 2
    assert "invalid choice: 'yaml' (choose from 'text', 'json')" in capsys.readouterr().err


# --------------------------------------------------------------------------- approve


def test_approve_resumes_with_the_decision(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake.add_run("papaya-stork")

    code = main(["approve", run.id, "--reviewer", "alice", "--comment", "looks good"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert run.resumed_with == {
        "decision": "approve",
        "reviewer": "alice",
        "comment": "looks good",
    }
    assert "Approved" in out
    assert run.id in out
    assert "alice" in out
    _assert_no_secret(out, err)


def test_reject_sends_the_reject_choice_and_empty_comment(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake.add_run("papaya-stork")

    assert main(["approve", run.id, "--reviewer", "bob", "--reject"]) == 0

    assert run.resumed_with == {"decision": "reject", "reviewer": "bob", "comment": ""}
    assert "Rejected" in capsys.readouterr().out


def test_approve_unknown_id_exits_1_suggesting_pending(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = str(uuid.uuid4())

    assert main(["approve", unknown, "--reviewer", "alice"]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert unknown in err
    assert "not found" in err
    assert "modelferry pending" in err
    assert "Traceback" not in err
    _assert_no_secret(out, err)


def test_approve_malformed_id_exits_1_without_calling_the_api(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["approve", "not-a-uuid", "--reviewer", "alice"]) == 1

    err = capsys.readouterr().err
    assert "'not-a-uuid'" in err
    assert "modelferry pending" in err
    assert fake.requests == []


def test_approve_run_not_paused_exits_1_naming_its_state(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake.add_run("finished", state_type="COMPLETED", state_name="Completed")

    assert main(["approve", run.id, "--reviewer", "alice"]) == 1

    err = capsys.readouterr().err
    assert "not paused" in err
    assert "Completed" in err
    assert run.resumed_with is None
    assert not any(r.url.path.endswith("/resume") for r in fake.requests)


def test_approve_paused_run_without_form_is_refused(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake.add_run("plain-pause", waits_for_input=False)

    assert main(["approve", run.id, "--reviewer", "alice"]) == 1

    assert "not waiting for approval" in capsys.readouterr().err
    assert run.resumed_with is None


def test_approve_reports_the_servers_rejection_reason(
    fake: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake.add_run("papaya-stork")
    fake.resume_answer = {
        "state": None,
        "status": "REJECT",
        "details": {"type": "abort_details", "reason": "Reason: 'x' is too long"},
    }

    assert main(["approve", run.id, "--reviewer", "alice"]) == 1

    err = capsys.readouterr().err
    assert "REJECT" in err
    assert "'x' is too long" in err


def test_api_errors_never_show_the_key() -> None:
    def unauthorised(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "Unauthorized"})

    api = PrefectApi(API_URL, api_key=API_KEY, transport=httpx.MockTransport(unauthorised))

    with pytest.raises(OrchestratorError) as caught:
        api.list_paused_runs()

    assert "PREFECT_API_KEY" in str(caught.value)
    _assert_no_secret(str(caught.value), repr(api))


def test_connection_error_names_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = PrefectApi(API_URL, transport=httpx.MockTransport(refuse))

    with pytest.raises(OrchestratorError, match="cannot reach the Prefect API at") as caught:
        api.resume(str(uuid.uuid4()), {})
    assert API_URL in str(caught.value)
    assert "server is running" in str(caught.value)


def test_resume_waits_for_the_input_schema_then_gives_up(fake: FakePrefect) -> None:
    run = fake.add_run("pausing", schema_saved=False)
    api = PrefectApi(API_URL, api_key=API_KEY, transport=fake.transport)

    with pytest.raises(OrchestratorError, match="has not saved its approval form"):
        api.resume(run.id, {"reviewer": "alice"}, schema_timeout=0.2, poll_interval=0.05)

    schema_reads = [r for r in fake.requests if "/input/" in r.url.path]
    assert len(schema_reads) >= 2  # it polled rather than failing at once
    assert run.resumed_with is None


def test_resume_unknown_id_raises_not_found(fake: FakePrefect) -> None:
    api = PrefectApi(API_URL, api_key=API_KEY, transport=fake.transport)

    with pytest.raises(FlowRunNotFoundError, match="modelferry pending"):
        api.resume(str(uuid.uuid4()), {})


def test_from_environment_requires_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    with pytest.raises(OrchestratorError, match="prefect server start"):
        PrefectApi.from_environment()


def test_url_without_api_root_is_explained_not_reported_as_missing_run() -> None:
    def no_such_route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    api = PrefectApi("http://prefect.test:4200", transport=httpx.MockTransport(no_such_route))

    with pytest.raises(OrchestratorError, match="ending in /api") as caught:
        api.resume(str(uuid.uuid4()), {})
    assert not isinstance(caught.value, FlowRunNotFoundError)


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

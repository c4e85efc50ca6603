"""The train-and-register flow end to end, on a Prefect test server and a real MLflow store."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from prefect.exceptions import NotPausedError
from prefect.flow_runs import resume_flow_run

import flows.package_and_deliver
import flows.train_and_register
from flows.inputs import Rollout, Targets
from flows.retrain_and_deliver import retrain_and_deliver
from flows.train_and_register import train_and_register
from modelferry.config import ModelConfig
from modelferry.endpoints.local import LocalEndpointBackend
from modelferry.registry import GATE_TABLE_ARTIFACT, TrackingSettings
from tests.integration.flow_helpers import api_filter, api_post, reviewer_thread, write_config

pytestmark = pytest.mark.integration

MODEL = "breast-cancer-classifier"


@pytest.fixture(autouse=True)
def _server(prefect_harness: str) -> None:
    """Every test here talks to the shared Prefect test server."""


def versions(uri: str) -> list[Any]:
    return sorted(
        MlflowClient(uri, uri).search_model_versions(f"name = '{MODEL}'"),
        key=lambda v: int(v.version),
    )


def alias(uri: str, name: str) -> str | None:
    try:
        return str(MlflowClient(uri, uri).get_model_version_by_alias(MODEL, name).version)
    except Exception:
        return None


def approval_events(
    model: str, version: str, flow_run_id: str, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The `modelferry.model.approved` events this flow run emitted for this version."""
    body = {
        "filter": {
            "event": {"name": ["modelferry.model.approved"]},
            "resource": {"id": [f"modelferry.model.{model}.{version}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + timeout
    while True:
        events: list[dict[str, Any]] = [
            event
            for event in api_post("/events/filter", body)["events"]
            if f"prefect.flow-run.{flow_run_id}"
            in {r["prefect.resource.id"] for r in event["related"]}
        ]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_auto_approval_registers_tags_and_promotes(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILD_BUILDID", "20261122.7")
    config = write_config(tmp_path)

    first = train_and_register(str(config), targets=Targets(tracking_uri=mlflow_uri))

    assert first.approved
    assert first.version == "1"
    assert first.previous_champion_version is None
    client = MlflowClient(mlflow_uri, mlflow_uri)
    v1 = client.get_model_version(MODEL, "1")
    assert {"challenger", "champion"} <= set(v1.aliases)
    assert float(v1.tags["metric.roc_auc"]) == pytest.approx(first.metrics["roc_auc"], abs=1e-6)
    for metric in ("accuracy", "roc_auc", "f1", "log_loss"):
        assert f"metric.{metric}" in v1.tags
    assert len(v1.tags["dataset.digest"]) == 64
    assert v1.tags["ci.build_id"] == "20261122.7"
    assert len(v1.tags["git.commit"]) == 40
    assert v1.tags["decision.status"] == "approved"
    assert v1.tags["decision.decided_by"] == "gate"
    assert v1.tags["decision.mode"] == "auto"
    assert v1.tags["decision.gate"] == "passed"
    assert v1.tags["decision.flow_run_id"] == v1.tags["prefect.flow_run_id"]

    run = client.get_run(v1.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(first.metrics["roc_auc"])
    assert run.data.params["model_type"] == "lightgbm"
    assert int(run.data.params["test_rows"]) == 114
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [v1.tags["dataset.digest"][:32]]
    plots = {a.path for a in client.list_artifacts(v1.run_id, "plots")}
    assert plots == {
        "plots/roc_curve.png",
        "plots/precision_recall_curve.png",
        "plots/calibration_curve.png",
        "plots/confusion_matrix.png",
        "plots/feature_importance.png",
    }

    (approved,) = approval_events(MODEL, "1", v1.tags["prefect.flow_run_id"])
    assert approved["payload"]["decided_by"] == "gate"
    assert approved["resource"]["modelferry.model.name"] == MODEL

    # The second night: the champion is scored on the same test set and compared.
    second = train_and_register(str(config), targets=Targets(tracking_uri=mlflow_uri))
    assert second.version == "2"
    assert second.approved
    assert second.previous_champion_version == "1"
    assert alias(mlflow_uri, "champion") == "2"
    assert alias(mlflow_uri, "previous-champion") == "1"
    assert alias(mlflow_uri, "challenger") == "2"


def test_gate_report_is_published_as_artifact(tmp_path: Path, mlflow_uri: str) -> None:
    config = write_config(tmp_path, registered_model_name="report-model")
    outcome = train_and_register(str(config), targets=Targets(tracking_uri=mlflow_uri))

    found = api_filter(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["gate-report-model"]}}, "sort": "CREATED_DESC"},
    )
    assert len(found) == 1
    report = found[0]
    assert report["type"] == "markdown"
    assert "report-model v1: challenger vs champion" in report["data"]
    assert "| roc_auc |" in report["data"]
    assert outcome.run_id in report["data"]
    # A SQLite store has no address for the chart: the report names it in the run.
    assert "Gate chart: `gate/gate.png` in its artifacts" in report["data"]


def test_the_gate_table_and_verdict_are_in_the_challengers_mlflow_run(
    tmp_path: Path, mlflow_uri: str
) -> None:
    import mlflow

    config = write_config(tmp_path, registered_model_name="gate-table-model")
    train_and_register(str(config), targets=Targets(tracking_uri=mlflow_uri))
    second = train_and_register(str(config), targets=Targets(tracking_uri=mlflow_uri))

    mlflow.set_tracking_uri(mlflow_uri)
    # MLflow's table format: {"columns": [...], "data": [[...], ...]}.
    table = mlflow.artifacts.load_dict(f"runs:/{second.run_id}/{GATE_TABLE_ARTIFACT}")
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}
    assert set(rows) >= {"roc_auc", "accuracy", "log_loss"}
    assert rows["roc_auc"]["challenger"] == pytest.approx(second.metrics["roc_auc"])
    assert rows["roc_auc"]["champion"] is not None
    assert rows["roc_auc"]["gated"]
    assert bool(rows["roc_auc"]["passed"]) is second.gate_passed
    client = MlflowClient(mlflow_uri, mlflow_uri)
    verdict = mlflow.artifacts.load_dict(f"runs:/{second.run_id}/gate/gate_verdict.json")
    assert verdict["passed"] is second.gate_passed
    assert verdict["champion_version"] == "1"
    assert client.get_run(second.run_id).data.tags["gate.passed"] == str(second.gate_passed).lower()
    chart = Path(mlflow.artifacts.download_artifacts(f"runs:/{second.run_id}/gate/gate.png"))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000


def test_gate_failure_rejects_and_keeps_champion(tmp_path: Path, mlflow_uri: str) -> None:
    train_and_register(str(write_config(tmp_path)), targets=Targets(tracking_uri=mlflow_uri))
    strict = write_config(
        tmp_path,
        name="strict.json",
        gate={"metrics": {"roc_auc": {"threshold": 0.9, "min_delta": 0.05}}},
    )

    outcome = train_and_register(str(strict), targets=Targets(tracking_uri=mlflow_uri))

    assert not outcome.approved
    assert not outcome.gate_passed
    assert outcome.champion_version == "1"
    assert alias(mlflow_uri, "champion") == "1"
    tags_v2 = versions(mlflow_uri)[1].tags
    assert tags_v2["decision.status"] == "rejected"
    assert "the gate needs at least +0.05" in tags_v2["decision.comment"]


def test_a_rejection_after_approvals_names_the_registry_s_champions(
    tmp_path: Path, mlflow_uri: str
) -> None:
    config = str(write_config(tmp_path))
    train_and_register(config, targets=Targets(tracking_uri=mlflow_uri))
    train_and_register(config, targets=Targets(tracking_uri=mlflow_uri))
    assert (alias(mlflow_uri, "champion"), alias(mlflow_uri, "previous-champion")) == ("2", "1")
    strict = write_config(
        tmp_path, name="strict.json", gate={"metrics": {"roc_auc": {"threshold": 0.9999}}}
    )

    rejected = train_and_register(str(strict), targets=Targets(tracking_uri=mlflow_uri))

    assert not rejected.approved
    assert (rejected.champion_version, rejected.previous_champion_version) == ("2", "1")
    assert (
        f"Champion:          models:/{MODEL}@champion -> v2 (unchanged; previous champion: 1)"
        in rejected.report().splitlines()
    )
    assert (alias(mlflow_uri, "champion"), alias(mlflow_uri, "previous-champion")) == ("2", "1")


def test_fail_on_reject_ends_the_run_failed(tmp_path: Path, mlflow_uri: str) -> None:
    from modelferry.errors import ApprovalRejectedError

    config = write_config(tmp_path, gate={"metrics": {"roc_auc": {"threshold": 0.9999}}})
    with pytest.raises(ApprovalRejectedError, match="rejected by the gate"):
        train_and_register(
            str(config), targets=Targets(tracking_uri=mlflow_uri), fail_on_reject=True
        )
    assert versions(mlflow_uri)[0].tags["decision.status"] == "rejected"


@pytest.mark.parametrize(
    ("answer", "approved"),
    [
        ({"approve": True, "reviewer": "alice", "comment": "looks good"}, True),
        ({"approve": False, "reviewer": "bob", "comment": "recall too low"}, False),
    ],
)
def test_manual_approval_through_the_api(
    tmp_path: Path, mlflow_uri: str, answer: dict[str, Any], approved: bool
) -> None:
    run_name = f"review-{uuid.uuid4().hex[:8]}"
    reviewer, errors = reviewer_thread(run_name, answer)
    # A bounded approval timeout: a reviewer that fails cannot hang the test.
    config = write_config(tmp_path, approval={"mode": "auto", "timeout_seconds": 150})
    outcome = train_and_register.with_options(flow_run_name=run_name)(
        str(config),
        approval="manual",
        targets=Targets(tracking_uri=mlflow_uri),
        approval_poll_seconds=1,
    )
    reviewer.join(timeout=30)

    assert errors == []
    assert outcome.approved is approved
    assert outcome.decision.decided_by == answer["reviewer"]
    tags_v1 = versions(mlflow_uri)[0].tags
    assert tags_v1["decision.status"] == ("approved" if approved else "rejected")
    assert tags_v1["decision.decided_by"] == answer["reviewer"]
    assert tags_v1["decision.comment"] == answer["comment"]
    assert tags_v1["decision.mode"] == "manual"
    assert alias(mlflow_uri, "champion") == ("1" if approved else None)


def test_manual_approval_timeout_is_recorded_rejection(tmp_path: Path, mlflow_uri: str) -> None:
    config = write_config(tmp_path, approval={"mode": "manual", "timeout_seconds": 3})

    state = train_and_register(
        str(config),
        targets=Targets(tracking_uri=mlflow_uri),
        approval_poll_seconds=1,
        return_state=True,
    )

    assert state.is_completed()
    assert "nobody answered the approval request in time" in str(state.message)
    outcome = state.result()
    assert outcome.decision.status == "timed_out"
    assert versions(mlflow_uri)[0].tags["decision.status"] == "timed_out"
    assert alias(mlflow_uri, "champion") is None
    # The decision is final: a late answer is refused.
    with pytest.raises(NotPausedError):
        resume_flow_run(state.state_details.flow_run_id, run_input={"reviewer": "late"})


def test_gate_plus_manual_does_not_ask_when_gate_fails(tmp_path: Path, mlflow_uri: str) -> None:
    config = write_config(tmp_path, gate={"metrics": {"roc_auc": {"threshold": 0.9999}}})
    outcome = train_and_register(
        str(config), approval="gate+manual", targets=Targets(tracking_uri=mlflow_uri)
    )
    assert outcome.decision.decided_by == "gate"
    assert outcome.decision.mode == "gate+manual"
    assert not outcome.approved


def test_nightly_flow_registers_rolls_out_and_delivers_to_the_edge(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the package store, keys and devices go under .modelferry/
    home = tmp_path / "endpoints"
    backend = LocalEndpointBackend(home, TrackingSettings.resolve(mlflow_uri))
    reads: list[str] = []
    read = flows.train_and_register.load_config

    def counted(path: str) -> ModelConfig:
        reads.append(path)
        return read(path)

    monkeypatch.setattr(flows.train_and_register, "load_config", counted)
    monkeypatch.setattr(flows.package_and_deliver, "load_config", counted)
    try:
        state = retrain_and_deliver(
            str(write_config(tmp_path)),
            targets=Targets(tracking_uri=mlflow_uri, endpoints_home=str(home)),
            rollout=Rollout(step_seconds=0.2),
            return_state=True,
        )
        assert state.is_completed()
        assert len(reads) == 1, "the nightly run reads its config once"
        outcome = state.result()
        assert outcome.registration.champion_version == "1"
        assert outcome.rollout is not None
        assert outcome.rollout.traffic == {"blue": 100}
        assert "approved by the gate" in str(state.message)
        assert "serves on endpoint breast-cancer-classifier" in str(state.message)
        # A SQLite store has no web page: the run says how to open the version and its run.
        run_id = str(state.state_details.flow_run_id)
        [links] = api_filter(
            "/artifacts/filter",
            {
                "artifacts": {
                    "key": {"any_": [f"nightly-{MODEL}-mlflow"]},
                    "flow_run_id": {"any_": [run_id]},
                }
            },
        )
        assert f"(then open #/models/{MODEL}/versions/1)" in links["data"]
        assert outcome.registration.run_id in links["data"]
        answer = backend.invoke(MODEL, {"input_data": _rows()})
        assert answer["model_version"] == "1"
        assert answer["classes"] == ["malignant", "benign"]

        # The config's three devices run the champion's package, installed by local agents.
        assert outcome.package is not None
        assert (outcome.package.package_id, outcome.package.package_version) == (MODEL, "1")
        assert outcome.delivery is not None
        assert outcome.delivery.counts == {"Success": 3}
        assert "Delivered breast-cancer-classifier 1 to 3 device(s): 3 Success" in state.message
        for device in ("edge-001", "edge-002", "edge-003"):
            current = tmp_path / ".modelferry" / "devices" / device / "current"
            assert current.readlink() == Path(f"versions/{MODEL}/1")
            assert (current / "manifest.json").is_file()
    finally:
        for endpoint in backend.list_endpoints():
            backend.delete_endpoint(endpoint.name)


def test_nightly_flow_delivers_nothing_when_rejected(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, gate={"metrics": {"roc_auc": {"threshold": 0.9999}}})
    home = tmp_path / "endpoints"
    outcome = retrain_and_deliver(
        str(config), targets=Targets(tracking_uri=mlflow_uri, endpoints_home=str(home))
    )
    assert not outcome.registration.approved
    assert outcome.rollout is None
    assert outcome.package is None
    assert outcome.delivery is None
    assert not (tmp_path / ".modelferry" / "packages").exists()
    assert LocalEndpointBackend(home, TrackingSettings.resolve(mlflow_uri)).list_endpoints() == []


def _rows() -> dict[str, Any]:
    from tests.model_fixtures import score_payload

    return dict(score_payload()["input_data"])

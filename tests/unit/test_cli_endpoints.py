"""`modelferry endpoints` with `--backend azureml`, on `FakeMLClient` instead of a workspace,
and what the local backend answers without starting a server.

`WorkspaceRef.ml_client` is replaced, as test_cli.py replaces the approvals `connect`:
the command resolves the workspace from its options and environment as it would for real,
then talks to the fake.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from azure.core.credentials import TokenCredential
from pydantic import SecretStr

from modelferry.cli import main
from modelferry.cli.endpoints import format_rollback
from modelferry.endpoints.azureml import AzureMLEndpointBackend, WorkspaceRef
from modelferry.endpoints.backend import TrafficRollback
from modelferry.endpoints.local.state import EndpointRecord, EndpointStateStore
from modelferry.endpoints.spec import (
    DeploymentSpec,
    EndpointSpec,
    EndpointState,
    ModelRef,
    TrafficSplit,
)
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.testing.azureml.ml_client import FakeMLClient
from tests import model_fixtures

#: `churn` of the `client` fixture as `--output json` shows it.
CHURN_JSON = {
    "name": "churn",
    "scoring_uri": "https://churn.westeurope.inference.ml.azure.com/score",
    "traffic": {"blue": 100},
    "mirror": {},
    "deployments": [
        {
            "name": slot,
            "model_name": model_fixtures.MODEL_NAME,
            "model_version": version,
            "status": "ready",
            "detail": "Azure ML provisioning state: Succeeded",
        }
        for slot, version in (("blue", "1"), ("green", "2"))
    ],
}
ENV = {
    "AZUREML_SUBSCRIPTION_ID": "sub-env",
    "AZUREML_RESOURCE_GROUP": "rg-env",
    "AZUREML_WORKSPACE": "ws-env",
}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    return model_fixtures.register_versions(tmp_path_factory.mktemp("cli-azureml"))


@pytest.fixture
def client(tmp_path: Path, settings: TrackingSettings) -> FakeMLClient:
    """A workspace with endpoint "churn": blue (v1) takes all traffic, green (v2) none."""
    client = FakeMLClient(tmp_path / "workspace")
    backend = AzureMLEndpointBackend(client, ModelRegistry(settings), poll_interval_s=0.01)
    backend.create_or_update_endpoint(EndpointSpec("churn"))
    for slot, version in (("blue", "1"), ("green", "2")):
        ref = ModelRef(model_fixtures.MODEL_NAME, version=version)
        backend.create_or_update_deployment("churn", DeploymentSpec(slot, ref))
    backend.set_traffic("churn", TrafficSplit({"blue": 100}))
    return client


@pytest.fixture
def opened(
    client: FakeMLClient, settings: TrackingSettings, monkeypatch: pytest.MonkeyPatch
) -> list[WorkspaceRef]:
    """The workspaces the command opened; each `ml_client()` answers with `client`."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    seen: list[WorkspaceRef] = []

    def ml_client(self: WorkspaceRef, credential: TokenCredential | None = None) -> FakeMLClient:
        seen.append(self)
        return client

    monkeypatch.setattr(WorkspaceRef, "ml_client", ml_client)
    return seen


def azureml(*argv: str) -> int:
    return main(["endpoints", *argv, "--backend", "azureml"])


def test_list_names_the_workspace_from_the_environment(
    opened: list[WorkspaceRef], capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("list") == 0
    out = capsys.readouterr().out
    assert out.strip() == (
        "churn  https://churn.westeurope.inference.ml.azure.com/score  traffic: blue=100%"
    )
    assert opened == [WorkspaceRef("sub-env", "rg-env", "ws-env")]


def test_show_with_workspace_options(
    opened: list[WorkspaceRef], capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--subscription-id", "sub-1", "--resource-group", "rg", "--workspace", "ws"]
    assert azureml("show", "churn", *options) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("traffic: blue=100%")
    assert lines[1].split()[:4] == ["blue", model_fixtures.MODEL_NAME, "v1", "ready"]
    assert lines[2].split()[:4] == ["green", model_fixtures.MODEL_NAME, "v2", "ready"]
    assert opened == [WorkspaceRef("sub-1", "rg", "ws")]


def test_traffic_moves_the_split_in_the_workspace(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("traffic", "churn", "blue=20", "green=80") == 0
    assert client.endpoints["churn"].traffic == {"blue": 20, "green": 80}
    assert "traffic: blue=20%, green=80%" in capsys.readouterr().out


def test_logs_of_one_deployment(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("logs", "churn", "--deployment", "green", "--lines", "2") == 0
    assert capsys.readouterr().out.splitlines() == client.logs[("churn", "green")][-2:]


def test_delete_then_show_is_not_found(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("delete", "churn") == 0
    assert "churn" not in client.endpoints
    assert azureml("show", "churn") == 1
    assert "endpoint 'churn' does not exist in Azure ML" in capsys.readouterr().err


def test_an_empty_workspace_says_so(
    opened: list[WorkspaceRef], capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("delete", "churn") == 0
    capsys.readouterr()
    assert azureml("list") == 0
    assert capsys.readouterr().out == "No Azure ML endpoints.\n"


def test_logs_without_a_deployment_fails_before_signing_in(
    opened: list[WorkspaceRef], capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("logs", "churn") == 2
    err = capsys.readouterr().err
    assert "add --deployment NAME" in err
    assert "Traceback" not in err
    assert opened == []


def test_rollback_on_azure_ml_is_not_supported_and_changes_nothing(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("rollback", "churn") == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "modelferry: error: the Azure ML endpoint backend does not support rolling back traffic"
    )
    assert "`modelferry endpoints traffic churn DEPLOYMENT=PERCENT ...`" in err
    assert "Traceback" not in err
    assert client.endpoints["churn"].traffic == {"blue": 100}


def test_unnamed_workspace_names_what_is_missing(
    opened: list[WorkspaceRef], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AZUREML_RESOURCE_GROUP")
    monkeypatch.delenv("AZUREML_WORKSPACE")
    assert azureml("list") == 2
    assert "set AZUREML_RESOURCE_GROUP, AZUREML_WORKSPACE" in capsys.readouterr().err
    assert opened == []


def test_workspace_options_need_the_azureml_backend(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["endpoints", "list", "--workspace", "ws"]) == 2
    assert "add --backend azureml" in capsys.readouterr().err


def test_local_backend_stays_the_default(
    tmp_path: Path, settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(tmp_path / "endpoints"), "--tracking-uri", settings.tracking_uri]
    assert main(["endpoints", "list", *home]) == 0
    assert capsys.readouterr().out.strip() == "No local endpoints."


def test_missing_azure_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)
    assert azureml("list", "--tracking-uri", settings.tracking_uri) == 1
    assert "pip install 'modelferry[azure]'" in capsys.readouterr().err


def test_key_prints_only_the_primary_key(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("key", "churn") == 0
    assert capsys.readouterr().out == client.keys["churn"].primary_key + "\n"


def test_show_says_how_to_get_the_key_without_printing_it(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("show", "churn") == 0
    out = capsys.readouterr().out
    assert "Scoring key: modelferry endpoints key churn --backend azureml" in out
    assert str(client.keys["churn"].primary_key) not in out


def test_list_json_gives_each_endpoint_for_scripts(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("list", "--output", "json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [CHURN_JSON]
    assert err == ""
    assert str(client.keys["churn"].primary_key) not in out


def test_show_json_gives_the_endpoint_without_its_key(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("show", "churn", "-o", "json") == 0
    out = capsys.readouterr().out
    assert json.loads(out) == CHURN_JSON
    assert str(client.keys["churn"].primary_key) not in out
    assert "key" not in json.loads(out)


def test_show_json_of_an_unknown_endpoint_fails_as_text_does(
    opened: list[WorkspaceRef], capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("show", "nope") == 1
    text_err = capsys.readouterr().err
    assert azureml("show", "nope", "--output", "json") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == text_err
    assert len(err.strip().splitlines()) == 1


def test_local_list_json_shows_mirror_and_no_key(
    tmp_path: Path, settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "endpoints"
    store = EndpointStateStore(home / "endpoints.db")
    secret = "scoring-key-that-must-not-show"
    store.put_endpoint(
        replace(
            _record("churn"),
            scoring_key=SecretStr(secret),
            traffic=TrafficSplit({"blue": 100}, {"shadow": 10}),
        )
    )
    store.put_endpoint(_record("empty"))
    local = ["--home", str(home), "--tracking-uri", settings.tracking_uri]
    assert main(["endpoints", "list", *local, "--output", "json"]) == 0
    out = capsys.readouterr().out
    listed = {endpoint["name"]: endpoint for endpoint in json.loads(out)}
    assert set(listed) == {"churn", "empty"}
    assert listed["churn"]["traffic"] == {"blue": 100}
    assert listed["churn"]["mirror"] == {"shadow": 10}
    assert listed["churn"]["deployments"] == []
    assert secret not in out


def test_local_list_json_without_endpoints_is_an_empty_list(
    tmp_path: Path, settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    local = ["--home", str(tmp_path / "none"), "--tracking-uri", settings.tracking_uri]
    assert main(["endpoints", "list", *local, "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("action", [["list"], ["show", "churn"]])
def test_list_and_show_refuse_an_unknown_output_format(
    action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["endpoints", *action, "--output", "yaml"]) == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def test_rotating_an_azure_ml_key_names_the_azure_command(
    opened: list[WorkspaceRef], capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("key", "churn", "--rotate") == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no key printed
    assert captured.err.startswith(
        "modelferry: error: the Azure ML endpoint backend does not support rotating scoring keys"
    )
    assert "az ml online-endpoint regenerate-keys --name churn --key-type primary" in captured.err
    assert "`modelferry endpoints key churn --backend azureml`" in captured.err


def test_deleting_an_unknown_endpoint_says_so(
    opened: list[WorkspaceRef], client: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert azureml("delete", "nope") == 1
    err = capsys.readouterr().err
    assert "cannot delete endpoint 'nope': it does not exist" in err
    assert "`modelferry endpoints list --backend azureml` lists the endpoints" in err
    assert "churn" in client.endpoints


def test_rollback_says_which_release_it_undid() -> None:
    state = EndpointState("churn", "http://x/score", (), TrafficSplit({"blue": 100}))
    undone = TrafficRollback(state, TrafficSplit({"green": 100}), 3, "green (v2)")
    assert format_rollback(undone) == (
        "Rolled back the release of green (v2): blue 100%, green 0% (was blue 0%, green 100%)"
    )
    step = TrafficRollback(
        EndpointState("churn", "", (), TrafficSplit({"blue": 50, "green": 50})),
        TrafficSplit({"green": 100}, {"shadow": 10}),
        1,
        None,
    )
    assert format_rollback(step) == (
        "Rolled back 1 traffic change: blue 50%, green 50% (was blue 0%, green 100%); "
        "mirror: none (was shadow 10%)"
    )


def test_local_rollback_with_nothing_to_undo_fails(
    tmp_path: Path, settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "endpoints"
    store = EndpointStateStore(home / "endpoints.db")
    store.put_endpoint(_record("churn"))
    local = ["--home", str(home), "--tracking-uri", settings.tracking_uri]
    assert main(["endpoints", "rollback", "churn", *local]) == 1
    assert "endpoint 'churn' has no release to roll back" in capsys.readouterr().err
    assert main(["endpoints", "rollback", "churn", "--steps", "2", *local]) == 1
    assert "has 0 recorded traffic change(s); cannot undo 2" in capsys.readouterr().err


def test_local_delete_of_an_unknown_endpoint_fails(
    tmp_path: Path, settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "endpoints"
    local = ["--home", str(home), "--tracking-uri", settings.tracking_uri]
    assert main(["endpoints", "delete", "nope", *local]) == 1
    err = capsys.readouterr().err
    assert "cannot delete endpoint 'nope': it does not exist" in err
    assert f"`modelferry endpoints list --home {home}` lists the endpoints" in err


def test_cli_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, modelferry.cli.endpoints; "
        "print(sorted(m for m in ('pandas', 'mlflow', 'numpy', 'lightgbm', 'fastapi') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _record(name: str) -> EndpointRecord:
    return EndpointRecord(
        name=name,
        port=1,
        pid=None,
        scoring_key=SecretStr("k"),
        admin_token=SecretStr("t"),
        description="",
        tags={},
        traffic=TrafficSplit({"blue": 100}),
        tracking_uri="file:///nowhere",
        registry_uri=None,
    )

"""Optional `EndpointBackend` operations: a backend that lacks one says so, by name.

`NoHistoryBackend` implements only what every backend must; the command line reaches it
through `create_backend`, as it reaches the local and Azure ML backends.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn

import pytest
from pydantic import SecretStr

from modelferry.cli import main
from modelferry.endpoints.backend import EndpointBackend
from modelferry.endpoints.spec import (
    DeploymentMetrics,
    DeploymentSpec,
    DeploymentState,
    EndpointSpec,
    EndpointState,
    TrafficSplit,
)
from modelferry.errors import EndpointError, OperationNotSupportedError


class NoHistoryBackend(EndpointBackend):
    """The required operations only; none of them is called by these tests."""

    def _unused(self) -> NoReturn:
        raise AssertionError("not called by these tests")

    def create_or_update_endpoint(self, spec: EndpointSpec) -> EndpointState:
        self._unused()

    def get_endpoint(self, name: str) -> EndpointState:
        self._unused()

    def list_endpoints(self) -> list[EndpointState]:
        self._unused()

    def delete_endpoint(self, name: str) -> None:
        self._unused()

    def create_or_update_deployment(
        self, endpoint: str, spec: DeploymentSpec, timeout_s: float = 600.0
    ) -> DeploymentState:
        self._unused()

    def delete_deployment(self, endpoint: str, name: str) -> None:
        self._unused()

    def set_traffic(self, endpoint: str, traffic: TrafficSplit) -> EndpointState:
        self._unused()

    def get_keys(self, endpoint: str) -> SecretStr:
        self._unused()

    def invoke(
        self, endpoint: str, payload: Mapping[str, Any], deployment: str | None = None
    ) -> Any:
        self._unused()

    def get_metrics(self, endpoint: str, since: datetime) -> dict[str, DeploymentMetrics]:
        self._unused()

    def get_logs(self, endpoint: str, deployment: str, lines: int = 100) -> str:
        self._unused()


def test_rollback_names_the_backend_the_operation_and_what_to_do_instead() -> None:
    with pytest.raises(OperationNotSupportedError) as raised:
        NoHistoryBackend().rollback_traffic("churn")
    error = raised.value
    assert isinstance(error, EndpointError)  # what callers of the old default caught
    assert (error.backend, error.operation) == ("NoHistoryBackend", "rollback_traffic")
    assert str(error) == (
        "the NoHistoryBackend endpoint backend does not support rolling back traffic: it "
        "keeps no earlier traffic split of endpoint 'churn' to go back to; set the split you "
        "want instead with `set_traffic` (from a shell: `modelferry endpoints traffic churn "
        "DEPLOYMENT=PERCENT ...`)"
    )


def test_rotate_key_names_the_backend_and_the_operation() -> None:
    with pytest.raises(OperationNotSupportedError, match="does not support rotating") as raised:
        NoHistoryBackend().rotate_key("churn")
    assert (raised.value.backend, raised.value.operation) == ("NoHistoryBackend", "rotate_key")


def test_display_name_replaces_the_class_name() -> None:
    class Named(NoHistoryBackend):
        display_name = "Named Cloud"

    with pytest.raises(OperationNotSupportedError, match=r"^the Named Cloud endpoint backend"):
        Named().rollback_traffic("churn", steps=1)


def test_the_error_survives_pickling() -> None:
    with pytest.raises(OperationNotSupportedError) as raised:
        NoHistoryBackend().rollback_traffic("churn")
    copy = pickle.loads(pickle.dumps(raised.value))
    assert str(copy) == str(raised.value)
    assert (copy.backend, copy.operation) == ("NoHistoryBackend", "rollback_traffic")


def test_the_command_line_shows_the_message_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def create_backend(args: argparse.Namespace) -> EndpointBackend:
        return NoHistoryBackend()

    monkeypatch.setattr("modelferry.cli.endpoints.create_backend", create_backend)
    assert main(["endpoints", "rollback", "churn"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "modelferry: error: the NoHistoryBackend endpoint backend does not support rolling "
        "back traffic: it keeps no earlier traffic split of endpoint 'churn' to go back to; "
        "set the split you want instead with `set_traffic` (from a shell: `modelferry "
        "endpoints traffic churn DEPLOYMENT=PERCENT ...`)\n"
    )

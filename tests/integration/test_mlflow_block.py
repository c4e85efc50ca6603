"""The MLflow tracking block: validation, secrecy, and flows configured through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.exceptions import ParameterTypeError
from pydantic import SecretStr, ValidationError

from blocks.mlflow_tracking import MlflowTracking
from flows.inputs import Targets
from flows.train_and_register import train_and_register
from tests.integration.flow_helpers import write_config

pytestmark = pytest.mark.integration


def test_sign_in_options_that_cannot_be_combined() -> None:
    with pytest.raises(ValidationError, match="either a token or a username") as info:
        MlflowTracking(tracking_uri="https://m", username="u", password="pw-77", token="t-88")
    assert "pw-77" not in str(info.value)
    assert "t-88" not in str(info.value)
    with pytest.raises(ValidationError, match="needs a password"):
        MlflowTracking(tracking_uri="https://m", username="u")
    with pytest.raises(ValidationError, match="must not embed credentials"):
        MlflowTracking(tracking_uri="https://u:secret@m")


def test_secrets_stay_hidden_until_activated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    block = MlflowTracking(tracking_uri="https://mlflow.invalid", token="tok-123")
    settings = block.get_settings()
    assert "tok-123" not in repr(block)
    assert "tok-123" not in repr(settings)
    assert settings.token == SecretStr("tok-123")
    try:
        settings.activate()
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == "tok-123"
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)


def test_flow_uses_saved_block(prefect_harness: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'via-block.db'}"
    MlflowTracking(tracking_uri=uri).save("test-store", overwrite=True)

    outcome = train_and_register(
        str(write_config(tmp_path)), targets=Targets(tracking="test-store")
    )

    assert outcome.approved
    champion = MlflowClient(uri, uri).get_model_version_by_alias(outcome.model_name, "champion")
    assert str(champion.version) == outcome.version


def test_block_and_uri_together_are_refused(prefect_harness: str, tmp_path: Path) -> None:
    with pytest.raises(ParameterTypeError, match="targets") as caught:
        train_and_register(
            str(write_config(tmp_path)),
            targets={"tracking_uri": "sqlite:///x.db", "tracking": "any"},
        )
    assert "give tracking (a block) or tracking_uri, not both" in str(caught.value)

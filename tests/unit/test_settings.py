"""The `MODELFERRY_*` settings: defaults, overrides, the old records name, clear refusals."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from modelferry.errors import InvalidConfigError
from modelferry.settings import ENV_PREFIX, ModelferrySettings, load_settings

SRC = Path(__file__).parents[2] / "src" / "modelferry"


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_nothing_set_gives_the_documented_defaults() -> None:
    settings = load_settings()
    assert settings.records_url is None
    assert settings.webhook_url is None
    assert settings.request_log_sample == 0.1
    assert (settings.header_timeout_s, settings.body_timeout_s) == (10.0, 30.0)
    assert settings.max_connections == 1000
    assert settings.server_host == "127.0.0.1"
    assert settings.mlflow_port == 5000


def test_values_are_parsed_and_an_empty_variable_counts_as_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELFERRY_COMPILED_MODELS", "/srv/compiled")
    monkeypatch.setenv("MODELFERRY_MLFLOW_PORT", "5001")
    monkeypatch.setenv("MODELFERRY_REQUEST_LOG_SAMPLE", "1")
    monkeypatch.setenv("MODELFERRY_WEBHOOK_BLOCK", "")
    settings = load_settings()
    assert settings.compiled_models == Path("/srv/compiled")
    assert settings.mlflow_port == 5001
    assert settings.request_log_sample == 1.0
    assert settings.webhook_block is None


def test_the_records_url_is_read_under_both_names_and_kept_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql+psycopg://deliver:pa55word@db:5432/deliveries"
    monkeypatch.setenv("MODELFERRY_DELIVERY_RECORDS_URL", url)
    settings = load_settings()
    assert settings.records_url is not None
    assert settings.records_url.get_secret_value() == url
    assert "pa55word" not in repr(settings)
    assert "pa55word" not in str(settings)
    monkeypatch.setenv("MODELFERRY_RECORDS_URL", "sqlite:///records.db")
    records = load_settings().records_url
    assert records is not None
    assert records.get_secret_value() == "sqlite:///records.db"


def test_every_bad_variable_is_named_with_what_it_wants_and_no_value_is_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELFERRY_MLFLOW_PORT", "70000-s3cret")
    monkeypatch.setenv("MODELFERRY_REQUEST_LOG_SAMPLE", "nan")
    monkeypatch.setenv("MODELFERRY_BODY_TIMEOUT_S", "-1")
    with pytest.raises(InvalidConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "MODELFERRY_MLFLOW_PORT: set it to a TCP port, 1 to 65535" in message
    assert "MODELFERRY_REQUEST_LOG_SAMPLE: set it to the share" in message
    assert "MODELFERRY_BODY_TIMEOUT_S: set it to seconds above 0" in message
    assert "s3cret" not in message
    assert "nan" not in message.lower().replace("none", "")


def test_settings_cannot_be_changed_once_read() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.max_connections = 5  # type: ignore[misc]


def test_the_library_reads_modelferry_variables_only_through_the_settings() -> None:
    # Reading one from os.environ directly would skip the checks above.
    literal = re.compile(r"os\.environ(?:\.get)?[\[(]\s*[\"']MODELFERRY_")
    named = re.compile(r"^[A-Z_]+ = \"MODELFERRY_", re.MULTILINE)
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "settings.py":
            continue
        text = path.read_text(encoding="utf-8")
        if literal.search(text) or (named.search(text) and "os.environ" in text):
            offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def test_every_variable_is_in_the_modules_table() -> None:
    import modelferry.settings

    table = modelferry.settings.__doc__ or ""
    for name, field in ModelferrySettings.model_fields.items():
        assert field.description, name
        assert f"`{ENV_PREFIX}{name.upper()}`" in table, name

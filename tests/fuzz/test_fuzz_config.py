"""`modelferry validate` against generated configs: near-valid, hostile, secret-laden.

Each example is a config file built around the real schema, with a database password
planted in URLs and fields, sometimes nested far too deep, saved with bytes that are not
UTF-8, or given YAML anchors. Whatever the file, `validate` answers 0 with one summary
line or 2 with one error line, and the password appears in neither.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelferry.cli import main

pytestmark = pytest.mark.fuzz

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
secrets = st.text(_ALNUM, min_size=6, max_size=16).map(lambda tail: f"Pw{tail}")


@st.composite
def secret_urls(draw: st.DrawFn, secret: str) -> str:
    scheme = draw(st.sampled_from(["postgresql+psycopg", "postgresql", "mysql", "sqlite", "x"]))
    port = draw(st.sampled_from(["5432", "abc", "", "99999"]))
    host = f"db.example:{port}" if port else "db.example"
    if draw(st.booleans()):
        return f"{scheme}://app:{secret}@{host}/sales"
    return f"{scheme}://app@{host}/sales?sslmode=require&password={secret}"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)


@st.composite
def configs(draw: st.DrawFn, secret: str) -> dict[str, Any]:
    url = draw(secret_urls(secret))
    source: Any = {
        "kind": draw(st.sampled_from(["sql", "sql", "file", "bundled", "mysql", 3, None])),
        "url": url,
        "query": draw(st.sampled_from(["select 1", "", 5, ["select"]])),
    }
    if source["kind"] is None:
        del source["kind"]
    if draw(st.booleans()):
        source[draw(st.sampled_from(["password", "path", "extra", "name"]))] = draw(
            st.sampled_from([secret, url, {"nested": url}, [url]])
        )
    source = draw(st.sampled_from([source, source, url, [url], {"url": {"value": url}}]))
    config: dict[str, Any] = {
        "experiment_name": draw(st.sampled_from(["demo", "", url, "bad name"])),
        "registered_model_name": draw(st.sampled_from(["demo-model", url, 7])),
        "data": {"source": source, "label_column": draw(st.sampled_from(["target", url]))},
    }
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from(["seed", "model", "split", "gate", "approval", "typo"]))
        config[field] = draw(
            st.recursive(
                scalars | st.just(url),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(_ALNUM, min_size=1, max_size=6), inner, max_size=3)
                ),
                max_leaves=8,
            )
        )
    return config


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, bytes, str]:
    secret = draw(secrets)
    config = draw(configs(secret))
    depth = draw(st.sampled_from([0, 0, 0, 5, 70, 3000]))
    source = config["data"]["source"]
    # Built as text: json.dumps and yaml.safe_dump would recurse as deep as the nesting.
    config["data"]["source"] = "@@deep@@"
    deep = "[" * depth + json.dumps(source) + "]" * depth
    suffix = draw(st.sampled_from([".json", ".yaml"]))
    if suffix == ".json" or depth:
        # JSON is also YAML (flow style).
        text = json.dumps(config).replace('"@@deep@@"', deep)
    else:
        config["data"]["source"] = source
        text = yaml.safe_dump(config)
    if suffix == ".yaml" and draw(st.booleans()):
        text = f"shared: &s [{secret}, {secret}]\nagain: *s\n{text}"
    raw = text.encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "latin-1", "truncate"]))
    if damage == "latin-1":
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + b"\xff\xfe" + raw[cut:]
    elif damage == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return suffix, raw, secret


@settings(max_examples=60)
@given(case=config_files())
def test_validate_answers_in_one_line_without_the_secret(
    tmp_path: Path, case: tuple[str, bytes, str]
) -> None:
    suffix, raw, secret = case
    path = tmp_path / f"model{suffix}"
    path.write_bytes(raw)
    out, err = io.StringIO(), io.StringIO()

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path)])

    assert code in {0, 2}
    printed = out.getvalue() + err.getvalue()
    assert secret not in printed
    if code == 2:
        assert out.getvalue() == ""
        assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
    else:
        assert err.getvalue() == ""
        assert len(out.getvalue().strip().splitlines()) == 1

"""Pipeline variables to deployment parameters, typed by the deployment's parameter schema.

Plain functions over the JSON schema Prefect stores with a deployment
(`parameter_openapi_schema`); nothing here talks to the API.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "UsageError",
    "coerce_value",
    "collect_raw_parameters",
    "describe_parameters",
    "describe_type",
    "map_parameters",
    "secret_parameter_names",
]

# Azure DevOps leaves `$(name)` as is when no variable `name` exists.
_UNEXPANDED_VARIABLE: Final = re.compile(r"\$\(([\w.]+)\)")
_TRUE: Final = {"true", "yes", "on", "1"}
_FALSE: Final = {"false", "no", "off", "0"}
_NULL: Final = {"", "null"}


class UsageError(Exception):
    """The command line or the parameters do not fit the deployment (exit code 2)."""


def collect_raw_parameters(
    pairs: Sequence[str], environ: Mapping[str, str], prefix: str | None
) -> dict[str, str]:
    """Gather `name=value` pairs and PREFIX-named environment variables, pairs winning.

    Names from the environment are lower-cased (`MODELFERRY_PARAM_MODEL_NAME` gives
    `model_name`); `map_parameters` matches them to the schema.

    Raises:
        UsageError: a pair has no `=` or no name, or a value is an unexpanded `$(var)`.
    """
    raw: dict[str, str] = {}
    if prefix:
        for key, value in sorted(environ.items()):
            if key.upper().startswith(prefix.upper()) and len(key) > len(prefix):
                raw[key[len(prefix) :].lower()] = value
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {pair!r} is not of the form name=value")
        raw[name.strip()] = value
    for name, value in raw.items():
        unexpanded = _UNEXPANDED_VARIABLE.fullmatch(value.strip())
        if unexpanded:
            raise UsageError(
                f"parameter {name!r} is {value!r}: the pipeline variable "
                f"{unexpanded.group(1)!r} is not defined"
            )
    return raw


def map_parameters(
    raw: Mapping[str, str],
    schema: Mapping[str, Any],
    defaults: Mapping[str, Any],
    deployment: str,
) -> dict[str, Any]:
    """Type raw string values by the deployment's parameter schema.

    Args:
        raw: Parameter names (as given, or lower-cased from the environment) to strings.
        schema: The deployment's `parameter_openapi_schema`.
        defaults: The deployment's own parameters, which count as given.
        deployment: `flow/deployment`, for messages.

    Raises:
        UsageError: naming every unknown, mistyped and missing parameter at once, and
            listing the parameters the deployment takes.
    """
    properties: Mapping[str, Any] = schema.get("properties") or {}
    definitions: Mapping[str, Any] = schema.get("definitions") or schema.get("$defs") or {}
    by_key = {_name_key(name): name for name in properties}
    problems: list[str] = []
    typed: dict[str, Any] = {}
    given_names: set[str] = set()
    fields: dict[str, dict[str, Any]] = {}
    for given, value in raw.items():
        top, _, field = _split_nested(given)
        name = top if top in properties else by_key.get(_name_key(top))
        if name is None:
            problems.append(f"unknown parameter {given!r}")
            continue
        given_names.add(name)
        try:
            if field:
                inner = _nested_properties(properties[name], definitions)
                key = (
                    field
                    if field in inner
                    else {_name_key(f): f for f in inner}.get(_name_key(field))
                )
                if key is None:
                    problems.append(
                        f"unknown parameter {given!r}: {name} has "
                        + (", ".join(inner) or "no fields")
                    )
                    continue
                fields.setdefault(name, {})[key] = coerce_value(value, inner[key], definitions)
            else:
                typed[name] = coerce_value(value, properties[name], definitions)
        except ValueError as exc:
            problems.append(f"parameter {given if field else name!r}: {exc}")
    for name, values in fields.items():
        # `rollout.strategy=canary` sets one field; with `rollout={...}` too, it wins.
        whole = typed.get(name)
        typed[name] = {**(whole if isinstance(whole, dict) else {}), **values}
    required = schema.get("required") or []
    missing = [n for n in required if n not in given_names and n not in defaults]
    if missing:
        problems.append("missing required parameter(s): " + ", ".join(missing))
    if problems:
        raise UsageError(
            f"{deployment}: " + "; ".join(problems) + "\n" + describe_parameters(schema, defaults)
        )
    return typed


def _split_nested(given: str) -> tuple[str, str, str]:
    """`rollout.strategy` (or `ROLLOUT__STRATEGY` from the environment) -> rollout, strategy."""
    if "." in given:
        return given.partition(".")
    return given.partition("__")


def _nested_properties(
    schema: Mapping[str, Any], definitions: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The fields of an object parameter (a pydantic model), by name; empty otherwise."""
    schema = _resolve(schema, definitions)
    for option in schema.get("anyOf") or schema.get("allOf") or [schema]:
        found = _resolve(option, definitions).get("properties")
        if found:
            return dict(found)
    return {}


def coerce_value(raw: str, schema: Mapping[str, Any], definitions: Mapping[str, Any]) -> Any:
    """Turn one string into the JSON value its parameter schema asks for.

    Raises:
        ValueError: the string fits none of the schema's types; the message says which.
    """
    schema = _resolve(schema, definitions)
    options = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if options:
        resolved = [_resolve(option, definitions) for option in options]
        if raw.strip().lower() in _NULL and any(o.get("type") == "null" for o in resolved):
            return None
        looks_like_json = raw.strip().startswith(("[", "{"))
        ordered = sorted(resolved, key=lambda o: _preference(o, looks_like_json))
        for option in ordered:
            if option.get("type") == "null":
                continue
            try:
                return coerce_value(raw, option, definitions)
            except ValueError:
                continue
        raise ValueError(f"{raw!r} is not {describe_type(schema, definitions)}")
    if "enum" in schema:
        for allowed in schema["enum"]:
            if raw == str(allowed) or (isinstance(allowed, bool) and _bool_or_none(raw) is allowed):
                return allowed
        raise ValueError(f"{raw!r} is not one of {', '.join(map(str, schema['enum']))}")
    kind = schema.get("type")
    text = raw.strip()
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{raw!r} is not a finite number")
        return number
    if kind == "boolean":
        flag = _bool_or_none(text)
        if flag is None:
            raise ValueError(f"{raw!r} is not a boolean (true/false)")
        return flag
    if kind == "array":
        if text.startswith("["):
            return _json_of_type(text, list, "a list")
        items = schema.get("items") or {}
        parts = [item.strip() for item in text.split(",")]
        return [coerce_value(item, items, definitions) for item in parts if item]
    if kind == "object" or "$ref" in schema or "properties" in schema:
        return _json_of_type(text, dict, "a JSON object")
    if kind == "null":
        if text.lower() in _NULL:
            return None
        raise ValueError(f"{raw!r} is not null")
    return raw


def describe_type(schema: Mapping[str, Any], definitions: Mapping[str, Any]) -> str:
    """A short reading of a parameter's type: "integer", "list of integer or null"..."""
    schema = _resolve(schema, definitions)
    options = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if options:
        return " or ".join(dict.fromkeys(describe_type(o, definitions) for o in options))
    if "enum" in schema:
        return "one of " + "|".join(map(str, schema["enum"]))
    kind = schema.get("type")
    if kind == "array":
        return f"list of {describe_type(schema.get('items') or {}, definitions)}"
    if kind == "string" and schema.get("format") == "password":
        return "secret string"
    return str(kind or schema.get("title") or "any")


def describe_parameters(schema: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The deployment's parameters, one a line: name, type, and required or its default."""
    definitions: Mapping[str, Any] = schema.get("definitions") or schema.get("$defs") or {}
    required = set(schema.get("required") or [])
    secrets = secret_parameter_names(schema)
    lines = ["The deployment's parameters:"]
    for name, prop in (schema.get("properties") or {}).items():
        if name in defaults:
            shown = "********" if name in secrets else json.dumps(defaults[name], default=str)
            given = f"deployment default {shown}"
        elif name in required:
            given = "required"
        else:
            given = f"default {json.dumps(prop.get('default'), default=str)}"
        lines.append(f"  {name} ({describe_type(prop, definitions)}; {given})")
        inner = _nested_properties(prop, definitions)
        if inner:
            lines.append(f"    fields, as {name}.FIELD=VALUE: {', '.join(inner)}")
    if len(lines) == 1:
        lines.append("  (none)")
    return "\n".join(lines)


def secret_parameter_names(schema: Mapping[str, Any]) -> set[str]:
    """Parameters whose schema marks them secret (`SecretStr`), masked when printed."""

    def secret(prop: Mapping[str, Any]) -> bool:
        options = prop.get("anyOf") or prop.get("oneOf") or []
        return prop.get("format") == "password" or any(secret(o) for o in options)

    return {name for name, prop in (schema.get("properties") or {}).items() if secret(prop)}


def _resolve(schema: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = definitions.get(ref.rsplit("/", 1)[-1])
        if isinstance(target, Mapping):
            return target
    return schema


def _preference(option: Mapping[str, Any], looks_like_json: bool) -> int:
    """Which member of a union to try first.

    Strings accept anything, so scalars (a number, a boolean, a choice) come before them;
    a list or an object only comes before a string when the value is written as JSON,
    so "a,b" stays a string where the flow takes `str | list[str]` and splits it itself.
    """
    kind = option.get("type")
    if kind in ("integer", "number", "boolean") or "enum" in option:
        return 0
    if kind == "string":
        return 2
    return 1 if looks_like_json else 3


def _name_key(name: str) -> str:
    return re.sub(r"[.\-]", "_", name).lower()


def _bool_or_none(text: str) -> bool | None:
    lowered = text.strip().lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def _json_of_type(text: str, kind: type, what: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{text!r} is not {what} in JSON") from None
    if not isinstance(value, kind):
        raise ValueError(f"{text!r} is not {what}")
    return value

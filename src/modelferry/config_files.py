"""Read a model config file within bounds, before any parser sees it.

A config file is small, plain and shallow. Anything else is refused with one line naming
the file and what is wrong: a file larger than `MAX_CONFIG_BYTES`, text that is not UTF-8,
nesting deeper than `MAX_CONFIG_DEPTH` (counted without recursion, so a hostile file
cannot exhaust the stack) and YAML anchors or aliases (which let a few hundred bytes
expand into gigabytes; a model config has no use for them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import yaml

from modelferry.errors import InvalidConfigError
from modelferry.json_depth import nesting_depth

MAX_CONFIG_BYTES: Final = 1024 * 1024
MAX_CONFIG_DEPTH: Final = 64


def read_mapping(path: Path) -> dict[str, Any]:
    """Return the top-level mapping of the config file at `path`.

    Raises:
        InvalidConfigError: the file is missing, too large, not UTF-8, too deeply nested,
            uses YAML anchors, cannot be parsed, or is not a mapping.
    """
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = _parse_json(path, text)
    elif suffix in {".yaml", ".yml"}:
        data = _parse_yaml(path, text)
    else:
        raise InvalidConfigError(
            f"config file {str(path)!r} has suffix {suffix!r}; use .json, .yaml or .yml",
            path=str(path),
        )
    if not isinstance(data, dict):
        raise InvalidConfigError(
            f"{path}: the top level must be a mapping of fields, got {type(data).__name__}",
            path=str(path),
        )
    return data


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InvalidConfigError(
            f"config file {str(path)!r} does not exist; pass the path of a model config "
            "(JSON or YAML), e.g. config/model_config.json",
            path=str(path),
        )
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InvalidConfigError(
            f"config file {str(path)!r} cannot be read: {exc.strerror or type(exc).__name__}",
            path=str(path),
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; a model config "
            "is a few hundred bytes, check that this is the right file",
            path=str(path),
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the config as UTF-8",
            path=str(path),
        ) from None


def _too_deep(path: Path) -> InvalidConfigError:
    return InvalidConfigError(
        f"{path}: nested deeper than {MAX_CONFIG_DEPTH} levels; a model config needs "
        "only a few levels of nesting"
    )


def _parse_json(path: Path, text: str) -> Any:
    if nesting_depth(text, stop_above=MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise _too_deep(path)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidConfigError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            path=str(path),
        ) from None
    except ValueError as exc:
        raise InvalidConfigError(f"{path}: not valid JSON: {exc}", path=str(path)) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write a finite number")


def _parse_yaml(path: Path, text: str) -> Any:
    # One pass over the parser's events (no recursion, nothing composed yet) refuses
    # anchors and measures depth; only then is the document built.
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise InvalidConfigError(
                    f"{path}: YAML anchors and aliases (&name, *name) are not allowed "
                    f"(line {line}); write each value out in full",
                    path=str(path),
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_CONFIG_DEPTH:
                    raise _too_deep(path)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # str(exc) quotes the offending line, which may hold a password: give position only.
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"

"""What the cached tasks are keyed by, and where their results are kept.

A cached result is reused only when nothing that could change it has changed: the key
holds a fingerprint of the source code that computes the result, the versions of the
libraries and of Python that run it, and the task's own inputs. Results are kept under
the project's `.modelferry/` folder, so `make clean` clears them and another checkout
never picks them up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import platform
from collections.abc import Iterable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from modelferry.settings import load_settings

#: Environment variable naming the folder of cached task results.
TASK_RESULTS_ENV = "MODELFERRY_TASK_RESULTS"

#: Where cached task results go by default, relative to the project (working) directory.
DEFAULT_TASK_RESULTS = Path(".modelferry") / "cache" / "task-results"

# A new release of any of these may load or train differently from the same inputs.
_RESULT_LIBRARIES = ("modelferry", "lightgbm", "scikit-learn", "numpy", "pandas", "scipy")


def task_results_path() -> Path:
    """The folder of cached task results: `MODELFERRY_TASK_RESULTS`, else the default.

    A relative path stays relative: Prefect resolves it against the working directory at
    each run, so results land in the project the flow runs in.
    """
    return load_settings().task_results or DEFAULT_TASK_RESULTS


def fingerprint_sources(paths: Iterable[Path]) -> str:
    """SHA-256 over `.py` files: each given file, or every `.py` file under a given folder.

    Files are named relative to the path given, not by where they are, so two copies of
    the same tree have the same fingerprint and a changed byte in any file changes it.
    """
    digest = hashlib.sha256()
    for path in paths:
        members = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for member in members:
            name = member.relative_to(path.parent).as_posix()
            content = member.read_bytes()
            digest.update(f"{name}\0{len(content)}\0".encode())
            digest.update(content)
    return digest.hexdigest()


@cache
def code_fingerprint(module_names: tuple[str, ...]) -> str:
    """Fingerprint of the named modules' source (see `fingerprint_sources`).

    Computed once per process: code does not change under a running flow.
    """
    roots: list[Path] = []
    for name in module_names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"cannot fingerprint {name!r}: no source file found")
        locations = spec.submodule_search_locations
        roots += [Path(folder) for folder in locations] if locations else [Path(spec.origin)]
    return fingerprint_sources(roots)


@cache
def library_versions() -> str:
    """Python's version and those of the libraries that compute cached results."""
    versions = [f"python={platform.python_version()}"]
    for name in _RESULT_LIBRARIES:
        try:
            versions.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name}=absent")
    return ",".join(versions)


def cache_key(prefix: str, code: tuple[str, ...], inputs: Iterable[str]) -> str:
    """A task's cache key: its code's fingerprint, the library versions and its inputs.

    Args:
        prefix: names the task in the key, e.g. `modelferry-train`.
        code: the modules whose source determines the result.
        inputs: the task's inputs as strings; hashed, so a secret among them never shows.
    """
    parts = [code_fingerprint(code), library_versions(), *inputs]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{prefix}-{digest}"

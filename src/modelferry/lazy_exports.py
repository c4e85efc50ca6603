"""Package re-exports that import their module only when first used (PEP 562).

A command such as `modelferry endpoints list` touches one small module of a package whose
siblings import pandas, scikit-learn or MLflow; with eager re-exports in `__init__.py` it
would pay seconds for libraries it never calls. A package lists its public names here and
keeps a `TYPE_CHECKING` import of them for type checkers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package` that import each name from its module.

    Args:
        package: The package's `__name__`.
        exports: Public name -> the submodule (relative to the package) that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # Later lookups skip __getattr__.
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__

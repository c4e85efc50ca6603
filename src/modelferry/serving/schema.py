"""A model's input columns: what the model, the request parser and the API description share.

`FeatureSpec` is one column as the model signature declares it; `InputSchema` is the
columns of one model with what each request check needs worked out once. Both sit below
`model` (which loads models) and `payload` (which parses requests), so neither has to
import the other for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FeatureSpec", "InputSchema"]


@dataclass(frozen=True)
class FeatureSpec:
    """One input column from the model signature."""

    name: str
    type: str
    required: bool = True


class InputSchema:
    """A model's input columns, with what each request check needs worked out once."""

    def __init__(self, features: Sequence[FeatureSpec]) -> None:
        """Precompute names and the columns that need extra checks."""
        self.features = tuple(features)
        self.names = [f.name for f in self.features]
        self.optional = [i for i, f in enumerate(self.features) if not f.required]
        self.whole = [i for i, f in enumerate(self.features) if f.type in {"long", "integer"}]

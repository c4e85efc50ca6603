"""Which deployment answers a request: weighted traffic, pinning, and mirroring."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

from modelferry.endpoints.spec import TrafficSplit
from modelferry.serving.model import ServingModel


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot of an endpoint's deployments and traffic.

    The server swaps whole tables, so a request that picked a deployment keeps it until it
    is answered: moving traffic never drops an in-flight request.
    """

    models: Mapping[str, ServingModel]
    traffic: TrafficSplit
    _bounds: tuple[float, ...] = ()
    _names: tuple[str, ...] = ()

    @classmethod
    def build(cls, models: Mapping[str, ServingModel], traffic: TrafficSplit) -> RoutingTable:
        """A table routing `traffic` over `models` (every named deployment must be loaded)."""
        unknown = sorted(traffic.deployments - set(models))
        if unknown:
            raise KeyError(f"traffic names deployments that are not loaded: {unknown}")
        names, bounds, total = [], [], 0.0
        for name, weight in sorted(traffic.weights.items()):
            if weight > 0:
                total += weight / 100.0
                names.append(name)
                bounds.append(total)
        return cls(dict(models), traffic, tuple(bounds), tuple(names))

    def pick(self, draw: float) -> str | None:
        """The deployment for a uniform random `draw` in [0, 1); None when no live traffic."""
        if not self._names:
            return None
        index = bisect.bisect_right(self._bounds, draw)
        return self._names[min(index, len(self._names) - 1)]

    def mirrors_for(self, draw: float) -> list[str]:
        """Deployments that also get a copy of this request (answers discarded)."""
        return [name for name, pct in self.traffic.mirror.items() if pct and draw < pct / 100.0]

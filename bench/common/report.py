"""Markdown building blocks shared by the benchmark reports: machine, targets, notes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One target: the measured value, its per-round range, its goal, met or not.

    `met` is None for a figure shown for information only.
    """

    name: str
    value: float
    low: float
    high: float
    goal: str
    met: bool | None


def machine_section(info: Mapping[str, str]) -> list[str]:
    """`## Machine` and one bullet per fact."""
    return ["## Machine", "", *[f"- {k}: {v}" for k, v in info.items()]]


def targets_section(targets: Sequence[Target]) -> list[str]:
    """`## Targets`: value, per-round range, goal and verdict of each target."""
    out = ["## Targets", "", "| target | measured | per-round range | goal | |"]
    out.append("|---|---:|---|---|---|")
    for target in targets:
        out.append(
            f"| {target.name} | {target.value:.2f} | {target.low:.2f} to {target.high:.2f} "
            f"| {target.goal} | {verdict(target)} |"
        )
    return out


def notes_section(notes: Sequence[str]) -> list[str]:
    """`## Notes` as bullets, or nothing when there are none."""
    if not notes:
        return []
    return ["## Notes", "", *[f"- {line}" for line in notes]]


def verdict(target: Target) -> str:
    """The verdict column: met, **missed**, or empty for information."""
    if target.met is None:
        return ""
    return "met" if target.met else "**missed**"


def join_sections(*sections: list[str]) -> str:
    """The sections, a blank line between each, ending in a newline."""
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"

"""Rows done in a batch run, counted per file against each file's estimated rows."""

from __future__ import annotations

from collections.abc import Sequence

from modelferry.progress import ProgressReporter


class RowProgress:
    """The run's rows done, counted per file against each file's estimated rows.

    A file counts its chunks up to its estimate, and the rest of its estimate once it
    ended: an estimate that was off never makes progress pass the total or stop short.
    """

    def __init__(self, reporter: ProgressReporter, estimates: Sequence[int]) -> None:
        self.reporter = reporter
        self.estimates = estimates

    def file(self, index: int) -> FileProgress:
        """The progress of the file at `index`, for the one worker thread scoring it."""
        return FileProgress(self.reporter, self.estimates[index])


class FileProgress:
    """One file's share of `RowProgress`; used by one thread only, so it needs no lock."""

    def __init__(self, reporter: ProgressReporter, estimate: int) -> None:
        self._reporter = reporter
        self._left = estimate

    def scored(self, rows: int) -> None:
        """`rows` more of this file were scored."""
        counted = min(rows, self._left)
        self._left -= counted
        self._reporter.advance(counted)

    def ended(self) -> None:
        """The file was scored, or found bad: all of it is done."""
        self._reporter.advance(self._left)
        self._left = 0

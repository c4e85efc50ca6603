"""Package downloads: resume, retries, refused and expired links, throttled progress.

HTTP is answered by `httpx.MockTransport` handlers that behave like Blob Storage (Range
requests, 403 for an expired SAS) and fail on demand; file links are real files.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from modelferry.edge.download import (
    DownloadFailedError,
    DownloadSettings,
    LinkExpiredError,
    Progress,
    ProgressThrottle,
    download_package,
    partial_path,
)

DATA = bytes(range(256)) * 400  # 102,400 bytes
URL = "https://account.blob.core.windows.net/packages/p/1/p-1.zip?sv=2024&sig=SECRET"
FAST = DownloadSettings(backoff=0.0, progress_seconds=0.0)


class Chunks(httpx.AsyncByteStream):
    """A response body sent in pieces that may end in a dropped connection."""

    def __init__(self, data: bytes, pieces: int = 1, drop_after: int | None = None) -> None:
        self.data = data
        self.pieces = pieces
        self.drop_after = drop_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = max(len(self.data) // self.pieces, 1)
        sent = 0
        for start in range(0, len(self.data), size):
            piece = self.data[start : start + size]
            if self.drop_after is not None and sent + len(piece) > self.drop_after:
                yield piece[: self.drop_after - sent]
                raise httpx.RemoteProtocolError("peer closed connection")
            sent += len(piece)
            yield piece


def blob(
    data: bytes = DATA, *, pieces: int = 1, drop_first_after: int | None = None
) -> tuple[Callable[[httpx.Request], httpx.Response], list[str | None]]:
    """A handler serving `data` with Range support; records each Range header."""
    ranges: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("range")
        ranges.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        drop = drop_first_after if len(ranges) == 1 else None
        headers = {"content-length": str(len(data) - start)}
        if header:
            headers["content-range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        stream = Chunks(data[start:], pieces, drop)
        return httpx.Response(206 if header else 200, headers=headers, stream=stream)

    return handle, ranges


async def fetch(
    handler: Callable[[httpx.Request], httpx.Response],
    target: Path,
    settings: DownloadSettings = FAST,
    url: str = URL,
) -> tuple[int, list[Progress]]:
    updates: list[Progress] = []

    async def record(update: Progress) -> None:
        updates.append(update)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        size = await download_package(
            url, target, client=client, settings=settings, on_progress=record
        )
    return size, updates


def test_a_dropped_connection_resumes_from_the_bytes_already_fetched(tmp_path: Path) -> None:
    handler, ranges = blob(pieces=10, drop_first_after=len(DATA) // 2)
    target = tmp_path / "p-1.zip"

    size, updates = asyncio.run(fetch(handler, target))

    assert size == len(DATA)
    assert target.read_bytes() == DATA
    assert not partial_path(target).exists()
    assert ranges == [None, f"bytes={len(DATA) // 2}-"]
    assert updates[-1] == Progress(len(DATA), len(DATA))


def test_a_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    target = tmp_path / "p-1.zip"
    partial_path(target).write_bytes(b"stale bytes of something else")

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks(DATA))

    size, _ = asyncio.run(fetch(handle, target))

    assert (size, target.read_bytes()) == (len(DATA), DATA)


def test_range_not_satisfiable_discards_the_part_and_starts_over(tmp_path: Path) -> None:
    target = tmp_path / "p-1.zip"
    partial_path(target).write_bytes(DATA + b"longer than the package")
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        if request.headers.get("range"):
            return httpx.Response(416)
        return httpx.Response(200, stream=Chunks(DATA))

    size, _ = asyncio.run(fetch(handle, target))

    assert size == len(DATA)
    assert seen == [f"bytes={len(DATA) + 23}-", None]


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    statuses = iter([503, 500, 429])

    def handle(request: httpx.Request) -> httpx.Response:
        status = next(statuses, 200)
        return httpx.Response(status, stream=Chunks(DATA if status == 200 else b"busy"))

    size, _ = asyncio.run(fetch(handle, tmp_path / "p-1.zip"))

    assert size == len(DATA)


def test_persistent_failures_give_up_without_showing_the_sas(tmp_path: Path) -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    settings = DownloadSettings(attempts=3, backoff=0.0)
    with pytest.raises(DownloadFailedError, match="after 3 attempt") as caught:
        asyncio.run(fetch(handle, tmp_path / "p-1.zip", settings))

    assert calls == 3
    assert "SECRET" not in str(caught.value)
    assert "HTTP 503" in str(caught.value)


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_a_refused_link_asks_for_a_fresh_one_and_keeps_the_part(
    tmp_path: Path, status: int
) -> None:
    target = tmp_path / "p-1.zip"
    partial_path(target).write_bytes(DATA[:100])

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=b"AuthenticationFailed: Signed expiry time")

    with pytest.raises(LinkExpiredError, match=f"HTTP {status}.*AuthenticationFailed"):
        asyncio.run(fetch(handle, target))

    assert partial_path(target).read_bytes() == DATA[:100]


def test_other_client_errors_fail_at_once(tmp_path: Path) -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400)

    with pytest.raises(DownloadFailedError, match="HTTP 400"):
        asyncio.run(fetch(handle, tmp_path / "p-1.zip"))
    assert calls == 1


def test_a_package_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    handler, _ = blob()
    settings = DownloadSettings(max_bytes=1000, backoff=0.0)

    with pytest.raises(DownloadFailedError, match="above the 1000-byte limit"):
        asyncio.run(fetch(handler, tmp_path / "p-1.zip", settings))


def test_progress_is_reported_by_percent_steps_not_per_chunk(tmp_path: Path) -> None:
    handler, _ = blob(pieces=400)  # 400 chunks of 256 bytes
    settings = DownloadSettings(progress_percent=25.0, progress_seconds=0.0)

    _, updates = asyncio.run(fetch(handler, tmp_path / "p-1.zip", settings))

    percents = [update.percent for update in updates]
    assert percents[0] == 0.0
    assert percents[-1] == 100.0
    assert len(updates) <= 6
    steps = [b - a for a, b in itertools.pairwise(percents[:-1]) if a is not None and b is not None]
    assert all(step >= 25.0 for step in steps)
    assert updates[-1].attributes() == {"bytes": len(DATA), "total": len(DATA), "percent": 100.0}


def test_the_throttle_needs_both_the_step_and_the_interval() -> None:
    now = [0.0]
    throttle = ProgressThrottle(percent=10.0, seconds=1.0, clock=lambda: now[0])

    assert throttle.due(Progress(0, 100))
    assert not throttle.due(Progress(50, 100))  # far enough, too soon
    now[0] = 5.0
    assert not throttle.due(Progress(5, 100))  # late enough, not far enough
    assert throttle.due(Progress(50, 100))
    assert throttle.due(Progress(51, 100), final=True)
    unknown = ProgressThrottle(percent=10.0, seconds=1.0, clock=lambda: now[0])
    assert unknown.due(Progress(1, None))
    now[0] = 6.5
    assert unknown.due(Progress(2, None))  # no total: the interval alone decides


# ---------------------------------------------------------------------------- file://


def test_a_file_link_resumes_a_partial_copy(tmp_path: Path) -> None:
    source = tmp_path / "store" / "p-1.zip"
    source.parent.mkdir()
    source.write_bytes(DATA)
    target = tmp_path / "downloads" / "p-1.zip"
    target.parent.mkdir()
    partial_path(target).write_bytes(DATA[:40_000])
    updates: list[Progress] = []

    async def record(update: Progress) -> None:
        updates.append(update)

    size = asyncio.run(download_package(source.as_uri(), target, settings=FAST, on_progress=record))

    assert (size, target.read_bytes()) == (len(DATA), DATA)
    assert updates[0] == Progress(40_000, len(DATA))
    assert updates[-1] == Progress(len(DATA), len(DATA))


# The expiry is worked out when the test runs, not in its id: ids that hold the time differ
# between two collections (pytest-xdist's workers refuse to run then).
@pytest.mark.parametrize("expiry", ["expires", "se"])
def test_an_expired_file_link_is_refused(tmp_path: Path, expiry: str) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    query = (
        f"expires={int(past.timestamp())}"
        if expiry == "expires"
        else f"se={past:%Y-%m-%dT%H:%M:%SZ}"
    )
    source = tmp_path / "p-1.zip"
    source.write_bytes(DATA)

    with pytest.raises(LinkExpiredError, match="expired"):
        asyncio.run(download_package(f"{source.as_uri()}?{query}", tmp_path / "out.zip"))


def test_a_file_link_valid_for_a_while_works(tmp_path: Path) -> None:
    source = tmp_path / "p-1.zip"
    source.write_bytes(DATA)
    later = int(datetime.now(UTC).timestamp()) + 600

    size = asyncio.run(download_package(f"{source.as_uri()}?expires={later}", tmp_path / "o.zip"))

    assert size == len(DATA)


def test_a_file_link_to_a_missing_file_asks_for_a_fresh_link(tmp_path: Path) -> None:
    with pytest.raises(LinkExpiredError, match="leads to no file"):
        asyncio.run(download_package((tmp_path / "gone.zip").as_uri(), tmp_path / "out.zip"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file://otherhost/p-1.zip", "must point to this host"),
        ("ftp://host/p-1.zip", "cannot download from a ftp link"),
    ],
)
def test_unusable_links_fail(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(DownloadFailedError, match=message):
        asyncio.run(download_package(url, tmp_path / "out.zip"))


async def fetch_recording_waits(
    handler: Callable[[httpx.Request], httpx.Response], target: Path, settings: DownloadSettings
) -> tuple[int | None, list[float], Exception | None]:
    """Download through `handler` with an injected sleep: (size, waits, error raised)."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(float(seconds))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        try:
            size = await download_package(
                URL, target, client=client, settings=settings, sleep=record
            )
        except DownloadFailedError as exc:
            return None, waits, exc
    return size, waits, None


def test_retries_wait_within_a_doubling_capped_window_with_jitter(tmp_path: Path) -> None:
    statuses = iter([503, 500, 503, 429, 503, 500])

    def handle(request: httpx.Request) -> httpx.Response:
        status = next(statuses, 200)
        return httpx.Response(status, stream=Chunks(DATA if status == 200 else b"busy"))

    settings = DownloadSettings(attempts=7, backoff=0.5, max_backoff=3.0, progress_seconds=0.0)
    size, waits, error = asyncio.run(fetch_recording_waits(handle, tmp_path / "p.zip", settings))

    assert error is None
    assert size == len(DATA)
    windows = [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert len(waits) == len(windows)
    assert all(0.0 <= wait <= window for wait, window in zip(waits, windows, strict=True))
    assert waits != windows  # drawn at random below each window, not the window itself


def test_giving_up_waits_between_attempts_only(tmp_path: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    settings = DownloadSettings(attempts=3, backoff=0.5, max_backoff=15.0)
    _, waits, error = asyncio.run(fetch_recording_waits(handle, tmp_path / "p.zip", settings))

    assert isinstance(error, DownloadFailedError)
    assert not isinstance(error, LinkExpiredError)
    assert "after 3 attempt(s)" in str(error)
    assert "ConnectError: connection refused" in str(error)
    assert len(waits) == 2
    assert 0.0 <= waits[0] <= 0.5
    assert 0.0 <= waits[1] <= 1.0


@pytest.mark.parametrize("status", [400, 403, 410])
def test_a_final_answer_is_not_waited_on(tmp_path: Path, status: int) -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status)

    settings = DownloadSettings(attempts=5, backoff=0.5)
    _, waits, error = asyncio.run(fetch_recording_waits(handle, tmp_path / "p.zip", settings))

    assert isinstance(error, DownloadFailedError)
    assert isinstance(error, LinkExpiredError) == (status != 400)
    assert calls == 1
    assert waits == []

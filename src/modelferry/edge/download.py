"""Fetch a package through a presigned link: `file://` and `http(s)://`, resumable.

Bytes go to `TARGET.part` beside the target and the part is renamed to the target once
complete, so a download cut short (a dropped connection, a restart of the agent) resumes
where it stopped: over HTTP with a `Range` request, from a file by seeking. Transient
failures (connection errors, timeouts, HTTP 5xx/408/429, a short body) are retried with
exponential backoff and full jitter (`modelferry.retrying`), so devices that lost the same
store do not all retry at once. A link the server refuses (HTTP 401/403/404/410: Blob
Storage answers 403 once a SAS has expired) or a `file://` link whose file is gone or whose
`expires` query value has passed raises `LinkExpiredError`: the caller asks for a fresh
link and calls `download_package` again, which resumes from the part already fetched. (The
local package store states each link's expiry as `?expires=<ISO-8601 UTC>`.)

Progress is reported through a callback at most every `progress_percent` percent and
`progress_seconds` seconds (both must have passed), plus once at the start and once at
the end, never per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import parse_qs, urlsplit
from urllib.request import url2pathname

import httpx

from modelferry.errors import DeliveryError
from modelferry.redaction import without_query
from modelferry.retrying import Backoff

__all__ = [
    "DownloadFailedError",
    "DownloadSettings",
    "LinkExpiredError",
    "Progress",
    "ProgressThrottle",
    "download_package",
    "partial_path",
]

_REFUSED: Final = frozenset({401, 403, 404, 410})
_TRANSIENT: Final = frozenset({408, 425, 429})
_CONTENT_RANGE: Final = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadFailedError(DeliveryError):
    """A package could not be downloaded, even after retries."""


class LinkExpiredError(DownloadFailedError):
    """The link has expired or no longer leads to the package: ask for a fresh one."""


@dataclass(frozen=True)
class DownloadSettings:
    """How hard to try, and how often to report progress."""

    attempts: int = 5
    """Tries per link; each one resumes from the bytes already fetched."""
    backoff: float = 0.5
    """Longest wait in seconds before the first retry; it doubles for each further one, and
    each wait is drawn at random below it (jitter)."""
    max_backoff: float = 15.0
    """Seconds: the cap of that doubling."""
    timeout: float = 30.0
    """Seconds to wait for a connection or for the next bytes."""
    chunk_size: int = 1024 * 1024
    """Bytes read at a time from a `file://` link (HTTP bodies are written as they arrive)."""
    max_bytes: int = 8 * 1024**3
    """Larger packages are refused rather than fill the device's disk."""
    progress_percent: float = 10.0
    progress_seconds: float = 1.0


@dataclass(frozen=True)
class Progress:
    """How far a download has come; `total` is None when the server does not say."""

    bytes: int
    total: int | None

    @property
    def percent(self) -> float | None:
        """Percent done, one decimal, or None when the total is unknown."""
        if not self.total:
            return None
        return round(100.0 * self.bytes / self.total, 1)

    def attributes(self) -> dict[str, Any]:
        """The `Downloading` state's attributes: bytes, total, percent."""
        return {"bytes": self.bytes, "total": self.total, "percent": self.percent}


ProgressCallback = Callable[[Progress], Awaitable[None]]


class ProgressThrottle:
    """Decides which progress updates are worth a message.

    Args:
        percent: percentage points an update must have moved on since the last one sent.
        seconds: seconds that must have passed since the last one sent.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self, percent: float, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.percent = percent
        self.seconds = seconds
        self._clock = clock
        self._last: tuple[float, float | None] | None = None

    def due(self, progress: Progress, *, final: bool = False) -> bool:
        """True for the first and the final update, and when both thresholds have passed."""
        now = self._clock()
        if self._last is not None and not final:
            last_time, last_percent = self._last
            if now - last_time < self.seconds:
                return False
            percent = progress.percent
            if (
                percent is not None
                and last_percent is not None
                and percent - last_percent < self.percent
            ):
                return False
        self._last = (now, progress.percent)
        return True


def partial_path(target: Path) -> Path:
    """Where the bytes of `target` gather until it is complete."""
    return target.with_name(target.name + ".part")


async def download_package(
    url: str,
    target: Path,
    *,
    client: httpx.AsyncClient | None = None,
    settings: DownloadSettings | None = None,
    on_progress: ProgressCallback | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Fetch `url` into `target`, resuming a `.part` left by an earlier try; returns the size.

    `sleep` waits between HTTP attempts; tests pass one that records the waits.

    Raises:
        LinkExpiredError: the link was refused or has expired; get a fresh one and call again.
        DownloadFailedError: the package could not be fetched within `settings.attempts`,
            is larger than `settings.max_bytes`, or the link is not a file or HTTP(S) URL.
    """
    settings = settings or DownloadSettings()
    target.parent.mkdir(parents=True, exist_ok=True)
    throttle = ProgressThrottle(settings.progress_percent, settings.progress_seconds)

    async def report(progress: Progress, final: bool = False) -> None:
        if on_progress is not None and throttle.due(progress, final=final):
            await on_progress(progress)

    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        size = await _copy_file(url, target, settings, report)
    elif scheme in {"http", "https"}:
        if client is None:
            async with _new_client(settings) as own:
                size = await _fetch_http(url, target, own, settings, report, sleep)
        else:
            size = await _fetch_http(url, target, client, settings, report, sleep)
    else:
        raise DownloadFailedError(f"cannot download from a {scheme or 'schemeless'} link")
    return size


def new_http_client(settings: DownloadSettings | None = None) -> httpx.AsyncClient:
    """An HTTP client suited to package downloads (shared by many agents in one process)."""
    return _new_client(settings or DownloadSettings())


def _new_client(settings: DownloadSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        # Waiting for a free pooled connection is not a failure: many agents may share
        # one client, and its pool bounds how many download from the store at once.
        timeout=httpx.Timeout(settings.timeout, pool=None),
        follow_redirects=True,
        headers={"Accept-Encoding": "identity"},
    )


_Report = Callable[..., Awaitable[None]]


# ---------------------------------------------------------------------------- file://


def _file_link_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in {"", "localhost"}:
        raise DownloadFailedError(f"a file link must point to this host, not {parts.netloc!r}")
    expires = _link_expiry(parts.query)
    if expires is not None and expires <= datetime.now(UTC):
        raise LinkExpiredError(f"the file link expired at {expires.isoformat()}")
    return Path(url2pathname(parts.path))  # url2pathname also percent-decodes


def _link_expiry(query: str) -> datetime | None:
    values = parse_qs(query)
    found = values.get("expires") or values.get("se")
    if not found:
        return None
    raw = found[0]
    try:
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            return datetime.fromtimestamp(float(raw), UTC)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise DownloadFailedError(f"the file link has an unreadable expiry {raw!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _copy_file(url: str, target: Path, settings: DownloadSettings, report: _Report) -> int:
    source = _file_link_path(url)
    try:
        total = source.stat().st_size
    except FileNotFoundError:
        raise LinkExpiredError(f"the file link leads to no file ({source})") from None
    except OSError as exc:
        raise DownloadFailedError(f"cannot read {source}: {exc}") from None
    if not source.is_file():
        raise DownloadFailedError(f"the file link leads to {source}, which is not a file")
    _check_size(total, settings)
    part = partial_path(target)
    done = part.stat().st_size if part.exists() else 0
    if done > total:
        done = 0
    await report(Progress(done, total))
    with open(source, "rb") as reader, open(part, "r+b" if done else "wb") as writer:
        reader.seek(done)
        writer.seek(done)
        writer.truncate()
        while done < total:
            chunk = await asyncio.to_thread(reader.read, settings.chunk_size)
            if not chunk:
                break
            writer.write(chunk)
            done += len(chunk)
            await report(Progress(done, total))
        await asyncio.to_thread(_sync, writer)
    if done != total:
        raise DownloadFailedError(f"{source} shrank while it was read ({done} of {total} bytes)")
    os.replace(part, target)
    await report(Progress(done, total), True)
    return done


# ---------------------------------------------------------------------------- http(s)://


class _Retry(Exception):
    """A transient failure: try again, resuming."""


async def _fetch_http(
    url: str,
    target: Path,
    client: httpx.AsyncClient,
    settings: DownloadSettings,
    report: _Report,
    sleep: Callable[[float], Awaitable[None]],
) -> int:
    part = partial_path(target)
    backoff = Backoff(settings.backoff, settings.max_backoff, max(settings.attempts, 1))
    try:
        async for attempt in backoff.async_retrying((_Retry, httpx.TransportError), sleep=sleep):
            with attempt:
                size = await _http_attempt(url, part, client, settings, report)
    except (_Retry, httpx.TransportError) as exc:
        problem = str(exc)
        if isinstance(exc, httpx.TransportError):
            problem = f"{type(exc).__name__}: {exc}" if problem else type(exc).__name__
        raise DownloadFailedError(
            f"download failed after {settings.attempts} attempt(s) "
            f"from {without_query(url)}: {problem}"
        ) from None
    os.replace(part, target)
    await report(Progress(size, size), True)
    return size


async def _http_attempt(
    url: str, part: Path, client: httpx.AsyncClient, settings: DownloadSettings, report: _Report
) -> int:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    async with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status in _REFUSED:
            detail = (await response.aread())[:300].decode("utf-8", "replace").strip()
            raise LinkExpiredError(
                f"the link was refused with HTTP {status} (expired or revoked)"
                + (f": {detail}" if detail else "")
            )
        if status == 416:  # the part is not a prefix of this package; start over
            part.unlink(missing_ok=True)
            raise _Retry("HTTP 416: the partial download did not fit; starting over")
        if status >= 500 or status in _TRANSIENT:
            raise _Retry(f"HTTP {status}")
        if status == 206:
            start, total = _content_range(response.headers.get("content-range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"the server resumed at byte {start}, not {offset}; starting over")
        elif status == 200:
            offset = 0
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadFailedError(f"HTTP {status} from {without_query(url)}")
        if total is not None:
            _check_size(total, settings)
        done = offset
        await report(Progress(done, total))
        with open(part, "r+b" if offset else "wb") as writer:
            writer.seek(offset)
            writer.truncate()
            try:
                # Unchunked: what arrived is written even when the connection then drops.
                async for chunk in response.aiter_raw():
                    writer.write(chunk)
                    done += len(chunk)
                    if done > settings.max_bytes:
                        raise DownloadFailedError(
                            f"the package exceeds the {settings.max_bytes}-byte limit"
                        )
                    await report(Progress(done, total))
            finally:
                await asyncio.to_thread(_sync, writer)
    if total is not None and done != total:
        raise _Retry(f"the connection ended after {done} of {total} bytes")
    return done


def _content_range(value: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match(value.strip())
    if not match:
        raise _Retry(f"HTTP 206 with an unreadable Content-Range {value!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _check_size(total: int, settings: DownloadSettings) -> None:
    if total > settings.max_bytes:
        raise DownloadFailedError(
            f"the package is {total} bytes, above the {settings.max_bytes}-byte limit"
        )


def _sync(writer: BinaryIO) -> None:
    writer.flush()
    with contextlib.suppress(OSError):
        os.fsync(writer.fileno())

"""How an edge agent behaves, and the keys it trusts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modelferry.edge.download import DownloadSettings
from modelferry.edge.smoke import SmokeSettings
from modelferry.packaging.archive import DEFAULT_LIMITS, ExtractionLimits
from modelferry.packaging.signing import VerifyKey

__all__ = ["AgentSettings", "load_public_keys"]


@dataclass(frozen=True)
class AgentSettings:
    """How an agent behaves; the defaults suit a real device."""

    keep_versions: int = 3
    """Installed versions kept, the current one included (older ones are deleted)."""
    link_timeout: float = 60.0
    """Seconds to wait for a `presignedUrlResponse` before asking again."""
    link_requests: int = 5
    """Links asked for per delivery (the first and the re-asks after expiry or silence)."""
    send_backoff: float = 0.5
    """Longest wait in seconds before re-sending a message the transport refused (or
    reconnecting); it doubles for each failure in a row, and each wait is drawn at random
    below it (jitter), so devices that failed together do not retry together."""
    send_max_backoff: float = 30.0
    """Seconds: the cap of that doubling."""
    progress_send_attempts: int = 3
    """Tries for a `Downloading` report (others are retried until sent or stopped)."""
    download: DownloadSettings = field(default_factory=DownloadSettings)
    smoke: SmokeSettings = field(default_factory=SmokeSettings)
    smoke_test: bool = True
    """Run the smoke prediction before installing. Only protocol benchmarks turn it off."""
    heartbeat_seconds: float = 30.0
    """While the smoke prediction runs, `Installing` is re-sent this often, so the cloud's
    inactivity clock (120 s by default) sees a slow device as alive, not gone."""
    extraction_limits: ExtractionLimits = DEFAULT_LIMITS


def load_public_keys(values: Iterable[str | Path]) -> list[VerifyKey]:
    """Trusted keys from files or from inline base64 / PEM text.

    Raises:
        PackageVerificationError: a value is neither a readable key file nor a key.
    """
    keys = []
    for value in values:
        path = Path(value)
        text = str(value)
        try:
            if path.is_file():
                text = path.read_text(encoding="utf-8")
        except OSError:
            pass  # not a file name (too long, say): take it as the key itself
        keys.append(VerifyKey.load(text))
    return keys

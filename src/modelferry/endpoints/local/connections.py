"""Connection limits for the endpoint server: read timeouts and a cap on open connections.

uvicorn closes idle keep-alive connections but never times out a request that is still
arriving, so a client that opens connections and sends its headers a byte at a time
(slowloris) keeps them open forever, until the process runs out of file descriptors and
every good request fails. `limited_protocol` returns uvicorn's HTTP protocol with:

- a header timeout: a connection that has not sent a whole request head this long after
  it opened (or after its previous answer) is closed;
- a body timeout: a request whose body has not fully arrived this long after its head
  is closed;
- a connection cap: a connection opened while the cap is reached is closed at once,
  so the process keeps descriptors for the connections it serves.

Defaults, each overridable by an environment variable of the server process:

| limit | default | variable |
|---|---|---|
| header timeout | 10 s | `MODELFERRY_HEADER_TIMEOUT_S` |
| body timeout | 30 s | `MODELFERRY_BODY_TIMEOUT_S` |
| open connections | 1,000 (at most the fd limit less 100) | `MODELFERRY_MAX_CONNECTIONS` |
"""

from __future__ import annotations

import asyncio
import math
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelferry.settings import load_settings

# Descriptors kept free of client connections: the listening socket, the state
# database, model files, logs, the worker pool's pipes.
_RESERVED_FDS = 100


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many connections may be open.

    Attributes:
        header_timeout_s: seconds a connection has to send a whole request head.
        body_timeout_s: seconds a request has, after its head, to send its whole body.
        max_connections: open connections above which new ones are closed at once.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        timeouts = (self.header_timeout_s, self.body_timeout_s)
        if not all(0 < t < math.inf for t in timeouts):  # NaN fails too
            raise ValueError("connection timeouts must be finite seconds above 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    @classmethod
    def from_env(cls) -> ConnectionLimits:
        """The defaults, overridden by the `MODELFERRY_*` variables of the environment.

        Raises:
            InvalidConfigError: a variable is not a number above 0 (see `load_settings`).
        """
        settings = load_settings()
        return cls(settings.header_timeout_s, settings.body_timeout_s, settings.max_connections)

    def within_descriptors(self) -> ConnectionLimits:
        """These limits after raising the descriptor soft limit to the hard one.

        The cap is lowered to what the process can hold with descriptors to spare, so
        that at the cap the server can still open its own files and answer.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass  # keep the soft limit; the cap below still fits it
        cap = min(self.max_connections, max(1, soft - _RESERVED_FDS))
        return ConnectionLimits(self.header_timeout_s, self.body_timeout_s, cap)


def limited_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The httptools protocol of uvicorn with `limits` applied; pass it as `http=`."""

    class LimitedHttpProtocol(HttpToolsProtocol):
        """Closes connections that send too slowly, or that open above the cap."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self.logger.warning("connection cap %d reached: closing", limits.max_connections)
                transport.close()
                return
            self._arm(limits.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._read_timer is None:  # a keep-alive connection's next request
                self._arm(limits.header_timeout_s)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            self._arm(limits.body_timeout_s)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Between requests uvicorn's keep-alive timeout applies; the next request's
            # head is timed from its first byte (on_message_begin) and at the latest
            # from now.
            self._disarm()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _too_slow(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return LimitedHttpProtocol


def serve(app: Any, host: str, port: int, limits: ConnectionLimits | None = None) -> None:
    """Serve `app` until terminated, with `limits` (default: from the environment)."""
    import uvicorn

    limits = (limits or ConnectionLimits.from_env()).within_descriptors()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http=limited_protocol(limits),
        lifespan="off",
        # Idle keep-alive connections hold a descriptor each; uvicorn's default is 5 s.
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )

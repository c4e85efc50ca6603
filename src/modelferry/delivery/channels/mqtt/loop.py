"""Running a paho-mqtt client on the asyncio event loop, with no network thread.

Why not paho's `loop_start()`: it runs one network thread per client, and a process that
simulates a few hundred devices would run a few hundred threads contending for the GIL,
each waking every second, with every message hopping threads through
`call_soon_threadsafe`. With paho's external-loop API the client's socket is watched by the
event loop itself (`add_reader`/`add_writer`, set from paho's socket callbacks); paho parses
packets and calls back on the loop thread, so a PUBACK resolves its future and a message
lands in its queue directly, and keepalive is one timer per client. A hundred clients cost
a hundred sockets and no thread.

The one blocking step is opening a connection (DNS, TCP, the TLS handshake): it runs in
the default executor, nothing else touches the client meanwhile, and the socket callbacks
paho fires from that thread are replayed on the loop once it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode


class PahoLoopAdapter:
    """Drives one paho client from the running event loop; see the module docstring."""

    def __init__(self, client: paho.Client) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._fds: set[int] = set()
        self._deferred: list[Callable[[], None]] = []
        self._in_thread = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._ticker: asyncio.Task[None] | None = None
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    async def idle(self) -> None:
        """Wait until no blocking call runs: only then may the client be used."""
        await self._idle.wait()

    async def run_blocking(self, call: Callable[[], object]) -> None:
        """Run a blocking paho call (`reconnect`) in a thread, then replay its socket callbacks."""
        self._in_thread = True
        self._idle.clear()
        future = self._loop.run_in_executor(None, call)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread cannot be stopped: wait it out before anyone touches the client.
            await asyncio.wait({future})
            raise
        finally:
            self._in_thread = False
            deferred, self._deferred = self._deferred, []
            for operation in deferred:
                operation()
            self._idle.set()

    def start_keepalive(self) -> None:
        """Call paho's `loop_misc` (keepalive pings, dead-connection checks) every second."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        """Stop the keepalive timer and every socket watch."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        for fd in list(self._fds):
            self._unwatch(fd)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not self._in_thread and self._client.socket() is not None:
                self._client.loop_misc()

    # paho's socket callbacks: on the loop thread, or recorded and replayed there.

    def _on_loop(self, operation: Callable[[], None]) -> None:
        if threading.get_ident() == self._loop_thread:
            operation()
        else:
            self._deferred.append(operation)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._on_loop(lambda: self._watch(fd))

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._on_loop(lambda: self._unwatch(fd))

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._on_loop(lambda: self._loop.add_writer(fd, self._writable))

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def unregister() -> None:
            self._loop.remove_writer(fd)

        self._on_loop(unregister)

    def _watch(self, fd: int) -> None:
        self._fds.add(fd)
        self._loop.add_reader(fd, self._readable)

    def _unwatch(self, fd: int) -> None:
        self._fds.discard(fd)
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)

    def _readable(self) -> None:
        if self._in_thread:
            return
        rc = self._client.loop_read()
        # TLS may hold decrypted bytes the selector cannot see: drain them now.
        sock = self._client.socket()
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and isinstance(sock, ssl.SSLSocket):
            if not sock.pending():
                break
            rc = self._client.loop_read()
            sock = self._client.socket()

    def _writable(self) -> None:
        if not self._in_thread:
            self._client.loop_write()

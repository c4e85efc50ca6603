"""A local HTTP receiver that records the JSON documents webhooks post to it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Collects posted JSON bodies; `status` sets what it answers."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.status = 200

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/T0KEN-secret-part"

    def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.received:
                if body.get("event") == event:
                    return body
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} notification within {timeout} s: {self.received}")


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Serve a receiver on a free loopback port for the duration of the block."""
    holder: list[WebhookReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = holder[0]
            length = int(self.headers.get("Content-Length", "0"))
            receiver.paths.append(self.path)
            receiver.received.append(json.loads(self.rfile.read(length)))
            self.send_response(receiver.status)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(WebhookReceiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()

"""The scoring server: a bare ASGI app, because every microsecond per request counts.

Routes: `POST /score`, `GET /health/live`, `GET /health/ready`, `GET /metrics`, and the
API of one deployment as `GET /openapi.json` (OpenAPI 3.0) and `GET /swagger.json`
(Swagger 2.0, or 3.0 with `?version=3`, as Azure ML answers); all but the health checks
need the scoring key, like `/score`. Anything under `/admin/` goes to the control handler
the server process installs.

Each failed scoring request, and a sample of the successful ones, is logged on one line
(see `request_log`). Every answer carries an `x-request-id` header: the client's own when it
sent a safe one, else a new one; the request log line has the same id. A known path asked
with a method it does not take answers 405 with an `Allow` header.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson
from pydantic import SecretStr

from modelferry.endpoints.spec import TrafficSplit
from modelferry.serving.large_requests import (
    OFFLOAD_BYTES,
    RETRY_AFTER_SECONDS,
    LargeRequestPool,
)
from modelferry.serving.model import ServingModel
from modelferry.serving.openapi import openapi3, swagger2
from modelferry.serving.payload import PayloadError, parse_request
from modelferry.serving.request_log import (
    REQUEST_ID_HEADER,
    log_request,
    request_id,
    request_log_sample,
)
from modelferry.serving.routing import RoutingTable
from modelferry.serving.telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AdminHandler = Callable[[Scope, bytes], Awaitable[tuple[int, Any]]]
#: The `x-request-id` header an answer carries.
RequestId = tuple[bytes, bytes]

PIN_HEADER = b"azureml-model-deployment"
_AUTH_HINT = "missing or wrong key: send 'Authorization: Bearer <key>'"
_JSON = [(b"content-type", b"application/json")]
_PROMETHEUS = [(b"content-type", PROMETHEUS_CONTENT_TYPE.encode())]
# Requests with more rows than this are scored off the event loop, so that one big
# request does not stall the small ones queued behind it.
_INLINE_ROWS = 1000
_READ = ("GET", "HEAD")
#: The API document versions `/swagger.json?version=` takes, and the document each gives.
_DOCUMENT_VERSIONS = {"2": "2", "2.0": "2", "3": "3", "3.0": "3"}
# The methods each route takes, for the Allow header of a 405.
_ALLOWED = {"/score": "POST", "/health/live": "GET, HEAD", "/health/ready": "GET, HEAD"}
_ALLOWED["/metrics"] = "GET"
_ALLOWED["/openapi.json"] = _ALLOWED["/swagger.json"] = "GET"


class ScoringApp:
    """ASGI app scoring requests for one endpoint's deployments."""

    def __init__(
        self,
        endpoint: str,
        key: SecretStr,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_rows: int = 100_000,
        admin: AdminHandler | None = None,
        log_sample: float | None = None,
    ) -> None:
        """Serve `endpoint`, accepting requests that carry `key` as a bearer token.

        `log_sample` is the share of successful requests logged (default: from
        `MODELFERRY_REQUEST_LOG_SAMPLE`, else 0.1); failed ones are always logged.
        """
        self.endpoint = endpoint
        self.set_key(key)
        self.log_sample = request_log_sample() if log_sample is None else log_sample
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self.admin = admin
        self.telemetry = Telemetry()
        self.table = RoutingTable.build({}, TrafficSplit())
        self._random = random.random
        self.large = LargeRequestPool()
        # API documents by deployment, model and version: built on first ask, then kept.
        self._documents: dict[tuple[str, str, str, str], bytes] = {}

    def set_key(self, key: SecretStr) -> None:
        """Accept `key` from the next request on, and refuse the one it replaces."""
        self._auth = b"Bearer " + key.get_secret_value().encode()

    def install(self, table: RoutingTable) -> None:
        """Route new requests by `table`; requests already routed finish where they are."""
        self.table = table
        self._documents = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        rid = (REQUEST_ID_HEADER, request_id(scope["headers"]))
        if path == "/score" and method == "POST":
            await self._score(scope, receive, send, rid)
        elif path == "/health/live" and method in _READ:
            await _respond(send, rid, 200, {"status": "live"})
        elif path == "/health/ready" and method in _READ:
            ready = bool(self.table.models)
            await _respond(send, rid, 200 if ready else 503, {"ready": ready})
        elif path == "/metrics" and method == "GET":
            if not self._authorised(scope):
                await self._refuse(send, rid, 401, _AUTH_HINT)
                return
            models = {name: (m.name, m.version) for name, m in self.table.models.items()}
            text = self.telemetry.prometheus(self.endpoint, models).encode()
            await _send(send, rid, 200, text, _PROMETHEUS)
        elif path in ("/openapi.json", "/swagger.json") and method == "GET":
            await self._api_document(scope, send, rid, path)
        elif path.startswith("/admin/") and self.admin is not None:
            body = await _read_body(receive, self.max_body_bytes)
            status, answer = await self.admin(scope, body or b"")
            await _respond(send, rid, status, answer)
        elif path in _ALLOWED:
            allow = _ALLOWED[path]
            error = f"{path} takes {allow}, not {method}"
            await self._refuse(send, rid, 405, error, ((b"allow", allow.encode()),))
        else:
            await self._refuse(send, rid, 404, f"no route {method} {path}")

    async def _refuse(
        self,
        send: Send,
        rid: RequestId,
        status: int,
        error: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """Answer `status` before any deployment was chosen, and count it."""
        await _send(send, rid, status, orjson.dumps({"error": error}), [*_JSON, *headers])
        self.telemetry.record_unrouted(status)

    async def _api_document(self, scope: Scope, send: Send, rid: RequestId, path: str) -> None:
        """The OpenAPI document of the pinned deployment, else of the one with most traffic."""
        if not self._authorised(scope):
            await self._refuse(send, rid, 401, _AUTH_HINT)
            return
        table = self.table
        pinned = _header(scope, PIN_HEADER)
        name = pinned.decode("latin-1") if pinned is not None else _busiest(table)
        if name is None or name not in table.models:
            error = "no deployment is loaded yet" if name is None else f"no deployment {name!r}"
            await self._refuse(send, rid, 503 if name is None else 404, error)
            return
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("version", [])
        version = "3" if path == "/openapi.json" else (asked[0] if asked else "2")
        if version not in _DOCUMENT_VERSIONS:
            listed = ", ".join(sorted(_DOCUMENT_VERSIONS))
            await self._refuse(send, rid, 404, f"no API document version {version!r}; {listed}")
            return
        model = table.models[name]
        key = (name, model.name, model.version, _DOCUMENT_VERSIONS[version])
        body = self._documents.get(key)
        if body is None:
            build = openapi3 if _DOCUMENT_VERSIONS[version] == "3" else swagger2
            title = f"{self.endpoint}/{name}: {model.name} v{model.version}"
            body = orjson.dumps(build(title, model.version, model.features, model.class_names))
            self._documents[key] = body
        await _send(send, rid, 200, body, [*_JSON, (PIN_HEADER, name.encode())])

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._auth)
        return False

    async def _score(self, scope: Scope, receive: Receive, send: Send, rid: RequestId) -> None:
        started = time.perf_counter()
        if not self._authorised(scope):
            await self._refuse(send, rid, 401, _AUTH_HINT)
            return
        table = self.table
        pinned = _header(scope, PIN_HEADER)
        name = pinned.decode("latin-1") if pinned is not None else table.pick(self._random())
        if name is None:
            await self._refuse(send, rid, 503, "no deployment takes traffic yet")
            return
        if name not in table.models:
            await self._refuse(send, rid, 404, f"no deployment {name!r} on this endpoint")
            return
        model = table.models[name]
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            await self._answer(
                send,
                rid,
                name,
                started,
                413,
                {"error": f"the body exceeds {self.max_body_bytes} bytes"},
                0,
                pinned=pinned is not None,
            )
            return
        if len(body) > OFFLOAD_BYTES:
            await self._score_large(send, rid, table, name, started, body, pinned is not None)
            return
        try:
            features = parse_request(body, model.schema, self.max_rows)
        except PayloadError as exc:
            refused = self._refused_by_the_others(table, name, body)
            refusal = {"error": str(exc)}
            await self._answer(
                send, rid, name, started, exc.status, refusal, 0, pinned=pinned is not None,
                client_error=refused,
            )  # fmt: skip
            return
        try:
            if features.shape[0] <= _INLINE_ROWS:
                proba = model.predict_proba(features)
            else:
                proba = await asyncio.to_thread(model.predict_proba, features)
        except Exception as exc:  # a model failure is the server's fault: 500, counted
            error = {"error": f"scoring failed: {exc}"}
            await self._answer(send, rid, name, started, 500, error, 0, pinned=pinned is not None)
            return
        answer = _scored(model, name, proba)
        rows = features.shape[0]
        await self._answer(send, rid, name, started, 200, answer, rows, pinned=pinned is not None)
        if table.traffic.mirror and pinned is None:
            for mirror in table.mirrors_for(self._random()):
                self._mirror(table.models.get(mirror), mirror, features)

    async def _score_large(
        self,
        send: Send,
        rid: RequestId,
        table: RoutingTable,
        name: str,
        started: float,
        body: bytes,
        pinned: bool,
    ) -> None:
        """Parse in a worker process and score in a thread, at most a few at a time."""
        model = table.models[name]
        if not self.large.try_enter():
            busy = {"error": "too many large requests at once; retry shortly"}
            await _send(
                send,
                rid,
                503,
                orjson.dumps(busy),
                [*_JSON, (b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
            )
            seconds = time.perf_counter() - started
            self.telemetry.record(name, 503, seconds, 0, pinned=pinned)
            log_request(rid[1].decode(), name, 503, 0, seconds)
            return
        try:
            try:
                features = await self.large.parse(body, model.schema, self.max_rows)
            except PayloadError as exc:
                # Not re-parsed under the other schemas (too costly for a large body): it
                # counts, and the judge's baseline (the old deployment's own rate) absorbs
                # bad large bodies the router sends to both.
                refusal = {"error": str(exc)}
                await self._answer(send, rid, name, started, exc.status, refusal, 0, pinned=pinned)
                return
            try:
                proba = await asyncio.to_thread(model.predict_proba, features)
            except Exception as exc:  # a model failure is the server's fault: 500, counted
                error = {"error": f"scoring failed: {exc}"}
                await self._answer(send, rid, name, started, 500, error, 0, pinned=pinned)
                return
        finally:
            self.large.leave()
        answer = _scored(model, name, proba)
        rows = features.shape[0]
        await self._answer(send, rid, name, started, 200, answer, rows, pinned=pinned)
        if table.traffic.mirror and not pinned:
            # A large copy is scored in a thread, like the request it copies.
            for mirror in table.mirrors_for(self._random()):
                await asyncio.to_thread(self._mirror, table.models.get(mirror), mirror, features)

    def _refused_by_the_others(self, table: RoutingTable, name: str, body: bytes) -> bool:
        """Whether every other deployment taking traffic would refuse this body too.

        Such a 400 depends on the request, not on the model, so it is the client's error;
        one another deployment accepts is a regression of `name` (a schema change that
        breaks its clients).
        """
        for other, weight in table.traffic.weights.items():
            model = table.models.get(other)
            if other == name or weight <= 0 or model is None:
                continue
            try:
                parse_request(body, model.schema, self.max_rows)
            except PayloadError:
                continue
            return False
        return True

    async def _answer(
        self,
        send: Send,
        rid: RequestId,
        deployment: str,
        started: float,
        status: int,
        answer: Any,
        rows: int,
        *,
        pinned: bool = False,
        client_error: bool = False,
    ) -> None:
        body = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
        await _send(send, rid, status, body, [*_JSON, (PIN_HEADER, deployment.encode())])
        seconds = time.perf_counter() - started
        self.telemetry.record(
            deployment, status, seconds, rows, pinned=pinned, client_error=client_error
        )
        # A draw and a comparison per request not logged; its own draw, so that logging
        # never shifts the routing and mirroring draws of `_random`.
        if status >= 400 or random.random() < self.log_sample:
            log_request(rid[1].decode(), deployment, status, rows, seconds)

    def _mirror(self, model: ServingModel | None, name: str, features: np.ndarray) -> None:
        # The client already has its answer; the mirror's is computed, timed and dropped.
        if model is None:
            return
        started = time.perf_counter()
        try:
            model.predict_proba(features)
            status = 200
        except Exception:  # counted as the mirror's error, never the client's
            status = 500
        self.telemetry.record_mirror(name)
        self.telemetry.record(name, status, time.perf_counter() - started, features.shape[0])


def _busiest(table: RoutingTable) -> str | None:
    """The deployment taking the most traffic; with none, the first loaded one."""
    weights = table.traffic.weights
    if any(weights.get(name, 0) > 0 for name in table.models):
        return max(sorted(table.models), key=lambda name: weights.get(name, 0))
    return min(table.models, default=None)


def _scored(model: ServingModel, deployment: str, proba: np.ndarray) -> dict[str, Any]:
    """The answer to a scored request: probabilities, classes and who answered."""
    return {
        "predictions": proba,
        "classes": model.class_names,
        "deployment": deployment,
        "model_version": model.version,
    }


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value  # type: ignore[no-any-return]
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, rid: RequestId, status: int, answer: Any) -> None:
    body = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    await _send(send, rid, status, body, _JSON)


async def _send(
    send: Send, rid: RequestId, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, rid, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

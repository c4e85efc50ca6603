"""The floor: the least an ASGI scoring server can do with the benchmark model.

    python -m bench.serving.bare_asgi --model model.txt --port 8001

It reads the body, parses it with orjson, builds a float64 array from
`input_data.data`, calls `Booster.predict` and answers `{"predictions": [...]}`. No
authentication, no validation, no routing, no metrics: whatever modelferry's scoring app
costs above this is the price of those features. It runs under uvicorn with the settings
the local endpoint server uses (uvloop, httptools, access log off, one worker).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import lightgbm
import numpy as np
import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# The same rule as modelferry's BoosterPredictor: one thread for small requests.
_SINGLE_THREAD_ROWS = 256
_JSON = (b"content-type", b"application/json")


class FloorApp:
    """`POST` anything: score `input_data.data`; `GET` anything: liveness."""

    def __init__(
        self, booster: lightgbm.Booster, single_thread_rows: int = _SINGLE_THREAD_ROWS
    ) -> None:
        """Score with `booster`; requests under `single_thread_rows` rows use one thread."""
        self.booster = booster
        self.single_thread_rows = single_thread_rows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _send(send, b'{"status":"live"}')
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        document = orjson.loads(b"".join(chunks))
        features = np.array(document["input_data"]["data"], dtype=np.float64)
        threads = 1 if features.shape[0] < self.single_thread_rows else 0
        predictions = self.booster.predict(features, num_threads=threads)
        await _send(
            send, orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
        )


async def _send(send: Send, body: bytes) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    """Serve the floor app until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench.serving.bare_asgi")
    parser.add_argument("--model", required=True, help="a LightGBM model text file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--single-thread-rows",
        type=int,
        default=_SINGLE_THREAD_ROWS,
        help="requests with fewer rows predict on one thread; larger ones on all cores "
        f"(default {_SINGLE_THREAD_ROWS}, as modelferry)",
    )
    args = parser.parse_args(argv)
    app = FloorApp(lightgbm.Booster(model_file=args.model), args.single_thread_rows)

    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
        workers=1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The worker pool that parses large scoring bodies: it never outlives its server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from modelferry.serving.large_requests import LargeRequestPool
from modelferry.serving.payload import PayloadError
from modelferry.serving.schema import FeatureSpec, InputSchema

_SERVER = """
import asyncio, sys, time
from modelferry.serving.large_requests import LargeRequestPool
from modelferry.serving.schema import FeatureSpec
from modelferry.serving.schema import InputSchema

pool = LargeRequestPool(2)
schema = InputSchema([FeatureSpec("a", "double")])
body = b'{"input_data": {"columns": ["a"], "data": [[1.0]]}}'
features = asyncio.run(pool.parse(body, schema, 10))
assert features.shape == (1, 1)
print(*pool._executor._processes, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_exit_when_their_server_is_killed() -> None:
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        workers = [int(pid) for pid in server.stdout.readline().split()]
        assert workers
        assert all(_alive(pid) for pid in workers)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        server.kill()
        server.wait(10)


def test_a_dead_worker_is_a_503_and_the_next_request_gets_a_fresh_pool() -> None:
    pool = LargeRequestPool(1)
    schema = InputSchema([FeatureSpec("a", "double")])
    body = b'{"input_data": {"columns": ["a"], "data": [[1.0]]}}'

    async def run() -> None:
        assert (await pool.parse(body, schema, 10)).shape == (1, 1)
        assert pool._executor is not None
        (worker,) = pool._executor._processes
        os.kill(worker, signal.SIGKILL)
        refusal = None
        for _ in range(50):  # until the pool has noticed the death
            try:
                await pool.parse(body, schema, 10)
            except PayloadError as exc:
                refusal = exc
                break
            await asyncio.sleep(0.1)
        assert refusal is not None
        assert (refusal.status, str(refusal)) == (
            503,
            "the request could not be parsed: a worker stopped; retry shortly",
        )
        assert (await pool.parse(body, schema, 10)).shape == (1, 1)

    try:
        asyncio.run(run())
    finally:
        pool.close()

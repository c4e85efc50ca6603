"""Many edge agents in one process: the embedded default, tests and fleet benchmarks.

Agents are plain asyncio tasks; those made here share one smoke runner (bounded concurrent
smoke predictions, each package smoke-tested once per process) and `run_agents` gives them
one HTTP client. Each agent keeps its files under `ROOT/{device_id}/`.

    async with asyncio.timeout(60):
        await run_local_agents(["edge-1", "edge-2"], hub, root, keys, stop=stop)

    with start_local_agents(["edge-1", "edge-2"], hub, root, keys):
        ...  # a synchronous caller: the agents run on one background thread
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from modelferry.delivery.channels.base import DeviceTransport
from modelferry.delivery.channels.local import LocalDeviceTransport, LocalHub
from modelferry.edge.agent import EdgeAgent
from modelferry.edge.download import new_http_client
from modelferry.edge.settings import AgentSettings
from modelferry.edge.smoke import SmokeRunner
from modelferry.errors import DeliveryError
from modelferry.packaging.signing import VerifyKey
from modelferry.packaging.trust import TrustPolicy, trust_policy

__all__ = [
    "AgentThread",
    "agent_root",
    "create_agents",
    "create_local_agents",
    "run_agents",
    "run_local_agents",
    "start_local_agents",
    "wait_connected",
]


def agent_root(root: Path, device_id: str) -> Path:
    """`root / device_id`, refusing ids that are not a plain folder name."""
    if not device_id or device_id in {".", ".."} or "/" in device_id or "\\" in device_id:
        raise DeliveryError(f"device id {device_id!r} cannot name a folder under {root}")
    return Path(root) / device_id


def create_agents(
    device_ids: Iterable[str],
    transport_for: Callable[[str], DeviceTransport],
    root: Path,
    public_keys: Iterable[VerifyKey] | TrustPolicy,
    settings: AgentSettings | None = None,
) -> list[EdgeAgent]:
    """One agent per device, with `transport_for(device_id)`, sharing one smoke runner."""
    settings = settings or AgentSettings()
    keys = trust_policy(public_keys)
    runner = SmokeRunner(settings.smoke)
    return [
        EdgeAgent(
            transport_for(device_id),
            agent_root(root, device_id),
            keys,
            settings,
            smoke_runner=runner,
        )
        for device_id in device_ids
    ]


def create_local_agents(
    device_ids: Iterable[str],
    hub: LocalHub,
    root: Path,
    public_keys: Iterable[VerifyKey] | TrustPolicy,
    settings: AgentSettings | None = None,
) -> list[EdgeAgent]:
    """Agents on an in-process `LocalHub`."""

    def transport_for(device_id: str) -> DeviceTransport:
        return LocalDeviceTransport(device_id, hub)

    return create_agents(device_ids, transport_for, root, public_keys, settings)


async def run_agents(agents: Sequence[EdgeAgent], stop: asyncio.Event | None = None) -> None:
    """Run `agents` concurrently until `stop` is set (or every one has ended).

    Agents without an HTTP client of their own share one for the duration.
    """
    stop = stop or asyncio.Event()
    settings = agents[0].settings.download if agents else None
    async with new_http_client(settings) as client:
        for agent in agents:
            if agent.http_client is None:
                agent.http_client = client
        tasks = [
            asyncio.create_task(agent.run(stop), name=f"edge-agent-{agent.device_id}")
            for agent in agents
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_local_agents(
    device_ids: Iterable[str],
    hub: LocalHub,
    root: Path,
    public_keys: Iterable[VerifyKey] | TrustPolicy,
    settings: AgentSettings | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run one agent per device on `hub` until `stop` is set."""
    await run_agents(create_local_agents(device_ids, hub, root, public_keys, settings), stop)


class AgentThread:
    """Agents on one background thread with its own event loop, for synchronous callers.

    `make_agents` runs on that thread (so the agents belong to its loop). Use as a context
    manager, or call `start()` and `stop()`.
    """

    def __init__(self, make_agents: Callable[[], Sequence[EdgeAgent]]) -> None:
        self._make_agents = make_agents
        self._agents: Sequence[EdgeAgent] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="edge-agents", daemon=True)

    @property
    def agents(self) -> Sequence[EdgeAgent]:
        """The running agents."""
        return self._agents

    def start(self, timeout: float = 30.0) -> Self:
        """Start the thread; returns once every agent is connected.

        Raises:
            DeliveryError: the agents did not connect within `timeout`, or failed to start.
        """
        if self._thread.ident is not None:  # started already (start_local_agents, `with`)
            return self
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise DeliveryError(f"the edge agents did not connect within {timeout:g} s")
        if self._error is not None:
            raise DeliveryError(f"the edge agents failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the agents (a delivery under way is abandoned cleanly) and join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._agents = list(self._make_agents())
        running = asyncio.create_task(run_agents(self._agents, self._stop))
        connected = asyncio.create_task(wait_connected(self._agents))
        await asyncio.wait({running, connected}, return_when=asyncio.FIRST_COMPLETED)
        self._ready.set()
        connected.cancel()
        await running


async def wait_connected(agents: Sequence[EdgeAgent]) -> None:
    """Return once every agent has connected its transport."""
    for agent in agents:
        await agent.connected.wait()


def start_local_agents(
    device_ids: Iterable[str],
    hub: LocalHub,
    root: Path,
    public_keys: Iterable[VerifyKey] | TrustPolicy,
    settings: AgentSettings | None = None,
    timeout: float = 30.0,
) -> AgentThread:
    """Start one agent per device on `hub` on a background thread; stop it when done."""
    ids = list(device_ids)
    keys = trust_policy(public_keys)
    return AgentThread(lambda: create_local_agents(ids, hub, root, keys, settings)).start(timeout)

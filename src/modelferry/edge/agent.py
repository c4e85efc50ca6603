"""The reference edge agent: the device side of the delivery protocol (docs/protocol.md).

For each C2D `newDelivery` the agent reports `Received`, asks for a link
(`presignedUrlRequest`), downloads the package when the `presignedUrlResponse` comes
(`Downloading`, with bytes/total/percent), verifies its signature and every file
(`Verifying`), unpacks it into a staging folder and runs a smoke prediction with its
input example (`Installing`), installs it atomically and reports `Success`, or `Error`
with the stage and the reason. A failure leaves nothing installed and the previous
version current.

The agent is one asyncio task pair (a reader and a worker) over a `DeviceTransport`: no
thread of its own, so one process can run many (see `modelferry.edge.local_agents`). Blocking
file work runs in the loop's default executor; the smoke prediction in a child process.

Guarantees:
- One delivery at a time; others queue in arrival order.
- A repeated `deliveryId` is answered from `ROOT/state.json`: a finished one re-reports
  its terminal state without downloading again; one queued or under way is ignored.
- A delivery of the version already current reports `Success` without reinstalling.
- Deliveries cut short by a restart are resumed (a fresh link, the partial download).
- Malformed C2D messages are logged and skipped.
- A `ChannelError` from a send, a connect or the receiving stream is retried with
  exponential backoff and full jitter (`modelferry.retrying`), so a fleet that lost the
  same broker does not come back in lockstep; it never ends the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from modelferry.delivery.channels.base import DeviceTransport
from modelferry.delivery.protocol.messages import (
    STATE_ERROR,
    STATE_SUCCESS,
    Message,
    NewDelivery,
    UrlResponse,
    parse,
    presigned_url_request,
    state_report,
)
from modelferry.edge.install import prepare_root
from modelferry.edge.pipeline import DeliveryJob, PackagePipeline, StepFailed
from modelferry.edge.settings import AgentSettings
from modelferry.edge.smoke import SmokeRunner
from modelferry.edge.state import DeviceDeliveryState, StateStore
from modelferry.errors import ChannelError, MalformedMessageError
from modelferry.packaging.signing import VerifyKey
from modelferry.packaging.trust import TrustPolicy, trust_policy
from modelferry.retrying import Backoff, RetryNotice, restart
from modelferry.structured_logging import log_context

__all__ = ["EdgeAgent"]

logger = logging.getLogger(__name__)

STATE_RECEIVED: Final = "Received"


class EdgeAgent:
    """Receives deliveries for one device and installs them under `root`."""

    def __init__(
        self,
        transport: DeviceTransport,
        root: Path,
        public_keys: Iterable[VerifyKey] | TrustPolicy,
        settings: AgentSettings | None = None,
        *,
        smoke_runner: SmokeRunner | None = None,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Set up an agent; nothing happens until `run()`.

        Args:
            transport: The device's transport (local, MQTT or IoT Hub), not yet open.
            root: The agent's folder: versions, `current`, state, downloads.
            public_keys: The keys a package must be signed with (one of them), or a
                `TrustPolicy` (key roles, revocations, threshold, required format).
            settings: Behaviour; defaults suit a real device.
            smoke_runner: Shared between agents of one process to bound concurrent smoke
                tests; by default the agent has its own.
            http_client: Shared between agents of one process; by default each download
                opens its own.
            sleep: How the agent waits before a retry; tests pass one that records the waits.
        """
        self.transport = transport
        # Absolute: the smoke child runs in another working directory.
        self.root = Path(root).absolute()
        self.public_keys = trust_policy(public_keys)
        if not self.public_keys:
            raise ValueError("an edge agent needs at least one trusted public key")
        self.settings = settings or AgentSettings()
        self.smoke_runner = smoke_runner or SmokeRunner(self.settings.smoke)
        self.http_client = http_client
        self._pause = sleep
        self.connected = asyncio.Event()
        self._store = StateStore(self.root)
        self._queue: asyncio.Queue[DeliveryJob] = asyncio.Queue()
        self._active: set[str] = set()
        self._link: tuple[str, asyncio.Future[str]] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def device_id(self) -> str:
        """The device this agent acts for."""
        return self.transport.device_id

    def stop(self) -> None:
        """Ask a running agent to stop (from its own event loop)."""
        if self._stop is not None:
            self._stop.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Open the transport and handle deliveries until `stop` is set or it closes.

        On stop, a delivery under way is abandoned cleanly (nothing installed, the partial
        download kept) and resumed by the next run. Every record logged meanwhile, in
        this agent's tasks, carries its `device_id` (see `modelferry.structured_logging`).
        """
        with log_context(device_id=self.device_id):
            await self._run(stop)

    async def _run(self, stop: asyncio.Event | None) -> None:
        self._stop = stop or asyncio.Event()
        await asyncio.to_thread(prepare_root, self.root)
        if not await self._open():
            return
        self.connected.set()
        for record in (await asyncio.to_thread(self._store.read)).pending():
            logger.info("%s: resuming delivery %s", self.device_id, record.delivery_id)
            self._enqueue(
                DeliveryJob(
                    record.delivery_id,
                    record.project_id,
                    record.package_id,
                    record.package_version,
                )
            )
        tasks = [
            asyncio.create_task(self._read(), name=f"edge-read-{self.device_id}"),
            asyncio.create_task(self._work(), name=f"edge-work-{self.device_id}"),
            asyncio.create_task(self._stop.wait(), name=f"edge-stop-{self.device_id}"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    logger.error("%s: agent task failed: %r", self.device_id, result)
            self.connected.clear()
            try:
                await self.transport.close()
            except ChannelError as exc:
                logger.warning("%s: closing the transport failed: %s", self.device_id, exc)

    # ------------------------------------------------------------------------ transport

    def _backoff(self, attempts: int | None = None) -> Backoff:
        return Backoff(self.settings.send_backoff, self.settings.send_max_backoff, attempts)

    async def _open(self) -> bool:
        """Open the transport, retrying until it opens (True) or the agent stops (False)."""

        def log(retry: RetryNotice) -> None:
            logger.warning(
                "%s: cannot connect (%s); retrying in %.1f s",
                self.device_id,
                retry.error,
                retry.delay,
            )

        retrying = self._backoff().async_retrying(ChannelError, on_retry=log, sleep=self._sleep)
        async for attempt in retrying:
            with attempt:
                if self._stopped:
                    return False
                await self.transport.open()
                return True
        raise AssertionError("unreachable: with no limit an attempt returns or raises")

    @property
    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _sleep(self, seconds: float) -> None:
        """Wait before a retry; a stop cuts the wait short."""
        assert self._stop is not None
        waits = (
            asyncio.ensure_future(self._pause(seconds)),
            asyncio.create_task(self._stop.wait()),
        )
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _send(self, message: Message, attempts: int | None = None) -> bool:
        """Send, retrying a refused message with backoff; False when `attempts` ran out."""

        def log(retry: RetryNotice) -> None:
            logger.warning(
                "%s: send failed (%s); retrying in %.1f s", self.device_id, retry.error, retry.delay
            )

        backoff = self._backoff(None if attempts is None else max(attempts, 1))
        try:
            async for attempt in backoff.async_retrying(
                ChannelError, on_retry=log, sleep=self._pause
            ):
                with attempt:
                    await self.transport.send(message)
        except ChannelError as exc:
            logger.warning("%s: dropped a message: %s", self.device_id, exc)
            return False
        return True

    async def _report(
        self,
        job: DeliveryJob,
        state: str,
        attributes: Mapping[str, Any] | None = None,
        attempts: int | None = None,
    ) -> None:
        message = state_report(
            self.device_id,
            delivery_id=job.delivery_id,
            project_id=job.project_id,
            state=state,
            attributes=attributes,
        )
        await self._send(message, attempts)

    # ------------------------------------------------------------------------ reading

    async def _read(self) -> None:
        """Read until the transport closes; a broken stream is reopened with backoff."""

        def log(retry: RetryNotice) -> None:
            logger.warning(
                "%s: receiving failed (%s); reconnecting in %.1f s",
                self.device_id,
                retry.error,
                retry.delay,
            )

        reopen = False  # run() opened the transport for the first read
        retrying = self._backoff().async_retrying(ChannelError, on_retry=log, sleep=self._sleep)
        async for attempt in retrying:
            with attempt:
                if reopen and (self._stopped or not await self._open()):
                    return
                reopen = True
                async for message in self.transport.receive():
                    # A stream that delivered starts a fresh backoff: only failures in a
                    # row wait longer and longer.
                    restart(attempt.retry_state)
                    try:
                        await self._dispatch(message)
                    except Exception:  # one bad message must not end the reader
                        logger.exception("%s: could not handle a message", self.device_id)
                return  # the transport was closed

    async def _dispatch(self, message: Message) -> None:
        try:
            event = parse(message)
        except MalformedMessageError as exc:
            logger.warning("%s: skipped a malformed message: %s", self.device_id, exc)
            return
        if isinstance(event, NewDelivery):
            await self._accept(event)
        elif isinstance(event, UrlResponse):
            waiting = self._link
            if waiting is not None and waiting[0] == event.delivery_id and not waiting[1].done():
                waiting[1].set_result(event.url)
            else:
                logger.info(
                    "%s: ignored a link for delivery %s (none was awaited)",
                    self.device_id,
                    event.delivery_id,
                )
        else:
            logger.warning(
                "%s: skipped a device-to-cloud %s message on the C2D stream",
                self.device_id,
                type(event).__name__,
            )

    async def _accept(self, event: NewDelivery) -> None:
        job = DeliveryJob(
            event.delivery_id, event.project_id, event.package_id, event.package_version
        )
        if job.delivery_id in self._active:
            logger.info("%s: delivery %s is already under way", self.device_id, job.delivery_id)
            return
        known = (await asyncio.to_thread(self._store.read)).deliveries.get(job.delivery_id)
        if known is not None and known.terminal:
            logger.info(
                "%s: delivery %s was handled before: %s",
                self.device_id,
                job.delivery_id,
                known.state,
            )
            await self._report(job, known.state, known.attributes)
            return
        # Recorded and reported before the worker may see it, so that its terminal state
        # can never be overwritten by this `Received`.
        self._active.add(job.delivery_id)
        try:
            await self._record(job, STATE_RECEIVED)
            attributes = {"packageId": job.package_id, "packageVersion": job.package_version}
            await self._report(job, STATE_RECEIVED, attributes)
        finally:
            self._queue.put_nowait(job)

    def _enqueue(self, job: DeliveryJob) -> None:
        self._active.add(job.delivery_id)
        self._queue.put_nowait(job)

    async def _record(
        self, job: DeliveryJob, state: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        record = DeviceDeliveryState(
            job.delivery_id,
            job.project_id,
            job.package_id,
            job.package_version,
            state,
            dict(attributes or {}),
        )

        def save() -> None:
            with self._store.update() as saved:
                saved.record(record)

        await asyncio.to_thread(save)

    # ------------------------------------------------------------------------ working

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                with log_context(delivery_id=job.delivery_id, package=job.label):
                    await self._deliver(job)
            finally:
                self._active.discard(job.delivery_id)

    async def _deliver(self, job: DeliveryJob) -> None:
        logger.info("%s: delivery %s of %s", self.device_id, job.delivery_id, job.label)

        async def report(
            state: str, attributes: Mapping[str, Any] | None = None, attempts: int | None = None
        ) -> None:
            await self._report(job, state, attributes, attempts)

        pipeline = PackagePipeline(
            root=self.root,
            public_keys=self.public_keys,
            settings=self.settings,
            smoke_runner=self.smoke_runner,
            http_client=self.http_client,
            ask_for_link=lambda: self._ask_for_link(job),
            report=report,
        )
        try:
            attributes = await pipeline.run(job)
            state = STATE_SUCCESS
        except StepFailed as failure:
            state = STATE_ERROR
            attributes = {
                "packageId": job.package_id,
                "packageVersion": job.package_version,
                "stage": failure.step,
                "reason": failure.reason,
            }
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug must fail this delivery, not the agent
            logger.exception("%s: delivery %s failed", self.device_id, job.delivery_id)
            state = STATE_ERROR
            attributes = {
                "packageId": job.package_id,
                "packageVersion": job.package_version,
                "stage": "internal",
                "reason": f"internal error: {type(exc).__name__}: {exc}",
            }
        await self._record(job, state, attributes)
        level = logging.INFO if state == STATE_SUCCESS else logging.WARNING
        logger.log(
            level, "%s: delivery %s: %s %s", self.device_id, job.delivery_id, state, attributes
        )
        await self._report(job, state, attributes)

    async def _ask_for_link(self, job: DeliveryJob) -> str | None:
        """Send one presignedUrlRequest; the URL answered, or None after `link_timeout`."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._link = (job.delivery_id, future)
        try:
            request = presigned_url_request(
                self.device_id,
                delivery_id=job.delivery_id,
                project_id=job.project_id,
                package_id=job.package_id,
            )
            await self._send(request)
            try:
                return await asyncio.wait_for(future, self.settings.link_timeout)
            except TimeoutError:
                logger.warning(
                    "%s: no link for delivery %s within %g s",
                    self.device_id,
                    job.delivery_id,
                    self.settings.link_timeout,
                )
                return None
        finally:
            self._link = None

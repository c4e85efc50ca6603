"""Fleet rollout: one package to many devices, in rings, with bounded parallelism.

    ring 1 (canary)  ─ wait for every device ─▶ too many failed? abort : ring 2 (the rest)

At most `max_parallel` devices are delivered to at once (an `asyncio.Semaphore`; a device
holds its slot through its retries). A device whose attempt failed in a way the policy
retries gets a new attempt (a new `deliveryId`) after an exponential backoff. Once more
than `max_failure_share` of the devices have failed — or of the canary ring, when it
ends — no further device is started: those are recorded as `Skipped` with the reason,
while deliveries already under way finish.

Everything runs as tasks on one event loop around one `DeliveryDispatcher`, so 1,000
devices cost 1,000 small coroutines at most `max_parallel` at a time, not threads.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelferry.delivery.channels.base import DeliveryChannel
from modelferry.delivery.dispatcher import DeliveryDispatcher, Log
from modelferry.delivery.outcomes import DeliveryOutcome, DeviceResult, FleetResult
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy
from modelferry.delivery.protocol.messages import utc_now
from modelferry.delivery.protocol.states import SKIPPED
from modelferry.delivery.records.store import DeliveryRecords
from modelferry.delivery.records.writer import AsyncDeliveryRecords
from modelferry.delivery.session import DeliveryRequest, DeliverySession, new_delivery_id
from modelferry.progress import ProgressCallback, ProgressReporter
from modelferry.stores.base import PackageStore

_log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[Any]]


@dataclass
class _Progress:
    total: int
    reporter: ProgressReporter
    failed: int = 0
    aborted: bool = False
    abort_reason: str | None = None
    results: dict[str, DeviceResult] = field(default_factory=dict)

    def stopped(self) -> bool:
        """True once the rollout was aborted (other tasks may abort it while one waits)."""
        return self.aborted


class FleetRollout:
    """Delivers one package to a fleet of devices under a `FleetPolicy`.

    Args:
        channel: the cloud side of the transport; the rollout opens and closes it.
        store: holds the package and makes its download links.
        records: where every attempt and transition is recorded; None records nothing.
        policy: clocks, parallelism, rings, abort and retries.
        log: where progress is logged; default the delivery logger.
        rollout_id: groups this rollout's records; default a fresh id.
        sleep: waits out a retry backoff (tests pass a recorder).
        on_progress: told ``(devices finished, devices in the plan)`` as devices end
            (skipped ones included), at most once per percent; see `modelferry.progress`.
    """

    def __init__(
        self,
        channel: DeliveryChannel,
        store: PackageStore,
        *,
        records: DeliveryRecords | None = None,
        policy: FleetPolicy | None = None,
        log: Log | None = None,
        rollout_id: str | None = None,
        sleep: Sleep = asyncio.sleep,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.channel = channel
        self.store = store
        self.records = records
        self.policy = policy or FleetPolicy()
        self.log: Log = log or _log
        self.rollout_id = rollout_id or str(uuid.uuid4())
        self._sleep = sleep
        self._on_progress = on_progress

    async def run(self, plan: DeliveryPlan) -> FleetResult:
        """Roll `plan` out; returns one row per device.

        Raises:
            ChannelError: the channel could not be opened, or stopped delivering messages.
            DeliveryError: the records could not be written.
        """
        reporter = ProgressReporter(
            self._on_progress, len(plan.devices), what="delivery", log=self.log
        )
        progress = _Progress(total=len(plan.devices), reporter=reporter)
        reporter.start()
        started_at = utc_now()
        records = AsyncDeliveryRecords(self.records) if self.records is not None else None
        try:
            async with DeliveryDispatcher(self.channel, log=self.log) as hub:
                rings = self.policy.rings(plan.devices)
                slots = asyncio.Semaphore(self.policy.max_parallel)
                for number, ring in enumerate(rings, start=1):
                    if progress.aborted:
                        await self._skip(plan, ring, number, progress, records)
                        continue
                    self.log.info(
                        "Ring %d/%d%s: delivering %s %s to %d device(s), %d at a time",
                        number, len(rings), " (canary)" if number < len(rings) else "",
                        plan.package.package_id, plan.package.version, len(ring),
                        self.policy.max_parallel,
                    )  # fmt: skip
                    await self._ring(plan, ring, number, hub, slots, progress, records)
                    if number < len(rings):
                        self._judge_canary(ring, progress)
        finally:
            if records is not None:
                records.close()
        result = FleetResult(
            rollout_id=self.rollout_id,
            package_id=plan.package.package_id,
            package_version=plan.package.version,
            rows=tuple(progress.results[device] for device in plan.devices),
            aborted=progress.aborted,
            abort_reason=progress.abort_reason,
            started_at=started_at,
        )
        reporter.finish()
        self.log.info(result.summary())
        return result

    async def _ring(
        self,
        plan: DeliveryPlan,
        ring: Sequence[str],
        number: int,
        hub: DeliveryDispatcher,
        slots: asyncio.Semaphore,
        progress: _Progress,
        records: AsyncDeliveryRecords | None,
    ) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            for index, device in enumerate(ring):
                await slots.acquire()
                _reap(tasks)
                if progress.aborted:
                    slots.release()
                    await self._skip(plan, ring[index:], number, progress, records)
                    break
                tasks.add(
                    asyncio.create_task(
                        self._device(plan, device, number, hub, slots, progress, records),
                        name=device,
                    )
                )
            while tasks:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                _reap(tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)

    async def _device(
        self,
        plan: DeliveryPlan,
        device: str,
        ring: int,
        hub: DeliveryDispatcher,
        slots: asyncio.Semaphore,
        progress: _Progress,
        records: AsyncDeliveryRecords | None,
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            outcome = await self._attempt(plan, device, 1, hub, records)
            while (
                not outcome.succeeded
                and outcome.failure in self.policy.retry_on
                and outcome.attempt <= self.policy.retries
                and not progress.stopped()
            ):
                delay = self.policy.backoff_delay(outcome.attempt)
                self.log.info(
                    "device %s: attempt %d ended %s (%s); retrying in %g s",
                    device, outcome.attempt, outcome.state, outcome.failure, delay,
                )  # fmt: skip
                await self._sleep(delay)
                if progress.stopped():
                    break
                outcome = await self._attempt(plan, device, outcome.attempt + 1, hub, records)
            self._finish(plan, outcome, ring, loop.time() - started, progress)
        finally:
            slots.release()

    async def _attempt(
        self,
        plan: DeliveryPlan,
        device: str,
        attempt: int,
        hub: DeliveryDispatcher,
        records: AsyncDeliveryRecords | None,
    ) -> DeliveryOutcome:
        request = DeliveryRequest(
            device_id=device,
            project_id=plan.project_id,
            package=plan.package,
            model_name=plan.model_name,
            model_version=plan.model_version,
            attempt=attempt,
            rollout_id=self.rollout_id,
        )
        session = DeliverySession(
            request, hub, self.store, records=records, timeouts=self.policy.timeouts, log=self.log
        )
        return await session.run()

    def _finish(
        self,
        plan: DeliveryPlan,
        outcome: DeliveryOutcome,
        ring: int,
        seconds: float,
        progress: _Progress,
    ) -> None:
        row = DeviceResult(
            device_id=outcome.device_id,
            state=outcome.state,
            attempts=outcome.attempt,
            duration_seconds=seconds,
            error=outcome.error,
            package_id=plan.package.package_id,
            package_version=plan.package.version,
            model_name=plan.model_name,
            model_version=plan.model_version,
            delivery_id=outcome.delivery_id,
            failure=outcome.failure,
            ring=ring,
            finished_at=outcome.ended_at,
        )
        progress.results[row.device_id] = row
        progress.reporter.advance()
        if not row.failed:
            self.log.debug("device %s: %s", row.device_id, row.state)
            return
        progress.failed += 1
        self.log.warning("device %s: %s: %s", row.device_id, row.state, row.error)
        share = progress.failed / progress.total
        if not progress.aborted and share > self.policy.max_failure_share:
            self._abort(
                progress,
                f"{progress.failed} of {progress.total} device(s) failed ({share:.0%}, more than "
                f"the {self.policy.max_failure_share:.0%} allowed)",
            )

    def _judge_canary(self, ring: Sequence[str], progress: _Progress) -> None:
        failed = sum(1 for device in ring if progress.results[device].failed)
        share = failed / len(ring)
        if not progress.aborted and share > self.policy.max_failure_share:
            self._abort(
                progress,
                f"{failed} of {len(ring)} canary device(s) failed ({share:.0%}, more than the "
                f"{self.policy.max_failure_share:.0%} allowed)",
            )
        elif not progress.aborted:
            self.log.info("Canary ring passed: %d of %d device(s) failed", failed, len(ring))

    def _abort(self, progress: _Progress, reason: str) -> None:
        progress.aborted = True
        progress.abort_reason = reason
        self.log.error("Rollout aborted: %s; devices not yet started are skipped", reason)

    async def _skip(
        self,
        plan: DeliveryPlan,
        devices: Sequence[str],
        ring: int,
        progress: _Progress,
        records: AsyncDeliveryRecords | None,
    ) -> None:
        reason = f"not started: rollout aborted ({progress.abort_reason})"
        skipped_at = utc_now()
        rows = [
            DeviceResult(
                device_id=device,
                state=SKIPPED,
                attempts=0,
                duration_seconds=0.0,
                error=reason,
                package_id=plan.package.package_id,
                package_version=plan.package.version,
                model_name=plan.model_name,
                model_version=plan.model_version,
                delivery_id=new_delivery_id(),
                ring=ring,
                finished_at=skipped_at,
            )
            for device in devices
        ]
        if records is not None:
            now = utc_now()
            # Gathered, so the writer puts many of them in one transaction.
            await asyncio.gather(
                *(
                    records.create(
                        delivery_id=row.delivery_id,
                        device_id=row.device_id,
                        project_id=plan.project_id,
                        package_id=row.package_id,
                        package_version=row.package_version,
                        model_name=row.model_name,
                        model_version=row.model_version,
                        attempt=0,
                        rollout_id=self.rollout_id,
                        state=SKIPPED,
                        error=reason,
                        at=now,
                    )
                    for row in rows
                )
            )
        for row in rows:
            progress.results[row.device_id] = row
        progress.reporter.advance(len(rows))


def _reap(tasks: set[asyncio.Task[None]]) -> None:
    """Forget finished device tasks; the first one that raised raises here, to the caller."""
    for task in [task for task in tasks if task.done()]:
        tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def roll_out(
    plan: DeliveryPlan,
    channel: DeliveryChannel,
    store: PackageStore,
    *,
    records: DeliveryRecords | None = None,
    policy: FleetPolicy | None = None,
    log: Log | None = None,
    rollout_id: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> FleetResult:
    """Deliver `plan` with a `FleetRollout`; see its arguments."""
    rollout = FleetRollout(
        channel,
        store,
        records=records,
        policy=policy,
        log=log,
        rollout_id=rollout_id,
        on_progress=on_progress,
    )
    return await rollout.run(plan)

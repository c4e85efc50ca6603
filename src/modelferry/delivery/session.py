"""One delivery of one package to one device: the cloud side's state machine.

    Pending ──newDelivery sent──▶ Notified ──device reports──▶ Received, Downloading, ...
        └──────────────────────────────────────────────▶ Success | Error | TimedOut

Every state the device reports is recorded as reported, with its attributes; any string
other than `Success` and `Error` is an intermediate state. Each presignedUrlRequest gets a
fresh link from the package store. Two clocks run: the inactivity timeout (nothing valid
heard from the device for N seconds) and the overall deadline; when either runs out the
delivery ends `TimedOut`, a recorded outcome rather than an exception.

What the session tolerates (docs/protocol.md): duplicates (skipped), reordering (a report
older than the current state is recorded as ignored), malformed messages (logged and
skipped; they do not count as activity), events of other deliveries (never routed here by
the dispatcher). A failure to send is a *transport* failure and a failure to make a link
a *store* failure: both end the delivery as `Error` with that kind, so a fleet rollout can
decide what to retry. Anything else (the reader failed, the records database is down)
propagates to the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelferry.delivery.dispatcher import DeliveryDispatcher, Log, Subscription
from modelferry.delivery.outcomes import DeliveryOutcome, FailureKind
from modelferry.delivery.protocol.messages import (
    Message,
    NewDelivery,
    StateReport,
    UrlRequest,
    UrlResponse,
    new_delivery,
    parse,
    presigned_url_response,
    utc_now,
)
from modelferry.delivery.protocol.states import ERROR, FINAL_STATES, NOTIFIED, PENDING, TIMED_OUT
from modelferry.delivery.records.writer import AsyncDeliveryRecords
from modelferry.errors import ChannelError, MalformedMessageError, PackageStoreError
from modelferry.stores.base import PackageStore, StoredPackage

_log = logging.getLogger(__name__)

DEFAULT_INACTIVITY_SECONDS = 120.0
DEFAULT_DEADLINE_SECONDS = 30 * 60.0


def new_delivery_id() -> str:
    """A fresh `deliveryId`."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class DeliveryRequest:
    """What one delivery attempt sends, to whom.

    `attempt` counts attempts at delivering this package to this device (a retry is a
    new request with a new `delivery_id`); `rollout_id` groups the attempts of a rollout.
    """

    device_id: str
    project_id: str
    package: StoredPackage
    model_name: str | None = None
    model_version: str | None = None
    attempt: int = 1
    rollout_id: str | None = None
    delivery_id: str = field(default_factory=new_delivery_id)


@dataclass(frozen=True)
class SessionTimeouts:
    """The two clocks of a delivery, in seconds."""

    inactivity: float = DEFAULT_INACTIVITY_SECONDS
    deadline: float = DEFAULT_DEADLINE_SECONDS

    def __post_init__(self) -> None:
        if self.inactivity <= 0 or self.deadline <= 0:
            raise ValueError("the inactivity timeout and the deadline must be positive")


def _reason(attributes: Mapping[str, Any]) -> str:
    """An Error report's reason: our agent sends `reason`; take what others send too."""
    for key in ("reason", "error", "message", "detail"):
        value = attributes.get(key)
        if value:
            return str(value)
    if attributes:
        return f"device reported Error with {json.dumps(dict(attributes), default=str)[:500]}"
    return "device reported Error without a reason"


class DeliverySession:
    """Delivers one package to one device through a running `DeliveryDispatcher`.

    Args:
        request: what to deliver, to which device, as which attempt.
        dispatcher: the running dispatcher whose channel reaches the device.
        store: hands out a fresh link for every presignedUrlRequest.
        records: where the delivery and its transitions are recorded; None records nothing.
        timeouts: the inactivity timeout and the overall deadline.
        log: where the session logs; default the delivery logger.
    """

    def __init__(
        self,
        request: DeliveryRequest,
        dispatcher: DeliveryDispatcher,
        store: PackageStore,
        *,
        records: AsyncDeliveryRecords | None = None,
        timeouts: SessionTimeouts | None = None,
        log: Log | None = None,
    ) -> None:
        self.request = request
        self.dispatcher = dispatcher
        self.store = store
        self.records = records
        self.timeouts = timeouts or SessionTimeouts()
        self.log: Log = log or _log
        self.state = PENDING
        self.links_issued = 0
        self._seen: set[tuple[str, datetime, str]] = set()
        self._latest_report: datetime | None = None
        self._started_at = utc_now()

    @property
    def delivery_id(self) -> str:
        """The `deliveryId` of this attempt."""
        return self.request.delivery_id

    @property
    def device_id(self) -> str:
        """The device this attempt goes to."""
        return self.request.device_id

    async def run(self) -> DeliveryOutcome:
        """Deliver, and return how it ended.

        Returns:
            The outcome: `Success`, `Error` (device-reported, transport or store failure)
            or `TimedOut`.

        Raises:
            Whatever the dispatcher's reader or the records raised: those are failures of
            the rollout, not of this device.
        """
        request = self.request
        subscription = self.dispatcher.subscribe(
            request.delivery_id, request.device_id, self.records
        )
        try:
            return await self._run(subscription)
        except BaseException as exc:
            await self._close_aborted(exc)
            raise
        finally:
            await self.dispatcher.unsubscribe(request.delivery_id)

    async def _close_aborted(self, exc: BaseException) -> None:
        """End the record of a delivery stopped by a failure of the rollout, as `Error`.

        A record is never left open: whatever stopped the session (the reader failed, the
        rollout was cancelled), the delivery ends with the reason.
        """
        if self.records is None or self.state in FINAL_STATES:
            return
        reason = (
            "the delivery was cancelled before the device finished"
            if isinstance(exc, asyncio.CancelledError)
            else f"the delivery was aborted: {type(exc).__name__}: {str(exc)[:200]}"
        )
        self.state = ERROR
        try:
            # Shielded: a cancelled rollout still gets its record closed.
            await asyncio.shield(self._record(ERROR, at=utc_now(), error=reason))
        except Exception as failure:
            self.log.error(
                "delivery %s: could not close its record after an abort: %s",
                self.delivery_id,
                failure,
            )

    async def _run(self, subscription: Subscription) -> DeliveryOutcome:
        request = self.request
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._started_at = utc_now()
        if self.records is not None:
            await self.records.create(
                delivery_id=request.delivery_id,
                device_id=request.device_id,
                project_id=request.project_id,
                package_id=request.package.package_id,
                package_version=request.package.version,
                model_name=request.model_name,
                model_version=request.model_version,
                attempt=request.attempt,
                rollout_id=request.rollout_id,
                at=self._started_at,
            )
        notice = new_delivery(
            request.device_id,
            delivery_id=request.delivery_id,
            project_id=request.project_id,
            package_id=request.package.package_id,
            package_version=request.package.version,
        )
        try:
            await self.dispatcher.send(notice)
        except ChannelError as exc:
            return await self._end(
                ERROR,
                f"could not send newDelivery to device {self.device_id!r}: {exc}",
                "transport",
            )
        self.state = NOTIFIED
        await self._record(NOTIFIED)
        self.log.debug("delivery %s: newDelivery sent to %r", self.delivery_id, self.device_id)

        deadline = started + self.timeouts.deadline
        last_heard = loop.time()
        while True:
            now = loop.time()
            if min(last_heard + self.timeouts.inactivity, deadline) <= now:
                # Messages that arrived before the clock ran out still count.
                heard = False
                for message in subscription.ready():
                    outcome, valid = await self._handle(message)
                    if outcome is not None:
                        return outcome
                    heard = heard or valid
                if heard and now < deadline:
                    last_heard = loop.time()
                    continue
                return await self._time_out(deadline_passed=now >= deadline)
            wait = min(last_heard + self.timeouts.inactivity, deadline) - now
            try:
                message = await asyncio.wait_for(subscription.get(), wait)
            except TimeoutError:
                continue
            outcome, valid = await self._handle(message)
            if outcome is not None:
                return outcome
            if valid:
                last_heard = loop.time()

    async def _handle(self, message: Message) -> tuple[DeliveryOutcome | None, bool]:
        """Act on one routed message: (the outcome if it ended the delivery, was it valid)."""
        try:
            event = parse(message)
        except MalformedMessageError as exc:
            self.log.warning("delivery %s: skipped a malformed message: %s", self.delivery_id, exc)
            return None, False
        except Exception as exc:
            self.log.warning(
                "delivery %s: skipped a message that could not be read (%s: %s)",
                self.delivery_id,
                type(exc).__name__,
                str(exc)[:200],
            )
            return None, False
        if event.project_id is not None and event.project_id != self.request.project_id:
            self.log.warning(
                "delivery %s: device %r answers for project %r, expected %r",
                self.delivery_id,
                self.device_id,
                event.project_id,
                self.request.project_id,
            )
        if isinstance(event, UrlRequest):
            return await self._issue_link(event), True
        if isinstance(event, StateReport):
            return await self._report(event), True
        self._wrong_direction(event)
        return None, False

    def _wrong_direction(self, event: NewDelivery | UrlResponse) -> None:
        self.log.warning(
            "delivery %s: skipped a %s from device %r: that is a cloud-to-device message",
            self.delivery_id,
            type(event).__name__,
            self.device_id,
        )

    async def _issue_link(self, event: UrlRequest) -> DeliveryOutcome | None:
        package = self.request.package
        if event.package_id is not None and event.package_id != package.package_id:
            self.log.warning(
                "delivery %s: device %r asked for a link to package %r, but %r is delivered; "
                "no link sent",
                self.delivery_id,
                self.device_id,
                event.package_id,
                package.package_id,
            )
            return None
        try:
            url = await asyncio.to_thread(self.store.link, package)
        except PackageStoreError as exc:
            return await self._end(
                ERROR,
                f"the {self.store.name} store gave no link to {package.package_id} "
                f"{package.version}: {exc}",
                "store",
            )
        response = presigned_url_response(
            self.device_id,
            delivery_id=self.delivery_id,
            project_id=self.request.project_id,
            url=url,
        )
        try:
            await self.dispatcher.send(response)
        except ChannelError as exc:
            return await self._end(
                ERROR,
                f"could not send the download link to device {self.device_id!r}: {exc}",
                "transport",
            )
        self.links_issued += 1
        self.log.debug("delivery %s: link #%d sent", self.delivery_id, self.links_issued)
        return None

    async def _report(self, event: StateReport) -> DeliveryOutcome | None:
        key = (
            event.state,
            event.timestamp,
            json.dumps(event.attributes, sort_keys=True, default=str),
        )
        if key in self._seen:
            self.log.debug("delivery %s: duplicate %r skipped", self.delivery_id, event.state)
            return None
        self._seen.add(key)
        if event.terminal:
            error = _reason(event.attributes) if event.state == ERROR else None
            self.log.log(
                logging.INFO if error else logging.DEBUG,
                "delivery %s: device %r reported %s%s",
                self.delivery_id,
                self.device_id,
                event.state,
                f": {error}" if error else "",
            )
            return await self._end(
                event.state,
                error,
                "device" if event.state == ERROR else None,
                reported_at=event.timestamp,
                attributes=event.attributes,
            )
        if self._latest_report is not None and event.timestamp < self._latest_report:
            self.log.info(
                "delivery %s: %r reported at %s arrived after a later state; recorded, not applied",
                self.delivery_id,
                event.state,
                event.timestamp.isoformat(),
            )
            await self._record(
                event.state,
                reported_at=event.timestamp,
                attributes=event.attributes,
                ignore="reported before the current state (out of order)",
            )
            return None
        self._latest_report = event.timestamp
        self.state = event.state
        await self._record(event.state, reported_at=event.timestamp, attributes=event.attributes)
        return None

    async def _time_out(self, *, deadline_passed: bool) -> DeliveryOutcome:
        channel = self.dispatcher.channel.name
        if deadline_passed:
            error = (
                f"device {self.device_id!r} did not finish within the {self.timeouts.deadline:g} s "
                f"deadline (last state {self.state}); check that its agent is still making "
                "progress (its logs, disk space, download speed), or allow a longer deadline"
            )
        else:
            error = (
                f"device {self.device_id!r} sent nothing for {self.timeouts.inactivity:g} s "
                f"(inactivity timeout, last state {self.state}); check that the device is "
                f"online and its delivery agent is running and connected to the {channel} channel"
            )
        self.log.warning("delivery %s: %s", self.delivery_id, error)
        return await self._end(TIMED_OUT, error, "timeout")

    async def _record(self, state: str, **fields: Any) -> None:
        if self.records is not None:
            await self.records.transition(self.delivery_id, state, **fields)

    async def _end(
        self,
        state: str,
        error: str | None,
        failure: FailureKind | None,
        **fields: Any,
    ) -> DeliveryOutcome:
        self.state = state
        ended_at = utc_now()
        await self._record(state, at=ended_at, error=error, **fields)
        return DeliveryOutcome(
            delivery_id=self.delivery_id,
            device_id=self.device_id,
            attempt=self.request.attempt,
            state=state,
            started_at=self._started_at,
            ended_at=ended_at,
            error=error,
            failure=failure,
            links_issued=self.links_issued,
        )

"""One D2C reader for many concurrent delivery sessions.

A fleet of 1,000 devices is served by one `receive()` loop: the dispatcher reads every
device-to-cloud message once and hands it to the session whose `deliveryId` it carries,
after checking that it came from that session's device. Everything else is logged and
skipped: no `deliveryId`, a delivery that is not ours, the wrong device. A state that
arrives after its delivery ended is logged and recorded as ignored.

The reader never swallows an error. When it fails (the channel broke, a record could not
be written), every waiting session receives the error and raises it, and leaving the
dispatcher raises it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from modelferry.delivery.channels.base import DeliveryChannel
from modelferry.delivery.protocol.messages import Message, StateReport, parse, utc_now
from modelferry.delivery.records.writer import AsyncDeliveryRecords
from modelferry.errors import ChannelError, DeliveryError, MalformedMessageError

Log = logging.Logger | logging.LoggerAdapter[Any]

_log = logging.getLogger(__name__)

#: Finished deliveries remembered to recognise their late messages (bounded memory).
REMEMBERED_DELIVERIES = 10_000


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class Subscription:
    """The D2C messages of one delivery, as the dispatcher routes them."""

    def __init__(
        self, delivery_id: str, device_id: str, records: AsyncDeliveryRecords | None = None
    ) -> None:
        self.delivery_id = delivery_id
        self.device_id = device_id
        self.records = records
        self._queue: asyncio.Queue[Message | _Failure] = asyncio.Queue()

    def put(self, item: Message | _Failure) -> None:
        """Queue a message, or a failure of the channel, for the delivery to read."""
        self._queue.put_nowait(item)

    def ready(self) -> list[Message]:
        """The messages already waiting, without waiting for more."""
        ready: list[Message] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Failure):
                self._queue.put_nowait(item)
                raise item.error
            ready.append(item)
        return ready

    def leftovers(self) -> list[Message]:
        """Empty the queue: the messages in it (a reader failure is not one)."""
        left: list[Message] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Message):
                left.append(item)
        return left

    async def get(self) -> Message:
        """The next message; raises the reader's error when the reader failed."""
        item = await self._queue.get()
        if isinstance(item, _Failure):
            # Leave it for any later call: a failed reader stays failed.
            self._queue.put_nowait(item)
            raise item.error
        return item


class DeliveryDispatcher:
    """Reads D2C messages from one channel and routes them to delivery sessions.

    Use it as an async context manager around all the sessions it serves. Entering opens
    the channel with `since` taken now (minus `clock_margin`), before any newDelivery is
    sent, so no answer is missed; leaving stops the reader and closes the channel.

    Args:
        channel: the cloud side of a transport; the dispatcher opens and closes it.
        log: where routing decisions are logged; default this module's logger.
        clock_margin: how far before now to start reading. A hub stamps D2C messages with
            its own clock; reading a little further back costs only skipped messages.
    """

    def __init__(
        self,
        channel: DeliveryChannel,
        *,
        log: Log | None = None,
        clock_margin: timedelta = timedelta(seconds=5),
    ) -> None:
        self.channel = channel
        self.log: Log = log or _log
        self.clock_margin = clock_margin
        self.since: datetime | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._ended: OrderedDict[str, Subscription] = OrderedDict()
        self._reader: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._stopping = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(raise_failure=exc is None)

    async def start(self) -> None:
        """Open the channel reading from now (minus the margin) and start the reader."""
        if self._reader is not None:
            raise DeliveryError("this dispatcher has already been started")
        self.since = utc_now() - self.clock_margin
        await self.channel.open(self.since)
        self._reader = asyncio.create_task(self._read(), name=f"d2c-reader-{self.channel.name}")

    async def stop(self, *, raise_failure: bool = True) -> None:
        """Stop the reader and close the channel; raise the reader's error, if it failed."""
        self._stopping = True
        reader, self._reader = self._reader, None
        try:
            await self.channel.close()
        finally:
            if reader is not None:
                reader.cancel()
                # wait() neither raises the reader's end nor hides our own cancellation.
                await asyncio.wait([reader])
        if raise_failure and self._failure is not None:
            raise self._failure

    def subscribe(
        self, delivery_id: str, device_id: str, records: AsyncDeliveryRecords | None = None
    ) -> Subscription:
        """Start routing the messages of `delivery_id` (from `device_id`) to a subscription.

        States that arrive after the delivery ended are recorded as ignored in `records`.

        Subscribe *before* sending the newDelivery, so no answer is missed. Raises the
        reader's error when the reader has failed.
        """
        if self._reader is None:
            raise DeliveryError("the dispatcher is not running: use `async with dispatcher:`")
        if delivery_id in self._subscriptions or delivery_id in self._ended:
            raise DeliveryError(f"delivery {delivery_id!r} is already being dispatched")
        if self._failure is not None:
            raise self._failure
        subscription = Subscription(delivery_id, device_id, records)
        self._subscriptions[delivery_id] = subscription
        return subscription

    async def unsubscribe(self, delivery_id: str) -> None:
        """Stop routing `delivery_id`; its later messages are logged as late and ignored.

        Messages routed to the subscription but not consumed are handled as late ones.
        """
        subscription = self._subscriptions.pop(delivery_id, None)
        if subscription is None:
            return
        self._ended[delivery_id] = subscription
        while len(self._ended) > REMEMBERED_DELIVERIES:
            self._ended.popitem(last=False)
        for message in subscription.leftovers():
            await self._late(message, subscription.records)

    async def send(self, message: Message) -> None:
        """Send a C2D message on the channel (raises `ChannelError` when it cannot)."""
        await self.channel.send(message)

    @property
    def failure(self) -> BaseException | None:
        """The error the reader stopped with, if it failed."""
        return self._failure

    @property
    def active(self) -> int:
        """Deliveries currently routed."""
        return len(self._subscriptions)

    async def _read(self) -> None:
        try:
            async for message in self.channel.receive():
                await self._route(message)
            if not self._stopping:
                raise ChannelError(
                    f"the {self.channel.name} channel stopped delivering device messages while "
                    f"{len(self._subscriptions)} delivery(ies) waited for answers"
                )
        except Exception as exc:
            self._failure = exc
            for subscription in self._subscriptions.values():
                subscription.put(_Failure(exc))
            self.log.error("the device message reader failed: %s", exc)

    async def _route(self, message: Message) -> None:
        delivery_id = message.delivery_id
        if not delivery_id:
            self.log.warning(
                "ignored a message from device %r without a deliveryId (properties: %s)",
                message.device_id,
                dict(message.properties),
            )
            return
        subscription = self._subscriptions.get(delivery_id)
        if subscription is None:
            ended = self._ended.get(delivery_id)
            if ended is None:
                self.log.debug(
                    "ignored a message from device %r for delivery %r, which is not ours",
                    message.device_id,
                    delivery_id,
                )
            elif ended.device_id == message.device_id:
                await self._late(message, ended.records)
            else:
                self._wrong_device(message, ended.device_id)
            return
        if message.device_id != subscription.device_id:
            self._wrong_device(message, subscription.device_id)
            return
        subscription.put(message)

    def _wrong_device(self, message: Message, expected: str) -> None:
        self.log.warning(
            "ignored a message for delivery %r from device %r: that delivery goes to %r",
            message.delivery_id,
            message.device_id,
            expected,
        )

    async def _late(self, message: Message, records: AsyncDeliveryRecords | None) -> None:
        try:
            event = parse(message)
        except MalformedMessageError as exc:
            self.log.warning("ignored a malformed message after its delivery ended: %s", exc)
            return
        except Exception as exc:
            self.log.warning(
                "ignored a message that could not be read after its delivery ended (%s: %s)",
                type(exc).__name__,
                str(exc)[:200],
            )
            return
        if not isinstance(event, StateReport):
            self.log.info(
                "ignored a %s from device %r: delivery %r has ended",
                type(event).__name__,
                event.device_id,
                event.delivery_id,
            )
            return
        self.log.info(
            "ignored state %r from device %r: delivery %r has already ended",
            event.state,
            event.device_id,
            event.delivery_id,
        )
        if records is not None:
            await records.transition(
                event.delivery_id,
                event.state,
                reported_at=event.timestamp,
                attributes=event.attributes,
                ignore="arrived after the delivery ended",
            )

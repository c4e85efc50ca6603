"""Fakes of the two Azure SDK clients `IoTHubChannel` uses, served by a `FakeIoTHub`.

Their public methods keep the SDK's signatures (a test compares them with
`inspect.signature`); what they do is described in `modelferry.testing.iothub.hub`.
`FakeIoTHub` makes a subclass of each bound to itself (`hub.RegistryManager`,
`hub.ConsumerClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from modelferry.delivery.channels.iothub.auth import parse_connection_string
from modelferry.delivery.channels.iothub.sdk import OnError, OnEvent, azure_sdk

with azure_sdk("FakeIoTHub"):
    from azure.eventhub import EventData, LoadBalancingStrategy
    from azure.eventhub import TransportType as EventHubTransport
    from azure.eventhub.aio import PartitionContext
    from azure.eventhub.aio._eventprocessor.in_memory_checkpoint_store import (
        InMemoryCheckpointStore,
    )
    from azure.eventhub.exceptions import AuthenticationError
    from azure.iot.hub.iothub_registry_manager import (  # type: ignore[import-untyped]
        TransportType as IoTHubTransport,
    )

if TYPE_CHECKING:
    from modelferry.testing.iothub.hub import FakeIoTHub

__all__ = ["FakeEventHubConsumerClient", "FakeIoTHubRegistryManager", "Waker"]

logger = logging.getLogger(__name__)

SEND_FAILURE = "C2D message send failure"


class Waker:
    """An asyncio.Event that any thread may set."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        """Set the event, from the loop's own thread or any other."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.event.set()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, timeout: float | None = None) -> None:
        """Wait until woken or `timeout` seconds pass, then reset the event."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


class FakeIoTHubRegistryManager:
    """`azure.iot.hub.IoTHubRegistryManager`'s C2D side, on a `FakeIoTHub`."""

    hub: ClassVar[FakeIoTHub]

    def __init__(self, connection_string: str) -> None:
        pairs = parse_connection_string(connection_string)
        if not all(pairs.get(k) for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey")):
            raise ValueError("Invalid Connection String - Incomplete")
        self._authorized = (
            pairs["HostName"] == self.hub.hostname
            and pairs["SharedAccessKey"] == self.hub.service_key
        )
        self.amqp_svc_client: _FakeAmqpClient | None = _FakeAmqpClient()

    @classmethod
    def from_connection_string(
        cls, connection_string: str, transport_type: Any = IoTHubTransport.Amqp
    ) -> FakeIoTHubRegistryManager:
        """A registry manager for `connection_string`, as the SDK builds one."""
        return cls(connection_string)

    def send_c2d_message(
        self,
        device_id: str,
        message: str | bytes,
        properties: dict[str, Any] = {},  # noqa: B006 - the SDK's own signature
    ) -> None:
        """Send a C2D message to `device_id` on the fake hub, failing as the SDK does.

        Raises:
            Exception: the SDK's send failure, when closed or signed in with a wrong key.
        """
        if self.amqp_svc_client is None or self.amqp_svc_client.closed:
            raise Exception(SEND_FAILURE)
        if not self._authorized:
            self.hub.refusals.append("the service key or host name is wrong")
            raise Exception(SEND_FAILURE)
        body = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        self.hub._accept_c2d(device_id, body, properties)


class _FakeAmqpClient:
    def __init__(self) -> None:
        self.closed = False

    def disconnect_sync(self) -> None:
        self.closed = True


class FakeEventHubConsumerClient:
    """`azure.eventhub.aio.EventHubConsumerClient` on a `FakeIoTHub`'s built-in endpoint."""

    hub: ClassVar[FakeIoTHub]
    retry_interval_s: ClassVar[float] = 0.05

    def __init__(self, conn_str: str, consumer_group: str, eventhub_name: str | None) -> None:
        pairs = parse_connection_string(conn_str)
        entity = eventhub_name or pairs.get("EntityPath")
        if not entity:
            raise ValueError("No EventHub specified")
        if not pairs.get("Endpoint", "").startswith("sb://"):
            raise ValueError("Invalid Endpoint on the Connection String.")
        self.consumer_group = consumer_group
        self._denied = (
            pairs.get("SharedAccessKey") != self.hub.events_key or entity != self.hub.eventhub_name
        )
        self._receiving = False
        self._closed = False
        self._wakers: set[Waker] = set()

    @classmethod
    def from_connection_string(
        cls,
        conn_str: str,
        consumer_group: str,
        *,
        eventhub_name: str | None = None,
        logging_enable: bool = False,
        http_proxy: dict[str, str | int] | None = None,
        auth_timeout: float = 60,
        user_agent: str | None = None,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 120,
        retry_mode: str = "exponential",
        idle_timeout: float | None = None,
        transport_type: EventHubTransport = EventHubTransport.Amqp,
        checkpoint_store: Any = None,
        load_balancing_interval: float = 30,
        partition_ownership_expiration_interval: float | None = None,
        load_balancing_strategy: str | LoadBalancingStrategy = LoadBalancingStrategy.GREEDY,
        custom_endpoint_address: str | None = None,
        connection_verify: str | None = None,
        ssl_context: Any = None,
        uamqp_transport: bool = False,
        **kwargs: Any,
    ) -> FakeEventHubConsumerClient:
        """A consumer client for `conn_str`, as the SDK builds one; tuning options are ignored."""
        return cls(conn_str, consumer_group, eventhub_name)

    def _check_access(self) -> None:
        if self._closed:
            raise ValueError("the consumer client is closed")
        if self._denied:
            raise AuthenticationError("CBS Token authentication failed. Status code: 401")
        if self.hub._events_error is not None:
            raise self.hub._events_error

    async def get_partition_ids(self) -> list[str]:
        """The ids of the fake hub's partitions."""
        self._check_access()
        return list(self.hub.partitions)

    async def receive(
        self,
        on_event: OnEvent,
        *,
        max_wait_time: float | None = None,
        partition_id: str | None = None,
        owner_level: int | None = None,
        prefetch: int = 300,
        track_last_enqueued_event_properties: bool = False,
        starting_position: Any = None,
        starting_position_inclusive: bool | dict[str, bool] = False,
        on_error: OnError | None = None,
        on_partition_initialize: Callable[[PartitionContext], Awaitable[None]] | None = None,
        on_partition_close: Callable[[PartitionContext, Any], Awaitable[None]] | None = None,
    ) -> None:
        """Call `on_event` for each event on the partitions until closed, as the SDK does.

        Access errors are reported to `on_error` and retried, as the SDK does; a second
        concurrent `receive` raises `ValueError`.
        """
        if self._receiving:
            raise ValueError("This consumer client is already receiving events.")
        hub = self.hub
        self._receiving = True
        waker = Waker()
        with hub._lock:
            hub._consumers.add(waker)
        self._wakers.add(waker)
        partitions = [partition_id] if partition_id else list(hub.partitions)
        store = InMemoryCheckpointStore()  # type: ignore[no-untyped-call]
        contexts = {
            pid: PartitionContext(hub.namespace, hub.eventhub_name, self.consumer_group, pid, store)
            for pid in partitions
        }
        inclusive = bool(starting_position_inclusive)
        cursors = {pid: hub._first_index(pid, starting_position, inclusive) for pid in partitions}
        try:
            while not self._closed:
                if hub._receive_crash is not None:
                    raise hub._receive_crash
                try:
                    self._check_access()
                except Exception as error:
                    # The SDK does not raise here: it reports the error and tries again.
                    await _report(on_error, None, error)
                    await waker.wait(self.retry_interval_s)
                    continue
                for pid in partitions:
                    for event in hub._events_from(pid, cursors[pid]):
                        cursors[pid] += 1
                        try:
                            await on_event(contexts[pid], EventData.from_bytes(event.payload))
                        except Exception as error:
                            await _report(on_error, contexts[pid], error)
                await waker.wait()
        finally:
            with hub._lock:
                hub._consumers.discard(waker)
            self._wakers.discard(waker)
            self._receiving = False

    async def close(self) -> None:
        """Stop every `receive` of this client."""
        self._closed = True
        for waker in list(self._wakers):
            waker.wake()

    async def __aenter__(self) -> FakeEventHubConsumerClient:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()


async def _report(
    on_error: OnError | None, context: PartitionContext | None, error: Exception
) -> None:
    if on_error is None:
        logger.warning("fake Event Hubs receiver: %r", error)
        return
    try:
        await on_error(context, error)
    except Exception as again:
        logger.warning("on_error raised %r", again)

"""An asyncio front for one paho-mqtt client: connect, reconnect, publish awaiting PUBACK.

The client runs on the event loop without a thread of its own (`loop`). Delivery:
QoS 1 with a persistent session (MQTT 5: clean start off and a session expiry; 3.1.1: clean
session off). A message published while the connection is down stays in paho's queue and
goes out after the automatic reconnect (exponential backoff with full jitter,
`modelferry.retrying`: clients that lost the same broker do not come back in lockstep);
paho resends any publish whose PUBACK was lost. Received messages are acknowledged by paho
as they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from modelferry.delivery.channels.mqtt.loop import PahoLoopAdapter
from modelferry.errors import ChannelError
from modelferry.retrying import Backoff, RetryNotice

logger = logging.getLogger(__name__)

Credentials = Callable[[], tuple[str | None, str | None]]
"""Called before every connection attempt: (username, password); a SAS token may change."""


@dataclass(frozen=True)
class ClientSettings:
    """Everything one connection needs; built by the transports, never by users."""

    host: str
    port: int
    client_id: str
    protocol: MQTTProtocolVersion
    credentials: Credentials
    tls: ssl.SSLContext | None
    keepalive_s: int
    session_expiry_s: int
    connect_timeout_s: float
    reconnect_min_s: float
    reconnect_max_s: float
    max_inflight: int
    max_queued: int

    @property
    def where(self) -> str:
        """`host:port as 'client id'`, for log and error messages."""
        return f"{self.host}:{self.port} as {self.client_id!r}"


class _Refused(Exception):
    """The broker answered CONNACK with a failure reason."""

    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(str(reason))
        self.reason = reason


class _Lost(Exception):
    """The connection was lost: the first failure of a reconnect."""


class AsyncMqttClient:
    """One MQTT connection on the running event loop; see the module docstring.

    `on_message` is called on the loop thread for every message received; it must not raise.
    `subscription`, when given, is subscribed at QoS 1 on the first connection and again
    whenever the broker has no session for the client. `sleep` waits between reconnect
    attempts; tests pass one that records the waits.
    """

    def __init__(
        self,
        settings: ClientSettings,
        on_message: Callable[[paho.MQTTMessage], None],
        subscription: str | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._on_message_cb = on_message
        self._subscription = subscription
        self._loop = asyncio.get_running_loop()
        self._client = self._new_client()
        self._driver = PahoLoopAdapter(self._client)
        self._connack: asyncio.Future[tuple[ReasonCode, bool]] | None = None
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._established = False
        self._closing = False
        self._gone = asyncio.Event()
        self._reconnector: asyncio.Task[None] | None = None

    def _new_client(self) -> paho.Client:
        s = self.settings
        v5 = s.protocol == MQTTProtocolVersion.MQTTv5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=None if v5 else False,
            protocol=s.protocol,
            # Else a refused protocol version makes paho reconnect, blocking, on the loop.
            reconnect_on_failure=False,
        )
        client.connect_timeout = s.connect_timeout_s
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(s.max_queued)
        if s.tls is not None:
            client.tls_set_context(s.tls)
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry_s
        client.connect_async(
            s.host,
            s.port,
            keepalive=s.keepalive_s,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection."""
        return self._client.is_connected()

    # -- connecting ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and subscribe; `ChannelError` when the broker is unreachable or refuses."""
        s = self.settings
        try:
            await self._attempt()
            if self._subscription is not None:
                await self._subscribe(self._subscription)
        except _Refused as exc:
            await self.close()
            raise ChannelError(
                f"the MQTT broker at {s.where} refused the connection: {exc.reason}"
            ) from None
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise ChannelError(
                f"cannot connect to the MQTT broker at {s.where}: {_describe(exc)}"
            ) from None
        except BaseException:
            await self.close()
            raise
        self._established = True
        self._driver.start_keepalive()

    async def _attempt(self) -> bool:
        """One connection attempt; returns whether the broker kept a session for us."""
        username, password = self.settings.credentials()
        self._client.username_pw_set(username, password)
        await self._driver.run_blocking(self._client.reconnect)
        # Only now: the CONNACK is read by the socket watch that call set up.
        self._connack = self._loop.create_future()
        try:
            reason, session_present = await asyncio.wait_for(
                self._connack, self.settings.connect_timeout_s
            )
        except TimeoutError:
            self._client.disconnect()
            raise TimeoutError("no CONNACK from the broker") from None
        if reason.is_failure:
            raise _Refused(reason)
        return session_present

    def _schedule_reconnect(self) -> None:
        if self._closing or not self._established:
            return
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        s = self.settings

        def log(retry: RetryNotice) -> None:
            if isinstance(retry.error, _Lost):
                return  # _on_disconnect has said so
            if isinstance(retry.error, _Refused):
                logger.warning(
                    "the MQTT broker at %s refused to reconnect: %s", s.where, retry.error
                )
            else:
                logger.info(
                    "reconnecting to the MQTT broker at %s: %s", s.where, _describe(retry.error)
                )

        backoff = Backoff(s.reconnect_min_s, s.reconnect_max_s)
        retrying = backoff.async_retrying(
            (_Lost, _Refused, OSError, TimeoutError, ChannelError), on_retry=log, sleep=self._sleep
        )
        async for attempt in retrying:
            with attempt:
                if self._closing:
                    return
                if attempt.retry_state.attempt_number == 1:
                    # The loss is the first failure, so even the first try waits: a fleet
                    # that lost the same broker must not all knock at once.
                    raise _Lost
                session_present = await self._attempt()
                if not session_present and self._subscription is not None:
                    await self._subscribe(self._subscription)
        logger.info("reconnected to the MQTT broker at %s", s.where)

    # -- publishing and subscribing ------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, timeout_s: float) -> ReasonCode:
        """Publish at QoS 1 and wait for the PUBACK; its reason code is returned.

        While the connection is down the message waits in paho's queue and goes out after
        the reconnect.

        Raises:
            ChannelError: the client is closed, its queue is full, or no PUBACK came within
                `timeout_s` (the message may still be delivered later).
        """
        await self._driver.idle()
        if self._closing:
            raise ChannelError(f"the MQTT connection {self.settings.where} is closed")
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise ChannelError(
                f"MQTT client {self.settings.where} cannot queue a message: "
                f"{paho.error_string(info.rc)}"
            )
        future: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._acks[info.mid] = future
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            state = "connected" if self.connected else "disconnected, reconnecting"
            raise ChannelError(
                f"the MQTT broker at {self.settings.where} did not acknowledge a message "
                f"within {timeout_s:g} s ({state}); it may still be delivered later"
            ) from None
        finally:
            self._acks.pop(info.mid, None)

    async def _subscribe(self, topic: str) -> None:
        await self._driver.idle()
        rc, mid = self._client.subscribe(topic, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ChannelError(f"cannot subscribe to {topic!r}: {paho.error_string(rc)}")
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subacks[mid] = future
        try:
            reasons = await asyncio.wait_for(future, self.settings.connect_timeout_s)
        except TimeoutError:
            raise ChannelError(
                f"the MQTT broker at {self.settings.where} did not confirm the "
                f"subscription to {topic!r}"
            ) from None
        finally:
            self._subacks.pop(mid, None)
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            raise ChannelError(
                f"the MQTT broker at {self.settings.where} refused the subscription to "
                f"{topic!r}: {', '.join(refused)}"
            )

    # -- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """Disconnect, keeping the session on the broker. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        reconnector = self._reconnector
        if reconnector is not None and not reconnector.done():
            reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconnector
        await self._driver.idle()
        if self._client.socket() is not None:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone.wait(), 2.0)
        await self._driver.stop()
        failure = ChannelError(f"the MQTT connection {self.settings.where} was closed")
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(failure)
        for suback in self._subacks.values():
            if not suback.done():
                suback.set_exception(failure)
        if self._connack is not None:
            self._connack.cancel()

    # -- paho's MQTT callbacks, on the loop thread --------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((reason, flags.session_present))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(f"connection closed: {reason}"))
        if self._closing:
            self._gone.set()
            return
        if self._established:
            why = "connection lost"
            if flags.is_disconnect_packet_from_server:
                why = f"the broker disconnected the client: {reason}"
            logger.warning(
                "lost the MQTT broker at %s (%s); reconnecting", self.settings.where, why
            )
        self._schedule_reconnect()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        future = self._acks.get(mid)
        if future is not None and not future.done():
            future.set_result(reason)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        future = self._subacks.get(mid)
        if future is not None and not future.done():
            future.set_result(reasons)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            self._on_message_cb(message)
        except Exception:
            # Raising here would unwind paho's packet parser in the middle of a read.
            logger.exception("handling an MQTT message on %s failed", self.settings.where)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

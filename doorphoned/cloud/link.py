"""The MQTT v5 connection: paho-mqtt on its own thread, every callback handed to the asyncio loop.

Why our own connection loop instead of paho's automatic reconnect: the reconnect delay must grow
exponentially *with jitter*, so a fleet of units coming back after a broker outage does not hammer
it in lock-step, and the last connection error must be visible in ``cloud status``.

The session is persistent (``clean_start=False`` + ``SessionExpiryInterval``), so commands sent
while the unit was away are delivered when it returns; the LWT sets the retained ``state`` to
``online: false`` when the connection dies without a goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from doorphoned.cloud.config import CloudConfig

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0


# MQTT v5 subscription identifiers are 1 .. 2**28 - 1 (variable byte integer).
SUBSCRIPTION_ID_MAX = 268_435_455


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None
    retained: bool = False
    live: bool = False  # came through a live-only subscription made in this very connection (see MqttLink)


class LinkHandler:
    """What the link tells its owner, always on the asyncio loop."""

    def connected(self) -> None: ...
    def disconnected(self, reason: str) -> None: ...
    def message(self, message: Incoming) -> None: ...
    def published(self, mid: int) -> None: ...


class MqttLink:
    """One MQTT v5 connection with a persistent session.

    ``subscriptions`` are persistent: what arrives for them while the unit is away is kept by the broker
    and delivered when it returns (commands, which carry their own id and age). ``live_only`` ones are
    for messages that must never act late or again (Home Assistant's lock commands carry neither):
    each connection subscribes them anew with "do not send retained messages" (retain handling 2) and a
    fresh random subscription identifier. The broker stamps every message with the identifier of the
    subscription it matched *when it matched*, so one queued in the session while the unit was away, or
    left unacknowledged by an earlier connection, carries an old identifier (or none): only messages
    that carry this connection's identifier and no retain flag are marked ``live``.
    """

    def __init__(self, config: CloudConfig, root: str, will: bytes, handler: LinkHandler,
                 loop: asyncio.AbstractEventLoop, subscriptions: tuple[str, ...] = ("cmd/+",),
                 live_only: tuple[str, ...] = ()) -> None:
        self.config = config
        self.root = root
        self.subscriptions = subscriptions
        self.live_only = live_only
        self._live_id = 0
        self._handler = handler
        self._loop = loop
        self._stop = threading.Event()
        self.connected = False
        self.last_error = ""
        self.connects = 0
        self._refused = ""
        self.client = self._make_client(will)
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)

    def _make_client(self, will: bytes) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.device_id, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(cfg.inflight)
        client.max_queued_messages_set(0)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if urlsplit(cfg.url).scheme == "mqtts":
            client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                           keyfile=cfg.key_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.will_set(self.root + "state", will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        # Only the mqtt thread may touch the (TLS) socket: OpenSSL objects are not safe for a read on one
        # thread and a write on another. With a write-registration hook set, paho's publish() only queues
        # the packet and wakes our loop() through its socket pair, instead of writing from the caller.
        client.on_socket_register_write = _no_direct_writes
        client.on_socket_open = _no_delay
        return client

    def start(self) -> None:
        self._thread.start()

    def stop(self, goodbye: Callable[[], None] | None = None) -> None:
        """Publish a last message (the offline state) if connected, then disconnect and join."""
        if goodbye is not None and self.connected:
            goodbye()
        self._stop.set()
        if self.connected:
            self.client.disconnect()
        self._thread.join(5)

    # ---- the connection loop (mqtt thread)
    def _run(self) -> None:
        url = urlsplit(self.config.url)
        host, port = url.hostname or "localhost", url.port or (8883 if url.scheme == "mqtts" else 1883)
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                self._session(host, port)
                delay = BACKOFF_FIRST
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
            if self._stop.is_set():
                break
            wait = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not cryptography
            log.warning("cloud: reconnecting to %s:%d in %.1f s (%s)", host, port, wait, self.last_error)
            self._stop.wait(wait)
            delay = min(delay * 2, self.config.reconnect_max)

    def _session(self, host: str, port: int) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry
        self._refused = ""
        self.client.connect(host, port, keepalive=self.config.keepalive, clean_start=False, properties=props)
        started = time.monotonic()
        while not self._stop.is_set():
            rc = self.client.loop(timeout=0.5)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if time.monotonic() - started < 2 or self._refused:
                    raise ConnectionError(self._refused or mqtt.error_string(rc))
                self._fail(f"connection lost: {mqtt.error_string(rc)}")
                return
        self.client.loop(timeout=0.5)  # let the DISCONNECT go out

    def _fail(self, reason: str) -> None:
        self.last_error = reason
        if self.connected:
            self.connected = False
            self._loop.call_soon_threadsafe(self._handler.disconnected, reason)

    # ---- paho callbacks (mqtt thread) -> loop
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = f"broker refused the connection: {reason}"
            log.error("cloud: %s", self._refused)
            return
        self.connected = True
        self.connects += 1
        self.last_error = ""
        for topic in self.subscriptions:
            client.subscribe(self.root + topic, qos=1)
        if self.live_only:
            self._subscribe_live(client, props)
        self._loop.call_soon_threadsafe(self._handler.connected)

    def _subscribe_live(self, client: mqtt.Client, connack: Any) -> None:
        if getattr(connack, "SubscriptionIdentifierAvailable", 1) == 0:
            log.error("cloud: the broker does not support subscription identifiers: messages on %s cannot be "
                      "told from stale ones and are all ignored", ", ".join(self.live_only))
        self._live_id = random.randint(1, SUBSCRIPTION_ID_MAX)  # noqa: S311 - a marker, not a secret
        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = self._live_id
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        client.subscribe([(self.root + topic, options) for topic in self.live_only], properties=props)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._fail(f"disconnected: {reason}")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        response = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        ids = getattr(props, "SubscriptionIdentifier", None) if props else None
        live = not message.retain and self._live_id != 0 and self._live_id in (ids or ())
        incoming = Incoming(message.topic, bytes(message.payload), response, correlation, bool(message.retain), live)
        self._loop.call_soon_threadsafe(self._handler.message, incoming)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._loop.call_soon_threadsafe(self._handler.published, mid)

    # ---- sending (any thread; paho locks internally)
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                correlation: bytes | None = None) -> int | None:
        """Hand a message to paho; returns its mid, or None when not connected."""
        if not self.connected:
            return None
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Commands and their replies are small packets: without TCP_NODELAY, Nagle's algorithm and delayed
    ACKs hold each one back ~40 ms."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _no_direct_writes(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """See MqttLink._make_client: the mqtt thread's loop() does every write."""


def state_json(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":"), default=str).encode()

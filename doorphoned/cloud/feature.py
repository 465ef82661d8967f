"""The cloud feature: events out through the durable outbox, commands in, retained state.

Topics (contract, DESIGN §7) under ``<topic_prefix>/<device_id>/``:

* ``evt/<type>``: events, QoS 1, from the outbox in ``seq`` order;
* ``cmd/<name>``: commands, answered on the MQTT5 response topic with the correlation data;
* ``state``: retained; ``online: false`` by LWT when the connection dies.

Commands execute at most once: the id is recorded *before* the handler runs, so a redelivery of a
command whose execution was interrupted by a crash is answered as interrupted, never run again. A
command refused before it runs (expired, unknown name) is not recorded: sent again, it is judged again.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import gzip
import hashlib
import json
import logging
import math
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from doorphoned import __version__
from doorphoned.cloud.config import CloudConfig
from doorphoned.cloud.folds import FoldedRuns
from doorphoned.cloud.homeassistant import HaSections, discovery_messages
from doorphoned.cloud.link import Incoming, LinkHandler, MqttLink, state_json
from doorphoned.cloud.outbox import Outbox
from doorphoned.core import logsetup
from doorphoned.core.bus import EventBus
from doorphoned.core.clock import Clock, Timer
from doorphoned.core.commands import CLOUD, Caller, Command, CommandError, Registry, arg_int
from doorphoned.core.events import (
    AccessDecided,
    AlarmChanged,
    CallEnded,
    CallRinging,
    CaptureTaken,
    DoorStatusChanged,
    Event,
    LockFault,
    MonitorChanged,
    MotionDetected,
    PackageDelivered,
    RelayChanged,
    SyncResult,
    TempKeyUsed,
)
from doorphoned.core.feature import Feature
from doorphoned.core.ports import DoorState, Recorders
from doorphoned.core.store import Store
from doorphoned.core.strictjson import StrictJsonError, Throttled, loads


class Unit(Protocol):
    """What the cloud link reports about the unit (retained state, Home Assistant discovery) and waits for."""

    @property
    def config(self) -> HaSections:
        """The running configuration."""

    @property
    def started(self) -> asyncio.Event:
        """Set once every feature has started (the link connects then: commands find the doors running)."""

    def door_states(self) -> list[DoorState]:
        """Every running door's lock and contact."""

    def reader_states(self) -> dict[str, str]:
        """Each reader feature's state (``ok``, ``starting``, ``fault``...)."""

    def monitor_state(self) -> dict[str, Any] | None:
        """The live monitor stream's state, viewers and encoder figures; None when it is off."""

    def sync_version(self) -> int | None:
        """The credential version the unit holds (None before the first sync)."""

    def unit_identity(self) -> dict[str, str]:
        """The unit's id and public key (PEM): phones check the unit's signature with it (docs/phone.md)."""


log = logging.getLogger(__name__)

ID_MAX = 64
COMMANDS_KEPT_SECONDS = 7 * 86400
FUTURE_SLACK = 60.0
PARSE_IN_THREAD = 8192  # bytes
UPLOAD_ACK_TIMEOUT = 30.0
HA_COMMANDS = {b"OPEN": "OPEN", b"UNLOCK": "UNLOCK", b"LOCK": "LOCK"}  # byte for byte, as discovery declares them
ACK_RETRY = 1.0  # seconds before delivered events are removed again when the outbox could not be written
FOLD_RETRY = 5.0  # seconds before ending folded runs again when the store could not be written
# The response topic of the command being run: log.upload publishes its chunks under it.
_reply_topic: contextvars.ContextVar[str | None] = contextvars.ContextVar("reply_topic", default=None)


def event_body(event: Event) -> tuple[str, dict[str, Any]] | None:
    """The ``evt/<type>`` name and JSON body of a bus event, or None for events the cloud does not get."""
    ts = {"ts": event.ts.isoformat()}
    if isinstance(event, AccessDecided):
        return "access", {**ts, "door": event.door, "credential": event.credential, "subject": event.subject,
                          "granted": event.granted, "reason": event.reason, "user_id": event.user_id,
                          "key_id": event.key_id, "log_id": event.log_id,
                          **({"distance": event.distance} if event.credential == "face" else {})}
    if isinstance(event, TempKeyUsed):
        return "temp_key_used", {**ts, "key_id": event.key_id, "key_name": event.key_name, "door": event.door,
                                 "uses_left": event.uses_left}
    if isinstance(event, DoorStatusChanged):
        return "door_status", {**ts, "door": event.door, "open": event.is_open}
    if isinstance(event, AlarmChanged):
        return "alarm", {**ts, "kind": event.kind, "active": event.active, "door": event.door,
                         "detail": event.detail}
    if isinstance(event, LockFault):
        return "lock_fault", {**ts, "door": event.door, "reason": event.reason, "detail": event.detail}
    if isinstance(event, CallEnded):
        return "call", {**ts, "event": "end", "call_id": event.call_id or None, "call_type": event.type,
                        "direction": event.direction, "reason": event.reason,
                        "peer": event.peer, "target": event.target, "started": event.started.isoformat(),
                        "answered": event.answered.isoformat() if event.answered else None,
                        "duration_s": round(event.duration_s, 1), "opened": list(event.opened),
                        "quality": dict(event.quality), "log_id": event.log_id, "capture_id": event.capture_id,
                        "video": None if event.video is None else dict(event.video)}
    if isinstance(event, CaptureTaken):
        return "capture", {**ts, "capture_id": event.capture_id, "trigger": event.trigger, "door": event.door,
                           "log_id": event.log_id, "size": event.size}
    if isinstance(event, PackageDelivered):
        return "package", {**ts, "door": event.door, "key_id": event.key_id, "recipients": list(event.recipients),
                           "log_id": event.log_id, "access_log_id": event.access_log_id,
                           "capture_id": event.capture_id}
    if isinstance(event, MotionDetected):
        return "motion", {**ts, "door": event.door, "log_id": event.log_id, "zone": event.zone, "area": event.area,
                          "capture_id": event.capture_id}
    if isinstance(event, SyncResult):
        return "sync", {**ts, "result": event.result, "version": event.version, "detail": event.detail,
                        "rejected": event.rejected}
    return None


def ring_body(event: CallRinging) -> dict[str, Any]:
    """The live ``evt/call`` ``ring`` body (its monitor URLs are one-time secrets: this body is never stored)."""
    return {"ts": event.ts.isoformat(), "event": "ring", "call_id": event.call_id, "target": event.target,
            "door": event.door, "wave": event.wave, "capture_id": event.capture_id,
            "callees": [{"uri": c.uri, "monitor_url": c.monitor_url} for c in event.callees]}


class CloudFeature(Feature, LinkHandler):
    name = "cloud"

    def __init__(self, config: CloudConfig, store: Store, bus: EventBus, clock: Clock, unit: Unit,
                 commands: Registry, recorders: Recorders | None = None,
                 on_start: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(clock)
        self.config = config
        self._store = store
        self._bus = bus
        self._clock = clock
        self._unit = unit
        self._commands = commands  # the one registry: this feature answers its MQTT names
        self._recorders = recorders
        self._log_refused = Throttled(lambda line: log.warning("cloud: %s", line), monotonic=clock.monotonic)
        self._on_start = on_start
        self.root = f"{config.topic_prefix.rstrip('/')}/{config.device_id}/"
        self.link: MqttLink | None = None
        self.outbox: Outbox | None = None
        self.folds: FoldedRuns | None = None
        self._fold_timer: Timer | None = None
        self._motion_off: Timer | None = None
        self._mids: dict[int, int] = {}
        self._sent_upto = 0
        self._acks: list[int] = []
        self._state_due = False
        self._acked: dict[int, asyncio.Future[None]] = {}
        self.commands_seen = 0
        self.rings_sent = 0
        self.rings_dropped = 0

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.outbox = Outbox(self._store.db, self.config.outbox_max)
        self.folds = FoldedRuns(self._store.db, self._store, self.outbox)
        self._arm_folds()  # runs held before a restart still end
        self._prune_commands()
        for kind in (AccessDecided, TempKeyUsed, DoorStatusChanged, AlarmChanged, LockFault, SyncResult, CallEnded,
                     CaptureTaken, MotionDetected, PackageDelivered):
            self.on_stop(self._bus.subscribe(kind, self._on_event, self.name))
        self.on_stop(self._bus.subscribe(RelayChanged, self._on_relay, self.name))
        self.on_stop(self._bus.subscribe(CallRinging, self._on_ring, self.name))
        self.on_stop(self._bus.subscribe(MonitorChanged, lambda _e: self._state_soon(), self.name))
        if self._recorders is not None:  # access events are stored with their door-log entry
            self.on_stop(self._recorders.add_recorder(self._record, self._recount))
        self.spawn(self._connect(), "connect")

    async def _connect(self) -> None:
        """Join the broker once the daemon runs: the outbox records from the start, commands find doors."""
        await self._unit.started.wait()
        live_only = ("ha/door/+/set",) if self.config.ha_discovery else ()
        self.link = MqttLink(self.config, self.root, state_json(**self._state(online=False)), self,
                             asyncio.get_running_loop(), ("cmd/+",), live_only)
        self.link.start()
        log.info("cloud: connecting to %s as %s", self.config.url, self.config.device_id)
        if self._on_start is not None:
            self.spawn(self._on_start(), "resume")

    async def stop_feature(self) -> None:
        if self._fold_timer is not None:
            self._fold_timer.cancel()
            self._fold_timer = None
        self._remove_acked()
        if self.link is not None:
            link = self.link
            self.link = None
            offline = state_json(**self._state(online=False))

            def goodbye() -> None:
                link.publish(self.root + "state", offline, retain=True)

            await asyncio.to_thread(link.stop, goodbye)
            self._remove_acked()  # what the broker acknowledged while the link closed

    # ------------------------------------------------------------ events -> outbox -> broker
    def _record(self, event: Event) -> None:
        """Store an access event in the outbox inside the gate's transaction (before the door moves).

        A refusal folded into an earlier door-log entry is held instead (cloud/folds.py); a grant first ends
        the runs held for its door and credential (a valid PIN ends a keypad's streak), so their summaries
        precede it.
        """
        described = event_body(event)
        if described is None or self.outbox is None or self.folds is None:
            return
        if isinstance(event, AccessDecided):
            if event.folded:
                self.folds.hold(event.log_id, event.door, event.credential, event.ts.timestamp())
                if self._fold_timer is None:
                    self.later(0, self._arm_folds)
                return
            if event.granted:
                self.folds.end_source(event.door, event.credential)
        self.outbox.add(str(uuid.uuid4()), *described)

    def _arm_folds(self) -> None:
        """Wake when the earliest held run's window closes."""
        if self._fold_timer is not None:
            self._fold_timer.cancel()
            self._fold_timer = None
        due = self.folds.next_due() if self.folds is not None else None
        if due is not None:
            delay = max(0.0, due - self._clock.now().timestamp())
            self._fold_timer = self.later(delay + 0.01, self._end_due_folds)

    def _end_due_folds(self) -> None:
        self._fold_timer = None
        if self.folds is None:
            return
        try:
            ended = self.folds.end_due(self._clock.now().timestamp())
        except sqlite3.Error as exc:  # disk full: the runs stay held (nothing is lost) and end later
            log.error("cloud: cannot end folded refusal runs (%s); retrying", exc)
            self._recount()
            self._fold_timer = self.later(FOLD_RETRY, self._end_due_folds)
            return
        if ended:
            log.info("cloud: %d folded refusal run(s) ended: summaries queued", ended)
            self._pump()
        self._arm_folds()

    def _recount(self) -> None:
        if self.outbox is not None:
            try:
                self.outbox.recount()
            except sqlite3.Error:
                log.exception("cloud: cannot count the outbox")

    def _on_event(self, event: Event) -> None:
        described = event_body(event)
        if described is None or self.outbox is None:
            return
        kind, body = described
        if not getattr(event, "stored", False) and not getattr(event, "folded", False):
            self.outbox.add(str(uuid.uuid4()), kind, body)
        if isinstance(event, SyncResult):
            self._state_soon()
        if isinstance(event, DoorStatusChanged):
            self._state_soon()
            self._ha_publish(f"ha/door/{event.door}/contact", b"ON" if event.is_open else b"OFF")
        if isinstance(event, MotionDetected):
            self._ha_motion()
        if isinstance(event, AccessDecided) and not event.folded:  # a keypad burst is not an HA event storm
            self._ha_publish("ha/access", json.dumps({"event_type": "granted" if event.granted else "denied",
                                                      "door": event.door, "credential": event.credential,
                                                      "reason": event.reason}).encode(), retain=False)
        self._pump()

    def _on_ring(self, event: CallRinging) -> None:
        """A ringing call, live: published now (QoS 1) when connected, never through the outbox.

        A ring is worth something only while the call rings (the app shows the visitor and offers to
        answer); replayed after a reconnect it would announce a call that is over, with monitor URLs that
        are dead, and storing it would keep those secrets on disk. The call's end event (durable, in order)
        carries its id, capture and outcome, so the history misses nothing when a ring is not sent.
        """
        link = self.link
        payload = json.dumps({"id": str(uuid.uuid4()), "seq": None, "type": "call", **ring_body(event)},
                             separators=(",", ":")).encode()
        if link is None or not link.connected or link.publish(self.root + "evt/call", payload) is None:
            self.rings_dropped += 1
            log.info("cloud: ring of call %s not sent (not connected); its end event will be", event.call_id)
            return
        self.rings_sent += 1

    def _on_relay(self, event: RelayChanged) -> None:
        self._state_soon()
        self._ha_publish(f"ha/door/{event.door}/lock", b"UNLOCKED" if event.unlocked else b"LOCKED")

    # ------------------------------------------------------------ Home Assistant
    def _ha_publish(self, suffix: str, payload: bytes, retain: bool = True) -> None:
        if self.config.ha_discovery and self.link is not None:
            self.link.publish(self.root + suffix, payload, retain=retain)

    def _ha_motion(self) -> None:
        """The motion sensor ``ON`` now, ``OFF`` after the cooldown (no alert can come before it); a new
        alert moves the ``OFF`` on."""
        self._ha_publish("ha/motion", b"ON")
        if self._motion_off is not None:
            self._motion_off.cancel()
        delay = max(1.0, float(self._unit.config.motion.cooldown_s))
        self._motion_off = self.later(delay, self._ha_motion_off)

    def _ha_motion_off(self) -> None:
        self._motion_off = None
        self._ha_publish("ha/motion", b"OFF")

    def _ha_announce(self) -> None:
        if not self.config.ha_discovery or self.link is None:
            return
        for topic, payload in discovery_messages(self._unit.config, self.root):
            self.link.publish(topic, json.dumps(payload).encode(), retain=True)
        for door in self._unit.door_states():
            self._ha_publish(f"ha/door/{door.door}/lock", b"UNLOCKED" if door.unlocked else b"LOCKED")
            if door.is_open is not None:
                self._ha_publish(f"ha/door/{door.door}/contact", b"ON" if door.is_open else b"OFF")
        if self._unit.config.motion.enabled and self._motion_off is None:
            self._ha_publish("ha/motion", b"OFF")

    async def _ha_command(self, message: Incoming) -> None:
        """Home Assistant's ``OPEN``/``UNLOCK`` (exactly, nothing else) opens a door; ``LOCK`` is a no-op.

        Its protocol carries no id and no time, so freshness is the link's: only a message published
        while this connection was subscribed counts (``Incoming.live``); a retained one, or one the broker
        kept in the session while the unit was away, never opens a door.
        """
        door_text = message.topic.removeprefix(self.root + "ha/door/").removesuffix("/set")
        if not message.live:
            why = "retained" if message.retained else "stale (kept by the broker from before this connection)"
            self._log_refused(f"Home Assistant command for door {door_text[:10]!a} ignored: {why}")
            return
        command = HA_COMMANDS.get(message.payload)
        if not (door_text.isascii() and door_text.isdigit() and len(door_text) <= 2) or command is None:
            self._log_refused(f"Home Assistant command {message.payload[:20]!a} for door "
                              f"{door_text[:10]!a} ignored: expected OPEN, UNLOCK or LOCK")
            return
        if command == "LOCK":  # the door relocks by itself after its hold time
            return
        # The same command as the cloud's open_door, through the same registry: one path to the gate.
        try:
            await self._commands.check("mqtt", "open_door", {}).handler(
                {"door": int(door_text), "source": "home_assistant"}, CLOUD)
        except CommandError as exc:
            log.warning("Home Assistant open of door %s: %s", door_text, exc)

    def _pump(self) -> None:
        """Hand the next pending events to paho, keeping at most ``inflight`` unacknowledged."""
        link, outbox = self.link, self.outbox
        if link is None or outbox is None or not link.connected:
            return
        room = self.config.inflight - len(self._mids)
        while room > 0:
            batch = outbox.pending(self._sent_upto, min(room, 500))
            if not batch:
                return
            for event in batch:
                mid = link.publish(self.root + "evt/" + event.type, event.payload())
                if mid is None:
                    return
                self._mids[mid] = event.seq
                self._sent_upto = event.seq
            room -= len(batch)

    def published(self, mid: int) -> None:
        waiter = self._acked.pop(mid, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        seq = self._mids.pop(mid, None)
        if seq is None:
            return
        if not self._acks:
            self.later(0, self._flush_acks)  # acknowledgements that arrive together are removed together
        self._acks.append(seq)

    def _remove_acked(self) -> None:
        """At stop: what the broker acknowledged leaves the outbox now (its flush timer was cancelled), so it
        is not sent again after the restart."""
        if self._acks and self.outbox is not None:
            acks, self._acks = self._acks, []
            try:
                self.outbox.ack(acks)
            except sqlite3.Error as exc:  # sent again after the restart (same id: the cloud keeps one)
                log.error("cloud: cannot remove %d delivered events from the outbox at stop (%s)", len(acks), exc)

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        if self.outbox is not None:
            try:
                self.outbox.ack(acks)
            except sqlite3.Error as exc:  # disk full: keep them and try again (sent twice at worst, same id)
                log.error("cloud: cannot remove %d delivered events from the outbox (%s); retrying", len(acks), exc)
                self._acks = acks + self._acks
                self.later(ACK_RETRY, self._flush_acks)
                return
        self._pump()

    # ------------------------------------------------------------ connection
    def connected(self) -> None:
        log.log(25, "cloud: connected to %s", self.config.url)
        self._resend_unacknowledged()
        self._publish_state()
        self._ha_announce()
        self._pump()

    def _resend_unacknowledged(self) -> None:
        """Start the event stream again at the oldest event the broker has not acknowledged.

        What the last connection had in flight may never have reached the broker, and newer events must not
        overtake it (bench/chaos.py saw one delivered after seven newer ones across a broker restart). Sent
        again first, in seq order, it cannot be. A copy paho retransmits as well carries the same id: the
        cloud keeps the first.
        """
        self._mids.clear()
        self._sent_upto = 0

    def disconnected(self, reason: str) -> None:
        log.warning("cloud: %s", reason)

    # ------------------------------------------------------------ retained state
    def _state(self, online: bool) -> dict[str, Any]:
        described = {str(d.door): {"lock": "unlocked" if d.unlocked else "locked",
                                   "door": {True: "open", False: "closed", None: "unknown"}[d.is_open]}
                     for d in self._unit.door_states()}
        return {"online": online, "firmware": __version__, "doors": described, "readers": self._unit.reader_states(),
                "sync_version": self._unit.sync_version(), "ts": self._clock.now().isoformat(),
                "unit": self._unit.unit_identity(),
                **({"monitor": monitor} if (monitor := self._unit.monitor_state()) is not None else {})}

    def _state_soon(self) -> None:
        if self._state_due:
            return
        self._state_due = True
        self.later(0.2, self._publish_state)

    def _publish_state(self) -> None:
        self._state_due = False
        if self.link is not None:
            self.link.publish(self.root + "state", state_json(**self._state(online=True)), retain=True)

    # ------------------------------------------------------------ commands
    def message(self, message: Incoming) -> None:
        if self.config.ha_discovery and message.topic.startswith(self.root + "ha/door/"):
            self.spawn(self._ha_command(message), "ha-command")
            return
        if not message.topic.startswith(self.root + "cmd/"):
            log.warning("cloud: message on unexpected topic %r ignored", message.topic[:120])
            return
        self.spawn(self._command(message), "command")

    async def _command(self, message: Incoming) -> None:
        name = message.topic.removeprefix(self.root + "cmd/")
        topic = message.response_topic
        if topic is not None and (not topic.startswith(self.root + "reply/") or "#" in topic or "+" in topic
                                  or len(topic) > 200):
            log.warning("cloud: response topic outside %sreply/ refused", self.root)
            topic = None
        _reply_topic.set(topic)
        reply = await self.execute(name, message.payload)
        self.commands_seen += 1
        if message.response_topic is None:
            log.info("cloud: command %s has no response topic: no reply sent", name[:40])
            return
        if topic is None:
            return
        if self.link is not None:
            self.link.publish(message.response_topic, json.dumps(reply, default=str).encode(),
                              correlation=message.correlation)

    async def execute(self, name: str, payload: bytes) -> dict[str, Any]:
        """Validate, de-duplicate and run one command; always returns the reply ``{id, ok, error?, result?}``.

        A refusal is answered with the command's id whenever the id itself is usable, even if another
        part of the document broke a rule, so the cloud can match the error to what it sent.
        """
        if len(payload) > self.config.max_payload:
            return self._refuse(name, None, f"payload of {len(payload)} bytes is over the "
                                            f"{self.config.max_payload}-byte limit")
        try:  # a snapshot part of 60 KB takes milliseconds to check: off the loop, where doors wait
            request = await asyncio.to_thread(loads, payload) if len(payload) > PARSE_IN_THREAD else loads(payload)
        except StrictJsonError as exc:
            return self._refuse(name, _usable_id(exc.document), str(exc))
        if not isinstance(request, dict):
            return self._refuse(name, None, "a command is a JSON object")
        command_id = _usable_id(request)
        if command_id is None:
            return self._refuse(name, None, f"id must be text of 1-{ID_MAX} printable characters")
        seen = self._seen(command_id)
        if seen is not None:
            log.info("cloud: command id %s seen before: answered again, not run", command_id)
            return seen
        return await self._run(name, command_id, request)

    def _refuse(self, name: str, command_id: str | None, problem: str) -> dict[str, Any]:
        """The error reply to a command refused before it ran; logged, a burst of them rate-limited."""
        self._log_refused(f"command {name[:40]!a} refused: {problem}")
        return _error(command_id, problem)

    async def _run(self, name: str, command_id: str, request: dict[str, Any]) -> dict[str, Any]:
        problem = self._too_old(request.get("ts"))
        if problem:
            return self._refuse(name, command_id, problem)
        args = {k: v for k, v in request.items() if k not in ("id", "ts")}
        try:  # unknown command, undeclared field: the registry's refusal, the same as the control socket's
            command = self._commands.check("mqtt", name, args)
        except CommandError as exc:
            return self._refuse(name, command_id, str(exc))
        # Recorded before it runs: a crash mid-way can never lead to a second execution.
        try:
            self._store.db.execute("INSERT INTO cloud_commands (id, name, received, reply) VALUES (?, ?, ?, '')",
                                   (command_id, name[:64], self._clock.now().isoformat()))
        except sqlite3.Error as exc:  # a full or failed disk: answered, not run (nothing could be recorded)
            log.critical("cloud: cannot record command %s (%s): not run", command_id, exc)
            return _error(command_id, f"storage failure: {exc}; not run")
        try:
            reply = {"id": command_id, "ok": True, "result": await command.handler(args, CLOUD)}
        except CommandError as exc:
            reply = _error(command_id, str(exc))
        except Exception:
            log.exception("cloud: command %s failed", name)
            reply = _error(command_id, "internal error")
        try:
            self._store.db.execute("UPDATE cloud_commands SET reply = ? WHERE id = ?",
                                   (json.dumps(reply, default=str), command_id))
        except sqlite3.Error as exc:  # it ran: say so; a repeat of the id is answered "interrupted", not run
            log.error("cloud: cannot keep the reply to command %s (%s)", command_id, exc)
        return reply

    def _seen(self, command_id: str) -> dict[str, Any] | None:
        row = self._store.db.execute("SELECT reply FROM cloud_commands WHERE id = ?", (command_id,)).fetchone()
        if row is None:
            return None
        if not row[0]:
            return _error(command_id, "still running, or interrupted by a restart; not run again")
        reply: dict[str, Any] = json.loads(row[0])
        return reply

    def _too_old(self, ts: Any) -> str:
        now = self._clock.now().timestamp()
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
            sent = float(ts)
        elif isinstance(ts, str):
            try:
                sent = datetime.fromisoformat(ts).timestamp()
            except ValueError:
                return "ts must be epoch seconds or an ISO 8601 time with offset"
        else:
            return "ts (the time the command was sent, epoch seconds or ISO 8601) is required"
        if now - sent > self.config.command_max_age:
            return f"expired: sent {now - sent:.0f} s ago (limit {self.config.command_max_age:g} s)"
        if sent - now > FUTURE_SLACK:
            return "ts is in the future (check the cloud's or the unit's clock)"
        return ""

    def _prune_commands(self) -> None:
        cutoff = self._clock.now() - timedelta(seconds=COMMANDS_KEPT_SECONDS)
        try:
            self._store.db.execute("DELETE FROM cloud_commands WHERE received < ?", (cutoff.isoformat(),))
        except sqlite3.Error:
            log.exception("cloud: could not prune the command record")

    # ------------------------------------------------------------ log upload
    def commands(self) -> list[Command]:
        """The cloud link's own command (it publishes on the link itself)."""
        return [Command(None, "log.upload", self._log_upload, frozenset({"chunk_size", "max_bytes"}),
                        "the log files, gzip-compressed, in acknowledged chunks")]

    async def _log_upload(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Publish the log files, gzip-compressed, in chunks under ``<response topic>/<upload id>/``.

        Each chunk is sent only after the broker acknowledged the one before (QoS 1), and a
        ``progress`` message follows each; the reply comes last, with the SHA-256 of the whole.
        """
        topic = _reply_topic.get()
        if topic is None:
            raise CommandError("log.upload needs a response topic under reply/ (its chunks are published there)")
        chunk_size = arg_int(args, "chunk_size", 1024, 65536, 32768)
        max_bytes = arg_int(args, "max_bytes", 1024, 64 * 2**20, 4 * 2**20)
        files = logsetup.log_files()
        if not files:
            raise CommandError("no log file on this unit (daemon.log_file_size = 0)")
        data = await asyncio.to_thread(_read_tail, files, max_bytes)
        packed = await asyncio.to_thread(gzip.compress, data)
        result = await self.upload(packed, chunk_size, bytes=len(data), compressed=len(packed), encoding="gzip")
        log.info("cloud: log upload %s: %d bytes in %d chunks", result["upload_id"], len(data), result["chunks"])
        return result

    async def upload(self, data: bytes, chunk_size: int, **fields: object) -> dict[str, Any]:
        """``data`` in acknowledged chunks under ``<response topic>/<upload id>/`` (``core/ports.ChunkUploader``:
        ``log.upload`` and ``capture.get`` send files the same way); a ``progress`` message follows each."""
        topic = _reply_topic.get()
        if topic is None:
            raise CommandError("this command needs a response topic under reply/ (its chunks are published there)")
        upload_id = uuid.uuid4().hex[:12]
        chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
        base = f"{topic}/{upload_id}/"
        for index, chunk in enumerate(chunks, start=1):
            body = {"upload_id": upload_id, "index": index, "total": len(chunks),
                    "data": base64.b64encode(chunk).decode()}
            await self._publish_acked(base + str(index), json.dumps(body).encode())
            self._publish_progress(base, upload_id, index, len(chunks))
        return {"upload_id": upload_id, "topic": base, "chunks": len(chunks), **fields,
                "sha256": hashlib.sha256(data).hexdigest()}

    async def _publish_acked(self, topic: str, payload: bytes) -> None:
        mid = self.link.publish(topic, payload) if self.link is not None else None
        if mid is None:
            raise CommandError("the cloud link went down during the upload")
        waiter = asyncio.get_running_loop().create_future()
        self._acked[mid] = waiter
        try:
            await asyncio.wait_for(waiter, UPLOAD_ACK_TIMEOUT)
        except TimeoutError as exc:
            self._acked.pop(mid, None)
            raise CommandError("the broker did not acknowledge an upload chunk") from exc

    def _publish_progress(self, base: str, upload_id: str, sent: int, total: int) -> None:
        if self.link is not None:
            self.link.publish(base + "progress", json.dumps({"upload_id": upload_id, "sent": sent,
                                                             "total": total}).encode(), qos=0)

    # ------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        link, outbox = self.link, self.outbox
        return {
            "broker": self.config.url, "device_id": self.config.device_id,
            "connected": bool(link and link.connected), "last_error": link.last_error if link else "",
            "connects": link.connects if link else 0, "outbox_depth": outbox.depth if outbox else 0,
            "outbox_dropped": outbox.dropped() if outbox else 0, "inflight": len(self._mids),
            "folds_held": self.folds.held() if self.folds else 0,
            "commands": self.commands_seen, "rings_sent": self.rings_sent, "rings_dropped": self.rings_dropped,
        }


def _usable_id(document: Any) -> str | None:
    """The command's id, if the document has one that can be answered (and only one: no duplicate key)."""
    if not isinstance(document, dict) or "id" in getattr(document, "duplicates", ()):
        return None
    command_id = document.get("id")
    if not isinstance(command_id, str) or not 0 < len(command_id) <= ID_MAX or not command_id.isprintable():
        return None
    return command_id


def _error(command_id: str | None, message: str) -> dict[str, Any]:
    return {"id": command_id, "ok": False, "error": message}


def _read_tail(files: list[Path], max_bytes: int) -> bytes:
    """The last ``max_bytes`` of the log files taken together, oldest first."""
    parts: list[bytes] = []
    left = max_bytes
    for path in reversed(files):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        parts.append(data[-left:])
        left -= len(parts[-1])
        if left <= 0:
            break
    return b"".join(reversed(parts))

"""``doorphone-cloud``: the cloud side in a command, for operators without a cloud and for tests.

    doorphone-cloud --url mqtt://127.0.0.1:1883 --device unit-a send open_door '{"door": 1, "source": "app"}'
    doorphone-cloud --url mqtts://broker:8883 --ca ca.pem --username cloud --password ... --device unit-a tail
    doorphone-cloud ... state
    doorphone-cloud ... sync-push snapshot.json          # a full credential snapshot, in parts
    doorphone-cloud ... log-upload --out unit-a.log      # fetch the unit's log
    doorphone-cloud keygen --out cloud-key.pem           # the cloud's P-256 signing key (+ cloud-key.pub.pem)
    doorphone-cloud tempkey sign --key cloud-key.pem --scope site-a --doors 1 --end 2026-12-24T18:00 --count 2

``send`` publishes ``cmd/<name>`` with a fresh id and ``ts``, a response topic under
``<root>/reply/`` and correlation data, and prints the reply (exit 1 if ``ok`` is false or none came).
``tail`` prints events (``evt/#``) as JSON lines; ``state`` prints the retained state.
``sync-push`` splits a snapshot file into ``sync.snapshot`` parts that each fit the unit's payload
limit and sends them in order; ``log-upload`` reassembles and checks the gzip chunks of ``log.upload``.
``keygen`` and ``tempkey sign`` need no broker: they make the cloud's signing key and offline-signed temp keys
(``DPS1:`` QR texts, docs/signed-keys.md) that a unit trusting the key's public half opens without any sync.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import json
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def connect(args: argparse.Namespace, on_message: Any, subscriptions: list[str]) -> mqtt.Client:
    url = urlsplit(args.url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"doorphone-cloud-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    if args.username:
        client.username_pw_set(args.username, args.password)
    if url.scheme == "mqtts":
        client.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    ready = threading.Event()

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        for topic in subscriptions:
            c.subscribe(topic, qos=1)
        ready.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(url.hostname or "localhost", url.port or (8883 if url.scheme == "mqtts" else 1883), 30)
    client.loop_start()
    if not ready.wait(10):
        raise SystemExit("doorphone-cloud: could not connect to the broker")
    time.sleep(0.2)  # SUBACK
    return client


class Requester:
    """One connection that sends commands and collects their replies (and anything under the reply topic)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.root = f"{args.prefix}/{args.device}/"
        self.reply_topic = f"{self.root}reply/{uuid.uuid4().hex[:12]}"
        self.replies: dict[bytes, dict[str, Any]] = {}
        self.under: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.client = connect(args, self._on_message, [self.reply_topic, self.reply_topic + "/#"])

    def _on_message(self, c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self.cond:
            if message.topic == self.reply_topic and correlation is not None:
                self.replies[correlation] = json.loads(message.payload)
            else:
                self.under.append((message.topic, bytes(message.payload)))
            self.cond.notify_all()

    def request(self, name: str, body: dict[str, Any], timeout: float, command_id: str | None = None,
                ts: float | None = None) -> dict[str, Any] | None:
        correlation = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = correlation
        payload = {"id": command_id or str(uuid.uuid4()), "ts": ts if ts is not None else time.time(), **body}
        self.client.publish(f"{self.root}cmd/{name}", json.dumps(payload), qos=1, properties=props)
        with self.cond:
            self.cond.wait_for(lambda: correlation in self.replies, timeout)
            return self.replies.get(correlation)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def send(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.args)
    except ValueError as exc:
        raise SystemExit(f"doorphone-cloud: the arguments are not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise SystemExit("doorphone-cloud: the arguments must be a JSON object")
    requester = Requester(args)
    try:
        reply = requester.request(args.name, body, args.timeout, command_id=args.id, ts=args.ts)
    finally:
        requester.close()
    if reply is None:
        print(f"doorphone-cloud: no reply within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=None if args.compact else 2))
    return 0 if reply.get("ok") else 1


def snapshot_parts(snapshot: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Split a snapshot into parts whose JSON stays under ``limit`` bytes (doors and the cloud's signing keys
    travel in part 1; revocations are items like users)."""
    kinds = ("schedules", "users", "temp_keys", "revoked")
    items = [(kind, item) for kind in kinds for item in snapshot.get(kind) or []]
    parts: list[dict[str, Any]] = [{k: snapshot[k] for k in ("doors", "signing_keys") if snapshot.get(k) is not None}]
    size = len(json.dumps(parts[0])) + 200
    for kind, item in items:
        item_size = len(json.dumps(item)) + 2
        if size + item_size > limit and any(parts[-1].get(k) for k in kinds):
            parts.append({})
            size = 200
        parts[-1].setdefault(kind, []).append(item)
        size += item_size
    return parts


def sync_push(args: argparse.Namespace) -> int:
    try:
        snapshot = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"doorphone-cloud: cannot read the snapshot: {exc}") from exc
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("version", args.version), int):
        raise SystemExit("doorphone-cloud: a snapshot is an object with an integer version (or pass --version)")
    version = args.version if args.version is not None else snapshot["version"]
    parts = snapshot_parts(snapshot, args.max_bytes)
    requester = Requester(args)
    try:
        for number, part in enumerate(parts, start=1):
            body = {"version": version, "part": number, "parts": len(parts), **part}
            if args.force:
                body["force"] = True
            reply = requester.request("sync.snapshot", body, args.timeout)
            if reply is None or not reply.get("ok"):
                print(json.dumps(reply) if reply else f"doorphone-cloud: no reply to part {number}", file=sys.stderr)
                return 1
    finally:
        requester.close()
    print(json.dumps(reply, indent=None if args.compact else 2))
    return 0


def log_upload(args: argparse.Namespace) -> int:
    requester = Requester(args)
    try:
        reply = requester.request("log.upload", {"chunk_size": args.chunk_size}, args.timeout)
        chunks = dict(_chunks(requester.under))
    finally:
        requester.close()
    if reply is None or not reply.get("ok"):
        print(json.dumps(reply) if reply else "doorphone-cloud: no reply", file=sys.stderr)
        return 1
    result = reply["result"]
    packed = b"".join(chunks.get(i, b"") for i in range(1, result["chunks"] + 1))
    if hashlib.sha256(packed).hexdigest() != result["sha256"]:
        print(f"doorphone-cloud: upload {result['upload_id']} is incomplete or damaged "
              f"({len(chunks)} of {result['chunks']} chunks)", file=sys.stderr)
        return 1
    Path(args.out).write_bytes(gzip.decompress(packed))
    print(f"{args.out}: {result['bytes']} bytes ({result['compressed']} compressed, {result['chunks']} chunks)")
    return 0


def _chunks(messages: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    found = []
    for topic, payload in messages:
        if topic.rsplit("/", 1)[-1].isdigit():
            body = json.loads(payload)
            found.append((int(body["index"]), base64.b64decode(body["data"])))
    return found


def tail(args: argparse.Namespace) -> int:
    root = f"{args.prefix}/{args.device}/"
    seen = 0
    done = threading.Event()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal seen
        print(json.dumps({"topic": message.topic, **json.loads(message.payload)}), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    client = connect(args, on_message, [f"{root}evt/#"])
    with contextlib.suppress(KeyboardInterrupt):
        done.wait(args.timeout or None)
    client.loop_stop()
    client.disconnect()
    return 0 if not args.count or seen >= args.count else 1


def state(args: argparse.Namespace) -> int:
    got: list[bytes] = []
    event = threading.Event()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        got.append(bytes(message.payload))
        event.set()

    client = connect(args, on_message, [f"{args.prefix}/{args.device}/state"])
    event.wait(args.timeout)
    client.loop_stop()
    client.disconnect()
    if not got:
        print("doorphone-cloud: no retained state (has the unit ever connected?)", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(got[-1]), indent=2))
    return 0


def build_parser(extra: tuple[Callable[[Any], None], ...] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doorphone-cloud",
                                     description="The cloud side of a door phone, in a command.")
    parser.add_argument("--url", help="mqtt://host:1883 or mqtts://host:8883 (every command that talks to a unit)")
    parser.add_argument("--device", help="the unit's device id (every command that talks to a unit)")
    parser.add_argument("--prefix", default="doorphone/v1")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--ca", help="CA certificate for mqtts")
    parser.add_argument("--cert", help="client certificate")
    parser.add_argument("--key", help="client key")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send", help="send a command and wait for its reply")
    s.add_argument("name", help="command name, e.g. open_door")
    s.add_argument("args", nargs="?", default="{}", help="JSON object of arguments")
    s.add_argument("--id", help="command id (default: a new UUID; reuse one to test de-duplication)")
    s.add_argument("--ts", type=float, help="send time in epoch seconds (default now)")
    s.add_argument("--timeout", type=float, default=10.0)
    s.add_argument("--compact", action="store_true", help="one-line JSON")
    s.set_defaults(func=send)
    t = sub.add_parser("tail", help="print events as JSON lines")
    t.add_argument("--count", type=int, default=0, help="stop after this many events")
    t.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    t.set_defaults(func=tail)
    st = sub.add_parser("state", help="print the unit's retained state")
    st.add_argument("--timeout", type=float, default=3.0)
    st.set_defaults(func=state)
    sp = sub.add_parser("sync-push", help="send a credential snapshot from a JSON file, in parts")
    sp.add_argument("file", help='JSON: {"version": N, "users": [...], "temp_keys": [...], "schedules": [...], '
                    '"doors": {...}}')
    sp.add_argument("--version", type=int, help="snapshot version (default: the file's)")
    sp.add_argument("--max-bytes", type=int, default=60000, help="largest part (the unit's cloud.max_payload)")
    sp.add_argument("--force", action="store_true", help="allow a version older than the unit's (roll back)")
    sp.add_argument("--timeout", type=float, default=120.0)
    sp.add_argument("--compact", action="store_true", help="one-line JSON")
    sp.set_defaults(func=sync_push)
    lu = sub.add_parser("log-upload", help="fetch the unit's log (gzip chunks, checked)")
    lu.add_argument("--out", required=True, help="file to write the log to")
    lu.add_argument("--chunk-size", type=int, default=32768)
    lu.add_argument("--timeout", type=float, default=60.0)
    lu.set_defaults(func=log_upload)
    for add in extra:
        add(sub)
    return parser


OFFLINE = ("keygen", "tempkey")


def main(argv: list[str] | None = None, extra: tuple[Callable[[Any], None], ...] = ()) -> int:
    """Run the tool; ``extra`` adds sub-commands from other folders (the composition root passes the signing
    commands of ``access/signtool.py``: the cloud folder does not import access)."""
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    if args.command not in OFFLINE and not (args.url and args.device):
        parser.error(f"{args.command} talks to a unit: --url and --device are required")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

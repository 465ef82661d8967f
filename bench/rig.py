"""The processes and the mixed load shared by the chaos and soak runs (bench/chaos.py, bench/soak.py).

A :class:`Rig` is what a unit in the field has around it, as real processes: hw-sim (the board, keypad,
camera, NFC), a mosquitto with TLS, passwords and the ACL (the cloud), and ``doorphoned --sim`` joined to
it as ``unit-a`` with SIP on loopback; its state directory can be a small tmpfs so the disk can be filled.
A :class:`Load` drives it from threads as people and the cloud would: keypad PINs (users', temp keys',
wrong ones), QR codes shown to the camera, NFC taps, remote ``open_door`` commands (each id unique, some
sent twice), sync deltas adding temp keys, and SIP calls whose callee keys the door's DTMF code.
Everything random comes from one seeded ``random.Random`` per thread, so a run can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from doorphoned.access.credentials import encode_qr
from doorphoned.access.sync import VERSION_COUNTER
from doorphoned.core.store import DB_NAME
from tests.mqtt import Broker, Client, cloud_tool, make_certs
from tests.procs import Daemon, HwSim, wait_for
from tests.sipp import Sipp, uac_scenario

DEVICE = "unit-a"
ROOT_TOPIC = f"doorphone/v1/{DEVICE}/"
HOLD_TIME = 1.0  # short holds keep one pulse per grant most of the time
KEY_COUNT = 3


@dataclass(frozen=True)
class Person:
    user_id: str
    pin: str
    card: str


@dataclass(frozen=True)
class Key:
    key_id: str
    pin: str
    count: int

    @property
    def qr(self) -> str:
        return encode_qr(self.key_id, self.pin)


@dataclass
class Credentials:
    """What the cloud gave the unit; the load presents these (and wrong ones)."""

    people: list[Person]
    keys: list[Key]
    remote_users: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def make(cls, rng: random.Random, people: int, keys: int, remote_users: int) -> Credentials:
        pins = rng.sample(range(100000, 999999), people)
        key_pins = rng.sample(range(10_000_000, 99_999_999), keys)
        return cls([Person(f"p{i}", str(pins[i]), f"C0A8{i:04X}") for i in range(people)],
                   [Key(f"k{i}", str(key_pins[i]), KEY_COUNT) for i in range(keys)], remote_users)

    def snapshot(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        users = [{"user_id": p.user_id, "name": f"Person {p.user_id}", "doors": [1], "pin": p.pin,
                  "cards": [p.card]} for p in self.people]
        users += [{"user_id": f"r{i}", "name": f"Remote {i}", "doors": [1, 2]} for i in range(self.remote_users)]
        return {"version": 1, "users": users, "temp_keys": [key_json(k, now) for k in self.keys]}


def key_json(key: Key, now: datetime) -> dict[str, Any]:
    return {"key_id": key.key_id, "name": f"Key {key.key_id}", "pin": key.pin, "count": key.count, "doors": [1],
            "start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(days=2)).isoformat()}


class PulseLog:
    """Every relay pulse hw-sim reported, with wall-clock start and end (hw-sim's own times).

    A thread follows hw-sim's watch stream; :meth:`merge` adds its pulse history (``relays``) so a pulse
    reported while the stream was being re-attached after a restart is not missed.
    """

    def __init__(self) -> None:
        self.pulses: dict[tuple[int, float], list[float | None]] = {}
        self.lock = threading.Lock()

    def follow(self, sim: HwSim) -> None:
        events = sim.watch()
        threading.Thread(target=self._read, args=(events,), daemon=True).start()

    def _read(self, events: Any) -> None:
        try:
            for line in events:
                event = json.loads(line)
                if event.get("ev") == "relay":
                    self._note(int(event["relay"]), float(event["t"]), bool(event["energised"]))
        except (OSError, ValueError):
            pass

    def _note(self, relay: int, t: float, energised: bool) -> None:
        with self.lock:
            if energised:
                self.pulses.setdefault((relay, round(t, 6)), [None])
                return
            open_ones = [k for k, v in self.pulses.items() if k[0] == relay and v[0] is None and k[1] <= t]
            for k in open_ones:
                self.pulses[k][0] = t

    def merge(self, relays: list[dict[str, Any]]) -> None:
        """Add hw-sim's pulse history (its ``relays`` report)."""
        for relay in relays:
            for p in relay["pulses"]:
                with self.lock:
                    slot = self.pulses.setdefault((relay["relay"], round(p["start"], 6)), [None])
                    if p["end"] is not None:
                        slot[0] = p["end"]

    def snapshot(self) -> list[tuple[int, float, float | None]]:
        with self.lock:
            return sorted((k[0], k[1], v[0]) for k, v in self.pulses.items())


class Rig:
    """hw-sim + mosquitto (TLS) + doorphoned --sim as unit-a, the state dir optionally on a tmpfs."""

    def __init__(self, home: Path, tmpfs_mb: int = 0, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.broker = Broker(home / "broker", make_certs(home / "certs"))
        self.sim = HwSim(home / "hwsim.sock")
        env = {**self.broker.env(DEVICE), "DOORPHONED_DOORS_1_HOLD_TIME": str(HOLD_TIME),
               "DOORPHONED_DOORS_2_HOLD_TIME": str(HOLD_TIME), "DOORPHONED_DAEMON_DOOR_LOG_MAX": "10000000",
               "DOORPHONED_CAMERA_QR_COOLDOWN": "2", **(extra_env or {})}
        self.daemon = Daemon(home / "d", self.sim, env=env)
        self.db_path = self.daemon.state_dir / DB_NAME
        self.tmpfs = False
        self.tmpfs_mb = tmpfs_mb
        self.pulses = PulseLog()
        self.sim_down: list[tuple[float, float]] = []  # wall-clock spans when hw-sim was not running

    # ------------------------------------------------------------ processes
    def start(self, before_daemon: Any = None) -> None:
        """Start everything; ``before_daemon()`` runs once the broker is up (subscribe there to see every event)."""
        if self.tmpfs_mb:
            self._mount()
        self.broker.start()
        if before_daemon is not None:
            before_daemon()
        self.sim.start()
        self.pulses.follow(self.sim)
        self.daemon.start()
        wait_for(lambda: self.cloud_status().get("connected"), timeout=30, what="unit connected to the broker")

    def _mount(self) -> None:
        self.daemon.state_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_mb}m,mode=0700", "tmpfs",
                                 str(self.daemon.state_dir)], check=False, capture_output=True, text=True)
        self.tmpfs = result.returncode == 0
        if not self.tmpfs:
            print(f"note: no tmpfs for the state dir ({result.stderr.strip()}): the disk-full phase is skipped")

    def stop(self) -> None:
        for step in (self.daemon.kill, self.sim.stop, self.broker.stop):
            try:
                step()
            except Exception as exc:  # keep stopping the rest
                print(f"note: stopping: {exc}")
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.daemon.state_dir)], check=False)
            self.tmpfs = False

    def kill_daemon(self) -> float:
        """kill -9; returns the wall-clock time of the kill."""
        assert self.daemon.proc is not None
        killed_at = time.time()
        self.daemon.proc.kill()
        self.daemon.proc.wait(10)
        self.daemon.kill()  # closes the notify socket
        return killed_at

    def restart_daemon(self) -> None:
        self.daemon.start()

    def restart_sim(self) -> None:
        self.pulses.merge(self.relays())
        down = time.time()
        self.sim.stop()
        self.sim.start()
        self.pulses.follow(self.sim)
        self.pulses.merge(self.relays())
        self.sim_down.append((down, time.time()))

    def relays(self) -> list[dict[str, Any]]:
        """hw-sim's relay report over its socket (no process per call: cheap on a loaded machine)."""
        return list(self.sim_request({"op": "relays"})["relays"])

    def restart_broker(self) -> None:
        self.broker.stop()
        self.broker.start()

    # ------------------------------------------------------------ reading state
    def cloud_status(self) -> dict[str, Any]:
        try:
            return dict(self.daemon.ctl_json("cloud", "status"))
        except (AssertionError, ValueError, subprocess.TimeoutExpired):
            return {}

    def db(self) -> sqlite3.Connection:
        """A read-only connection to the daemon's database (WAL: it may keep running)."""
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = self.db()
        try:
            return list(db.execute(sql, args))
        finally:
            db.close()

    def sync_version(self) -> int:
        rows = self.query("SELECT value FROM counters WHERE name = ?", VERSION_COUNTER)
        return int(rows[0][0]) if rows else 0

    def sim_request(self, message: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.sim.socket))
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = sock.makefile("rb").readline()
        return dict(json.loads(reply)) if reply else {"ok": False, "error": "no reply"}

    def push_snapshot(self, creds: Credentials) -> None:
        path = self.home / "snapshot.json"
        path.write_text(json.dumps(creds.snapshot()))
        result = cloud_tool(self.broker, DEVICE, "sync-push", str(path), "--compact", "--timeout", "120")
        if result.returncode != 0:
            raise SystemExit(f"snapshot refused: {result.stdout[-500:]} {result.stderr[-500:]}")


class Commander:
    """The cloud's side of commands: publishes ``cmd/<name>`` and records every reply by id."""

    def __init__(self, broker: Broker) -> None:
        self.client = Client(broker, "cloud", client_id="chaos-cloud", persistent=True)
        self.client.subscribe(ROOT_TOPIC + "reply/#")
        self.sent: dict[str, dict[str, Any]] = {}  # id -> the command's body
        self.names: dict[str, str] = {}
        self.lock = threading.Lock()

    def send(self, name: str, body: dict[str, Any]) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = ROOT_TOPIC + "reply/chaos"
        props.CorrelationData = body["id"].encode()
        with self.lock:
            self.sent[body["id"]] = body
            self.names[body["id"]] = name
        self.client.client.publish(ROOT_TOPIC + "cmd/" + name, json.dumps(body), qos=1, properties=props)

    def replies(self) -> list[dict[str, Any]]:
        out = []
        for body in self.client.json_messages(ROOT_TOPIC + "reply/"):
            if isinstance(body, dict) and "ok" in body:
                out.append(body)
        return out

    def close(self) -> None:
        self.client.close()


class Load:
    """Mixed load from three threads (front panel + cloud, NFC, SIP); :meth:`pause` waits until all are idle."""

    def __init__(self, rig: Rig, creds: Credentials, commander: Commander, seed: int, sip: bool = True) -> None:
        self.rig = rig
        self.creds = creds
        self.commander = commander
        self.seed = seed
        self.sip = sip
        self.running = threading.Event()
        self.stopping = threading.Event()
        self.busy: dict[str, threading.Event] = {}
        self.counts: dict[str, int] = {}
        self.counts_lock = threading.Lock()
        self.remote_next = 0
        self.key_next = len(creds.keys)
        self.qr_shown = False
        self.threads: list[threading.Thread] = []

    # ------------------------------------------------------------ control
    def start(self) -> None:
        loops = [("front", self._front), ("nfc", self._nfc)] + ([("sip", self._sip)] if self.sip else [])
        for n, (name, body) in enumerate(loops):
            self.busy[name] = threading.Event()
            thread = threading.Thread(target=self._loop, args=(name, body, random.Random(self.seed * 31 + n)),
                                      daemon=True, name=f"load-{name}")
            thread.start()
            self.threads.append(thread)
        self.running.set()

    def pause(self, timeout: float = 60) -> None:
        self.running.clear()
        wait_for(lambda: not any(e.is_set() for e in self.busy.values()), timeout=timeout, what="load idle")
        if self.qr_shown:
            self._try(lambda: self.rig.sim_request({"op": "camera", "action": "clear"}))
            self.qr_shown = False

    def resume(self) -> None:
        self.running.set()

    def stop(self) -> None:
        self.stopping.set()
        self.pause()
        for thread in self.threads:
            thread.join(30)

    def count(self, what: str) -> None:
        with self.counts_lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def _loop(self, name: str, body: Any, rng: random.Random) -> None:
        busy = self.busy[name]
        while not self.stopping.is_set():
            if not self.running.wait(0.1):
                continue
            busy.set()
            try:
                if self.running.is_set():
                    body(rng)
            finally:
                busy.clear()

    def _try(self, action: Any) -> bool:
        try:
            result = action()
        except (OSError, ValueError, AssertionError, subprocess.SubprocessError):
            self.count("failed (process down)")
            return False
        return not (isinstance(result, dict) and result.get("ok") is False)

    # ------------------------------------------------------------ the front panel and the cloud
    def _front(self, rng: random.Random) -> None:
        time.sleep(rng.uniform(0.03, 0.15))
        if self.qr_shown:
            self._try(lambda: self.rig.sim_request({"op": "camera", "action": "clear"}))
            self.qr_shown = False
            return
        action = rng.choices(["pin", "key_pin", "wrong_pin", "qr", "open", "open_again", "delta"],
                             weights=[3, 2, 1, 1, 3, 1, 0.3])[0]
        getattr(self, f"_{action}")(rng)
        self.count(action)

    def _keypad(self, keys: str) -> None:
        self._try(lambda: self.rig.sim_request({"op": "keypad", "keys": keys}))

    def _pin(self, rng: random.Random) -> None:
        self._keypad(rng.choice(self.creds.people).pin + "#")

    def _key_pin(self, rng: random.Random) -> None:
        with self.creds.lock:
            key = rng.choice(self.creds.keys)
        self._keypad(key.pin + "#")

    def _wrong_pin(self, rng: random.Random) -> None:
        self._keypad(f"{rng.randrange(10**7):07d}#")

    def _qr(self, rng: random.Random) -> None:
        with self.creds.lock:
            key = rng.choice(self.creds.keys)
        if self._try(lambda: self.rig.sim_request({"op": "camera", "action": "qr", "text": key.qr})):
            self.qr_shown = True

    def _open(self, rng: random.Random) -> None:
        user = f"r{self.remote_next % self.creds.remote_users}"
        self.remote_next += 1
        body = {"id": uuid.uuid4().hex, "ts": time.time(), "door": rng.choice([1, 2]), "source": "app", "user": user}
        self.commander.send("open_door", body)

    def _open_again(self, rng: random.Random) -> None:
        with self.commander.lock:
            ids = [i for i, n in self.commander.names.items() if n == "open_door"]
        if not ids:
            return
        again = self.commander.sent[rng.choice(ids[-20:])]
        self.commander.send("open_door", {**again, "ts": time.time()})

    def _delta(self, rng: random.Random) -> None:
        try:
            version = self.rig.sync_version()
        except sqlite3.Error:
            return
        key = Key(f"k{self.key_next}", str(rng.randrange(10_000_000, 99_999_999)), KEY_COUNT)
        self.key_next += 1
        with self.creds.lock:
            self.creds.keys.append(key)
        self.commander.send("sync.delta", {"id": uuid.uuid4().hex, "ts": time.time(), "from_version": version,
                                           "version": version + 1,
                                           "upsert": {"temp_keys": [key_json(key, datetime.now(UTC))]}})

    # ------------------------------------------------------------ NFC and SIP
    def _nfc(self, rng: random.Random) -> None:
        uid = rng.choice(self.creds.people).card if rng.random() < 0.8 else f"DEAD{rng.randrange(65536):04X}"
        self._try(lambda: self.rig.sim_request({"op": "nfc_tap", "uid": uid, "timeout": 2}, timeout=10))
        self.count("nfc")
        time.sleep(rng.uniform(0.1, 0.5))

    def _sip(self, rng: random.Random) -> None:
        port = self.rig.daemon.sip_ports["DOORPHONED_SIP_PORT"]
        work = self.rig.home / "sipp"
        work.mkdir(exist_ok=True)
        sipp = Sipp(work, "call", uac_scenario("#", hold_ms=200), f"127.0.0.1:{port}", "-m", "1",
                    "-timeout", "10s", "-timeout_error").start()
        try:
            status = sipp.wait(20)
        except AssertionError:
            status = -1
        self.count("sip call" if status == 0 else "sip call failed")
        time.sleep(rng.uniform(0.2, 1.0))


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the camera worker, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out

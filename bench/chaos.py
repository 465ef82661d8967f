#!/usr/bin/env python3
"""Chaos: mixed load on a real unit while it is killed (-9), its board and broker restarted and its disk filled.

Real processes (bench/rig.py): hw-sim, mosquitto with TLS, ``doorphoned --sim`` on a small tmpfs, sipp.
Each round runs the mixed load (keypad PINs of users, temp keys and wrong ones, QR codes, NFC taps, remote
``open_door`` commands with unique ids, some sent twice, sync deltas, SIP calls keying the DTMF code),
then at a random moment kill -9s the daemon (and at random restarts hw-sim or the broker first, or fills
the state disk). After each kill ``PRAGMA integrity_check``; after each round, with the load paused and
the outbox drained, the invariants over the whole history so far:

* every relay pulse hw-sim saw has a granted door-log entry just before it, and every grant has a pulse
  (or an explanation: a lock fault was recorded, or the daemon was killed between persist and actuate);
* no temp key has more uses than grants recorded for it, nor more than its count;
* a remote command (by id) ran at most once: each id names its own user, whose grants are counted;
* every event reached the broker once per id, in ``seq`` order, with no gap; every door-log access entry
  has exactly one ``evt/access`` (by ``log_id``), plus one summary when it folds a run of refusals that has
  ended (``closed``), carrying the entry's ``count``; a run not ended yet is held in ``outbox_folds``;
* with the disk full the daemon refuses to open (no pulse without a record) and opens again once space
  returns.

Prints a summary; exits 1 when an invariant failed. ``--seed`` replays a run.
"""

from __future__ import annotations

import argparse
import bisect
import errno
import itertools
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import HOLD_TIME, ROOT_TOPIC, Commander, Credentials, Load, Rig  # noqa: E402
from tests.mqtt import Client  # noqa: E402
from tests.procs import wait_for  # noqa: E402

PULSE_AFTER_GRANT = 3.0  # a grant's pulse starts within this many seconds (fsync + actuation, loaded machine)
KILL_AFTER_GRANT = 1.5  # a grant with no pulse is explained by a kill -9 this soon after it
SLACK = 0.05


@dataclass
class Report:
    rounds: int = 0
    kills: int = 0
    sim_restarts: int = 0
    broker_restarts: int = 0
    disk_fills: int = 0
    disk_refusals: int = 0
    disk_not_recovered: int = 0
    disk_deaths: int = 0
    disk_unanswered: int = 0
    disk_restarts: Counter[str] = field(default_factory=Counter)
    disk_opened: int = 0
    disk_opened_recorded: int = 0
    integrity_failures: int = 0
    pulses: int = 0
    grants: int = 0
    pulses_without_grant: list[str] = field(default_factory=list)
    grants_without_pulse_explained: Counter[str] = field(default_factory=Counter)
    grants_without_pulse: list[str] = field(default_factory=list)
    grants_board_away: list[str] = field(default_factory=list)
    key_overuse: list[str] = field(default_factory=list)
    commands_twice: list[str] = field(default_factory=list)
    acked_not_run: list[str] = field(default_factory=list)
    events: int = 0
    events_lost: list[int] = field(default_factory=list)
    events_redelivered: int = 0
    events_out_of_order: int = 0
    access_without_event: list[int] = field(default_factory=list)
    access_duplicated: list[int] = field(default_factory=list)
    fold_counts_wrong: list[int] = field(default_factory=list)
    folds_not_held: list[int] = field(default_factory=list)
    out_of_order_pairs: list[tuple[int, int]] = field(default_factory=list)

    def failures(self) -> list[str]:
        checks = {
            "integrity failures": self.integrity_failures, "pulses without grant": len(self.pulses_without_grant),
            "grants without pulse (unexplained)": len(self.grants_without_pulse),
            "grants reported done while the board was away, no lock fault": len(self.grants_board_away),
            "temp keys over their uses": len(self.key_overuse), "commands executed twice": len(self.commands_twice),
            "commands acknowledged but not run": len(self.acked_not_run), "events lost": len(self.events_lost),
            "events out of order": self.events_out_of_order,
            "access entries without their event": len(self.access_without_event),
            "access entries with two events": len(self.access_duplicated),
            "folded runs whose summary count is not the door log's": len(self.fold_counts_wrong),
            "folded runs neither summarised nor held": len(self.folds_not_held),
            "no recovery after the disk filled": self.disk_not_recovered,
            "remote opens answered ok with the disk full and no record": self.disk_opened,
            "remote opens unanswered with the disk full": self.disk_unanswered,
            "starts that hung with the disk full": self.disk_restarts["hung"],
        }
        return [f"{name}: {value}" for name, value in checks.items() if value]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Chaos:
    def __init__(self, args: argparse.Namespace, home: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.rig = Rig(home, tmpfs_mb=0 if args.no_disk else args.tmpfs_mb)
        self.creds = Credentials.make(self.rng, people=12, keys=8, remote_users=args.rounds * 20 + 200)
        self.report = Report()
        self.kill_times: list[float] = []

    # ------------------------------------------------------------ run
    def run(self) -> Report:
        rig = self.rig
        rig.start(before_daemon=self.subscribe)
        self.commander = Commander(rig.broker)
        rig.push_snapshot(self.creds)
        self.load = Load(rig, self.creds, self.commander, self.args.seed, sip=not self.args.no_sip)
        self.load.start()
        try:
            for n in range(self.args.rounds):
                self.round(n)
                failures = self.report.failures()
                if failures and self.args.stop_on_failure:
                    print(f"stopping after round {n + 1}: {'; '.join(failures)}")
                    break
        finally:
            self.load.stop()
            self.dump()
            self.events.close()
            self.commander.close()
            rig.stop()
        return self.report

    def subscribe(self) -> None:
        """The cloud's event log: a persistent session, so events sent while it reconnects wait for it."""
        self.events = Client(self.rig.broker, "cloud", client_id="chaos-events", persistent=True)
        self.events.subscribe(ROOT_TOPIC + "evt/#")

    def dump(self) -> None:
        """Keep what the broker delivered and when the kills came, next to the logs, for a post-mortem."""
        home = self.rig.home
        (home / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in self.delivered()))
        (home / "kills.json").write_text(json.dumps(self.kill_times))

    def round(self, n: int) -> None:
        rng, args = self.rng, self.args
        self.load.resume()
        time.sleep(rng.uniform(0.3, args.round_seconds))
        # every run restarts the broker in round 2 and hw-sim in round 3 (when those are on at all)
        if (args.p_broker and n == 1) or rng.random() < args.p_broker:
            self.rig.restart_broker()
            self.report.broker_restarts += 1
            time.sleep(rng.uniform(0.2, 1.0))
        if (args.p_sim and n == 2) or rng.random() < args.p_sim:
            self.rig.restart_sim()
            self.report.sim_restarts += 1
            time.sleep(rng.uniform(0.2, 1.0))
        if self.rig.tmpfs and args.disk_every and n % args.disk_every == args.disk_every - 1:
            self.disk_full()
        time.sleep(rng.uniform(0.0, 0.5))
        self.kill()
        self.load.pause()
        self.quiesce()
        self.check()
        self.report.rounds = n + 1
        r = self.report
        print(f"round {n + 1}: kills {r.kills}, grants {r.grants}, pulses {r.pulses}, events {r.events}"
              + (f"  FAILING: {'; '.join(r.failures())}" if r.failures() else ""), flush=True)

    def kill(self) -> None:
        self.kill_times.append(self.rig.kill_daemon())
        self.report.kills += 1
        self.integrity()
        self.rig.restart_daemon()

    def integrity(self) -> None:
        db = sqlite3.connect(self.rig.db_path, timeout=10)
        try:
            result = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
        if result != [("ok",)]:
            self.report.integrity_failures += 1
            print(f"integrity_check after kill {self.report.kills}: {result[:5]}")

    # ------------------------------------------------------------ the state disk fills up
    def disk_full(self) -> None:
        """Fill the state tmpfs; the unit must refuse (loudly) rather than open unrecorded, then recover."""
        self.report.disk_fills += 1
        filler = self.rig.daemon.state_dir / "filler"
        log_before = len(self.rig.daemon.log_text())
        if self.report.disk_fills % 2 == 1 or self.rng.random() < 0.5:
            self.truncate_wal()  # else the WAL's spare room takes the first writes (also a state to survive)
        fill(filler)
        time.sleep(self.rng.uniform(0.5, 1.5))
        self.probe_command_while_full()
        self.report.disk_refusals += self.rig.daemon.log_text()[log_before:].count("cannot record")
        daemon = self.rig.daemon
        if daemon.proc is not None and daemon.proc.poll() is not None:
            self.report.disk_deaths += 1
            print(f"note: the daemon exited ({daemon.proc.returncode}) while the disk was full")
        elif self.rng.random() < 0.5:
            self.restart_while_full()
        filler.unlink()
        if daemon.proc is None or daemon.proc.poll() is not None:
            daemon.kill()
            daemon.start()
        if not self.opens_again():
            self.report.disk_not_recovered += 1
            print("the unit did not open again within 30 s after the disk had room again")

    def restart_while_full(self) -> None:
        """kill -9 with the disk full, then start: it must come up (refusing to open) or exit non-zero, not hang."""
        self.kill_times.append(self.rig.kill_daemon())
        self.report.kills += 1
        daemon = self.rig.daemon
        log_before = len(daemon.log_text())
        try:
            daemon.start()
            self.report.disk_restarts["ready"] += 1
        except AssertionError:
            code = daemon.proc.poll() if daemon.proc is not None else None
            outcome = f"exit {code}" if code is not None else "hung"
            self.report.disk_restarts[outcome] += 1
            print(f"note: start with the disk full: {outcome}: {daemon.log_text()[log_before:][-300:]!r}")
            daemon.kill()

    def truncate_wal(self) -> None:
        """Empty the WAL file first, so the daemon's next write needs new room on the full disk."""
        db = sqlite3.connect(self.rig.db_path, timeout=10)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            print(f"note: WAL not truncated before filling the disk: {exc}")
        finally:
            db.close()

    def probe_command_while_full(self) -> None:
        """A remote open while nothing can be written must be answered (with an error), never left hanging."""
        command_id = f"full-{self.report.disk_fills}-{self.rng.randrange(10**9)}"
        self.commander.send("open_door", {"id": command_id, "ts": time.time(), "door": 2, "source": "app",
                                          "user": f"r{self.creds.remote_users - self.report.disk_fills}"})
        try:
            reply = wait_for(lambda: next((r for r in self.commander.replies() if r.get("id") == command_id), None),
                             timeout=10, interval=0.1, what="reply")
        except AssertionError:
            self.report.disk_unanswered += 1
            print(f"note: open_door {command_id} sent while the disk was full got no reply within 10 s")
            return
        if not reply.get("ok"):
            return
        # SQLite reuses the space its WAL already holds, so a small write can still be made durable on a
        # full disk: an open is then right, as long as its grant is on record (no pulse without a record).
        user = f"r{self.creds.remote_users - self.report.disk_fills}"
        rows = self.rig.query("SELECT count(*) FROM door_log WHERE kind = 'access' AND granted = 1 "
                              "AND credential = 'remote' AND user_id = ?", user)
        if rows[0][0]:
            self.report.disk_opened_recorded += 1
            return
        self.report.disk_opened += 1
        print(f"open_door {command_id} was answered ok with the disk full and no grant on record: {reply}")

    def opens_again(self) -> bool:
        freed = time.time()
        person = self.creds.people[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.rig.sim_request({"op": "keypad", "keys": person.pin + "#"})
                rows = self.rig.query("SELECT ts FROM door_log WHERE kind = 'access' AND granted = 1 "
                                      "AND user_id = ? ORDER BY id DESC LIMIT 1", person.user_id)
            except (OSError, sqlite3.Error):
                rows = []
            if rows and ts(rows[0][0]) >= freed:
                return True
            time.sleep(1.0)
        return False

    # ------------------------------------------------------------ quiet, then check
    def quiesce(self) -> None:
        rig = self.rig
        wait_for(lambda: not any(r["energised"] for r in rig.relays()), timeout=30, interval=0.1,
                 what="relays released")
        wait_for(lambda: rig.query("SELECT count(*) FROM outbox")[0][0] == 0, timeout=60, interval=0.1,
                 what="outbox drained")
        last = rig.query("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        wanted = int(last[0][0]) if last else 0
        wait_for(lambda: max(self.seqs(), default=0) >= wanted, timeout=60, interval=0.1,
                 what=f"event seq {wanted} at the subscriber")
        rig.pulses.merge(rig.relays())

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.delivered()]

    def delivered(self) -> list[dict[str, Any]]:
        out = []
        for body in self.events.json_messages(ROOT_TOPIC + "evt/"):
            if isinstance(body, dict) and isinstance(body.get("seq"), int):
                out.append(body)
        return out

    def check(self) -> None:
        # Events first: a held run that ends meanwhile (its window closes) then has fewer events than its
        # closed entry allows, never more.
        delivered = self.delivered()
        rows = self.rig.query("SELECT id, ts, kind, door, granted, user_id, key_id, reason, detail FROM door_log"
                              " ORDER BY id")
        held = {r[0] for r in self.rig.query("SELECT log_id FROM outbox_folds")}
        grants = [(r[0], ts(r[1]), r[3], r[5], r[6]) for r in rows if r[2] == "access" and r[4] == 1]
        faults = [(ts(r[1]), r[3]) for r in rows if r[2] == "lock_fault"]
        self.report.grants = len(grants)
        self.check_pulses(grants, faults)
        self.check_keys(grants)
        self.check_commands(grants)
        access = [r for r in rows if r[2] == "access"]
        self.check_events(delivered, {r[0]: expected_events(r[7], r[8]) for r in access})
        self.check_folds(delivered, {r[0]: fold_state(r[8]) for r in access}, held)

    def check_folds(self, delivered: list[dict[str, Any]], folds: dict[int, tuple[int, bool]], held: set[int]) -> None:
        """``folds``: each access entry's (count, closed). A summary carries its entry's count; an entry with
        repeats and no summary yet is held (the daemon will end its run)."""
        summaries = {e["log_id"]: e["count"] for e in delivered if e.get("type") == "access" and "count" in e}
        self.report.fold_counts_wrong = [i for i, n in summaries.items() if i in folds and folds[i][0] != n]
        self.report.folds_not_held = [i for i, (count, closed) in folds.items()
                                      if count > 1 and not closed and i not in held]

    def check_pulses(self, grants: list[tuple[Any, ...]], faults: list[tuple[float, int]]) -> None:
        pulses = self.rig.pulses.snapshot()
        self.report.pulses = len(pulses)
        by_door: dict[int, list[float]] = defaultdict(list)
        for _, t, door, _, _ in grants:
            by_door[door].append(t)
        for times in by_door.values():
            times.sort()
        missing = []
        for relay, start, _ in pulses:
            times = by_door.get(relay, [])
            i = bisect.bisect_right(times, start + SLACK)
            if not (i and start - times[i - 1] <= PULSE_AFTER_GRANT) and not self.replayed(relay, start, times):
                missing.append(f"relay {relay} at {start:.3f}")
        self.report.pulses_without_grant = missing
        self.report.grants_without_pulse_explained = Counter()
        unexplained, away = [], []
        for log_id, t, door, _, _ in grants:
            if any(r == door and (t - SLACK <= s <= t + PULSE_AFTER_GRANT or s <= t <= (e if e else 1e18))
                   for r, s, e in pulses):
                continue
            why = self.explain(t, door, faults)
            if why:
                self.report.grants_without_pulse_explained[why] += 1
            elif any(down - SLACK <= t <= up + SLACK for down, up in self.rig.sim_down):
                away.append(f"log {log_id} door {door} at {t:.3f}")
            else:
                unexplained.append(f"log {log_id} door {door} at {t:.3f}")
        self.report.grants_without_pulse = unexplained
        self.report.grants_board_away = away

    def replayed(self, relay: int, start: float, grant_times: list[float]) -> bool:
        """A relay held energised when hw-sim restarted is driven again when the daemon reconnects."""
        for down, up in self.rig.sim_down:
            if up - SLACK <= start <= up + PULSE_AFTER_GRANT:
                i = bisect.bisect_right(grant_times, down)
                return bool(i and down - grant_times[i - 1] <= HOLD_TIME + PULSE_AFTER_GRANT)
        return False

    def explain(self, t: float, door: int, faults: list[tuple[float, int]]) -> str:
        if any(d == door and t - SLACK <= f <= t + PULSE_AFTER_GRANT for f, d in faults):
            return "lock fault recorded"
        if any(t - SLACK <= k <= t + KILL_AFTER_GRANT for k in self.kill_times):
            return "killed between persist and actuate"
        return ""

    def check_keys(self, grants: list[tuple[Any, ...]]) -> None:
        granted = Counter((key, door) for _, _, door, _, key in grants if key)
        counts = {k.key_id: k.count for k in self.creds.keys}
        problems = []
        for key, door, uses in self.rig.query("SELECT key_id, door, uses FROM key_uses"):
            if uses > counts.get(key, 0):
                problems.append(f"{key} door {door}: {uses} uses of {counts.get(key)}")
            if granted[(key, door)] > uses:
                problems.append(f"{key} door {door}: {granted[(key, door)]} grants but {uses} uses")
        for (key, door), n in granted.items():
            if n > counts.get(key, 0):
                problems.append(f"{key} door {door}: {n} grants of {counts.get(key)}")
        self.report.key_overuse = problems

    def check_commands(self, grants: list[tuple[Any, ...]]) -> None:
        runs = Counter(user for _, _, _, user, _ in grants if user and user.startswith("r"))
        with self.commander.lock:
            sent = {i: b for i, b in self.commander.sent.items() if self.commander.names[i] == "open_door"}
        ids_per_user: dict[str, set[str]] = defaultdict(set)
        for command_id, body in sent.items():
            ids_per_user[body["user"]].add(command_id)
        self.report.commands_twice = [f"{u}: {n} runs for {len(ids_per_user[u])} id(s)"
                                      for u, n in runs.items() if n > len(ids_per_user[u])]
        acked = {r["id"] for r in self.commander.replies() if r.get("ok") and r.get("id") in sent}
        self.report.acked_not_run = [i for i in acked if not runs[sent[i]["user"]]]

    def check_events(self, delivered: list[dict[str, Any]], access_ids: dict[int, int]) -> None:
        """``access_ids``: each access entry's id and how many events it stands for."""
        self.report.events = len({e["id"] for e in delivered})
        first_seen: dict[str, int] = {}
        order: list[int] = []
        for e in delivered:
            if e["id"] not in first_seen:
                first_seen[e["id"]] = e["seq"]
                order.append(e["seq"])
        self.report.events_redelivered = len(delivered) - len(first_seen)
        self.report.events_out_of_order = sum(1 for a, b in itertools.pairwise(order) if b <= a)
        self.report.out_of_order_pairs = [(a, b) for a, b in itertools.pairwise(order) if b <= a][:5]
        dropped = self.rig.query("SELECT value FROM counters WHERE name = 'outbox_dropped'")
        seen = set(order)
        top = max(seen, default=0)
        self.report.events_lost = [s for s in range(1, top + 1) if s not in seen][: 1000] \
            if not dropped else []
        per_log: dict[int, set[str]] = defaultdict(set)
        for e in delivered:
            if e.get("type") == "access" and isinstance(e.get("log_id"), int):
                per_log[e["log_id"]].add(e["id"])
        self.report.access_without_event = [i for i in access_ids if not per_log.get(i)]
        self.report.access_duplicated = [i for i, n in access_ids.items() if len(per_log.get(i, ())) > n]


def fold_state(detail_json: str) -> tuple[int, bool]:
    """An access entry's folded presentations (``detail.count``) and whether its run has ended (``closed``)."""
    try:
        detail = json.loads(detail_json or "{}")
        return int(detail.get("count", 1)), bool(detail.get("closed"))
    except (ValueError, TypeError, AttributeError):
        return 1, False


def expected_events(reason: str, detail_json: str) -> int:
    """Events one access entry stands for: its own; a summary when it folds repeated refusals and their run
    has ended; and one more when a lock fault turned its grant into a refusal (the grant was stored before
    the lock failed)."""
    count, closed = fold_state(detail_json)
    return 1 + (count > 1 and closed) + (reason == "lock_fault")


def fill(path: Path) -> None:
    """Write ``path`` until the file system has no room left (unbuffered: nothing is left to flush)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1 << 9, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def summary(report: Report, load_counts: dict[str, int], seed: int) -> None:
    r = report
    explained = ", ".join(f"{n} {why}" for why, n in r.grants_without_pulse_explained.items()) or "0"
    lines = [
        f"chaos summary (seed {seed})",
        f"rounds: {r.rounds}; kills survived: {r.kills}; hw-sim restarts: {r.sim_restarts}; "
        f"broker restarts: {r.broker_restarts}; disk fills: {r.disk_fills} "
        f"(refusals logged {r.disk_refusals}, daemon exits {r.disk_deaths}, not recovered {r.disk_not_recovered}, "
        f"remote opens meanwhile: answered ok without a record {r.disk_opened}, ok and recorded (space the WAL held) "
        f"{r.disk_opened_recorded}, unanswered {r.disk_unanswered}; "
        f"kill -9 and start while full: {dict(r.disk_restarts) or 'none'})",
        f"load: {json.dumps(dict(sorted(load_counts.items())))}",
        f"grants: {r.grants}; relay pulses: {r.pulses}",
        f"pulses without grant: {len(r.pulses_without_grant)} {r.pulses_without_grant[:5]}",
        f"grants without pulse: explained {explained}; unexplained {len(r.grants_without_pulse)} "
        f"{r.grants_without_pulse[:5]}; reported done while hw-sim was down, no lock fault: "
        f"{len(r.grants_board_away)} {r.grants_board_away[:5]}",
        f"temp keys over their uses: {len(r.key_overuse)} {r.key_overuse[:5]}",
        f"commands executed twice: {len(r.commands_twice)} {r.commands_twice[:5]}; "
        f"acknowledged but not run: {len(r.acked_not_run)}",
        f"events: {r.events} delivered; lost {len(r.events_lost)} {r.events_lost[:10]}; duplicated "
        f"{len(r.access_duplicated)}; redelivered with the same id (at-least-once, de-duplicated): "
        f"{r.events_redelivered}; out of order {r.events_out_of_order} {r.out_of_order_pairs}",
        f"access entries without their event: {len(r.access_without_event)} {r.access_without_event[:10]}",
        f"folded runs: summary count not the door log's {len(r.fold_counts_wrong)} {r.fold_counts_wrong[:5]}; "
        f"neither summarised nor held {len(r.folds_not_held)} {r.folds_not_held[:5]}",
        f"integrity failures: {r.integrity_failures}",
    ]
    print("\n".join(lines))
    failures = r.failures()
    print("RESULT: " + ("FAIL: " + "; ".join(failures) if failures else "all invariants held"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100, help="rounds, one kill -9 each (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed; replays a run)")
    parser.add_argument("--round-seconds", type=float, default=2.5, help="longest load before the kill")
    parser.add_argument("--p-sim", type=float, default=0.1, help="chance per round of restarting hw-sim")
    parser.add_argument("--p-broker", type=float, default=0.1, help="chance per round of restarting the broker")
    parser.add_argument("--disk-every", type=int, default=10, help="fill the state disk every N rounds (0: never)")
    parser.add_argument("--tmpfs-mb", type=int, default=48, help="size of the state dir's tmpfs")
    parser.add_argument("--no-disk", action="store_true", help="no tmpfs, no disk-full phase")
    parser.add_argument("--no-sip", action="store_true", help="no SIP calls in the load")
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, database)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes (finally) on a plain kill
    home = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(f"chaos: seed {args.seed}, {args.rounds} rounds, work dir {home}", flush=True)
    chaos = Chaos(args, home)
    try:
        report = chaos.run()
    except Exception:
        print(chaos.rig.daemon.log_text()[-3000:], file=sys.stderr)
        raise
    summary(report, chaos.load.counts, args.seed)
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())

"""The durable event outbox: every event is in SQLite before it is sent, and leaves only on PUBACK.

Order is the SQLite sequence (the event's ``seq``), so a replay after a reconnect or a restart is in
the original order. Delivery is at-least-once: an event whose PUBACK was lost in a crash is sent again
with the same ``id`` (consumers de-duplicate by id). The outbox is bounded (``cloud.outbox_max``):
beyond it the *oldest* ordinary events are dropped, counted in ``outbox_dropped`` and reported in ``cloud
status`` and the retained state, so a unit offline for months keeps its most recent history. Alarms and
lock faults (``KEPT_TYPES``) are never dropped to make room for ordinary events, the door log's rule:
only when the outbox holds nothing else does the oldest of them go.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KEPT_TYPES = ("alarm", "lock_fault")  # dropped only when the outbox is full of them


@dataclass(frozen=True)
class PendingEvent:
    seq: int
    id: str
    type: str
    body: dict[str, Any]

    def payload(self) -> bytes:
        return json.dumps({"id": self.id, "seq": self.seq, "type": self.type, **self.body},
                          separators=(",", ":")).encode()


class Outbox:
    def __init__(self, db: sqlite3.Connection, max_events: int) -> None:
        self._db = db
        self.max_events = max_events
        self.depth = 0
        self.recount()

    def recount(self) -> None:
        """Count the events again (after a transaction that held some of them was rolled back)."""
        self.depth = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def add(self, event_id: str, event_type: str, body: dict[str, Any]) -> int:
        """Store one event durably; returns its seq."""
        cursor = self._db.execute("INSERT INTO outbox (id, type, payload) VALUES (?, ?, ?)",
                                  (event_id, event_type, json.dumps(body, separators=(",", ":"))))
        self.depth += 1
        if self.depth > self.max_events:
            self._drop_oldest(self.depth - self.max_events)
        return int(cursor.lastrowid or 0)

    def _drop_oldest(self, count: int) -> None:
        # add() may run inside the gate's transaction (the event is stored with its door-log entry): join it
        outer = self._db.in_transaction
        if not outer:
            self._db.execute("BEGIN IMMEDIATE")
        kept = ",".join(f"'{t}'" for t in KEPT_TYPES)
        ordinary = self._db.execute(
            f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE type NOT IN ({kept})"  # noqa: S608
            " ORDER BY seq LIMIT ?)", (count,)).rowcount
        if ordinary < count:  # nothing but alarms left: the oldest of them make room
            self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                             (count - ordinary,))
        self._db.execute("INSERT INTO counters (name, value) VALUES ('outbox_dropped', ?) ON CONFLICT (name)"
                         " DO UPDATE SET value = value + excluded.value", (count,))
        if not outer:
            self._db.execute("COMMIT")
        self.depth -= count

    def pending(self, after_seq: int, limit: int) -> list[PendingEvent]:
        rows = self._db.execute("SELECT seq, id, type, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                (after_seq, limit))
        return [PendingEvent(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def ack(self, seqs: Iterable[int]) -> None:
        batch = list(seqs)
        if not batch:
            return
        self._db.execute("BEGIN IMMEDIATE")
        deleted = 0
        for start in range(0, len(batch), 500):
            chunk = batch[start:start + 500]
            marks = ",".join("?" * len(chunk))
            deleted += self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk).rowcount  # noqa: S608
        self._db.execute("COMMIT")
        self.depth -= deleted

    def dropped(self) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = 'outbox_dropped'").fetchone()
        return int(row[0]) if row else 0

    def oldest_seq(self) -> int | None:
        row = self._db.execute("SELECT min(seq) FROM outbox").fetchone()
        return None if row[0] is None else int(row[0])

"""Repeated refusals reach the cloud as the door log keeps them: one event when a run starts, one when it ends.

The door log folds a run of repeated refusals from one source (a keypad being hammered, a card emulator)
into one entry with ``count`` and ``first``/``last`` times (``Store.collapse_refusal``). Without the same
rule here every folded presentation would be one more ``evt/access``, and a few thousand random keys would
push real events (alarms included) out of the bounded outbox. So:

* the refusal that starts an entry is an ordinary ``evt/access`` at once;
* a refusal folded into it adds no event: the entry is *held* here (a row in ``outbox_folds``, written in
  the gate's transaction together with the fold, so a restart still ends the run);
* the run ends when ``COLLAPSE_GAP`` passes with no repeat (the door log would start a new entry then), or
  at once when its door grants the same kind of credential (a valid PIN ends a keypad's streak); then the
  entry is closed (it takes no more repeats) and the cloud gets one ``evt/access`` with the same
  ``log_id``, the total ``count`` and the ``first``/``last`` times (docs/mqtt-api.md).

A run is not ended by the other refusals around it (a keypad burst alternates ``unknown``, ``malformed`` and
``locked_out``, each folded into its own entry): that would start a new entry and two events per change.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from doorphoned.cloud.outbox import Outbox
from doorphoned.core.store import COLLAPSE_GAP, DoorLogEntry, Store


def summary_body(entry: DoorLogEntry) -> dict[str, Any]:
    """The ``evt/access`` body that ends a folded run: the entry, its total count and its first/last times."""
    first = entry.detail.get("first", entry.ts.isoformat())
    last = entry.detail.get("last", first)
    return {"ts": last, "door": entry.door, "credential": entry.credential, "subject": entry.subject,
            "granted": False, "reason": entry.reason, "user_id": entry.user_id, "key_id": entry.key_id,
            "log_id": entry.id, "count": int(entry.detail.get("count", 1)), "first": first, "last": last}


class FoldedRuns:
    """The door-log entries whose folded refusals the cloud has not been told about yet."""

    def __init__(self, db: sqlite3.Connection, store: Store, outbox: Outbox) -> None:
        self._db = db
        self._store = store
        self._outbox = outbox

    def hold(self, log_id: int, door: int, credential: str, at: float) -> None:
        """A refusal was folded into entry ``log_id`` at ``at`` (epoch s): its run ends ``COLLAPSE_GAP`` later
        unless another repeat comes. Runs inside the gate's transaction."""
        self._db.execute("INSERT INTO outbox_folds (log_id, door, credential, due) VALUES (?, ?, ?, ?)"
                         " ON CONFLICT (log_id) DO UPDATE SET due = excluded.due",
                         (log_id, door, credential, at + COLLAPSE_GAP))

    def end_source(self, door: int, credential: str) -> int:
        """``door`` granted ``credential``: the runs held for that source end first (their summaries go before
        the grant's event). Runs inside the gate's transaction; returns how many ended."""
        rows = self._db.execute("SELECT log_id FROM outbox_folds WHERE door = ? AND credential = ?",
                                (door, credential)).fetchall()
        for (log_id,) in rows:
            self._end(int(log_id))
        return len(rows)

    def end_due(self, now: float) -> int:
        """End every run whose window closed by ``now``, in one transaction; returns how many ended."""
        rows = self._db.execute("SELECT log_id FROM outbox_folds WHERE due <= ? ORDER BY due", (now,)).fetchall()
        if not rows:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for (log_id,) in rows:
                self._end(int(log_id))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return len(rows)

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT min(due) FROM outbox_folds").fetchone()
        return None if row[0] is None else float(row[0])

    def held(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox_folds").fetchone()[0])

    def _end(self, log_id: int) -> None:
        entry = self._store.close_fold(log_id)
        if entry is not None and int(entry.detail.get("count", 1)) > 1:
            self._outbox.add(str(uuid.uuid4()), "access", summary_body(entry))
        self._db.execute("DELETE FROM outbox_folds WHERE log_id = ?", (log_id,))

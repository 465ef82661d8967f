"""The call history (`doorphonectl log calls`), stored in the ``calls`` table (sip migrations 0001, 0002)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from doorphoned.core.store import Store

CallType = Literal["outgoing", "incoming", "missed", "forwarded"]


@dataclass(frozen=True)
class CallRecord:
    type: CallType
    direction: Literal["in", "out"]
    started: datetime
    ended: datetime
    reason: str = ""
    peer: str = ""
    target: str = ""
    answered: datetime | None = None
    opened: tuple[int, ...] = ()
    quality: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    call_id: str = ""
    capture_id: int | None = None
    video: dict[str, Any] | None = None  # the monitor viewer's figures at the end (None: nobody watched)

    @property
    def duration_s(self) -> float:
        return round((self.ended - self.answered).total_seconds(), 3) if self.answered else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("started", "ended", "answered"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value else None
        data["opened"] = list(self.opened)
        data["duration_s"] = self.duration_s
        return data


class CallLog:
    """Append and read call history; synchronous SQLite on the loop thread, like the door log."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def append(self, record: CallRecord) -> int:
        cursor = self._store.db.execute(
            "INSERT INTO calls (type, direction, reason, peer, target, started, answered, ended, duration_s,"
            " opened, quality, call_id, capture_id, video) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.type, record.direction, record.reason, record.peer, record.target, record.started.isoformat(),
             record.answered.isoformat() if record.answered else None, record.ended.isoformat(), record.duration_s,
             json.dumps(list(record.opened)), json.dumps(record.quality, separators=(",", ":")), record.call_id,
             record.capture_id, None if record.video is None else json.dumps(record.video, separators=(",", ":"))))
        return int(cursor.lastrowid or 0)

    def recent(self, limit: int = 50, type_: str | None = None) -> list[CallRecord]:
        """Newest first."""
        query = ("SELECT id, type, direction, reason, peer, target, started, answered, ended, opened, quality,"
                 " call_id, capture_id, video FROM calls")
        args: list[object] = []
        if type_ is not None:
            query += " WHERE type = ?"
            args.append(type_)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [_record(row) for row in self._store.db.execute(query, args)]

    def prune(self, keep: int) -> int:
        cursor = self._store.db.execute(
            "DELETE FROM calls WHERE id <= (SELECT id FROM calls ORDER BY id DESC LIMIT 1 OFFSET ?)", (keep,))
        return cursor.rowcount


def _record(row: tuple[Any, ...]) -> CallRecord:
    return CallRecord(
        id=row[0], type=row[1], direction=row[2], reason=row[3], peer=row[4], target=row[5],
        started=datetime.fromisoformat(row[6]), answered=datetime.fromisoformat(row[7]) if row[7] else None,
        ended=datetime.fromisoformat(row[8]), opened=tuple(json.loads(row[9])), quality=json.loads(row[10]),
        call_id=row[11], capture_id=row[12], video=json.loads(row[13]) if row[13] else None)

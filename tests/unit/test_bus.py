from __future__ import annotations

import logging
from datetime import UTC, datetime

from doorphoned.core.bus import EventBus
from doorphoned.core.events import AlarmChanged, DoorStatusChanged, Event

TS = datetime(2026, 1, 1, tzinfo=UTC)


def test_failing_subscriber_is_logged_and_others_still_run(caplog):
    bus = EventBus()
    seen = []

    def broken(event):
        raise RuntimeError("boom")

    bus.subscribe(DoorStatusChanged, broken, "broken-feature")
    bus.subscribe(DoorStatusChanged, seen.append, "good-feature")
    with caplog.at_level(logging.ERROR):
        bus.publish(DoorStatusChanged(TS, 1, True))
    assert len(seen) == 1
    assert "broken-feature" in caplog.text


def test_unsubscribe_and_type_routing():
    bus = EventBus()
    doors, everything = [], []
    off = bus.subscribe(DoorStatusChanged, doors.append, "a")
    bus.subscribe(Event, everything.append, "b")
    bus.publish(AlarmChanged(TS, "tamper", True))
    bus.publish(DoorStatusChanged(TS, 1, False))
    off()
    off()  # idempotent
    bus.publish(DoorStatusChanged(TS, 1, True))
    assert len(doors) == 1
    assert len(everything) == 3

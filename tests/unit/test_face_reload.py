"""The daemon tells the face feature that templates changed through a typed bus event (no lookup by name, no
``type: ignore``): the feature asks its worker to reload, and stops listening when it stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

from doorphoned.core.bus import EventBus
from doorphoned.core.clock import FixedClock
from doorphoned.core.events import FaceTemplatesChanged
from doorphoned.face.config import FaceConfig
from doorphoned.face.feature import FaceFeature

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)  # a fixed clock's instant, never compared with the wall clock


def test_templates_changed_reaches_the_worker_as_reload_until_the_feature_stops() -> None:
    async def scenario() -> list[str]:
        bus = EventBus()
        feature = FaceFeature(FaceConfig(enabled=True), MagicMock(), bus, FixedClock(NOW), Path("db"), Path("key"),
                              Path("sock"), lambda: None)
        sent: list[str] = []

        async def no_worker() -> None:
            await asyncio.Event().wait()

        def send(op: str, **fields: Any) -> bool:
            sent.append(op)
            return True

        feature._supervise = no_worker  # type: ignore[method-assign]  # no dlib process in a unit test
        feature._send = send  # type: ignore[method-assign]
        await feature.start()
        bus.publish(FaceTemplatesChanged(NOW))
        await feature.stop()
        bus.publish(FaceTemplatesChanged(NOW))
        return sent

    assert asyncio.run(scenario()) == ["reload"]

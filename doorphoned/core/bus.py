"""A typed, synchronous event bus owned by the asyncio loop.

Why synchronous: the loop is the only owner of state, so dispatching in the publisher's call
keeps ordering obvious (a grant is logged before anyone hears of it) and costs microseconds.
Handlers that need to wait start their own tracked task. Each handler runs inside a guard: an
exception is logged with the subscriber's name and never reaches the publisher or the other
subscribers (zigbee2mqtt's eventBus habit).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from doorphoned.core.events import Event

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Unsubscribe = Callable[[], None]


@dataclass(frozen=True)
class _Subscription:
    owner: str
    handler: Callable[[Any], None]


class EventBus:
    """Publish/subscribe by event class; subscriptions return their own removal."""

    def __init__(self) -> None:
        self._subs: dict[type[Event], list[_Subscription]] = defaultdict(list)

    def subscribe(self, kind: type[E], handler: Callable[[E], None], owner: str) -> Unsubscribe:
        """Call ``handler`` for every published ``kind`` (subclasses included) until unsubscribed."""
        sub = _Subscription(owner, handler)
        self._subs[kind].append(sub)

        def unsubscribe() -> None:
            if sub in self._subs[kind]:
                self._subs[kind].remove(sub)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every matching subscriber, in subscription order."""
        for kind in type(event).__mro__:
            for sub in list(self._subs.get(kind, ())):
                self._deliver(sub, event)

    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    @staticmethod
    def _deliver(sub: _Subscription, event: Event) -> None:
        try:
            sub.handler(event)
        except Exception:
            log.exception("subscriber %s failed on %s", sub.owner, type(event).__name__)

from __future__ import annotations

from datetime import UTC, datetime

from doorphoned.access import ExitButton, InstallerOpen, Reason, decide

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class View:
    def __init__(self, *doors: int) -> None:
        self._doors = frozenset(doors)

    def door_ids(self) -> frozenset[int]:
        return self._doors


def test_exit_button_opens_its_own_door_only():
    view = View(1, 2)
    assert decide(ExitButton(1), 1, NOW, view).granted
    refused = decide(ExitButton(1), 2, NOW, view)
    assert not refused.granted and refused.reason is Reason.DOOR_NOT_ALLOWED


def test_unknown_door_is_refused_with_reason():
    decision = decide(InstallerOpen(0), 7, NOW, View(1, 2))
    assert (decision.granted, decision.reason, decision.subject) == (False, Reason.UNKNOWN_DOOR, "uid 0")


def test_installer_open_is_logged_with_uid():
    decision = decide(InstallerOpen(1001), 2, NOW, View(1, 2))
    assert decision.granted and decision.credential == "installer" and decision.subject == "uid 1001"

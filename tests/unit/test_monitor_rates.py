"""A viewer's received rate comes from its receiver reports, between the reports that moved it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from doorphoned.camera.monitor_stats import _received_rate


def test_two_queries_between_reports_give_the_same_rate_not_zero() -> None:
    server: Any = SimpleNamespace(report_history={})
    assert _received_rate(server, 7, 100.0, 1000, 55.0) == 55.0  # first sight: the sender's rate
    assert _received_rate(server, 7, 101.0, 1060, 55.0) == 60.0  # a report: 60 packets in 1 s
    assert _received_rate(server, 7, 101.2, 1060, 55.0) == 60.0  # asked again, same report: still 60
    assert _received_rate(server, 7, 103.0, 1120, 55.0) == 30.0  # the next report: 60 in 2 s
    assert _received_rate(server, 8, 103.0, 5, 0.0) == 0.0  # another viewer has its own history
    assert server.report_history[7] == (103.0, 1120, 30.0)

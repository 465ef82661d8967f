"""Live monitor grants are bounded: a burst of monitor.start (cloud) or of calls cannot grow the digest table."""

from __future__ import annotations

import pytest

from doorphoned.camera.monitor_auth import MAX_GRANTS, Access, AccessError


def test_grants_past_the_bound_are_refused_until_one_is_spent():
    access = Access(max_viewers=4, grant_ttl=60)
    grants = [access.new_grant("cloud", 180, lambda user, password: f"rtsp://{user}@x") for _ in range(MAX_GRANTS)]
    with pytest.raises(AccessError, match="live already"):
        access.new_grant("cloud", 180, lambda user, password: "")
    assert len(access.grants) == MAX_GRANTS
    access.spend(grants[0])
    access.new_grant("call", 300, lambda user, password: "")
    assert len(access.grants) == MAX_GRANTS

"""The 1:N matcher against a brute-force Python loop, the judge's rules, the K-of-N vote."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from doorphoned.face.matcher import Match, Matcher, Votes, judge
from doorphoned.face.store import Gallery


def gallery(seed: int, users: int, per_user: int) -> Gallery:
    rng = np.random.default_rng(seed)
    owners = tuple(f"u{u:05d}" for u in range(users) for _ in range(per_user))
    return Gallery(owners, rng.normal(0, 0.1, (len(owners), 128)).astype(np.float32), 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 4))
def test_matches_a_brute_force_loop(seed: int, users: int, per_user: int) -> None:
    g = gallery(seed, users, per_user)
    probe = np.random.default_rng(seed + 1).normal(0, 0.1, 128).astype(np.float32)
    brute: dict[str, float] = {}
    for owner, row in zip(g.owners, g.matrix, strict=True):
        brute[owner] = min(brute.get(owner, np.inf), float(np.linalg.norm(row - probe)))
    ranked = sorted(brute.items(), key=lambda kv: kv[1])
    match = Matcher(g).match(probe)
    assert match.best_user == ranked[0][0] and abs(match.best_distance - ranked[0][1]) < 1e-4
    if users > 1:
        assert match.second_user == ranked[1][0] and abs(match.second_distance - ranked[1][1]) < 1e-4
    else:
        assert match.second_user is None


def test_a_users_own_templates_are_not_the_second_best() -> None:
    g = Gallery(("a", "a", "b"), np.array([[0.0] * 128, [0.01] * 128, [0.5] * 128], dtype=np.float32), 1)
    match = Matcher(g).match(np.zeros(128, dtype=np.float32))
    assert match.best_user == "a" and match.second_user == "b"


def test_empty_gallery_matches_nobody() -> None:
    empty = Gallery((), np.zeros((0, 128), dtype=np.float32), 0)
    assert judge(Matcher(empty).match(np.zeros(128)), 0.5, 0.1).reason == "no_templates"


def test_judge_needs_threshold_and_margin() -> None:
    assert judge(Match("a", 0.3, "b", 0.8), 0.5, 0.1).user == "a"
    assert judge(Match("a", 0.55, "b", 0.9), 0.5, 0.1).reason == "unknown"
    assert judge(Match("a", 0.40, "b", 0.45), 0.5, 0.1).reason == "ambiguous"
    assert judge(Match("a", 0.3, None, float("inf")), 0.5, 0.1).user == "a"
    assert judge(Match("a", float("nan"), None, float("inf")), 0.5, 0.1).reason == "unknown"


def test_votes_k_of_n() -> None:
    votes = Votes(2, 3)
    assert votes.add("a") is None
    assert votes.add(None) is None
    assert votes.add("a") == "a"
    votes.clear()
    assert votes.add("b") is None and votes.add("a") is None and votes.add("b") == "b"
    votes = Votes(2, 3)
    for user in ("a", None, None, "a"):  # the first "a" has left the window of 3
        result = votes.add(user)
    assert result is None

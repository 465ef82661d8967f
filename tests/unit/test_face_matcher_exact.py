"""The 1:N matcher decides exactly as the brute force: every template's float64 distance, a Python loop.

The matcher scans an int8 copy and computes exact distances only where a bound cannot rule a template out
(doorphoned/face/matcher.py); these galleries are built to break such a bound: several templates per user,
duplicates across users (exact ties), near-duplicates, extreme and constant components, probes on a template, at
a midpoint, far away, huge, tiny; then thresholds and margins set exactly at the brute force's distances.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doorphoned.face.matcher import Compact, Match, Matcher, judge
from doorphoned.face.store import MAX_COMPONENT, Gallery

Ranked = list[tuple[float, int, str]]


def brute_force(g: Gallery, probe: npt.NDArray[np.floating]) -> Ranked:
    """Each user's nearest template, one template at a time, ranked by distance then gallery order."""
    p = np.asarray(probe, dtype=np.float32).astype(np.float64)
    nearest: dict[str, float] = {}
    for owner, row in zip(g.owners, g.matrix, strict=True):
        d = math.sqrt(float(((row.astype(np.float64) - p) ** 2).sum()))
        nearest[owner] = min(nearest.get(owner, math.inf), d)
    first = {u: i for i, u in reversed(list(enumerate(dict.fromkeys(g.owners))))}
    return sorted((d, first[u], u) for u, d in nearest.items())


def as_match(ranked: Ranked) -> Match:
    second = ranked[1] if len(ranked) > 1 else (math.inf, 0, None)
    return Match(ranked[0][2], ranked[0][0], second[2], second[0])


def boundaries(ranked: Ranked) -> list[tuple[float, float]]:
    """Thresholds and margins exactly at, just under and just over the brute force's own figures."""
    best = ranked[0][0]
    gap = ranked[1][0] - best if len(ranked) > 1 else 0.1
    thresholds = [best, math.nextafter(best, -math.inf), math.nextafter(best, math.inf), 0.5]
    margins = [gap, math.nextafter(gap, -math.inf), math.nextafter(gap, math.inf), 0.1, 0.0]
    return [(t, m) for t in thresholds for m in margins]


def assert_as_brute_force(g: Gallery, probe: npt.NDArray[np.floating]) -> Match:
    ranked = brute_force(g, probe)
    match = Matcher(g).match(probe)
    assert match == as_match(ranked)  # same users, bit-identical distances
    for threshold, margin in boundaries(ranked):
        mine, brute = judge(match, threshold, margin), judge(as_match(ranked), threshold, margin)
        assert (mine.user, mine.reason) == (brute.user, brute.reason)
    return match


@st.composite
def galleries(draw: st.DrawFn) -> tuple[Gallery, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    users = draw(st.sampled_from([1, 2, 3, 5, 40]))
    counts = rng.integers(1, draw(st.integers(1, 4)) + 1, users)
    owners = tuple(f"u{u:03d}" for u in range(users) for _ in range(counts[u]))
    spread = draw(st.sampled_from([1e-4, 0.09, 1.0]))
    matrix = rng.normal(0, spread, (len(owners), 128))
    for twist in draw(st.sets(st.sampled_from(["duplicates", "near", "extreme", "constant"]))):
        _twist(twist, matrix, rng)
    kind = draw(st.sampled_from(["random", "template", "noisy", "midpoint", "extreme", "zero", "sphere"]))
    if kind == "sphere":  # many templates at the same distance from the probe, to float32 rounding: near-ties
        probe = rng.normal(0, spread, 128)
        rows = rng.integers(0, len(owners), max(2, len(owners) // 2))
        around = rng.normal(0, 1, (len(rows), 128))
        matrix[rows] = probe + spread * around / np.linalg.norm(around, axis=1, keepdims=True)
    matrix = np.clip(matrix, -MAX_COMPONENT, MAX_COMPONENT).astype(np.float32)
    if kind != "sphere":
        probe = _probe(kind, matrix, rng, spread)
    return Gallery(owners, matrix, 1), probe


def _twist(twist: str, matrix: npt.NDArray[np.float64], rng: np.random.Generator) -> None:
    n = len(matrix)
    rows = rng.integers(0, n, max(1, n // 3))
    if twist == "duplicates":  # exact copies, across users and within one: exact ties
        matrix[rows] = matrix[rng.integers(0, n)]
    elif twist == "near":  # within a float32 step or two of each other
        matrix[rows] = matrix[rng.integers(0, n)] * (1 + rng.normal(0, 1e-7, (len(rows), 128)))
    elif twist == "extreme":
        matrix[rows, rng.integers(0, 128, len(rows))] = rng.choice([-MAX_COMPONENT, MAX_COMPONENT], len(rows))
    else:  # a few dimensions the same in every template (a zero-width grid)
        matrix[:, rng.integers(0, 128, 5)] = rng.normal(0, 1, 5)


def _probe(kind: str, matrix: npt.NDArray[np.float32], rng: np.random.Generator, spread: float) -> npt.NDArray:
    one, other = matrix[rng.integers(0, len(matrix))], matrix[rng.integers(0, len(matrix))]
    return {"random": rng.normal(0, spread, 128), "template": one.astype(np.float64),
            "noisy": one + rng.normal(0, spread / 10, 128), "midpoint": (one.astype(np.float64) + other) / 2,
            "extreme": rng.choice([-MAX_COMPONENT, MAX_COMPONENT], 128), "zero": np.zeros(128)}[kind]


@settings(max_examples=400)
@given(galleries())
def test_decides_exactly_as_the_brute_force(case: tuple[Gallery, npt.NDArray[np.float32]]) -> None:
    assert_as_brute_force(*case)


def random_gallery(users: int, seed: int = 5) -> Gallery:
    rng = np.random.default_rng(seed)
    return Gallery(tuple(f"u{i:05d}" for i in range(users)), rng.normal(0, 0.09, (users, 128)).astype(np.float32), 1)


def test_the_bound_leaves_few_templates_and_the_answer_is_exact() -> None:
    """At 20,000 random templates: a real match, a near-tie and an unknown probe each need the float64
    distance of a few templates only, and the answer is the brute force's."""
    g = random_gallery(20_000)
    rng = np.random.default_rng(6)
    matcher = Matcher(g)
    twin = g.matrix[1] + rng.normal(0, 0.01, 128).astype(np.float32)  # user 1 and a probe between users 1 and 2
    probes = [g.matrix[0] + rng.normal(0, 0.3 / math.sqrt(128), 128), (twin + g.matrix[1]) / 2,
              rng.normal(0, 0.09, 128)]
    for probe in probes:
        assert matcher.candidates(probe) < 100
        assert_as_brute_force(g, probe)


def test_exact_ties_between_many_users_fall_back_to_every_template() -> None:
    template = np.random.default_rng(1).normal(0, 0.09, 128).astype(np.float32)
    g = Gallery(tuple(f"u{i:03d}" for i in range(300)), np.tile(template, (300, 1)), 1)
    matcher = Matcher(g)
    assert matcher.candidates(template) == 300
    match = assert_as_brute_force(g, template)
    assert (match.best_user, match.second_user, match.best_distance, match.second_distance) == ("u000", "u001", 0, 0)
    assert judge(match, 0.5, 0.1).reason == "ambiguous"


@pytest.mark.parametrize("users", [1, 2])
def test_one_and_two_users(users: int) -> None:
    rng = np.random.default_rng(users)
    g = Gallery(("a", "a", "b")[:users + 1] if users == 2 else ("a", "a"), rng.normal(0, 0.09, (users + 1, 128))
                .astype(np.float32), 1)
    for probe in (g.matrix[0], rng.normal(0, 0.09, 128)):
        match = assert_as_brute_force(g, probe)
        assert (match.second_user is None) == (users == 1)


def test_implausible_probes_are_matched_by_the_full_scan() -> None:
    g = random_gallery(50)
    assert_as_brute_force(g, np.full(128, 1e7))  # beyond the float32 scan's range: every template, exactly
    match = Matcher(g).match(np.full(128, np.nan))
    assert math.isnan(match.best_distance) and judge(match, 0.5, 0.1).reason == "unknown"


def test_huge_and_non_finite_templates() -> None:
    g = random_gallery(30)
    huge = g.matrix.copy()
    huge[3] = 1e30  # no store holds it (|component| <= 4); the matcher still answers exactly
    assert_as_brute_force(Gallery(g.owners, huge, 1), g.matrix[3])
    huge[4, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Matcher(Gallery(g.owners, huge, 1))


def test_templates_at_the_worst_of_their_quantisation_are_still_found() -> None:
    """The bound is tight, not just safe on average. Every template sits half a step off the int8 grid in every
    dimension, and the probe leans along X's error (the scan sees X about E further than it is: E the bound) and
    against Y's and Z's (seen about E closer); truly, Y and Z are 0.006 and 0.004 further than X (in d^2). The scan
    ranks Z, Y, X; a bound 8 % smaller would drop X. X is the best user all the same."""
    rng = np.random.default_rng(3)
    step, edge = 2.0**-7, 127 * 2.0**-7  # a gallery spanning -edge..edge: a grid of exactly 2^-7 from 0
    assert (Compact.of(np.array([[-edge] * 128, [edge] * 128], dtype=np.float32)).scale == step).all()
    x = (rng.integers(-60, 60, 128) + 0.5) * step  # exact in float32; rint's ties go to the even code
    probe = 0.05 * np.sign(x - np.rint(x / step) * step)  # along X's quantisation error

    def odd_steps_from_x(further: float) -> npt.NDArray[np.float64]:
        """X moved by one step (+ or -) in every dimension, so off the grid the other way, with
        d^2 = d(X)^2 + ``further``: each sign chosen greedily, largest effect first."""
        effect, total, signs = 2 * step * (x - probe), 128 * step**2, np.zeros(128)
        for i in np.argsort(-np.abs(effect)):
            signs[i] = 1.0 if abs(total + effect[i] - further) < abs(total - effect[i] - further) else -1.0
            total += signs[i] * effect[i]
        return x + signs * step

    matrix = np.vstack([np.full(128, -edge), x, odd_steps_from_x(0.006), odd_steps_from_x(0.004), np.full(128, edge)])
    g = Gallery(("a", "x", "y", "z", "zz"), matrix.astype(np.float32), 1)
    ranked = brute_force(g, probe)
    assert [u for _, _, u in ranked[:3]] == ["x", "z", "y"]
    assert assert_as_brute_force(g, probe).best_user == "x"

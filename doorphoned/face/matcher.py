"""1:N face matching, pure: a probe encoding against every template, vectorised with numpy, exactly.

Distances are Euclidean, face_recognition's measure (same person ~0.3, different people ~0.8). A match needs
three things (:func:`judge`): the best user's distance within ``threshold``, the second-best *user* (not
template: a user's own photos are close to each other) at least ``margin`` further away, and (:class:`Votes`)
the same user in K of the last N frames, so one lucky frame does not open a door.

**Exact.** A template's distance is, by definition, the brute force's: ``sqrt(sum((t - p)^2))`` in float64 of
the float32 template ``t`` and the probe rounded to float32 ``p`` (:func:`distances`). :meth:`Matcher.match`
returns the best and second-best users and their distances exactly as that, computed for every template, ranks
them (ties: the user first in the gallery), for any templates, without reading the float32 gallery (25.6 MB at
50,000) per probe: it scans an int8 copy (a quarter of it), and computes the float64 distance only for the
templates that a proven bound cannot rule out.

**The bound.** Each dimension ``i`` has its own grid: ``t~ = o + q*s`` (``o_i`` the dimension's midrange, ``s_i``
its range / 254 rounded up to a float32, ``q = rint((t - o) / s)`` in float64, int8, never beyond +-127), so
``|t_i - t~_i| <= h_i = 0.5001 s_i`` (half a step; the float64 rounding of the codes' computation is below 1e-6 of a
step, as the range of distinct float32 values is at least 2^-23 of their size). For a template and the probe::

    d^2 = |t|^2 + |p|^2 - 2 t.p,   t.p = o.p + q.(s*p) + (t - t~).p,   |(t - t~).p| <= sum_i |p_i| h_i

The scan computes ``g = q.(-2 s*p)`` in float32 (the int8 codes widened exactly, a chunk at a time that stays in
L2), and ``a = |t|^2 + g``: ``d^2`` minus ``|p|^2 - 2 o.p``, which is the same for every template and so never
computed. Float32 rounding of the products and of the 128-term sum is at most ``2 gamma |q*s| |p|``, and
``|q*s| = |t~ - o| <= B``, the largest ``|t| + |o| + |h| + 1`` of the gallery. So
``|a - (d^2 - const)| <= E = 2 (sum_i |p_i| h_i + gamma B |p|) + kappa (B + |p|)^2``, where ``kappa`` (1e-6)
covers, many times over, the float32 rounding of ``a`` and the float64 rounding of the brute force itself
(~1e-14, its square root's ties included).

**The search.** Let ``a1`` be the smallest ``a`` and ``a2`` the smallest ``a`` of any other user. Two users have a
``d^2 - const <= a2 + E``, so the best and the second-best users' nearest templates do, and their
``a <= a2 + 2E``; any template with ``a > a2 + 2E`` is further than both and cannot change the answer. The float64
distance of the templates with ``a <= a2 + 2E`` (a handful on real galleries: ``E`` is ~0.03 of a squared distance
of ~1) gives both users exactly; when the bound prunes nothing (duplicates, a probe equidistant from thousands)
that is the full scan, still exact, only slower.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from doorphoned.face.store import DIMENSIONS, Gallery


@dataclass(frozen=True)
class Match:
    """The nearest two users to one probe; ``None`` / ``inf`` where the gallery has fewer users."""

    best_user: str | None
    best_distance: float
    second_user: str | None
    second_distance: float

    def to_dict(self) -> dict[str, object]:
        def rounded(value: float) -> float | None:
            return round(value, 4) if np.isfinite(value) else None
        return {"best_user": self.best_user, "best_distance": rounded(self.best_distance),
                "second_user": self.second_user, "second_distance": rounded(self.second_distance)}


@dataclass(frozen=True)
class Verdict:
    """:func:`judge`'s answer for one probe: ``user`` when it matched, else why not."""

    user: str | None
    reason: str  # "match", "unknown" (too far), "ambiguous" (margin), "no_templates"
    match: Match


NO_MATCH = Match(None, float("inf"), None, float("inf"))


#: rows widened to float32 per step of the scan: 512 KB, stays in a core's L2 cache with its int8 source
CHUNK = 1024
_U = 2.0**-24  # float32 unit roundoff
_GAMMA = 130 * _U / (1 - 130 * _U)  # rounding of a 128-term float32 dot product and of the s*p products
_KAPPA = 1e-6  # float32 rounding of a = |t|^2 + g (~2e-7) and the brute force's float64 rounding (~1e-14)
_LARGEST = 1e6  # a probe or template this long (an encoding's is ~1) could overflow the float32 scan: full scan


class Matcher:
    """A gallery prepared for matching; build a new one when the templates change (~40 ms at 50,000).

    Holds per-probe scratch buffers: one matcher serves one thread (the worker's loop)."""

    def __init__(self, gallery: Gallery) -> None:
        owners = gallery.owners
        self.version = gallery.version
        self.size = len(owners)
        self._matrix = np.ascontiguousarray(gallery.matrix, dtype=np.float32).reshape(self.size, DIMENSIONS)
        if not np.isfinite(self._matrix).all():
            raise ValueError("a template holds NaN or infinity")
        starts = [i for i in range(len(owners)) if i == 0 or owners[i] != owners[i - 1]]
        if len(set(owners)) != len(starts):
            raise ValueError("the gallery must be ordered by user")
        self._starts = np.asarray([*starts, self.size], dtype=np.intp)
        self._user_of = np.repeat(np.arange(len(starts)), np.diff(self._starts))
        self._users = tuple(owners[i] for i in starts)
        self._compact = Compact.of(self._matrix)
        self._partial = np.empty(self.size, dtype=np.float32)
        self._block = np.empty((min(CHUNK, self.size), DIMENSIONS), dtype=np.float32)

    @property
    def users(self) -> int:
        return len(self._users)

    @property
    def extra_bytes(self) -> int:
        """Memory held beyond the gallery's float32 matrix (the int8 copy, ~2.6 bytes a template more, buffers)."""
        arrays = (self._compact.codes, self._compact.norms, self._partial, self._block, self._user_of, self._starts)
        return sum(a.nbytes for a in arrays)

    def match(self, probe: npt.NDArray[np.floating]) -> Match:
        """The best and second-best users and their distances, exactly as :func:`distances` over every template
        ranks them (ties: the user first in the gallery)."""
        if not self.size:
            return NO_MATCH
        vector = np.asarray(probe, dtype=np.float32).reshape(DIMENSIONS)
        rows = self._candidates(vector)
        exact = distances(self._matrix, vector, rows)
        users = self._user_of[rows]
        order = np.lexsort((users, exact))  # by distance, then gallery order
        first = int(order[0])
        others = order[users[order] != users[first]]
        if not len(others):
            return Match(self._users[users[first]], float(exact[first]), None, float("inf"))
        second = int(others[0])
        return Match(self._users[users[first]], float(exact[first]), self._users[users[second]],
                     float(exact[second]))

    def candidates(self, probe: npt.NDArray[np.floating]) -> int:
        """How many templates the bound leaves for the exact distance (the bench reports it)."""
        return len(self._candidates(np.asarray(probe, dtype=np.float32).reshape(DIMENSIONS)))

    def _candidates(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.intp]:
        """The templates with ``a <= a2 + 2E`` (module docstring); all of them for implausible vectors."""
        length, c = float(np.linalg.norm(vector.astype(np.float64))), self._compact
        if not max(length, c.spread) <= _LARGEST:  # NaN too
            return np.arange(self.size)
        quantised = float(np.abs(vector.astype(np.float64)) @ c.half)
        bound = 2 * (quantised + _GAMMA * c.spread * length) + _KAPPA * (c.spread + length) ** 2
        partial = np.add(c.norms, self._scan(vector), out=self._partial)
        cut = np.float32(self._second_user_least(partial) + 2 * bound)
        return np.flatnonzero(partial <= np.nextafter(cut, np.float32(np.inf)))  # rounded up, never down

    def _scan(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``q . (-2 s*p)`` for every template: the int8 copy widened to float32 a chunk at a time."""
        scaled = (-2 * self._compact.scale) * vector
        out = self._partial
        for start in range(0, self.size, CHUNK):
            codes = self._compact.codes[start:start + CHUNK]
            block = self._block[:len(codes)]
            np.copyto(block, codes)
            np.dot(block, scaled, out=out[start:start + len(codes)])
        return out

    def _second_user_least(self, partial: npt.NDArray[np.float32]) -> float:
        """``a2``: the least ``a`` of any user but the one holding the least; infinity with one user. Leaves
        ``partial`` as it was."""
        user = self._user_of[int(np.argmin(partial))]
        rows = slice(self._starts[user], self._starts[user + 1])
        held = partial[rows].copy()
        partial[rows] = np.inf
        least = float(partial.min())
        partial[rows] = held
        return least


@dataclass(frozen=True)
class Compact:
    """The gallery as int8 codes on a grid per dimension, ``scale`` its steps, ``half`` each dimension's bound on
    ``|t_i - t~_i|``, ``norms`` each ``|t|^2`` (float32), and ``spread`` the bound's ``B`` (module docstring)."""

    codes: npt.NDArray[np.int8]
    scale: npt.NDArray[np.float32]
    half: npt.NDArray[np.float64]
    norms: npt.NDArray[np.float32]
    spread: float

    @classmethod
    def of(cls, matrix: npt.NDArray[np.float32]) -> Compact:
        """Quantise a chunk at a time, so that the float64 temporaries stay small (no peak in the worker's RSS)."""
        n = len(matrix)
        low = matrix.min(axis=0).astype(np.float64) if n else np.zeros(DIMENSIONS)
        high = matrix.max(axis=0).astype(np.float64) if n else np.zeros(DIMENSIONS)
        offset, step = (low + high) / 2, (high - low) / 254
        scale = step.astype(np.float32)
        scale[scale < step] = np.nextafter(scale[scale < step], np.float32(np.inf))  # never under the step
        scale[scale == 0] = 1  # a constant dimension: every code 0, no error
        codes, squares = np.empty((n, DIMENSIONS), np.int8), np.zeros(n)
        for start in range(0, n, CHUNK):
            exact = matrix[start:start + CHUNK].astype(np.float64)
            codes[start:start + CHUNK] = np.clip(np.rint((exact - offset) / scale), -127, 127)  # clip: a no-op
            squares[start:start + CHUNK] = np.einsum("ij,ij->i", exact, exact)
        with np.errstate(over="ignore"):  # a template beyond _LARGEST: never scanned, every probe's full scan
            norms = squares.astype(np.float32)  # one float32 rounding
        half = 0.5001 * scale.astype(np.float64)
        spread = math.sqrt(squares.max(initial=0)) + float(np.linalg.norm(offset) + np.linalg.norm(half)) + 1
        return cls(codes, scale, half, norms, spread)


def distances(matrix: npt.NDArray[np.float32], probe: npt.NDArray[np.float32],
              rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """The brute force's distance, by definition: ``sqrt(sum((t - p)^2))`` in float64, for ``matrix[rows]``
    (a row's value does not depend on the others; a chunk at a time when they are many)."""
    wide = probe.astype(np.float64)
    out = np.empty(len(rows))
    for start in range(0, len(rows), 4096):
        diff = matrix[rows[start:start + 4096]].astype(np.float64) - wide
        out[start:start + 4096] = np.sqrt((diff * diff).sum(axis=1))
    return out


def judge(match: Match, threshold: float, margin: float) -> Verdict:
    """A match within ``threshold`` and ``margin`` closer than the next user, or the reason it is not one."""
    if match.best_user is None:
        return Verdict(None, "no_templates", match)
    if not match.best_distance <= threshold:
        return Verdict(None, "unknown", match)
    if match.second_distance - match.best_distance < margin:
        return Verdict(None, "ambiguous", match)
    return Verdict(match.best_user, "match", match)


class Votes:
    """K of the last N frames must name the same user; a refused or faceless frame votes for nobody."""

    def __init__(self, k: int, n: int) -> None:
        if not 1 <= k <= n:
            raise ValueError("need 1 <= k <= n")
        self.k = k
        self._last: deque[str | None] = deque(maxlen=n)

    def add(self, user: str | None) -> str | None:
        """Record one frame's answer; the user who now has K votes, if any."""
        self._last.append(user)
        if user is not None and sum(1 for u in self._last if u == user) >= self.k:
            return user
        return None

    def clear(self) -> None:
        """After a decision (and when the face leaves): the next decision needs K fresh frames."""
        self._last.clear()

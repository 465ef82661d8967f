"""Face templates as the features that only pass them along see them: the shape rule and one port.

The credential sync (``access/sync.py``) carries each user's face templates like their PIN and cards, but
may not import ``face/``; the face store (``face/store.py``) satisfies :class:`FaceTemplates`, handed over
by the composition root. Plain floats: the daemon never loads numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

DIMENSIONS = 128
MAX_COMPONENT = 4.0  # dlib's encodings stay well inside +-1; anything far outside is not an encoding


class TemplateError(ValueError):
    """Not a face template (wrong count, not numbers, NaN, Infinity, out of range)."""


def check_template(values: object) -> tuple[float, ...]:
    """A template from outside (the cloud, a sync, a file) as 128 floats, or a clear refusal:
    exactly 128 finite numbers of a plausible size (NaN, Infinity, booleans and strings refused)."""
    tolist = getattr(values, "tolist", None)  # a numpy vector (the worker's, a test's)
    if callable(tolist) and not isinstance(values, list | tuple | str | bytes):
        values = tolist()
    if not isinstance(values, list | tuple):
        raise TemplateError(f"a face template is a list of {DIMENSIONS} numbers")
    if len(values) != DIMENSIONS:
        raise TemplateError(f"a face template has {DIMENSIONS} numbers, not {len(values)}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TemplateError("a face template holds numbers only")
        if not math.isfinite(value) or abs(value) > MAX_COMPONENT:
            raise TemplateError(f"a face template's numbers are finite and within +-{MAX_COMPONENT:g}")
    return tuple(float(v) for v in values)


class FaceTemplates(Protocol):
    def replace(self, user_id: str, templates: Sequence[Sequence[float]], source: str, now: datetime) -> None:
        """Exactly these templates for the user (none: all removed), in the caller's transaction; raises
        ``ValueError`` (with the reason) when they break a rule (too many)."""

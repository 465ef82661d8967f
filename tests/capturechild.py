"""A child process that takes captures as fast as it can, for the kill -9 consistency test and the bench.

``python -m tests.capturechild STATE_DIR [KEEP_COUNT]``: opens the store like the daemon would (migrations,
sweep), then takes captures in a loop (retention deleting as it goes) and prints each capture's id.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from doorphoned.camera.captures import CaptureSettings, CaptureStore
from doorphoned.core.frames import Frame
from doorphoned.core.store import DB_NAME, Store
from tests import scenes


def main() -> None:
    state = Path(sys.argv[1])
    keep = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    store = Store(state / DB_NAME)
    store.open()
    captures = CaptureStore(state, store, CaptureSettings(keep_count=keep, min_free_bytes=0))
    captures.open()
    rng = np.random.default_rng()
    image = scenes.render(scenes.porch(), rng=rng)
    n = 0
    while True:
        n += 1
        taken = captures.take(Frame(n, 0.0, image), "motion", door=1 + n % 16)
        print(taken.id, flush=True)


if __name__ == "__main__":
    main()

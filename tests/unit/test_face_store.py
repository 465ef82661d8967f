"""Face templates in a real SQLite store: sealed, several per user, gone with the user in one transaction."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.decide import UserRecord
from doorphoned.core.devicekey import DeviceKey, DeviceKeyError
from doorphoned.core.store import Store
from doorphoned.face.store import MAX_TEMPLATES_PER_USER, FaceStore, FaceStoreError, check_template

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
KEY = DeviceKey(b"k" * 32)


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, 128).astype(np.float32)


@pytest.fixture
def stores(tmp_path: Path):
    store = Store(tmp_path / "doorphoned.db")
    store.open()
    creds = CredentialStore(store, KEY)
    for user in ("alice", "bob"):
        creds.add_user(UserRecord(user, user.title()), NOW)
    yield store, creds, FaceStore(store, KEY)
    store.close()


def test_templates_are_sealed_and_open_to_the_same_numbers(stores) -> None:
    store, _, faces = stores
    ids = faces.add("alice", [vector(1), vector(2)], "local", NOW)
    assert len(ids) == 2 and faces.count("alice") == 2
    raw = store.db.execute("SELECT template FROM face_templates").fetchall()
    for (blob,) in raw:  # no float of the template appears in the file's bytes
        assert vector(1).tobytes()[:16] not in blob and len(blob) == 12 + 512 + 16
    assert np.allclose(faces.templates_of("alice")[0], vector(1))
    gallery = faces.gallery()
    assert gallery.owners == ("alice", "alice") and gallery.matrix.shape == (2, 128)


def test_a_sealed_template_moved_to_another_user_does_not_open(stores) -> None:
    store, _, faces = stores
    faces.add("alice", [vector(1)], "local", NOW)
    store.db.execute("UPDATE face_templates SET user_id = 'bob'")
    with pytest.raises(DeviceKeyError):
        faces.gallery()


def test_removing_the_user_removes_every_template_in_the_file(stores, tmp_path: Path) -> None:
    _, creds, faces = stores
    faces.add("alice", [vector(1), vector(2), vector(3)], "local", NOW)
    faces.add("bob", [vector(4)], "cloud", NOW)
    creds.remove_user("alice")
    db = sqlite3.connect(tmp_path / "doorphoned.db")  # what is on disk, read by another connection
    assert db.execute("SELECT DISTINCT user_id FROM face_templates").fetchall() == [("bob",)]
    assert faces.users() == [("bob", 1)]


def test_limits_and_bad_templates_store_nothing(stores) -> None:
    _, _, faces = stores
    version = faces.version()
    with pytest.raises(FaceStoreError, match="no user"):
        faces.add("carol", [vector(1)], "local", NOW)
    with pytest.raises(FaceStoreError, match="at most"):
        faces.add("alice", [vector(i) for i in range(MAX_TEMPLATES_PER_USER + 1)], "local", NOW)
    bad = vector(1).tolist()
    bad[5] = float("nan")
    with pytest.raises(FaceStoreError, match="finite"):
        faces.add("alice", [vector(2), bad], "local", NOW)  # type: ignore[list-item]
    assert faces.count() == 0 and faces.version() == version


@pytest.mark.parametrize("value", [
    [0.1] * 127, [0.1] * 129, [], "0.1", None, {"a": 1}, [True] * 128, ["0.1"] * 128,
    [float("inf")] + [0.0] * 127, [float("-inf")] + [0.0] * 127, [1e300] + [0.0] * 127, [[0.1]] * 128])
def test_check_template_refuses_what_is_not_128_finite_numbers(value) -> None:
    with pytest.raises(FaceStoreError):
        check_template(value)


def test_replace_and_remove_bump_the_version_the_worker_polls(stores) -> None:
    _, _, faces = stores
    v0 = faces.version()
    faces.add("alice", [vector(1)], "local", NOW)
    faces.replace("alice", [vector(2), vector(3)], "cloud", NOW)
    assert faces.count("alice") == 2 and faces.version() > v0
    v1 = faces.version()
    faces.remove("alice", faces.of_user("alice")[0].id)
    assert faces.count("alice") == 1 and faces.version() > v1
    with pytest.raises(FaceStoreError):
        faces.remove("alice", 999999)


def test_the_daemon_loads_neither_numpy_nor_dlib() -> None:
    """Face recognition adds nothing to the daemon's memory: templates are plain floats there; numpy and dlib
    live in the worker and the enrolment process only."""
    import subprocess
    import sys

    code = ("import sys, doorphoned.app.daemon, doorphoned.face.commands, doorphoned.face.feature;"
            "print(sorted(m for m in ('numpy', 'dlib', 'face_recognition', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"

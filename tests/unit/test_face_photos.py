"""Kept enrolment photos (``[face] keep_photos``) in a real SQLite store and a real folder: sealed 0600 files,
gone with their template or user right after the commit, a crash between commit and unlink drained at start,
strays swept, retention by count, bytes and age (a fixed clock moved by the test)."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.decide import UserRecord
from doorphoned.core.clock import FixedClock
from doorphoned.core.commands import CommandError, Peer, Registry
from doorphoned.core.devicekey import DeviceKey
from doorphoned.core.store import Store
from doorphoned.face.commands import FaceCommands
from doorphoned.face.config import FaceConfig
from doorphoned.face.photos import DIR_NAME, AuditPhotoError, FacePhotos, PhotoLimits
from doorphoned.face.store import FaceStore
from tests.fuzz import HOSTILE_CHARS, fuzz_cases, hostile_numbers, hostile_text

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)  # the fixed clock's instant, never compared with the wall clock
KEY = DeviceKey(b"k" * 32)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"


def photo(seed: int) -> bytes:
    return JPEG + np.random.default_rng(seed).bytes(2000)


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, 128).astype(np.float32)


class Unit:
    """The daemon's wiring of the photo store, in one process."""

    def __init__(self, state: Path, limits: PhotoLimits) -> None:
        self.state, self.limits = state, limits
        self.store = Store(state / "doorphoned.db")
        self.store.open()
        self.clock = FixedClock(NOW)
        self.creds = CredentialStore(self.store, KEY)
        self.faces = FaceStore(self.store, KEY)
        self.photos = FacePhotos(state, self.store, KEY, self.clock, lambda: self.limits)
        self.creds.after_commit.append(self.photos.drain)

    def enrol(self, user: str, *seeds: int) -> list[int]:
        data = [photo(s) for s in seeds]
        self.photos.make_room(data)
        written = self.photos.write(user, data)
        return self.faces.add(user, [vector(s) for s in seeds], "local", self.clock.now(),
                              list(zip(written.ids, written.sizes, strict=True)))

    def files(self) -> list[Path]:
        folder = self.state / DIR_NAME
        return sorted(folder.iterdir()) if folder.exists() else []

    def rows(self, sql: str) -> list[tuple]:
        return self.store.db.execute(sql).fetchall()


ON = PhotoLimits(keep=True, count=100, bytes=10**8, days=30, min_free=0)


@pytest.fixture
def unit(tmp_path: Path):
    u = Unit(tmp_path, ON)
    u.photos.open()
    for user in ("alice", "bob"):
        u.creds.add_user(UserRecord(user, user.title()), NOW)
    yield u
    u.store.close()


def test_a_kept_photo_is_sealed_0600_in_a_0700_folder_and_reads_back_exactly(unit: Unit) -> None:
    unit.enrol("alice", 1)
    [file] = unit.files()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    sealed = file.read_bytes()
    assert b"\xff\xd8\xff" not in sealed and JPEG[100:132] not in sealed and b"alice" not in file.name.encode()
    [kept] = unit.photos.of_user("alice")
    assert kept.size == len(sealed) and kept.as_dict()["source"] == "cli"
    assert unit.photos.read("alice", kept.id) == photo(1)
    with pytest.raises(AuditPhotoError):
        unit.photos.read("bob", kept.id)  # bound to its user: another user's name does not open it
    for bad in ("../" + kept.id, kept.id + "\0", "x" * 100_000, "", kept.id.upper()):
        with pytest.raises(AuditPhotoError):
            unit.photos.read("alice", bad)


def test_removing_the_user_removes_the_file_right_after_the_commit(unit: Unit) -> None:
    unit.enrol("alice", 1, 2)
    unit.enrol("bob", 3)
    assert len(unit.files()) == 3
    unit.creds.remove_user("alice")
    assert len(unit.files()) == 1 and unit.rows("SELECT count(*) FROM face_photo_doomed") == [(0,)]
    unit.faces.remove("bob")
    unit.photos.drain()  # face remove: the commands' hook
    assert unit.files() == [] and unit.rows("SELECT count(*) FROM face_templates") == [(0,)]


def test_a_crash_between_commit_and_unlink_is_drained_at_start(tmp_path: Path, unit: Unit) -> None:
    unit.enrol("alice", 1)
    unit.enrol("bob", 2)
    unit.store.db.execute("DELETE FROM users WHERE id = 'alice'")  # committed; the process dies before the unlink
    (unit.state / DIR_NAME / ".0123456789abcdef0123456789abcdef.tmp").write_bytes(b"half")  # a write cut short
    (unit.state / DIR_NAME / ("ab" * 16 + ".sealed")).write_bytes(b"renamed, row never committed")
    assert len(unit.files()) == 4
    unit.store.close()
    again = Unit(tmp_path, ON)
    result = again.photos.open()
    assert result["drained"] == 1 and result["files"] == 2
    [left] = again.files()
    assert again.photos.read("bob", left.name.removesuffix(".sealed")) == photo(2)
    again.store.close()


def test_a_row_whose_file_is_gone_loses_its_photo_at_start(tmp_path: Path, unit: Unit) -> None:
    unit.enrol("alice", 1)
    unit.files()[0].unlink()
    unit.store.close()
    again = Unit(tmp_path, ON)
    assert again.photos.open()["rows"] == 1
    assert again.rows("SELECT count(*), count(photo) FROM face_templates") == [(1, 0)]
    again.store.close()


def test_retention_by_count_bytes_and_age_oldest_first_templates_stay(unit: Unit) -> None:
    unit.limits = PhotoLimits(keep=True, count=2, bytes=10**8, days=30, min_free=0)
    unit.enrol("alice", 1)
    unit.clock.advance(60)
    unit.enrol("alice", 2)
    unit.clock.advance(60)
    unit.enrol("bob", 3)
    assert len(unit.photos.of_user("alice")) == 1
    assert len(unit.files()) == 2 and unit.rows("SELECT count(*) FROM face_templates") == [(3,)]
    assert unit.photos.read("alice", unit.photos.of_user("alice")[0].id) == photo(2)  # the oldest went

    size = len(photo(1)) + 28
    unit.limits = PhotoLimits(keep=True, count=100, bytes=size * 2, days=30, min_free=0)
    unit.clock.advance(60)
    unit.enrol("bob", 4)
    assert len(unit.files()) == 2 and unit.photos.of_user("alice") == []

    unit.clock.advance(timedelta(days=31).total_seconds())
    assert unit.photos.apply_retention() == 2 and unit.files() == []
    assert unit.rows("SELECT count(*) FROM face_templates") == [(4,)]


def test_too_little_free_space_refuses_before_any_file(unit: Unit) -> None:
    unit.limits = PhotoLimits(keep=True, count=100, bytes=10**8, days=30, min_free=2**62)
    with pytest.raises(AuditPhotoError, match="MB free"):
        unit.enrol("alice", 1)
    unit.limits = PhotoLimits(keep=True, count=1, bytes=10**8, days=30, min_free=0)
    with pytest.raises(AuditPhotoError, match="do not fit"):
        unit.enrol("alice", 1, 2)
    assert unit.files() == [] and unit.rows("SELECT count(*) FROM face_templates") == [(0,)]


def test_with_keep_photos_off_start_makes_no_folder(tmp_path: Path) -> None:
    off = Unit(tmp_path, PhotoLimits(keep=False, count=1, bytes=10**6, days=1, min_free=0))
    off.photos.open()
    assert not (tmp_path / DIR_NAME).exists()
    assert sorted(os.listdir(tmp_path)) == sorted(p for p in os.listdir(tmp_path) if p.startswith("doorphoned.db"))
    off.store.close()


@pytest.mark.parametrize(("value", "message"), [
    ("DOORPHONED_FACE_PHOTOS_KEEP_COUNT=0", "face.photos_keep_count"),
    ("DOORPHONED_FACE_PHOTOS_KEEP_BYTES=100", "face.photos_keep_bytes"),
    ("DOORPHONED_FACE_PHOTOS_KEEP_DAYS=nan", "face.photos_keep_days"),
    ("DOORPHONED_FACE_PHOTOS_KEEP_DAYS=0", "face.photos_keep_days"),
    ("DOORPHONED_FACE_KEEP_PHOTOS=maybe", "face.keep_photos"),
    ("DOORPHONED_FACE_PHOTOS_MIN_FREE_BYTES=-1", "face.photos_min_free_bytes"),
])
def test_bad_retention_settings_are_refused_by_name(value: str, message: str) -> None:
    from doorphoned.app.config import load_default
    from doorphoned.core.config import ConfigError

    name, _, text = value.partition("=")
    with pytest.raises(ConfigError, match=message):
        load_default(env={name: text})
    assert load_default(env={}).face.keep_photos is False  # the default keeps no photo


# ------------------------------------------------- fuzz of face.photo / face.show (`make fuzz-face-photos`)
def _photo_fuzz_unit(tmp: Path) -> tuple[Unit, Registry, str]:
    u = Unit(tmp, ON)
    u.photos.open()
    for user in ("alice", "bob"):
        u.creds.add_user(UserRecord(user, user.title()), NOW)
    u.enrol("alice", 7)
    config = FaceConfig(enabled=True, keep_photos=True)
    commands = FaceCommands(u.faces, u.clock, lambda: ZoneInfo("UTC"), lambda: config,
                            tmp / "doorphoned.db", tmp / "device.key", lambda c, d, at: {}, u.photos.drain, u.photos)
    return u, Registry(commands.commands()), u.photos.of_user("alice")[0].id


def _ids(real: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(real), hostile_text, hostile_numbers, st.none(), st.booleans(),
        st.sampled_from(HOSTILE_CHARS).map(lambda c: real + c),
        st.sampled_from(["../", "../../", "/", "./", "..\\", "%2e%2e/"]).map(lambda p: p + real),
        st.sampled_from([real.upper(), real[:-1], real + ".sealed", f"{real}/../{real}", "." + real, "*", ""]),
        st.sampled_from([[real], {"id": real}]),
    )


def test_face_photo_and_show_fuzz(tmp_path: Path) -> None:
    """Hostile users, ids and offsets against a store holding one kept photo: every request is answered (a
    refusal or the photo's own bytes), nothing is written, moved or removed, and no other user's name opens it."""
    unit, registry, real = _photo_fuzz_unit(tmp_path)
    listing = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if "doorphoned.db" not in p.name)
    rows = unit.rows("SELECT id, user_id, photo, photo_size, added FROM face_templates")
    users = st.one_of(st.sampled_from(["alice", "bob", "nobody", "ALICE", "alice\x00", "../alice"]), hostile_text,
                      hostile_numbers, st.none())
    args = st.fixed_dictionaries({}, optional={
        "user": users, "photo": _ids(real), "offset": st.one_of(hostile_numbers, st.integers(-5, 20_000)),
        "evil\x00": st.just(1)})
    served = {"refused": 0, "served": 0}
    whole = asyncio.run(registry.check("socket", "face.photo", {"user": "alice", "photo": real}).handler(
        {"user": "alice", "photo": real, "offset": 0}, Peer(uid=0, pid=1, gid=0)))
    assert base64.b64decode(whole["data"]) == photo(7)[:512 * 1024]  # the path the fuzz rarely hits by chance

    @settings(max_examples=fuzz_cases(300), deadline=None, suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(["face.photo", "face.show"]), args=args)
    def fuzz(name: str, args: dict[str, Any]) -> None:
        try:
            command = registry.check("socket", name, args)
            result = asyncio.run(command.handler(args, Peer(uid=0, pid=1, gid=0)))
        except CommandError as exc:
            assert str(exc) and "\n" not in str(exc)
            served["refused"] += 1
            return
        if name == "face.photo":
            assert (args["user"], args["photo"]) == ("alice", real), args  # only the owner's exact id opens
            offset = args.get("offset", 0)
            assert base64.b64decode(result["data"]) == photo(7)[offset:offset + 512 * 1024]
            assert result["size"] == len(photo(7))
            served["served"] += 1
        else:
            assert set(result) == {"user", "templates", "photos"}  # never the bytes
            assert all(set(p) == {"id", "template", "added", "size", "source"} for p in result["photos"])

    fuzz()
    assert served["refused"] > 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if "doorphoned.db" not in p.name) \
        == listing
    assert unit.rows("SELECT id, user_id, photo, photo_size, added FROM face_templates") == rows
    assert unit.photos.read("alice", real) == photo(7)
    unit.store.close()


def _commands(unit: Unit, keep: bool, answer: dict[str, Any]) -> FaceCommands:
    config = FaceConfig(enabled=True, keep_photos=keep)
    commands = FaceCommands(unit.faces, unit.clock, lambda: ZoneInfo("UTC"), lambda: config,
                            unit.state / "doorphoned.db", unit.state / "device.key", lambda c, d, at: {},
                            unit.photos.drain, unit.photos)

    async def fake_tool(op: str, user_id: str, data: list[bytes]) -> Any:
        return answer
    commands._run_tool = fake_tool  # type: ignore[method-assign]  # no dlib here: the e2e tests run it
    return commands


def _enrol(commands: FaceCommands, *seeds: int) -> dict[str, Any]:
    for n, seed in enumerate(seeds):
        commands.uploads.add(f"u{n}", 1, 1, base64.b64encode(photo(seed)).decode())
    return asyncio.run(commands.enrol({"user": "alice", "uploads": [f"u{n}" for n in range(len(seeds))]},
                                      Peer(uid=0, pid=1, gid=0)))


def test_enrol_keeps_one_file_per_template_only_when_on(unit: Unit) -> None:
    answer = {"ok": True, "templates": [vector(1).tolist(), vector(2).tolist()], "quality": []}
    _enrol(_commands(unit, False, answer), 1, 2)
    assert unit.files() == [] and unit.rows("SELECT count(*), count(photo) FROM face_templates") == [(2, 0)]
    result = _enrol(_commands(unit, True, answer), 3, 4)
    kept = unit.photos.of_user("alice")
    assert [p.template for p in kept] == result["templates"] and len(unit.files()) == 2
    assert [unit.photos.read("alice", p.id) for p in kept] == [photo(3), photo(4)]
    refused = {"ok": False, "reason": "no_face", "message": "no face found", "photo": 0}
    with pytest.raises(CommandError, match="no_face"):
        _enrol(_commands(unit, True, refused), 5)
    assert len(unit.files()) == 2  # a refused photo is never kept


def test_a_write_or_store_failure_leaves_no_file_and_no_row(unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"ok": True, "templates": [vector(1).tolist()], "quality": []}
    commands = _commands(unit, True, answer)

    def full(user_id: str, photos: Any) -> Any:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(unit.photos, "write", full)
    with pytest.raises(CommandError, match="No space left"):
        _enrol(commands, 1)
    monkeypatch.undo()
    for _ in range(10):
        unit.faces.add("alice", [vector(9)], "local", NOW)  # at the per-user maximum: the next add is refused
    with pytest.raises(CommandError, match="at most"):
        _enrol(commands, 2)
    assert unit.files() == [] and unit.rows("SELECT count(photo) FROM face_templates") == [(0,)]


def test_a_cloud_replace_takes_the_old_photos_and_keeps_the_new_one(unit: Unit) -> None:
    from doorphoned.core.commands import CLOUD

    commands = _commands(unit, True, {"ok": True, "templates": [vector(1).tolist()], "quality": []})
    _enrol(commands, 1)
    [old] = unit.photos.of_user("alice")
    args = {"user": "alice", "photo": base64.b64encode(photo(2)).decode(), "replace": True}
    asyncio.run(commands.upsert(args, CLOUD))
    [new] = unit.photos.of_user("alice")
    assert new.id != old.id and new.as_dict()["source"] == "cloud" and len(unit.files()) == 1
    assert unit.photos.read("alice", new.id) == photo(2)
    asyncio.run(commands.upsert({"user": "alice", "template": vector(3).tolist(), "replace": True}, CLOUD))
    assert unit.files() == [] and unit.rows("SELECT count(*), count(photo) FROM face_templates") == [(1, 0)]

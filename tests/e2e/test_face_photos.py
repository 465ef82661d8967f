"""Enrolment photos kept for audit (``[face] keep_photos``) through the real unit: the daemon and hw-sim, the
enrolment process, real SQLite files read by the test, real mosquitto for the cloud's paths.

Off (the default), nothing of a photo reaches the state dir. On, each accepted photo is one sealed file (0600
in a 0700 folder, no JPEG in it) that ``face photo`` gives back byte for byte; retention drops the oldest
(by count now, by age across a restart); every removal path (CLI, cloud ``face.remove``, a sync delta or
snapshot removing the user) leaves no file and no row; a start after a crash sweeps files whose rows are gone.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.facephotos import photos
from tests.mqtt import BIN, cloud_send, cloud_tool
from tests.procs import wait_for

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)

FACE = {"DOORPHONED_FACE_ENABLED": "true"}
KEEP = {**FACE, "DOORPHONED_FACE_KEEP_PHOTOS": "true"}
ENROL = 300  # seconds: dlib's start on a loaded 2-core machine
PIECE = 40_000  # base64 characters per cloud part, under the 64 KiB payload


def _json(d, *args: str) -> dict:
    return json.loads(d.ctl(*args, "--json", timeout=ENROL).stdout)


def _files(root: Path) -> list[Path]:
    return [Path(top) / name for top, _, names in os.walk(root) for name in names
            if (Path(top) / name).is_file() and not (Path(top) / name).is_symlink()]


def _has_run_of(blob: bytes, photo: bytes, run: int = 48, samples: int = 24) -> bool:
    """Whether ``blob`` holds any of ``samples`` runs of ``run`` bytes spread over ``photo``."""
    step = max(1, (len(photo) - run) // samples)
    return any(photo[i:i + run] in blob for i in range(0, len(photo) - run, step))


def _rows(d, sql: str) -> list[tuple]:
    db = sqlite3.connect(d.state_dir / "doorphoned.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _photo_dir(d) -> Path:
    return d.state_dir / "face-photos"


def _kept(d) -> list[Path]:
    return sorted(_photo_dir(d).iterdir()) if _photo_dir(d).exists() else []


def test_off_nothing_of_the_photo_reaches_the_state_dir(daemon_factory, hwsim, tmp_path) -> None:
    d = daemon_factory(env=FACE)
    d.start()
    relays = hwsim.relays()
    user = _json(d, "user", "add", "Barack")["id"]
    image = (photos() / "obama.jpg").read_bytes()
    assert len(_json(d, "face", "enrol", user, "--photo", str(photos() / "obama.jpg"))["templates"]) == 1
    assert not _photo_dir(d).exists()
    for path in _files(d.state_dir):  # the database, its WAL, the keys, the log: no run of the photo anywhere
        assert not _has_run_of(path.read_bytes(), image), path
    assert _json(d, "face", "show", user)["photos"] == []
    out = tmp_path / "out.jpg"
    result = d.ctl("face", "photo", user, "0" * 32, "--out", str(out), check=False)
    assert result.returncode == 1 and "no such kept photo" in result.stderr and not out.exists()
    unknown = d.ctl("face", "show", "no-such-user", check=False)  # a mistyped id is not "no templates"
    assert unknown.returncode == 1 and "no user" in unknown.stderr and not unknown.stdout
    assert hwsim.relays() == relays


def test_on_sealed_files_read_back_exactly_count_retention_and_cli_removal(daemon_factory, hwsim, tmp_path) -> None:
    d = daemon_factory(env={**KEEP, "DOORPHONED_FACE_PHOTOS_KEEP_COUNT": "2"})
    d.start()
    relays = hwsim.relays()
    user = _json(d, "user", "add", "Barack")["id"]
    first, second = (photos() / n for n in ("obama.jpg", "obama2.jpg"))
    enrolled = _json(d, "face", "enrol", user, "--photo", str(first), "--photo", str(second))
    assert len(enrolled["templates"]) == 2
    files = _kept(d)
    assert len(files) == 2 and stat.S_IMODE(_photo_dir(d).stat().st_mode) == 0o700
    for path in files:
        sealed = path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not sealed.startswith((b"\xff\xd8", b"\x89PNG")) and b"JFIF" not in sealed and b"Exif" not in sealed
        assert not _has_run_of(sealed, first.read_bytes()) and not _has_run_of(sealed, second.read_bytes())
    shown = _json(d, "face", "show", user)
    assert [p["source"] for p in shown["photos"]] == ["cli", "cli"]
    assert {p["id"] + ".sealed" for p in shown["photos"]} == {p.name for p in files}
    assert sorted(p["template"] for p in shown["photos"]) == sorted(enrolled["templates"])
    assert all(p["size"] == (_photo_dir(d) / f"{p['id']}.sealed").stat().st_size for p in shown["photos"])

    out = tmp_path / "audit.jpg"
    oldest = shown["photos"][0]
    d.ctl("face", "photo", user, oldest["id"], "--out", str(out))
    assert out.read_bytes() == first.read_bytes() and stat.S_IMODE(out.stat().st_mode) == 0o600
    refused = d.ctl("face", "photo", user, shown["photos"][1]["id"], "--out", str(out), check=False)
    assert refused.returncode == 1 and "--force" in refused.stderr and out.read_bytes() == first.read_bytes()
    d.ctl("face", "photo", user, shown["photos"][1]["id"], "--out", str(out), "--force")
    assert out.read_bytes() == second.read_bytes()
    for bad in ("../" + oldest["id"], oldest["id"][:-1], "x" * 5000):
        result = d.ctl("face", "photo", user, bad, "--out", str(tmp_path / "bad.jpg"), check=False)
        assert result.returncode == 1 and not (tmp_path / "bad.jpg").exists(), result.stderr

    from PIL import Image

    Image.new("RGB", (640, 480), (128, 128, 128)).save(tmp_path / "noface.jpg")
    result = d.ctl("face", "enrol", user, "--photo", str(tmp_path / "noface.jpg"), check=False, timeout=ENROL)
    assert result.returncode == 1 and "(no_face)" in result.stderr
    assert [p.name for p in _kept(d)] == [p.name for p in files]  # a refused photo is never kept

    third = _json(d, "face", "enrol", user, "--photo", str(photos() / "obama3.jpg"))["templates"][0]
    kept = _json(d, "face", "show", user)["photos"]  # keep_count 2: the oldest went, its template stayed
    assert [p["template"] for p in kept] == [shown["photos"][1]["template"], third] and len(_kept(d)) == 2
    assert len(_json(d, "face", "show", user)["templates"]) == 3
    d.ctl("face", "photo", user, kept[1]["id"], "--out", str(tmp_path / "third.jpg"))  # 596 KB: two answers
    assert (tmp_path / "third.jpg").read_bytes() == (photos() / "obama3.jpg").read_bytes()

    status = d.ctl("status", "--json").stdout
    for image in (first.read_bytes(), second.read_bytes()):  # no photo bytes (raw or base64) in logs or status
        encoded = base64.b64encode(image)
        assert encoded[1000:1064].decode() not in d.log_text() + status and not _has_run_of(
            d.log_text().encode(errors="surrogateescape"), image)
    d.ctl("face", "remove", user, "--template", str(third))
    assert len(_kept(d)) == 1 and _rows(d, f"SELECT count(*) FROM face_templates WHERE id = {third}") == [(0,)]
    d.ctl("user", "remove", user)
    assert _kept(d) == [] and _rows(d, "SELECT count(*) FROM face_templates") == [(0,)]
    assert _rows(d, "SELECT count(*) FROM face_photo_doomed") == [(0,)]
    assert hwsim.relays() == relays and "Traceback" not in d.log_text()


def test_age_retention_and_the_orphan_sweep_at_start(daemon_factory, hwsim) -> None:
    d = daemon_factory(env={**KEEP, "DOORPHONED_FACE_PHOTOS_KEEP_DAYS": "30"})
    d.start()
    barack = _json(d, "user", "add", "Barack")["id"]
    joe = _json(d, "user", "add", "Joe")["id"]
    _json(d, "face", "enrol", barack, "--photo", str(photos() / "obama.jpg"))
    _json(d, "face", "enrol", joe, "--photo", str(photos() / "biden.jpg"))
    assert len(_kept(d)) == 2
    assert d.terminate() == 0
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    db = sqlite3.connect(d.state_dir / "doorphoned.db")
    db.execute("UPDATE face_templates SET added = ? WHERE user_id = ?", (old, barack))  # enrolled 40 days ago
    db.execute("DELETE FROM face_templates WHERE user_id = ?", (joe,))  # committed, the unlink never happened
    db.execute("DELETE FROM face_photo_doomed")  # ... and its note lost too: only the sweep can find the file
    db.commit()
    db.close()
    stray = _photo_dir(d) / ("ab" * 16 + ".sealed")
    stray.write_bytes(b"a file whose row never committed")
    (_photo_dir(d) / (".cd" + "0" * 30 + ".tmp")).write_bytes(b"half written")
    d.start()
    assert _kept(d) == []  # Barack's photo aged out, Joe's and the strays had no row
    assert _rows(d, "SELECT user_id, photo FROM face_templates") == [(barack, None)]  # the template stays
    assert _json(d, "face", "show", barack)["photos"] == []
    assert "Traceback" not in d.log_text()


@pytest.fixture
def cloud_unit(daemon_factory, broker):
    d = daemon_factory(env={**broker.env("unit-b"), **KEEP})
    d.start()
    wait_for(lambda: d.ctl_json("cloud", "status")["connected"], timeout=20, what="cloud connected")
    return d


def _send(broker, name: str, args: dict, timeout: int = ENROL) -> dict:
    result = subprocess.run([str(BIN / "doorphone-cloud"), *broker.tool_args("unit-b", "cloud"), "send", name,
                             json.dumps(args), "--compact", "--timeout", str(timeout)],
                            capture_output=True, text=True, timeout=timeout + 30)
    return json.loads(result.stdout) if result.stdout.strip() else {"ok": False, "error": result.stderr}


def _upsert_photo(broker, user: str, name: str, upload: str) -> dict:
    text = base64.b64encode((photos() / name).read_bytes()).decode()
    pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)]
    replies = [_send(broker, "face.upsert", {"user": user, "upload": upload, "part": i + 1, "parts": len(pieces),
                                             "photo": piece}) for i, piece in enumerate(pieces)]
    assert replies[-1]["ok"], replies[-1]
    return replies[-1]["result"]


def test_cloud_photos_kept_and_removed_by_face_remove_a_sync_delta_and_a_snapshot(cloud_unit, broker, tmp_path) -> None:
    d = cloud_unit
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps({"version": 10, "users": [{"user_id": "emp-1", "name": "Barack"},
                                                             {"user_id": "emp-2", "name": "Joe"}]}))
    assert cloud_tool(broker, "unit-b", "sync-push", str(snapshot), "--compact").returncode == 0
    _upsert_photo(broker, "emp-1", "obama.jpg", "up1")
    _upsert_photo(broker, "emp-2", "biden.jpg", "up2")
    template = [0.01 * (i % 7) for i in range(128)]
    assert _send(broker, "face.upsert", {"user": "emp-2", "template": template})["ok"]  # no photo, none kept
    assert len(_kept(d)) == 2
    shown = _json(d, "face", "show", "emp-1")
    assert [p["source"] for p in shown["photos"]] == ["cloud"]
    out = tmp_path / "cloud.jpg"
    d.ctl("face", "photo", "emp-1", shown["photos"][0]["id"], "--out", str(out))
    assert out.read_bytes() == (photos() / "obama.jpg").read_bytes()

    assert _send(broker, "face.remove", {"user": "emp-1"})["result"]["removed"] == 1
    assert len(_kept(d)) == 1 and _rows(d, "SELECT count(*) FROM face_templates WHERE user_id = 'emp-1'") == [(0,)]

    code, reply, _ = cloud_send(broker, "unit-b", "sync.delta",
                                {"from_version": 10, "version": 11, "remove": {"users": ["emp-2"]}})
    assert code == 0 and reply["result"]["removed"]["users"] == 1, reply
    assert _kept(d) == [] and _rows(d, "SELECT count(*) FROM face_templates") == [(0,)]
    assert _rows(d, "SELECT count(*) FROM face_photo_doomed") == [(0,)]

    _upsert_photo(broker, "emp-1", "obama2.jpg", "up3")
    assert len(_kept(d)) == 1
    snapshot.write_text(json.dumps({"version": 12, "users": [{"user_id": "emp-3", "name": "Kamala"}]}))
    assert cloud_tool(broker, "unit-b", "sync-push", str(snapshot), "--compact").returncode == 0  # emp-1 goes
    assert _rows(d, "SELECT id FROM users WHERE id = 'emp-1'") == []
    assert _kept(d) == [] and _rows(d, "SELECT count(*) FROM face_templates") == [(0,)]
    assert _rows(d, "SELECT count(*) FROM face_photo_doomed") == [(0,)]
    assert "Traceback" not in d.log_text()

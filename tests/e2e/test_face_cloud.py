"""The cloud's face commands through the real broker: a photo larger than ``cloud.max_payload`` in parts, a ready
template, hostile templates refused, removal (``face.remove``, ``user.remove``) leaving nothing in the store."""

from __future__ import annotations

import base64
import json
import random
import sqlite3
import subprocess

import pytest

from tests.facephotos import photo
from tests.mqtt import BIN, cloud_send
from tests.procs import wait_for

pytestmark = pytest.mark.slow  # handed out first (tests/conftest.py)

PIECE = 40_000  # base64 characters per part (a multiple of 4), under the 64 KiB payload


@pytest.fixture
def face_cloud(daemon_factory, broker):
    d = daemon_factory(env={**broker.env("unit-b"), "DOORPHONED_FACE_ENABLED": "true"})
    d.start()
    wait_for(lambda: d.ctl_json("cloud", "status")["connected"], timeout=20, what="cloud connected")
    return d


def _send(broker, name: str, args: dict, timeout: int = 200) -> dict:
    result = subprocess.run([str(BIN / "doorphone-cloud"), *broker.tool_args("unit-b", "cloud"), "send", name,
                             json.dumps(args), "--compact", "--timeout", str(timeout)],
                            capture_output=True, text=True, timeout=timeout + 30)
    return json.loads(result.stdout) if result.stdout.strip() else {"ok": False, "error": result.stderr}


def _templates(d) -> list[tuple]:
    db = sqlite3.connect(d.state_dir / "doorphoned.db")
    return db.execute("SELECT user_id, source FROM face_templates").fetchall()


def test_a_photo_in_parts_a_template_and_removal(face_cloud, broker) -> None:
    d = face_cloud
    assert cloud_send(broker, "unit-b", "user.upsert", {"user_id": "emp-1", "name": "Barack"})[1]["ok"]
    assert cloud_send(broker, "unit-b", "user.upsert", {"user_id": "emp-2", "name": "Joe"})[1]["ok"]
    text = base64.b64encode(photo("obama.jpg")).decode()
    pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)]
    assert len(pieces) > 1
    order = list(range(len(pieces)))
    random.Random(5).shuffle(order)  # parts may arrive in any order
    replies = [_send(broker, "face.upsert", {"user": "emp-1", "upload": "up1", "part": i + 1, "parts": len(pieces),
                                             "photo": pieces[i]}) for i in order]
    assert all(r["ok"] and r["result"].get("staged") for r in replies[:-1]), replies[:-1]
    assert replies[-1]["ok"] and len(replies[-1]["result"]["templates"]) == 1, replies[-1]
    assert _templates(d) == [("emp-1", "cloud")]

    template = [round(random.Random(i).uniform(-0.2, 0.2), 5) for i in range(128)]
    assert _send(broker, "face.upsert", {"user": "emp-2", "template": template})["ok"]
    for bad in ([0.1] * 127, [*template[:127], "0.1"], [*template[:127], 99.0], [True] * 128):
        reply = _send(broker, "face.upsert", {"user": "emp-2", "template": bad})
        assert not reply["ok"] and "template" in reply["error"]
    nan = cloud_send(broker, "unit-b", "face.upsert", {"user": "emp-2", "template": [float("nan")] * 128})[1]
    assert not nan["ok"]  # the strict parser refuses the NaN token before any handler
    assert sorted(_templates(d)) == [("emp-1", "cloud"), ("emp-2", "cloud")]

    cut = base64.b64encode(photo("obama2.jpg")[:40_000]).decode()
    dup = _send(broker, "face.upsert", {"user": "emp-2", "photo": cut})
    assert not dup["ok"]  # a truncated JPEG: corrupt, or (if it decodes) a duplicate of emp-1; never stored
    assert sorted(_templates(d)) == [("emp-1", "cloud"), ("emp-2", "cloud")]

    assert _send(broker, "face.remove", {"user": "emp-2"})["result"]["removed"] == 1
    assert cloud_send(broker, "unit-b", "user.remove", {"user_id": "emp-1"})[1]["ok"]
    assert _templates(d) == []
    assert d.ctl_json("face", "list")["total"] == 0

"""Offline-signed temp keys with real processes: the cloud tool signs, hw-sim's camera shows the QR, the daemon
decides with no cloud at all (or, for revocations, with a real mosquitto)."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.dates import at, from_now, monday_ahead
from tests.mqtt import cloud_send
from tests.procs import BIN, wait_for

MONDAY = monday_ahead(2)


def cloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "doorphone-cloud"), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def cloud_key(tmp_path: Path) -> Path:
    """The cloud's key pair, made by the real tool; returns the private key (the public is beside it)."""
    private = tmp_path / "cloud-key.pem"
    result = cloud("keygen", "--out", str(private))
    assert result.returncode == 0, result.stderr
    assert private.stat().st_mode & 0o777 == 0o600
    return private


def public(private: Path) -> Path:
    return private.with_name("cloud-key.pub.pem")


def signed(key: Path, *terms: str, scope: str = "site-a") -> dict:
    result = cloud("tempkey", "sign", "--key", str(key), "--scope", scope, "--json", *terms)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def courier(key: Path, key_id: str = "tk-courier", count: str = "2", **kw: str) -> dict:
    return signed(key, "--id", key_id, "--name", "Courier", "--doors", "1", "--start", from_now(-1),
                  "--end", from_now(2), "--count", count, **kw)


def trusting(daemon_factory, private: Path | None, name: str = "d", **env: str):
    """A unit with NO cloud link (no cloud.url): only its config says whom to trust."""
    extra = {"DOORPHONED_ACCESS_SITE_ID": "site-a", **env}
    if private is not None:
        extra["DOORPHONED_ACCESS_CLOUD_PUBLIC_KEYS"] = json.dumps([str(public(private))])
    d = daemon_factory(env=extra, name=name)
    d.start()
    return d


def check(d, text: str, at_: str | None = None, door: str = "1") -> dict:
    return d.ctl_json("access", "check", "--door", door, "--qr", text, *(["--at", at_] if at_ else []))


def qr_up(d) -> None:
    wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")["reader"] == "ok",
             timeout=60, what="QR reader up")


def show(d, hwsim, text: str) -> None:
    """Show ``text`` to the camera as one presentation: it leaves the view first."""
    hwsim.cmd("camera", "clear")
    wait_for(lambda: next(f for f in d.ctl_json("status")["features"] if f["name"] == "qr")["qr_in_view"] == 0,
             timeout=20, what="the view empty")
    hwsim.cmd("camera", "qr", text)


def entries(d, n: int) -> list[dict]:
    return wait_for(lambda: (e := d.door_log(kind="access")) and sum(x["detail"].get("count", 1) for x in e) >= n
                    and e, timeout=30, what=f"{n} access entries")


def altered(text: str, offset_from_end: int) -> str:
    """The text with one byte of its binary changed (re-encoded, so the format stays valid)."""
    body = text.split(":", 1)[1]
    blob = bytearray(base64.b32decode(body + "=" * (-len(body) % 8)))
    blob[len(blob) - offset_from_end] ^= 0x01
    return "DPS1:" + base64.b32encode(bytes(blob)).decode().rstrip("=")


def test_an_offline_unit_opens_for_a_signed_key_counts_its_uses_and_survives_kill_9(daemon_factory, hwsim,
                                                                                      cloud_key):
    d = trusting(daemon_factory, cloud_key)
    assert d.ctl_json("cloud", "status") == {"enabled": False}  # no cloud link at all
    qr_up(d)
    key = courier(cloud_key)
    assert key["length"] < 200 and key["qr_mode"] == "alphanumeric", key
    show(d, hwsim, key["text"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, timeout=20, what="relay 1 by the signed key")
    first = entries(d, 1)[0]
    assert (first["granted"], first["key_id"], first["subject"]) == (True, "tk-courier", "Courier (tk-courier)")
    # The second use must find the door shut: a grant while it is still held open is no new pulse.
    wait_for(lambda: hwsim.relay(1)["state"] == "released", timeout=30, what="relay 1 released again")
    show(d, hwsim, key["text"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 2, timeout=20, what="the second use")
    explained = check(d, key["text"])
    assert explained["reason"] == "uses_exhausted", explained
    assert explained["signed"]["terms"]["uses_left"] == {"1": 0}
    assert explained["signed"]["trusted_key"] == "config 1"

    d.signal(signal.SIGKILL)  # the count is on disk: a restart does not give the uses back
    d.proc.wait(10)
    d.kill()
    d.start()
    assert check(d, key["text"])["reason"] == "uses_exhausted"
    qr_up(d)
    show(d, hwsim, key["text"])
    refused = wait_for(lambda: [e for e in d.door_log(kind="access") if e["reason"] == "uses_exhausted"],
                       timeout=30, what="the third presentation refused")
    assert refused[0]["key_id"] == "tk-courier"
    assert hwsim.relay(1)["energise_count"] == 2
    hwsim.cmd("camera", "clear")


def test_tampered_other_site_and_untrusted_signed_keys_open_nothing(daemon_factory, hwsim, cloud_key, tmp_path):
    d = trusting(daemon_factory, cloud_key)
    qr_up(d)
    key = courier(cloud_key, count="5")
    assert check(d, key["text"])["granted"]
    # The count byte (5 -> 4) is followed by the recipients count and the name (1 + 1 + 7) and the signature (64).
    more = altered(key["text"], 64 + 1 + 1 + 7 + 1)
    bad = check(d, more)
    assert (bad["granted"], bad["reason"], bad["signed"]["signature"]) == (False, "bad_signature", "bad_signature")
    assert "terms" not in bad["signed"]  # unauthenticated terms are not shown as the key's
    assert check(d, altered(key["text"], 50))["reason"] == "bad_signature"  # a byte of the signature's r
    last = "Q" if key["text"][-1] != "Q" else "A"  # a text of 186 characters ends in one of 8: often a Q already
    assert check(d, key["text"][:-1] + last)["reason"] in ("bad_signature", "malformed")
    elsewhere = check(d, courier(cloud_key, scope="site-b")["text"])
    assert elsewhere["reason"] == "wrong_site" and elsewhere["signed"]["scope_ok"] is False
    other = tmp_path / "other.pem"
    assert cloud("keygen", "--out", str(other)).returncode == 0
    assert check(d, courier(other)["text"])["reason"] == "bad_signature"

    for text in (more, courier(other)["text"]):
        show(d, hwsim, text)
    refusals = entries(d, 2)
    assert [e["reason"] for e in refusals] == ["bad_signature", "bad_signature"]
    assert hwsim.relay(1)["energise_count"] == 0
    assert "DPS1:" not in d.log_text()  # the texts are never logged
    hwsim.cmd("camera", "clear")


def test_a_unit_trusting_no_key_refuses_signed_keys(daemon_factory, hwsim, cloud_key):
    d = trusting(daemon_factory, None)
    qr_up(d)
    key = courier(cloud_key)
    result = check(d, key["text"])
    assert (result["granted"], result["reason"]) == (False, "no_trusted_key")
    assert d.ctl_json("status")["signed_keys"]["trusted_keys"] == []
    show(d, hwsim, key["text"])
    assert entries(d, 1)[0]["reason"] == "no_trusted_key"
    assert hwsim.relay(1)["energise_count"] == 0
    hwsim.cmd("camera", "clear")


def test_validity_and_windows_through_access_check_at(daemon_factory, cloud_key):
    d = trusting(daemon_factory, cloud_key)
    never = signed(cloud_key, "--id", "tk-once", "--doors", "1", "--start", at(MONDAY, "09:00"),
                   "--end", at(MONDAY, "12:00"), "--count", "1")["text"]
    assert check(d, never, at(MONDAY, "08:59"))["reason"] == "not_yet_valid"
    assert check(d, never, at(MONDAY, "09:00"))["granted"]
    assert check(d, never, at(MONDAY, "12:00"))["reason"] == "expired"
    assert check(d, never, at(MONDAY, "10:00"), door="2")["reason"] == "door_not_allowed"
    weekly = signed(cloud_key, "--id", "tk-cleaner", "--doors", "1,2", "--repeat", "weekly", "--days", "mon,wed",
                    "--from", "18:00", "--to", "20:00", "--start", at(MONDAY, "00:00", -7),
                    "--end", at(MONDAY, "00:00", 14))["text"]
    assert check(d, weekly, at(MONDAY, "19:00"))["granted"]
    assert check(d, weekly, at(MONDAY, "19:00", 1))["reason"] == "outside_schedule"  # Tuesday
    assert check(d, weekly, at(MONDAY, "20:00", 2))["reason"] == "outside_schedule"
    assert check(d, weekly, at(MONDAY, "18:00", 2), door="2")["granted"]  # Wednesday
    text = d.ctl("access", "check", "--door", "1", "--qr", weekly, "--at", at(MONDAY, "19:00")).stdout
    assert "signature: ok (trusted key config 1" in text and "scope: site-a (this unit)" in text, text
    summary = d.ctl_json("status")["signed_keys"]
    assert [k["label"] for k in summary["trusted_keys"]] == ["config 1"] and summary["scopes"] == ["site-a"]
    doctor = {c["check"]: c for c in d.ctl_json("doctor")}
    assert doctor["signed keys"]["state"] == "ok" and "config 1" in doctor["signed keys"]["detail"]


def test_a_synced_key_with_the_same_id_wins(daemon_factory, cloud_key):
    d = trusting(daemon_factory, cloud_key)
    local = d.ctl_json("tempkey", "create", "--name", "Plumber", "--doors", "2", "--end", from_now(2), "--count", "1")
    text = courier(cloud_key, key_id=local["id"])["text"]
    result = check(d, text)
    assert (result["reason"], result["key"]["name"]) == ("door_not_allowed", "Plumber")  # the stored key's doors
    assert result["signed"]["synced_key"]["id"] == local["id"]
    assert check(d, text, door="2")["granted"]
    d.ctl("tempkey", "remove", local["id"])  # removing the key revokes its signed form too
    gone = check(d, text)
    assert gone["reason"] == "revoked" and gone["signed"]["revoked"]["source"] == "removed"


@pytest.mark.slow
def test_revocation_by_command_and_by_sync_persists_and_bad_ones_change_nothing(daemon_factory, broker, cloud_key,
                                                                                 tmp_path):
    d = trusting(daemon_factory, cloud_key, **broker.env("unit-b"))
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    keys = {name: courier(cloud_key, key_id=name)["text"] for name in ("tk-r1", "tk-r2", "tk-r3", "tk-keep")}
    assert all(check(d, text)["granted"] for text in keys.values())
    end = from_now(2)

    status, reply, _ = cloud_send(broker, "unit-b", "tempkey.revoke", {"key_id": "tk-r1", "end": end})
    assert status == 0 and reply["result"]["new"] is True, reply
    assert check(d, keys["tk-r1"])["reason"] == "revoked"
    for bad in ({"key_id": "tk r1", "end": end}, {"key_id": "tk-r2"}, {"key_id": "tk-r2", "end": "soon"},
                {"key_id": "tk-r2", "end": end, "extra": 1}, {"key_id": ["tk-r2"], "end": end}):
        status, reply, _ = cloud_send(broker, "unit-b", "tempkey.revoke", bad)
        assert status == 1 and reply["ok"] is False and reply["error"], (bad, reply)
    assert check(d, keys["tk-r2"])["granted"]

    status, reply, _ = cloud_send(broker, "unit-b", "sync.snapshot", {
        "version": 1, "revoked": [{"key_id": "tk-r2", "end": end}]})
    assert status == 0 and reply["result"]["revoked"] == 1, reply
    status, reply, _ = cloud_send(broker, "unit-b", "sync.delta", {
        "from_version": 1, "version": 2, "revoke": [{"key_id": "tk-r3", "end": end}]})
    assert status == 0 and reply["result"]["revoked"] == 1, reply
    status, reply, _ = cloud_send(broker, "unit-b", "sync.delta", {
        "from_version": 2, "version": 3, "revoke": [{"key_id": "tk-keep", "end": "x"}]})
    assert status == 1, reply  # a malformed delta is refused whole, its version not taken
    status, reply, _ = cloud_send(broker, "unit-b", "sync.delta", {"from_version": 2, "version": 3})
    assert status == 0 and "already_applied" not in reply["result"], reply

    d.terminate()
    d.start()
    assert [check(d, keys[k])["reason"] for k in ("tk-r1", "tk-r2", "tk-r3")] == ["revoked"] * 3
    assert check(d, keys["tk-keep"])["granted"]


def test_the_snapshot_delivers_the_cloud_key_to_a_unit_without_one(daemon_factory, broker, cloud_key):
    d = trusting(daemon_factory, None, **broker.env("unit-b"))
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=20, what="cloud connected")
    text = courier(cloud_key, scope="unit-b")["text"]  # scoped to the unit's device id
    assert check(d, text)["reason"] == "no_trusted_key"
    status, reply, _ = cloud_send(broker, "unit-b", "sync.snapshot", {
        "version": 1, "signing_keys": ["-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"]})
    assert status == 1 and "signing_keys[1]" in reply["error"], reply
    assert check(d, text)["reason"] == "no_trusted_key"
    status, reply, _ = cloud_send(broker, "unit-b", "sync.snapshot", {
        "version": 1, "signing_keys": [public(cloud_key).read_text()]})
    assert status == 0, reply
    granted = check(d, text)
    assert granted["granted"] and granted["signed"]["trusted_key"].startswith("sync "), granted


def test_a_signed_delivery_key_opens_the_package_room_offline(daemon_factory, hwsim, cloud_key):
    d = trusting(daemon_factory, cloud_key)
    qr_up(d)
    key = courier(cloud_key, key_id="tk-parcel", count="1")
    delivery = signed(cloud_key, "--id", "tk-parcel", "--name", "Parcel", "--doors", "1", "--start", from_now(-1),
                      "--end", from_now(2), "--recipient", "u-alice", "--recipient", "u-bob")
    assert delivery["text"] != key["text"]
    show(d, hwsim, delivery["text"])
    wait_for(lambda: hwsim.relay(1)["energise_count"] == 1, timeout=20, what="relay 1 by the delivery key")
    package = wait_for(lambda: d.door_log(kind="package"), timeout=30, what="the package entry")
    assert package[0]["detail"]["recipients"] == ["u-alice", "u-bob"] and package[0]["key_id"] == "tk-parcel"
    hwsim.cmd("camera", "clear")

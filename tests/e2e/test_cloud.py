"""The cloud link against a real mosquitto (TLS + password file + ACL), with hw-sim and doorphoned processes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.dates import from_now
from tests.mqtt import Client, cloud_send
from tests.procs import wait_for

# `make test` runs a fast pass of the MQTT command fuzz; `make fuzz-mqtt` the full one (10,000).
FUZZ_MQTT_EXAMPLES = int(os.environ.get("DOORPHONE_FUZZ_MQTT_EXAMPLES", "500"))
BURST = int(os.environ.get("DOORPHONE_FUZZ_MQTT_BURST", "3000"))


def test_remote_open_end_to_end_over_tls(unit, broker, hwsim):
    code, reply, _ = cloud_send(broker, "unit-b", "open_door", {"door": 1, "source": "siri"})
    assert code == 0 and reply["ok"] and reply["result"] == {"door": 1, "opened": True}
    assert hwsim.relay(1)["energise_count"] == 1
    [entry] = unit.door_log(kind="access")
    assert (entry["credential"], entry["subject"], entry["granted"]) == ("remote", "siri", True)
    status = unit.ctl_json("cloud", "status")
    assert status["connected"] and status["broker"] == broker.url and status["commands"] == 1


def test_events_and_retained_state(unit, broker, hwsim):
    watcher = Client(broker, "cloud")
    watcher.subscribe("doorphone/v1/unit-b/#")
    hwsim.cmd("button", "exit", "2")
    hwsim.cmd("door", "open", "2")
    events = wait_for(lambda: len(e := watcher.json_messages("doorphone/v1/unit-b/evt/")) >= 2 and e,
                      what="events")
    access = next(e for e in events if e["type"] == "access")
    assert access["granted"] and access["credential"] == "exit_button" and access["door"] == 2
    assert {"id", "seq", "ts"} <= set(access)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    state = wait_for(lambda: [s for s in watcher.json_messages("doorphone/v1/unit-b/state") if s["online"]],
                     what="retained state")[-1]
    assert state["firmware"] and set(state["doors"]) == {"1", "2"}
    watcher.close()


def test_last_will_marks_the_unit_offline(unit, broker):
    unit.kill()
    watcher = Client(broker, "cloud")
    watcher.subscribe("doorphone/v1/unit-b/state")
    state = wait_for(lambda: watcher.json_messages("doorphone/v1/unit-b/state"), timeout=10, what="state")[-1]
    assert state["online"] is False
    watcher.close()


def test_acl_confines_a_unit_to_its_own_root(unit, broker, hwsim):
    intruder = Client(broker, "unit-a")
    intruder.subscribe("doorphone/v1/unit-b/evt/#")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "doorphone/v1/unit-a/reply/x"
    props.CorrelationData = b"x"
    intruder.subscribe("doorphone/v1/unit-a/reply/#")
    payload = json.dumps({"id": str(uuid.uuid4()), "ts": time.time(), "door": 1, "source": "app"})
    intruder.client.publish("doorphone/v1/unit-b/cmd/open_door", payload, qos=1,
                            properties=props).wait_for_publish(30)  # the broker has judged it
    watcher = Client(broker, "cloud")
    watcher.subscribe("doorphone/v1/unit-b/evt/#")
    hwsim.cmd("button", "exit", "2")  # an event unit A must not see
    # Signs that both were processed: the cloud sees the event, and a command it sends after the intruder's
    # is answered (the unit handles its commands in order of arrival).
    wait_for(lambda: watcher.json_messages("doorphone/v1/unit-b/evt/access"), timeout=30, what="the exit event")
    code, reply, _ = cloud_send(broker, "unit-b", "status")  # the cloud itself still can
    assert code == 0 and reply["ok"]
    assert hwsim.relay(1)["energise_count"] == 0  # the command never reached unit B
    assert intruder.messages == []
    watcher.close()
    intruder.close()


def test_duplicate_command_id_runs_once(unit, broker, hwsim):
    command_id = str(uuid.uuid4())
    first = cloud_send(broker, "unit-b", "open_door", {"door": 1}, "--id", command_id)
    wait_for(lambda: not hwsim.relay(1)["energised"], timeout=30, what="pulse over")
    second = cloud_send(broker, "unit-b", "open_door", {"door": 1}, "--id", command_id)
    assert first[1] == second[1] and first[1]["ok"]
    time.sleep(0.3)
    assert hwsim.relay(1)["energise_count"] == 1


@pytest.fixture(scope="module")
def shared_unit(shared_daemon_factory, shared_broker):
    """One joined unit for the bad commands: each asserts that nothing opened and nothing was stored."""
    d = shared_daemon_factory(env={**shared_broker.env("unit-b"), "DOORPHONED_DOORS_1_HOLD_TIME": "1"})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=10, what="cloud connected")
    return d


@pytest.mark.parametrize(("name", "args", "extra", "error"), [
    ("open_door", {"door": 1}, ["--ts", str(time.time() - 3600)], "expired"),
    ("open_door", {"door": "1"}, [], "door must be a whole number"),
    ("open_door", {"door": 1, "source": "fax"}, [], "source must be one of"),
    ("open_door", {"door": 9}, [], "refused: unknown_door"),
    ("self_destruct", {}, [], "unknown command"),
    ("user.upsert", {"user_id": "u1", "name": "X", "pin": "1234"}, [], "too easy"),
    ("tempkey.add", {"key_id": "k1", "name": "K", "doors": [1], "pin": "123", "start": from_now(-1),
                     "end": from_now(365)}, [], "exactly 8 digits"),
])
def test_bad_commands_get_error_replies_and_change_nothing(shared_unit, shared_broker, shared_hwsim, name, args,
                                                           extra, error):
    unit, broker, hwsim = shared_unit, shared_broker, shared_hwsim
    code, reply, _ = cloud_send(broker, "unit-b", name, args, *extra)
    assert code == 1 and not reply["ok"] and error in reply["error"]
    assert hwsim.relay(1)["energise_count"] == 0
    assert unit.ctl_json("status")["credentials"] == {"users": 0, "temp_keys": 0, "cards": 0, "private_pins": 0,
                                                       "phone_keys": 0}


def test_malformed_and_oversized_payloads(unit, broker):
    client = Client(broker, "cloud")
    client.subscribe("doorphone/v1/unit-b/reply/#")
    for i, payload in enumerate([b"{nope", b"[1,2]", b'{"id": 5}', b"x" * 70_000]):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "doorphone/v1/unit-b/reply/fuzz"
        props.CorrelationData = bytes([i])
        client.client.publish("doorphone/v1/unit-b/cmd/open_door", payload, qos=1, properties=props)
    replies = wait_for(lambda: len(r := client.json_messages("doorphone/v1/unit-b/reply/")) == 4 and r,
                       what="four error replies")
    errors = sorted(r["error"] for r in replies)
    assert all(not r["ok"] for r in replies)
    assert any("malformed JSON" in e for e in errors) and any("JSON object" in e for e in errors)
    assert any("id must be text" in e for e in errors) and any("over the 65536-byte limit" in e for e in errors)
    client.close()


def _publish_raw(client: Client, name: str, payloads: list[bytes]) -> None:
    for i, payload in enumerate(payloads):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "doorphone/v1/unit-b/reply/strict"
        props.CorrelationData = i.to_bytes(4, "big")
        client.client.publish(f"doorphone/v1/unit-b/cmd/{name}", payload, qos=1, properties=props)


def test_hostile_documents_are_refused_with_their_id_and_open_nothing(unit, broker, hwsim):
    """NaN opened door 2 (issue 9); each of these is refused, answered with its id, and opens nothing."""
    client = Client(broker, "cloud")
    client.subscribe("doorphone/v1/unit-b/reply/#")
    now = time.time()
    cases = {
        "nan1": (b'{"id":"nan1","ts":NaN,"door":2}', "ts: NaN is not a finite number"),
        "inf1": (b'{"id":"inf1","ts":%.0f,"door":2,"x":[Infinity]}' % now, "x[0]: Infinity is not a finite"),
        "big1": (b'{"id":"big1","ts":1e999,"door":2}', "ts: 1e999 is not a finite number"),
        "dup1": (b'{"id":"dup1","ts":%.0f,"door":1,"door":2}' % now, "duplicate key 'door'"),
        "unk1": (b'{"id":"unk1","ts":%.0f,"door":2,"force":true}' % now, "open_door: unknown field 'force'"),
        "bool1": (b'{"id":"bool1","ts":%.0f,"door":true}' % now, "door must be a whole number"),
        "flt1": (b'{"id":"flt1","ts":%.0f,"door":2.0}' % now, "door must be a whole number"),
        "nul1": (rb'{"id":"nul1","ts":%.0f,"door":2,"user":"a\u0000b"}' % now, "user contains a NUL character"),
        "sur1": (rb'{"id":"sur1","ts":%.0f,"door":2,"source":"\udc00"}' % now, "source contains a lone surrogate"),
        "bidi1": (rb'{"id":"bidi1","ts":%.0f,"door":2,"user":"\u202eu"}' % now, "user contains a bidi control"),
    }
    anonymous = [
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "nested deeper than 32 levels"),
        (b'{"id":"x","id":"y","ts":%.0f,"door":2}' % now, "duplicate key 'id'"),
        (b'{"id":"raw","ts":1,"door":2,"user":"\xff"}', "not valid UTF-8"),
    ]
    _publish_raw(client, "open_door", [p for p, _ in cases.values()] + [p for p, _ in anonymous])
    total = len(cases) + len(anonymous)
    replies = wait_for(lambda: len(r := client.json_messages("doorphone/v1/unit-b/reply/")) >= total and r,
                       what=f"{total} error replies")
    assert not [r for r in replies if r["ok"]]
    by_id = {r["id"]: r["error"] for r in replies if r["id"] is not None}
    for command_id, (_, error) in cases.items():
        assert error in by_id[command_id], (command_id, by_id[command_id])
    unnamed = sorted(r["error"] for r in replies if r["id"] is None)
    for _, error in anonymous:
        assert any(error in e for e in unnamed), (error, unnamed)
    assert hwsim.relay(1)["energise_count"] == 0 and hwsim.relay(2)["energise_count"] == 0
    assert unit.door_log(kind="access") == []
    assert "Traceback" not in unit.log_text() and "refused" in unit.log_text()
    assert unit.ctl_json("cloud", "status")["connects"] == 1
    # refused before running: not recorded, so the same id with a clean document runs once
    code, reply, _ = cloud_send(broker, "unit-b", "open_door", {"door": 2}, "--id", "nan1")
    assert code == 0 and reply["ok"]
    client.close()


def test_cloud_user_sync_and_removal_takes_every_credential(unit, broker):
    code, reply, _ = cloud_send(broker, "unit-b", "user.upsert", {
        "user_id": "emp-7", "name": "Frank", "doors": [1], "pin": "4826", "cards": ["04A1B2C3"],
        "schedule": ["mon-sun 00:00-24:00"]})
    assert code == 0 and reply["result"] == {"user_id": "emp-7", "pin_set": True, "cards": ["04A1B2C3"],
                                             "phone_keys": []}
    assert unit.ctl_json("access", "check", "--door", "1", "--card", "04A1B2C3")["granted"]
    code, reply, _ = cloud_send(broker, "unit-b", "tempkey.add", {
        "key_id": "tk-cloud-1", "name": "Courier", "doors": [1], "pin": "73920581", "start": from_now(-1),
        "end": from_now(3650), "count": 2})
    assert code == 0 and reply["result"]["each_door_counts"] == 2
    assert unit.ctl_json("access", "check", "--door", "1", "--pin", "73920581")["key"]["id"] == "tk-cloud-1"
    collide = cloud_send(broker, "unit-b", "tempkey.add", {
        "key_id": "tk-cloud-2", "name": "X", "doors": [1], "pin": "73920581", "start": from_now(-1),
        "end": from_now(3650)})
    assert not collide[1]["ok"] and "collides" in collide[1]["error"]
    same = cloud_send(broker, "unit-b", "user.upsert", {"user_id": "emp-8", "name": "G", "pin": "4826"})
    assert not same[1]["ok"] and "already in use" in same[1]["error"]
    assert cloud_send(broker, "unit-b", "user.remove", {"user_id": "emp-7"})[1]["ok"]
    assert unit.ctl_json("access", "check", "--door", "1", "--card", "04A1B2C3")["reason"] == "unknown"
    assert unit.ctl_json("access", "check", "--door", "1", "--pin", "4826")["reason"] == "unknown"
    assert cloud_send(broker, "unit-b", "tempkey.remove", {"key_id": "tk-cloud-1"})[1]["ok"]
    assert unit.ctl_json("access", "check", "--door", "1", "--pin", "73920581")["reason"] == "unknown"


def _burst(unit, count: int) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(unit.socket))
        replies = s.makefile("rb")
        for _ in range(count):
            s.sendall(b'{"cmd": "relay.open", "args": {"door": 2}}\n')
            assert json.loads(replies.readline())["ok"]


def test_offline_burst_is_delivered_in_order_after_the_broker_returns(unit, broker):
    watcher = Client(broker, "cloud", client_id="burst-watcher", persistent=True)
    watcher.subscribe("doorphone/v1/unit-b/evt/access")
    broker.stop()
    _burst(unit, 1000)
    assert unit.ctl_json("cloud", "status")["outbox_depth"] >= 1000
    broker.start()
    watcher.close()
    watcher = Client(broker, "cloud", client_id="burst-watcher", persistent=True)
    events = wait_for(lambda: len(e := watcher.json_messages()) >= 1000 and e, timeout=60, what="1000 events")
    assert len({e["id"] for e in events}) == len(events) == 1000
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    wait_for(lambda: unit.ctl_json("cloud", "status")["outbox_depth"] == 0, what="outbox drained")
    watcher.close()


def test_kill_9_with_events_pending_loses_nothing(unit, broker):
    watcher = Client(broker, "cloud", client_id="kill-watcher", persistent=True)
    watcher.subscribe("doorphone/v1/unit-b/evt/access")
    broker.stop()
    _burst(unit, 200)
    unit.kill()
    broker.start()
    watcher.close()
    watcher = Client(broker, "cloud", client_id="kill-watcher", persistent=True)
    unit.start()
    events = wait_for(lambda: len(e := watcher.json_messages()) >= 200 and e, timeout=60, what="200 events")
    assert len({e["id"] for e in events}) == 200
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    watcher.close()


NAMES = ["open_door", "status", "log.level", "user.upsert", "user.remove", "tempkey.add", "tempkey.remove",
         "tempkey.revoke", "restart", "sync.snapshot", "sync.delta", "config.set", "log.upload", "nope", ".."]
FIELDS = ["id", "ts", "door", "source", "name", "pin", "doors", "start", "end", "cards", "level", "repeat", "count",
          "schedule", "user_id", "key_id", "version", "from_version", "parts", "part", "users", "temp_keys",
          "upsert", "remove", "settings", "user", "force", "chunk_size", "revoke", "revoked", "signing_keys"]
HOSTILE_CHARS = ["\x00", "\u202e", "\u2066", "\ud800", "\udfff", "\x1b", "\x7f", "\n", "a", "1", "é", "\U0001f600"]


def _hostile_payloads():
    """Hypothesis payloads with the shapes that got through before (issue 9), each with an opener's body.

    Every one has a defect the unit must refuse: a non-finite number, a duplicate key, nesting past the
    limit, an unknown field, invalid UTF-8, a forbidden character, a wrong type, or a stale ts; the
    dangerous ones carry a fresh ``ts`` and ``door`` so that only the defect stands between them and a relay.
    """
    from hypothesis import strategies as st

    hostile_text = st.lists(st.sampled_from(HOSTILE_CHARS), min_size=1, max_size=8).map("".join) | st.text(max_size=20)
    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | hostile_text
               | st.integers(0, 20).map(lambda n: 10.0 ** n) | st.just(2.0))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(FIELDS) | hostile_text, inner, max_size=3), max_leaves=6)
    bodies = st.dictionaries(st.sampled_from(FIELDS) | hostile_text, values, max_size=6)
    ids = st.uuids().map(str)

    def opener(command_id: str, door: int) -> dict:
        return {"id": command_id, "ts": time.time(), "door": door}

    def text(body: dict) -> bytes:  # NaN / Infinity floats become the JSON tokens
        return json.dumps(body, allow_nan=True).encode()

    non_finite = st.builds(lambda i, d, token, key: text(opener(i, d))[:-1] + b', "%s": %s}' % (key.encode(), token),
                           ids, st.integers(1, 2), st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999",
                                                                    b"[1, NaN]", b'{"x": -1e400}']),
                           st.sampled_from(["ts", "door", "level", "extra"]))
    nan_ts = st.builds(lambda i, d, t: b'{"id": "%s", "ts": %s, "door": %d}' % (i.encode(), t, d), ids,
                       st.integers(1, 2), st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
    duplicates = st.builds(lambda i, key, v: text(opener(i, 1))[:-1] + b', "%s": %s}' % (key.encode(), v), ids,
                           st.sampled_from(["id", "ts", "door"]), st.sampled_from([b"2", b'"x"', b"1", b"null"]))
    unknown = st.builds(lambda i, d, k, v: text({**opener(i, d), k: v}), ids, st.integers(1, 2),
                        st.sampled_from(["force", "all", "pin", "users", "door2", "\u202edoor"]), values)
    wrong_types = st.builds(lambda i, v: text({**opener(i, 1), "door": v}), ids,
                            st.sampled_from([True, 1.0, "1", [1], {"n": 1}, None, 2**64, -1, 0]))
    deep = st.builds(lambda n, shape: shape * n, st.integers(33, 20000),
                     st.sampled_from([b"[", b'{"a": ', b'[{"a":']))
    closed_deep = st.integers(33, 6000).map(lambda n: b'{"id": "deep", "ts": 1, "x": ' + b"[" * n + b"]" * n + b"}")
    huge = st.builds(lambda i, n, c: text({"id": i, "ts": time.time(), "door": 1, "user": c * n}), ids,
                     st.integers(1000, 70000), st.sampled_from(["a", "\u202e", "\x00", "é"]))
    raw_bytes = st.builds(lambda i, junk: text(opener(i, 1))[:-1] + b', "user": "' + junk + b'"}', ids,
                          st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\xf8\x88\x80\x80\x80"]))
    random_bodies = bodies.map(text)
    return st.one_of(st.binary(max_size=200), random_bodies, non_finite, nan_ts, duplicates, unknown, wrong_types,
                     deep, closed_deep, huge, raw_bytes)


def test_command_fuzz_never_crashes_or_changes_state(unit, broker, hwsim):
    """Hypothesis payloads over every command, hostile shapes included, then a burst: each answered, nothing
    opens, nothing changes, the daemon lives. ``make test`` sends FUZZ_MQTT_EXAMPLES (500) + the burst;
    ``make fuzz-mqtt`` sends 10,000 + the burst."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = Client(broker, "cloud")
    client.subscribe("doorphone/v1/unit-b/reply/#")
    sent: list[bytes] = []

    def publish(name: str, payload: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "doorphone/v1/unit-b/reply/fuzz"
        props.CorrelationData = len(sent).to_bytes(4, "big")
        sent.append(payload)
        client.client.publish(f"doorphone/v1/unit-b/cmd/{name}", payload, qos=1, properties=props)

    @settings(max_examples=FUZZ_MQTT_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(NAMES), _hostile_payloads())
    def fuzz(name, payload):
        publish(name, payload)

    fuzz()
    fuzzed = len(sent)
    for i in range(BURST):  # back to back, no pause: openers with NaN ts and duplicate doors
        bad = b"NaN" if i % 2 else b"%.3f, \"door\": 1" % time.time()
        publish("open_door", b'{"id": "burst-%d", "ts": %s, "door": 2}' % (i, bad))
    messages = wait_for(lambda: len(m := list(client.messages)) >= len(sent) and m, timeout=300,
                        what=f"{len(sent)} replies")
    replies = {int.from_bytes(props.CorrelationData, "big"): json.loads(body) for _, body, props in messages}
    assert sorted(replies) == list(range(len(sent)))  # every command answered, once
    assert fuzzed >= FUZZ_MQTT_EXAMPLES
    assert not [r for r in replies.values() if r["ok"]]
    assert not [r for r in replies.values() if "internal error" in r.get("error", "")]
    for n in range(fuzzed, len(sent)):  # the burst's ids were usable: each answered by its id
        assert replies[n]["id"] == f"burst-{n - fuzzed}", replies[n]
    assert unit.ctl_json("cloud", "status")["connects"] == 1  # the broker never had to drop the unit
    assert unit.ctl_json("status")["credentials"] == {"users": 0, "temp_keys": 0, "cards": 0, "private_pins": 0,
                                                       "phone_keys": 0}
    assert unit.ctl_json("config", "show")["settings"] == {}
    assert hwsim.relay(1)["energise_count"] == 0 and hwsim.relay(2)["energise_count"] == 0
    assert unit.door_log(kind="access") == []
    assert unit.proc.poll() is None and "Traceback" not in unit.log_text()
    assert len(unit.log_text().splitlines()) < 1000  # refusals are logged rate-limited, not one line each
    client.close()


def _ha_unit(daemon_factory, broker):
    return daemon_factory(env={**broker.env("unit-b"), "DOORPHONED_CLOUD_HA_DISCOVERY": "true",
                               "DOORPHONED_DOORS_2_HOLD_TIME": "1"})


def _ha_sign_of_life(ha: Client, hwsim) -> None:
    """A live OPEN for door 2 pulses it: the unit is subscribed and has handled what came before.

    Sent again until it lands: right after a (re)start the unit's subscription may not exist yet.
    """
    before = hwsim.relay(2)["energise_count"]
    for _ in range(10):
        ha.client.publish("doorphone/v1/unit-b/ha/door/2/set", "OPEN", qos=1)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: hwsim.relay(2)["energise_count"] > before, timeout=3, what="live HA OPEN")
            return
    raise AssertionError("a live Home Assistant OPEN never pulsed door 2")


def test_retained_home_assistant_unlock_never_opens(daemon_factory, broker, hwsim):
    """A retained UNLOCK opened door 1 each time the unit connected (issue 9)."""
    ha = Client(broker, "cloud")
    ha.client.publish("doorphone/v1/unit-b/ha/door/1/set", "UNLOCK", qos=1, retain=True).wait_for_publish(5)
    d = _ha_unit(daemon_factory, broker)
    for _connection in (1, 2):  # and again at the next connect
        d.start()
        wait_for(lambda: d.call("cloud.status")["connected"], timeout=10, what="cloud connected")
        _ha_sign_of_life(ha, hwsim)
        assert hwsim.relay(1)["energise_count"] == 0
        d.terminate()
    ha.close()


def test_home_assistant_unlock_kept_while_offline_never_opens(daemon_factory, broker, hwsim):
    """A QoS 1 UNLOCK the broker kept in the unit's persistent session must not open the door hours later."""
    d = _ha_unit(daemon_factory, broker)
    d.start()
    ha = Client(broker, "cloud")
    _ha_sign_of_life(ha, hwsim)  # the session now holds the HA subscription
    d.kill()
    ha.client.publish("doorphone/v1/unit-b/ha/door/1/set", "UNLOCK", qos=1).wait_for_publish(5)
    ha.client.publish("doorphone/v1/unit-b/ha/door/1/set", "OPEN", qos=1).wait_for_publish(5)
    d.start()
    wait_for(lambda: d.log_text().count("ignored: stale") >= 1, timeout=15, what="the kept commands judged stale")
    _ha_sign_of_life(ha, hwsim)
    assert hwsim.relay(1)["energise_count"] == 0
    assert {e["door"] for e in d.door_log(kind="access")} == {2}
    ha.close()


def test_home_assistant_payload_must_be_exact(daemon_factory, broker, hwsim):
    """OPEN / UNLOCK / LOCK byte for byte: the link used to cut the payload to 16 bytes and strip it."""
    d = _ha_unit(daemon_factory, broker)
    d.start()
    ha = Client(broker, "cloud")
    _ha_sign_of_life(ha, hwsim)
    for payload in (b"UNLOCK" + b" " * 10 + b"x", b"unlock", b"OPEN\x00", b"\xffOPEN", b"OPEN ", b"{}"):
        ha.client.publish("doorphone/v1/unit-b/ha/door/1/set", payload, qos=1)
    ha.client.publish("doorphone/v1/unit-b/ha/door/x1/set", b"OPEN", qos=1)
    _ha_sign_of_life(ha, hwsim)
    assert hwsim.relay(1)["energise_count"] == 0 and "expected OPEN, UNLOCK or LOCK" in d.log_text()
    ha.close()


def test_calls_reach_the_cloud_as_call_events(daemon_factory, broker, hwsim, tmp_path):
    from tests.sipp import Sipp, sip_env, uac_scenario, wait_sip_up

    d = daemon_factory(env={**broker.env("unit-b"), **sip_env(DOORPHONED_DOORS_1_HOLD_TIME="1")})
    d.start()
    wait_for(lambda: d.call("cloud.status")["connected"], timeout=10, what="cloud connected")
    watcher = Client(broker, "cloud")
    watcher.subscribe("doorphone/v1/unit-b/evt/call")
    wait_sip_up(d)
    target = f"127.0.0.1:{d.extra_env['DOORPHONED_SIP_PORT']}"
    # held 2 s after the digit: on a loaded machine the SIP process (nice 5) may read the BYE before the RTP
    caller = Sipp(tmp_path, "call", uac_scenario("#", hold_ms=2000), target, "-m", "1", "-timeout", "20s",
                  "-timeout_error").start()
    assert caller.wait() == 0
    [event] = wait_for(watcher.json_messages, what="evt/call")
    assert (event["call_type"], event["direction"], event["opened"]) == ("incoming", "in", [1])
    assert event["peer"] == "sip:sipp@127.0.0.1" and event["duration_s"] > 0.3
    assert event["quality"]["codec"] == "PCMA/8000" and {"id", "seq", "ts"} <= set(event)
    watcher.close()

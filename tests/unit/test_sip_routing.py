"""Call routing, DTMF code matching and SIP admission: the pure parts of the SIP feature."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from doorphoned.access.decide import Reason, decide
from doorphoned.app.config import load_config, load_default
from doorphoned.core.config import ConfigError
from doorphoned.core.presentations import DtmfCode
from doorphoned.sip.backend import peer_allowed, source_host, uri_key
from doorphoned.sip.config import CallTargetConfig
from doorphoned.sip.routing import bare_uri, match_code, plan_call, plan_direct

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_NOON = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
MONDAY_NIGHT = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 23:30 in Berlin

APP, APP2, MON, PHONE = "sip:app@10.0.0.1", "sip:app2@10.0.0.2", "sip:mon@10.0.0.3", "sip:0301234@pbx"


def target(**kw) -> CallTargetConfig:
    base = {"id": 1, "name": "Flat 1", "app": (APP, APP2), "monitors": (MON,), "phone": PHONE}
    return CallTargetConfig(**{**base, **kw})


def test_app_rings_apps_and_monitors_together():
    plan = plan_call(target(preference="app"), MONDAY_NOON, BERLIN)
    assert plan.waves == ((APP, APP2, MON),) and not plan.refused and plan.legs == 3


def test_phone_rings_landline_and_monitors():
    assert plan_call(target(preference="phone"), MONDAY_NOON, BERLIN).waves == ((PHONE, MON),)


def test_app_then_phone_rings_the_landline_second():
    assert plan_call(target(preference="app_then_phone"), MONDAY_NOON, BERLIN).waves == ((APP, APP2, MON), (PHONE,))


def test_app_then_phone_without_landline_is_one_wave_and_without_anything_refused():
    assert plan_call(target(preference="app_then_phone", phone=""), MONDAY_NOON, BERLIN).waves == ((APP, APP2, MON),)
    plan = plan_call(target(preference="phone", phone="", monitors=()), MONDAY_NOON, BERLIN)
    assert (plan.waves, plan.refused) == ((), "no_destination")


def test_duplicate_uris_ring_once():
    assert plan_call(target(app=(APP, APP), monitors=(APP,)), MONDAY_NOON, BERLIN).waves == ((APP,),)


def test_dnd_window_in_site_time_refuses_the_call():
    night = target(dnd=("mon-fri 22:00-07:00",))
    assert plan_call(night, MONDAY_NIGHT, BERLIN).refused == "dnd"
    assert plan_call(night, MONDAY_NOON, BERLIN).refused == ""
    # 22:30 UTC is 22:30 in UTC too, but 07:30 the next day in Tokyo: outside the window there
    assert plan_call(night, MONDAY_NIGHT, ZoneInfo("Asia/Tokyo")).refused == ""


def test_intercom_off_wins_over_everything():
    assert plan_call(target(intercom=False, dnd=("00:00-24:00",)), MONDAY_NOON, BERLIN).refused == "intercom_off"


def test_direct_call_is_one_leg():
    assert plan_direct("sip:x@1.2.3.4").waves == (("sip:x@1.2.3.4",),)


@pytest.mark.parametrize(("keys", "codes", "door", "left"), [
    ("#", {1: "#"}, 1, ""),
    ("1", {1: "#"}, None, "1"),
    ("12#", {1: "#", 2: "12#"}, 2, ""),  # the longest code wins
    ("9#", {1: "#", 2: "12#"}, 1, ""),
    ("55512", {2: "12#"}, None, "512"),  # only the last keys are kept
    ("9912#", {2: "12#"}, 2, ""),  # a wrong start does not spoil a right code after it
    ("*", {1: "#", 2: "*0"}, None, "*"),
])
def test_match_code(keys, codes, door, left):
    assert match_code(keys, codes) == (door, left)


def test_bare_uri_and_source_host():
    assert bare_uri('"sipp" <sip:sipp@127.0.0.1:5061>;tag=1') == "sip:sipp@127.0.0.1:5061"
    assert bare_uri("sip:a@b;tag=x") == "sip:a@b"
    assert source_host("127.0.0.1:5061") == "127.0.0.1" and source_host("[::1]:5061") == "::1"


def test_only_allowed_peers_are_admitted():
    allowed = frozenset({"127.0.0.1", "192.168.1.20"})
    assert peer_allowed("192.168.1.20:5060", allowed)
    assert not peer_allowed("192.168.1.21:5060", allowed) and not peer_allowed("127.0.0.2:5060", allowed)


class _View:
    def door_ids(self):
        return frozenset({1, 2})


def test_dtmf_code_opens_only_its_own_door():
    code = DtmfCode("sip:app@10.0.0.1", 1)
    granted = decide(code, 1, MONDAY_NOON, _View())  # type: ignore[arg-type]
    assert granted.granted and granted.credential == "dtmf" and "during call with sip:app@10.0.0.1" in granted.detail
    refused = decide(code, 2, MONDAY_NOON, _View())  # type: ignore[arg-type]
    assert (refused.granted, refused.reason) == (False, Reason.DOOR_NOT_ALLOWED)
    assert decide(code, 3, MONDAY_NOON, _View()).reason == Reason.UNKNOWN_DOOR  # type: ignore[arg-type]


def test_embedded_default_has_sip_on_loopback_and_door_1_code():
    config = load_default(env={})
    assert (config.sip.enabled, config.sip.bind, config.sip.port) == (True, "127.0.0.1", 5060)
    assert config.door(1).dtmf_code == "#" and "127.0.0.1" in config.sip.allowed_peers
    assert load_default(env={"DOORPHONED_SIP_PORT": "5099"}).sip.port == 5099


@pytest.mark.parametrize(("text", "key"), [
    ('[[doors]]\nid = 1\nlock = "relay"\ndtmf_code = "12345"\n[doors.relay]\npin = 17\n', "doors[0].dtmf_code"),
    ('[[doors]]\nid = 1\nlock = "relay"\ndtmf_code = "1A"\n[doors.relay]\npin = 17\n', "doors[0].dtmf_code"),
    ('[sip]\nregistrar = "pbx.example.com"\n', "sip.registrar"),
    ('[sip]\ncodecs = ["OPUS"]\n', "sip.codecs"),
    ('[[sip.targets]]\nid = 1\ndnd = ["mon-fri 25:00-07:00"]\n', "sip.targets[0].dnd"),
    ('[[sip.targets]]\nid = 1\n[[sip.buttons]]\nid = 1\npin = 20\ntarget = 2\n', "sip.buttons[0].target"),
])
def test_sip_config_errors_name_the_key(text, key):
    with pytest.raises(ConfigError) as info:
        load_config(text=text, env={})
    assert info.value.key == key


def test_uri_key_names_the_caller_without_port_or_parameters():
    assert uri_key('"App" <sip:Flat12@10.0.0.5:5062;transport=udp>;tag=1') == "flat12@10.0.0.5"
    assert uri_key("sip:flat12@10.0.0.5") == "flat12@10.0.0.5"
    assert uri_key("sips:a@[::1]:5061") == "a@[::1]" and uri_key("sip:10.0.0.9") == "10.0.0.9"


def test_call_log_keeps_the_newest_and_reads_back_what_was_written(tmp_path):
    from doorphoned.core.store import Store
    from doorphoned.sip.calllog import CallLog, CallRecord

    store = Store(tmp_path / "db.sqlite")
    store.open()
    log = CallLog(store)
    start = datetime(2026, 11, 23, 12, tzinfo=UTC)
    for i in range(5):
        answered = start.replace(second=1) if i % 2 else None
        log.append(CallRecord("incoming" if answered else "missed", "in", start, start.replace(second=4 + i),
                              "hangup", f"sip:p{i}@h", "", answered, (1,) if answered else (), {"codec": "PCMU/8000"}))
    assert log.prune(3) == 2
    rows = log.recent()
    assert [r.peer for r in rows] == ["sip:p4@h", "sip:p3@h", "sip:p2@h"]
    assert rows[1].duration_s == 6.0 and rows[1].opened == (1,) and rows[1].quality == {"codec": "PCMU/8000"}
    assert rows[0].duration_s == 0.0 and [r.peer for r in log.recent(type_="incoming")] == ["sip:p3@h"]
    store.close()

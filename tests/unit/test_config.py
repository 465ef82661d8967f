from __future__ import annotations

import re
from pathlib import Path

import pytest

from doorphoned.app.config import Config, load_config, load_default, reference_markdown
from doorphoned.core.config import (
    ConfigError,
    embedded_default_text,
    env_name,
    iter_settings,
    key_lines,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[2]

HTTP_DOOR = """
[[doors]]
id = 3
name = "Salto gate"
lock = "http"

[doors.http]
url = "http://127.0.0.1:9/open?token=abc"
headers = { Authorization = "Bearer s3cret" }
body = '{"door": {door}, "secret": "s3cret"}'
timeout = 1.5
"""


def test_embedded_default_is_valid_and_matches_hwsim_board():
    config = load_default(env={})
    assert [d.id for d in config.doors] == [1, 2]
    assert config.gpio.pin_factory == "hwsim"
    from hwsim.board import load_board

    board = load_board(None)
    for door in config.doors:
        lines = board.door(door.id)
        relay = next(r for r in board.relays if r.n == door.id)
        assert door.relay is not None and door.relay.pin == relay.pin
        assert door.sensor is not None and door.sensor.pin == lines.sensor_pin
        assert door.exit_button is not None and door.exit_button.pin == lines.exit_pin
    assert config.tamper.pin == board.tamper_pin


def test_error_names_key_and_line():
    text = embedded_default_text().replace("hold_time = 5.0", "hold_time = 20")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("hold_time = 20"))
    with pytest.raises(ConfigError) as err:
        load_config(text=text, env={})
    assert err.value.key == "doors[1].hold_time"
    assert err.value.where == f"line {line}"
    assert "between 1 and 10" in str(err.value)


def test_unknown_key_is_refused_with_its_line():
    text = embedded_default_text().replace("[doors.sensor]\npin = 5", "[doors.sensor]\npin = 5\nopen_levle = 1")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("open_levle"))
    with pytest.raises(ConfigError, match=rf"doors\[0\]\.sensor\.open_levle \(line {line}\): unknown key"):
        load_config(text=text, env={})


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ('timezone = "UTC"', 'timezone = "Mars/Olympus"', "unknown time zone"),
        ('lock = "relay"\nhold_time = 3.0', 'lock = "magic"\nhold_time = 3.0', "must be one of 'relay', 'http'"),
        ("log_level = 3", 'log_level = "3"', "must be an integer"),
        ("log_level = 3", "log_level = 9", "between 1 and 7"),
        ("relock_on_close = true", "relock_on_close = 1", "must be true or false"),
        ("pin = 27", "pin = 17", "GPIO 17 is already used by doors[0].relay.pin"),
        ("pin = 21", "pin = 26", "GPIO 26 is already used by tamper.pin"),  # the presence input on the tamper's
        ("pin = 27", "pin = 21", "GPIO 21 is already used by presence.pin"),
        ("pin = 20", "pin = 21", "GPIO 21 is already used"),  # a call button on the presence input
        ("id = 2", "id = 1", "door 1 is defined twice"),
    ],
)
def test_bad_values_are_refused(replace, by, message):
    text = embedded_default_text()
    assert replace in text
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(text=text.replace(replace, by, 1), env={})


def test_syntax_error_reports_the_line():
    with pytest.raises(ConfigError, match=r"line 2"):
        load_config(text='[site]\nname = "unterminated\n', env={})


def test_relay_door_without_relay_table_is_refused():
    with pytest.raises(ConfigError, match=r'lock = "relay" needs a \[doors.relay\]'):
        load_config(text="[[doors]]\nid = 1\n", env={})


def test_env_overrides_reach_sections_doors_and_nested_tables():
    env = {
        "DOORPHONED_SITE_TIMEZONE": "Europe/Berlin",
        "DOORPHONED_DAEMON_LOG_LEVEL": "6",
        "DOORPHONED_DOORS_2_HOLD_TIME": "7.5",
        "DOORPHONED_DOORS_1_RELAY_ACTIVE_LEVEL": "low",
        "DOORPHONED_CONTROL_SOCKET": "/tmp/x.sock",
    }
    config = load_default(env=env)
    assert config.site.timezone == "Europe/Berlin"
    assert config.daemon.log_level == 6
    assert config.door(2).hold_time == 7.5
    assert config.door(1).relay.active_level == "low"
    assert config.door(1).hold_time == 3.0
    assert str(config.control_socket_path) == "/tmp/x.sock"


def test_env_override_errors_name_the_variable():
    with pytest.raises(ConfigError, match="DOORPHONED_DOORS_2_HOLD_TIME"):
        load_default(env={"DOORPHONED_DOORS_2_HOLD_TIME": "60"})
    with pytest.raises(ConfigError, match="DOORPHONED_SITE_TIMEZONE"):
        load_default(env={"DOORPHONED_SITE_TIMEZONE": "Nowhere/Land"})
    with pytest.raises(ConfigError, match="DOORPHONED_SITE_COLOUR: unknown configuration key"):
        load_default(env={"DOORPHONED_SITE_COLOUR": "blue"})
    with pytest.raises(ConfigError, match="no doors entry with id 9"):
        load_default(env={"DOORPHONED_DOORS_9_HOLD_TIME": "2"})


def test_http_door_and_secrets_are_redacted():
    config = load_config(text=embedded_default_text() + HTTP_DOOR, env={})
    door = config.door(3)
    assert door.http.timeout == 1.5
    assert door.http.headers["Authorization"] == "Bearer s3cret"
    shown = repr(to_dict(config))
    assert "s3cret" not in shown
    assert to_dict(config)["doors"][2]["http"]["headers"] == {"Authorization": "***"}


def test_http_door_without_url_table_is_refused():
    with pytest.raises(ConfigError, match=r"doors\[0\]\.http"):
        load_config(text='[[doors]]\nid = 1\nlock = "http"\n', env={})


def test_key_lines_follow_array_sub_tables():
    lines = key_lines(embedded_default_text())
    text = embedded_default_text().splitlines()
    assert text[lines["doors[1].relay.pin"] - 1] == "pin = 27"
    assert text[lines["doors[0].exit_button.pressed_level"] - 1] == 'pressed_level = "low"'


def test_every_setting_is_documented_in_configuration_md():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert reference_markdown() in doc, "regenerate with: make docs"
    for key, _field, _tp in iter_settings(Config):
        assert f"`{env_name(key)}`" in doc, env_name(key)


def test_documented_door_variables_work():
    assert env_name("doors[].relay.pin") == "DOORPHONED_DOORS_<ID>_RELAY_PIN"
    config = load_default(env={env_name("doors[].relay.pin").replace("<ID>", "2"): "22"})
    assert config.door(2).relay.pin == 22


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", env={})


def test_shipped_example_config_is_valid():
    config = load_config(ROOT / "docs" / "examples" / "doorphoned.toml", env={})
    assert [d.lock for d in config.doors] == ["relay", "relay", "http"]
    assert config.door(2).mode == "bistable"


@pytest.mark.parametrize("text, reason", [
    ("x = " + "[" * 500, "nested more than 32 levels deep"),
    ("x = " + "{a = " * 500, "nested more than 32 levels deep"),
    ("[site]\nname = 'a'\nname = 'b'\n", "TOML syntax error"),  # TOML forbids duplicate keys
    ("[site]\n[site]\n", "TOML syntax error"),
    ("[site]\nname = \"a\x00b\"\n", "TOML syntax error"),
    ("[site]\nname = \"a\\u0000b\"\n", "must not contain NUL"),
    ("[daemon]\nstate_dir = \"" + "a" * 70_000 + "\"\n", "at most 65,536"),
    ("[[doors]]\nid = 1\nhold_time = nan\n[doors.relay]\npin = 5\n", "must be a finite number"),
    ("[[doors]]\nid = 1\nhold_time = inf\n[doors.relay]\npin = 5\n", "must be a finite number"),
    ("[[doors]]\nid = 1\nhold_time = " + "9" * 400 + "\n[doors.relay]\npin = 5\n", "must be a finite number"),
    ("[[doors]]\nid = 1\n[doors.relay]\npin = 5\n[doors.http]\nurl = 'http://x'\nheaders = {A = 1}\n",
     "must be a table of strings"),
    ("[[doors]]\nid = 1\n[doors.relay]\npin = [[[[1]]]]\n", "must be an integer"),
    ("doors = 5\n", "must be a list"),
    ("[\"bad\\nkey\"]\nx = 1\n", "unknown key"),
])
def test_every_malformed_file_is_one_config_error_on_one_line(text, reason):
    with pytest.raises(ConfigError) as err:
        load_config(text=text, env={})
    message = str(err.value)
    assert reason in message
    assert "\n" not in message and len(message) <= 400


def test_nesting_error_names_the_line():
    text = 'site.name = "[[[[["  # brackets in strings do not count\n# [[[[[[[[ nor in comments\n'
    text += "x = " + "[" * 40 + "\n"
    with pytest.raises(ConfigError) as err:
        load_config(text=text, env={})
    assert err.value.where == "line 3"


def test_hostile_environment_value_is_a_config_error():
    with pytest.raises(ConfigError, match="nested more than"):
        load_default(env={"DOORPHONED_KEYPAD_DOORS": "[" * 2000})
    with pytest.raises(ConfigError, match="finite"):
        load_default(env={"DOORPHONED_DOORS_1_HOLD_TIME": "nan"})


def test_a_config_without_doors_warns():
    from doorphoned.core.config import config_warnings

    assert config_warnings(load_config(text="", env={})) == [
        "no [[doors]] configured: no credential, exit button or call can open anything"]
    assert config_warnings(load_default(env={})) == []

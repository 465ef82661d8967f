"""Sections are declared by their features and composed in app/config.py: one declaration, one line.

A section declared here, in one place, and added to the root with one field, must show in loading
(with file:line errors), in the environment overrides and in the generated key reference, with no
other change to the engine.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import pytest

from doorphoned.app.config import Config
from doorphoned.core.config import (
    ConfigError,
    Schema,
    Source,
    check_reader,
    embedded_default_text,
    iter_settings,
    setting,
    to_dict,
)


@dataclass(frozen=True)
class BellConfig:
    """A feature's section, as a feature folder's config.py would declare it."""

    enabled: bool = setting(False, doc="Ring a bell when the call button is pressed.")
    device: str = setting("", doc="Sound device of the bell.")
    volume: int = setting(4, doc="Bell volume.", min=0, max=10)
    doors: tuple[int, ...] = setting([1], doc="Doors whose button rings it.")
    token: str = setting("", doc="Bell service token; never shown.", secret=True)

    def validate(self, door_ids: frozenset[int], source: Source) -> None:
        check_reader("bell", self.enabled, ("device", self.device), ("doors", self.doors), door_ids, source)


@dataclass(frozen=True)
class BellRoot(Config):
    bell: BellConfig = setting(BellConfig(), doc="The door bell.")  # the one line a feature adds

    def validate(self, source: Source) -> None:
        super().validate(source)
        self.bell.validate(frozenset(d.id for d in self.doors), source)


SCHEMA = Schema(BellRoot)
DEFAULT = embedded_default_text()


def test_a_new_section_loads_with_its_defaults_and_its_values():
    assert SCHEMA.load_default(env={}).bell == BellConfig()
    config = SCHEMA.load(text=DEFAULT + '\n[bell]\nvolume = 7\ndevice = "hw:1"\n', env={})
    assert (config.bell.volume, config.bell.device) == (7, "hw:1")
    assert config.doors == SCHEMA.load_default(env={}).doors  # the other sections are untouched


def test_a_new_section_reports_errors_with_key_and_line():
    text = DEFAULT + "\n[bell]\nvolume = 11\n"
    line = text.splitlines().index("volume = 11") + 1
    with pytest.raises(ConfigError) as caught:
        SCHEMA.load(text=text, env={})
    assert str(caught.value) == f"bell.volume (line {line}): must be between 0 and 10, got 11"
    with pytest.raises(ConfigError, match=r"^bell\.colour \(line \d+\): unknown key$"):
        SCHEMA.load(text=DEFAULT + '\n[bell]\ncolour = "red"\n', env={})


def test_a_new_sections_cross_section_rule_runs_at_the_root():
    text = DEFAULT + '\n[bell]\nenabled = true\ndevice = "hw:1"\ndoors = [7]\n'
    with pytest.raises(ConfigError, match=r"^bell\.doors \(line \d+\): no door 7 is configured$"):
        SCHEMA.load(text=text, env={})


def test_a_new_section_takes_environment_overrides():
    config = SCHEMA.load_default(env={"DOORPHONED_BELL_VOLUME": "2", "DOORPHONED_BELL_DEVICE": "hw:2"})
    assert (config.bell.volume, config.bell.device) == (2, "hw:2")
    with pytest.raises(ConfigError, match=r"^bell\.volume \(environment DOORPHONED_BELL_VOLUME\): must be between"):
        SCHEMA.load_default(env={"DOORPHONED_BELL_VOLUME": "12"})
    with pytest.raises(ConfigError, match=r"^DOORPHONED_BELL_PITCH: unknown configuration key$"):
        SCHEMA.load_default(env={"DOORPHONED_BELL_PITCH": "1"})


def test_a_new_section_is_documented_and_shown_without_secrets():
    reference = SCHEMA.reference_markdown()
    assert "| `bell.volume` | integer | `4` | Bell volume. Range 0–10. | `DOORPHONED_BELL_VOLUME` |" in reference
    assert "`bell.doors` | list of integer | `[1]`" in reference
    shown = to_dict(SCHEMA.load(text=DEFAULT + '\n[bell]\ntoken = "s3cret"\n', env={}))
    assert shown["bell"]["token"] == "***"
    assert "s3cret" not in str(shown)


def test_the_root_lists_only_sections_declared_in_feature_folders():
    """No section is left in the engine: each root field's type lives in a folder's config.py."""
    hints = typing.get_type_hints(Config)
    homes = {}
    for fld in dataclasses.fields(Config):
        tp = hints[fld.name]
        section = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        homes[fld.name] = section.__module__
    assert homes == {
        "site": "doorphoned.app.config", "daemon": "doorphoned.app.config",
        "control": "doorphoned.control.config", "gpio": "doorphoned.relay.config",
        "tamper": "doorphoned.relay.config", "presence": "doorphoned.relay.config",
        "access": "doorphoned.access.config",
        "keypad": "doorphoned.readers.config", "nfc": "doorphoned.readers.config", "ble": "doorphoned.readers.config",
        "camera": "doorphoned.camera.config", "monitor": "doorphoned.camera.monitor_config",
        "captures": "doorphoned.camera.capture_config", "motion": "doorphoned.camera.motion_config",
        "face": "doorphoned.face.config", "cloud": "doorphoned.cloud.config",
        "sip": "doorphoned.sip.config", "doors": "doorphoned.relay.config",
    }
    assert not any(module.startswith("doorphoned.core") for module in homes.values())


def test_every_key_of_the_real_root_is_still_documented_in_the_same_order():
    keys = [key for key, _f, _t in iter_settings(Config)]
    assert keys[:2] == ["site.name", "site.timezone"]
    assert keys[-1] == "doors[].dtmf_code"
    assert len(keys) == len(set(keys))

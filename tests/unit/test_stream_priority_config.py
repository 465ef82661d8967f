"""``monitor.encoder_nice`` travels from the config to the stream's settings in the camera process."""

from __future__ import annotations

import dataclasses

import pytest

from doorphoned.camera import protocol
from doorphoned.camera.monitor import MonitorSettings
from doorphoned.camera.monitor_config import MonitorConfig, monitor_settings
from doorphoned.camera.monitor_ops import parse_settings


def test_the_configured_nice_value_reaches_the_stream_settings():
    fields = parse_settings(monitor_settings(MonitorConfig(encoder_nice=7), "127.0.0.1"))
    assert dataclasses.replace(MonitorSettings(), **fields).encoder_nice == 7
    assert MonitorConfig().encoder_nice == MonitorSettings().encoder_nice == 10  # one default on both sides


@pytest.mark.parametrize("nice", [-1, 20, 1.5e3, True])
def test_a_nice_value_out_of_range_refuses_the_start(nice):
    with pytest.raises(protocol.ProtocolError, match="encoder_nice"):
        parse_settings({"encoder_nice": nice})

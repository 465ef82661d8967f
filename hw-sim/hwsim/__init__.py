"""hw-sim: plays the door-phone hardware (GPIO relays, door sensors, buttons, tamper) for doorphoned.

The daemon cannot tell it from the real thing: it reaches hw-sim through a gpiozero pin factory
(``hwsim``), exactly as it reaches real GPIO through ``lgpio``. See docs/hw-sim.md.
"""

import os
from pathlib import Path

__version__ = "0.1.0"


def default_socket() -> Path:
    """Where hw-sim listens: ``$HWSIM_SOCKET``, else ``./var/hwsim.sock`` (the `make run` instance)."""
    return Path(os.environ.get("HWSIM_SOCKET") or "var/hwsim.sock")

"""The access section: keypad lockout policy (``[access]``)."""

from __future__ import annotations

from dataclasses import dataclass

from doorphoned.core.config import ConfigError, Source, setting


@dataclass(frozen=True)
class AccessConfig:
    lockout_failures: int = setting(5, doc="Wrong keypad PINs within `lockout_window` that lock the keypad.",
                                    min=2, max=20)
    lockout_window: float = setting(60.0, doc="Seconds in which `lockout_failures` wrong PINs count.", min=5, max=3600)
    lockout_first: float = setting(30.0, doc="Seconds of the first lockout; each next one in a streak doubles.",
                                   min=1, max=3600)
    lockout_max: float = setting(900.0, doc="Longest lockout in seconds; as long without failures ends the streak.",
                                 min=1, max=86400)

    def validate(self, source: Source) -> None:
        if self.lockout_max < self.lockout_first:
            raise ConfigError("access.lockout_max", "must not be shorter than access.lockout_first",
                              source.where("access.lockout_max"))

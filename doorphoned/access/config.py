"""The access section: keypad lockout policy and the trust in offline-signed temp keys (``[access]``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from doorphoned.core.config import ConfigError, Source, setting

MAX_TRUSTED_KEYS = 8


def _check_public_keys(values: tuple[str, ...]) -> str | None:
    """Each entry must be a readable P-256 public key (PEM inline or a path): a typo fails at start, not at
    the first courier."""
    from doorphoned.access.signedkeys import read_public_key

    if len(values) > MAX_TRUSTED_KEYS:
        return f"at most {MAX_TRUSTED_KEYS} keys (old ones go once no valid key is signed with them)"
    for index, entry in enumerate(values, start=1):
        try:
            read_public_key(entry)
        except ValueError as exc:
            return f"key {index}: {exc}"
    return None


def _check_site_id(value: str) -> str | None:
    if value and not re.match(r"^[A-Za-z0-9_-]{1,64}$", value):
        return "must be 1-64 characters of A-Z a-z 0-9 _ - (it is the scope signed keys name)"
    return None


@dataclass(frozen=True)
class AccessConfig:
    lockout_failures: int = setting(5, doc="Wrong keypad PINs within `lockout_window` that lock the keypad.",
                                    min=2, max=20)
    lockout_window: float = setting(60.0, doc="Seconds in which `lockout_failures` wrong PINs count.", min=5, max=3600)
    lockout_first: float = setting(30.0, doc="Seconds of the first lockout; each next one in a streak doubles.",
                                   min=1, max=3600)
    lockout_max: float = setting(900.0, doc="Longest lockout in seconds; as long without failures ends the streak.",
                                 min=1, max=86400)
    cloud_public_keys: tuple[str, ...] = setting(
        [], doc="Cloud P-256 public keys whose offline-signed temp keys (`DPS1:` QR codes) this unit accepts: each "
        "an inline PEM or the path of a PEM file; several while the cloud rotates its key. The sync may add more "
        "(`signing_keys`). With none, signed keys are refused (`no_trusted_key`).", check=_check_public_keys)
    site_id: str = setting("", doc="The site this unit belongs to, as signed keys name it (their scope); a signed "
                           "key opens when its scope is this or `cloud.device_id`.", check=_check_site_id)

    def validate(self, source: Source) -> None:
        if self.lockout_max < self.lockout_first:
            raise ConfigError("access.lockout_max", "must not be shorter than access.lockout_first",
                              source.where("access.lockout_max"))

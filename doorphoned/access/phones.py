"""Phone keys from outside (``doorphonectl phone add``, the cloud's ``phone_keys``): read, checked, as records.

One reader for both interfaces, so a bad key reads the same way from the installer and from the cloud:
an id, a P-256 public key (PEM), the modes it may use, an optional expiry. docs/phone.md.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

from doorphoned.access.decide import PhoneKeyRecord
from doorphoned.core.commands import CommandError, arg_opt_text, arg_text
from doorphoned.core.phonekeys import MODES, PhoneFormatError, load_public_key, pem, point
from doorphoned.core.schedule import ScheduleError, parse_local_datetime

PHONE_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
PHONE_FIELDS = {"id", "public_key", "modes", "expires"}
MAX_PEM = 1000
MAX_PHONES_PER_USER = 10


def check_phone_key_id(key_id: str) -> str:
    if not PHONE_KEY_ID.match(key_id):
        raise CommandError("a phone key id is 1-40 letters, digits, '.', '_' or '-'")
    return key_id


def read_modes(value: Any) -> frozenset[str]:
    """A list of modes (or a comma-separated text); absent = every mode."""
    if value is None:
        return frozenset(MODES)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(m, str) for m in items):
        raise CommandError(f"modes must be a non-empty list of {', '.join(MODES)}")
    modes = frozenset(m.strip() for m in items)
    unknown = sorted(modes - set(MODES))
    if unknown:
        raise CommandError(f"unknown mode {unknown[0][:20]!r} (modes: {', '.join(MODES)})")
    return modes


def read_phone_key(args: Any, user_id: str, source: str, tz: ZoneInfo) -> PhoneKeyRecord:
    """One phone key object: ``{id, public_key, modes?, expires?}``; CommandError names what is wrong."""
    if not isinstance(args, dict):
        raise CommandError("a phone key is an object {id, public_key, modes, expires}")
    extra = sorted(set(args) - PHONE_FIELDS)
    if extra:
        raise CommandError(f"phone key: unknown field {extra[0][:40]!r} (expected: {', '.join(sorted(PHONE_FIELDS))})")
    key_id = check_phone_key_id(arg_text(args, "id", limit=40))
    text = args.get("public_key")
    if not isinstance(text, str) or len(text) > MAX_PEM:
        raise CommandError(f"phone key {key_id}: public_key must be text (PEM, or base64 of the DER or the point) "
                           f"of at most {MAX_PEM} characters")
    try:
        public = point(load_public_key(text.encode("utf-8", "replace")))
    except PhoneFormatError as exc:
        raise CommandError(f"phone key {key_id}: {exc}") from exc
    expires_text = arg_opt_text(args, "expires", limit=40)
    try:
        expires = parse_local_datetime(expires_text, tz) if expires_text else None
    except ScheduleError as exc:
        raise CommandError(f"phone key {key_id}: expires: {exc}") from exc
    return PhoneKeyRecord(key_id, user_id, public, read_modes(args.get("modes")), expires, source)


def read_phone_keys(value: Any, user_id: str, source: str, tz: ZoneInfo) -> list[PhoneKeyRecord]:
    if not isinstance(value, list) or len(value) > MAX_PHONES_PER_USER:
        raise CommandError(f"phone_keys must be a list of at most {MAX_PHONES_PER_USER} keys")
    keys = [read_phone_key(item, user_id, source, tz) for item in value]
    if len({k.id for k in keys}) != len(keys) or len({k.public_point for k in keys}) != len(keys):
        raise CommandError("phone_keys: the same id or key twice")
    return keys


def phone_json(key: PhoneKeyRecord) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.public_point)
    return {"id": key.id, "user": key.user_id, "modes": sorted(key.modes), "tag": key.tag.hex(),
            "expires": key.expires.isoformat() if key.expires else None, "source": key.source,
            "public_key": pem(public)}

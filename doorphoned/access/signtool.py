"""``doorphone-cloud keygen`` and ``doorphone-cloud tempkey sign``: the cloud's signing key and offline-signed
temp keys, made without a broker (docs/signed-keys.md). ``app/cloudtool.py`` adds them to the tool.

The private key is the cloud's secret: whoever holds it can make keys every unit trusting its public half
opens. It is written with mode 0600 and never printed; the tool refuses to overwrite one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from doorphoned.access.credentials import new_key_id
from doorphoned.access.signedkeys import REPEATS, Repeat, Terms, fingerprint, parse_signed, sign
from doorphoned.core.schedule import ScheduleError, parse_local_datetime


def add_commands(sub: Any) -> None:
    """Register ``keygen`` and ``tempkey sign`` on the tool's sub-parsers."""
    k = sub.add_parser("keygen", help="make the cloud's P-256 signing key (no broker needed)")
    k.add_argument("--out", required=True, type=Path, help="private key file (PEM, written 0600)")
    k.add_argument("--public", type=Path, help="public key file (default: OUT with .pub.pem)")
    k.set_defaults(func=keygen)
    t = sub.add_parser("tempkey", help="offline-signed temp keys")
    tsub = t.add_subparsers(dest="tempkey_command", required=True)
    s = tsub.add_parser("sign", help="print a signed temp key's QR text (DPS1:...)")
    s.add_argument("--key", required=True, type=Path, help="the cloud's private key (keygen)")
    s.add_argument("--scope", required=True, help="the site id ([access] site_id) or unit id it opens at")
    s.add_argument("--id", help="key id (default: a new one); revoke it by this id")
    s.add_argument("--name", default="", help="shown in the door log (at most 32 bytes)")
    s.add_argument("--doors", required=True, help="1,2")
    s.add_argument("--start", required=True, help="ISO 8601 (without offset: --tz)")
    s.add_argument("--end", required=True, help="ISO 8601 (without offset: --tz)")
    s.add_argument("--tz", default="UTC", help="time zone of --start/--end without an offset")
    s.add_argument("--repeat", choices=REPEATS, default="never")
    s.add_argument("--count", type=int, help="never: uses on each door, 1-100 (default 1)")
    s.add_argument("--from", dest="from_", metavar="HH:MM", help="daily/weekly: from time of day (site time)")
    s.add_argument("--to", metavar="HH:MM", help="daily/weekly: to time of day")
    s.add_argument("--days", help="weekly: mon,tue,... or mon-fri")
    s.add_argument("--recipient", action="append", default=[], metavar="USER", help="a delivery key for USER")
    s.add_argument("--png", type=Path, help="also write the QR code image here")
    s.add_argument("--json", action="store_true", help="print the text with its id, length and QR version")
    s.set_defaults(func=tempkey_sign)


def keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    public: Path = args.public or out.with_name(out.name.removesuffix(".pem") + ".pub.pem")
    for path in (out, public):
        if path.exists():
            raise SystemExit(f"doorphone-cloud: {path} exists; not overwriting a key")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"{out}: private key (keep it secret)\n{public}: public key for [access] cloud_public_keys\n"
          f"fingerprint {fingerprint(key.public_key()).hex()}")
    return 0


def _private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SystemExit(f"doorphone-cloud: cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SystemExit(f"doorphone-cloud: {path} is not a P-256 private key")
    return key


def terms_from(args: argparse.Namespace) -> Terms:
    """The key's terms from the command line, checked the way the unit checks a synced key's."""
    from doorphoned.access.commands import key_window

    try:
        tz = ZoneInfo(args.tz)
        start, end = parse_local_datetime(args.start, tz), parse_local_datetime(args.end, tz)
        window = key_window(args.repeat, {"from": args.from_, "to": args.to, "days": args.days})
        doors = frozenset(int(d) for d in args.doors.split(","))
    except (ScheduleError, ZoneInfoNotFoundError, ValueError) as exc:
        raise SystemExit(f"doorphone-cloud: {exc}") from None
    if args.repeat != "never" and args.count is not None:
        raise SystemExit("doorphone-cloud: only repeat=never keys have a use count")
    count = (args.count if args.count is not None else 1) if args.repeat == "never" else None
    return Terms(args.id or new_key_id(), args.scope, doors, start, end, cast(Repeat, args.repeat), count, window,
                 tuple(args.recipient), args.name)


def tempkey_sign(args: argparse.Namespace) -> int:
    terms = terms_from(args)
    key = _private_key(args.key)
    try:
        text = sign(terms, key)
    except ValueError as exc:
        raise SystemExit(f"doorphone-cloud: {exc}") from None
    parse_signed(text)  # what was made must read back
    import segno

    qr = segno.make_qr(text, error="m")
    if args.png:
        qr.save(str(args.png), scale=8, border=4)
    if args.json:
        print(json.dumps({"text": text, "key_id": terms.key_id, "length": len(text), "qr_version": qr.version,
                          "qr_mode": qr.mode, "fingerprint": fingerprint(key.public_key()).hex(),
                          "start": terms.start.isoformat(), "end": terms.end.isoformat()}))
    else:
        print(text)
    return 0


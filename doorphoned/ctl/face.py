"""``doorphonectl face ...``: enrol a user's face from photo files, list, show and remove templates, read back a
photo kept for audit; and the photo upload ``access check --face`` shares.

A photo is larger than one control request (64 KB), so it goes up in base64 parts (``face.upload``) under a
random upload id; the daemon keeps the parts in memory only, and ``face.enrol`` / ``face.check`` take them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Any

from doorphoned.control.client import ControlClient, ControlError
from doorphoned.ctl.registry import Registry, arg, remote, show

PART_BYTES = 36 * 1024  # raw bytes per part: 48 KB of base64, well inside the 64 KB request
MAX_PHOTO_BYTES = 10 * 1024 * 1024
ENROL_TIMEOUT = 300.0  # dlib's start and up to 10 photos on a loaded 2-core unit


def register(cli: Registry) -> None:
    cli.group("face", "face recognition templates")
    cli.command("face enrol", "enrol a user's face from photo files (JPEG/PNG, one face each)", _enrol,
                arg("user"), arg("--photo", action="append", type=Path, required=True, metavar="FILE",
                                 help="a photo of the user's face (repeat for more, up to 10)"))
    cli.command("face list", "users with face templates", remote("face.list", _list_text, "limit", "offset"),
                arg("--limit", type=int, default=1000), arg("--offset", type=int, default=0))
    cli.command("face show", "a user's face templates and kept photos (never the data)",
                remote("face.show", _show_text, "user"), arg("user"))
    cli.command("face photo", "write a kept enrolment photo (keep_photos) to a file, for audit", _photo,
                arg("user"), arg("photo", metavar="ID", help="a kept photo's id (from face show)"),
                arg("--out", type=Path, required=True, metavar="FILE", help="where to write it (0600)"),
                arg("--force", action="store_true", help="overwrite FILE if it exists"), json=False)
    cli.command("face remove", "remove a user's face templates (all, or one with --template)",
                remote("face.remove", lambda r: f"removed {r['removed']} template(s) of {r['user']}", "user",
                       "template"),
                arg("user"), arg("--template", type=int, help="one template id (from face show)"))


def read_photo(path: Path) -> bytes:
    """The file's bytes, refused here when it cannot be a photo the daemon would take."""
    try:
        size = path.stat().st_size
        if size > MAX_PHOTO_BYTES:
            raise ControlError(f"{path}: {size} bytes; a photo is at most {MAX_PHOTO_BYTES} (too_large)")
        if size == 0:
            raise ControlError(f"{path}: the photo is empty, 0 bytes (empty)")
        return path.read_bytes()
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from exc


def upload(client: ControlClient, data: bytes) -> str:
    """Send ``data`` in parts; the upload id the daemon now holds it under."""
    upload_id = secrets.token_hex(8)
    parts = max(1, -(-len(data) // PART_BYTES))
    for index in range(parts):
        piece = data[index * PART_BYTES:(index + 1) * PART_BYTES]
        client.call("face.upload", upload=upload_id, part=index + 1, parts=parts,
                    data=base64.b64encode(piece).decode())
    return upload_id


def _enrol(args: argparse.Namespace) -> int:
    photos = [read_photo(p) for p in args.photo]
    with ControlClient(args.socket, timeout=ENROL_TIMEOUT) as client:
        ids = [upload(client, data) for data in photos]
        result = client.call("face.enrol", user=args.user, uploads=ids)
    show(args, result, _enrolled_text)
    return 0


def check_face(args: argparse.Namespace) -> int:
    """``access check --face PHOTO``: the photo's face against every template, then the gate's answer."""
    data = read_photo(args.face)
    with ControlClient(args.socket, timeout=ENROL_TIMEOUT) as client:
        result = client.call("face.check", upload=upload(client, data), door=args.door, at=args.at)
    show(args, result, _check_text)
    return 0


def _photo(args: argparse.Namespace) -> int:
    """Fetch the whole photo first (nothing is written when the daemon refuses), then write it 0600, refusing an
    existing file unless ``--force`` (a symlink is never followed)."""
    data = fetch_photo(args.socket, args.user, args.photo)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(args.out, flags, 0o600)
    except FileExistsError:
        raise ControlError(f"{args.out} exists; give --force to overwrite it") from None
    except OSError as exc:
        raise ControlError(f"{args.out}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)
        file.write(data)
    print(f"wrote {len(data)} bytes to {args.out}")
    return 0


def fetch_photo(socket: Path, user: str, photo_id: str) -> bytes:
    """A kept photo's bytes, chunk by chunk (one socket answer holds 512 KB)."""
    data = b""
    with ControlClient(socket) as client:
        while True:
            reply = client.call("face.photo", user=user, photo=photo_id, offset=len(data))
            try:
                chunk = base64.b64decode(str(reply["data"]), validate=True)
                size = int(reply["size"])
            except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                raise ControlError("the daemon's face.photo answer is not a photo chunk") from exc
            data += chunk
            if len(data) >= size or not chunk:
                break
    if len(data) != size:
        raise ControlError(f"the photo is {size} bytes, {len(data)} arrived")
    return data


def _enrolled_text(r: dict[str, Any]) -> str:
    quality = ", ".join(f"{q['eye_distance']:.0f} px between the eyes" for q in r.get("quality", []))
    return f"enrolled {len(r['templates'])} template(s) for {r['user']} ({quality})"


def _list_text(r: dict[str, Any]) -> str:
    lines = [f"{u['user']}: {u['templates']} template(s)" for u in r["users"]]
    return "\n".join(lines) or "no face templates"


def _show_text(r: dict[str, Any]) -> str:
    lines = [f"  {t['id']}: {t['source']}, added {t['added']}" + (", photo kept" if t["photo_kept"] else "")
             for t in r["templates"]]
    photos = [f"  photo {p['id']}: template {p['template']}, {p['source']}, added {p['added']}, {p['size']} bytes"
              for p in r.get("photos", [])]
    return f"{r['user']}: {len(lines)} template(s)" + "".join("\n" + line for line in lines + photos)


def _distance(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _check_text(r: dict[str, Any]) -> str:
    f = r["face"]
    verdict = "GRANTED" if r["granted"] else f"DENIED ({r['reason']})"
    who = r.get("user")
    subject = f" {who['name']} ({who['id']})" if who else ""
    return "\n".join([
        f"door {r['door']} at {r['at']}: {verdict}{subject}" + (f" - {r['detail']}" if r.get("detail") else ""),
        f"  best       {f.get('best_user') or '-'} at {_distance(f.get('best_distance'))}",
        f"  second     {f.get('second_user') or '-'} at {_distance(f.get('second_distance'))}",
        f"  threshold  {f['threshold']:.3f}, margin {f['margin']:.3f} -> {f.get('verdict')}",
        f"  faces      {f.get('faces_in_photo')} in the photo (the largest is checked)",
        f"  liveness   {f['liveness']}"])

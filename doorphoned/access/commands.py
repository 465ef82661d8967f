"""Control commands for users, PINs, cards, temp keys and ``access check``.

The CLI validates for friendly messages, but the daemon is the authority: every argument that
arrives here is untrusted and checked again; a refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from doorphoned.access.credentials import (
    check_private_pin,
    check_user_id,
    encode_qr,
    new_key_id,
    new_temp_pin,
)
from doorphoned.access.credstore import CredentialError, CredentialStore, NotFoundError
from doorphoned.access.decide import Decision, Repeat, TempKeyRecord, UserRecord
from doorphoned.access.gate import AccessGate
from doorphoned.access.phones import MAX_PHONES_PER_USER, phone_json, read_phone_key
from doorphoned.access.signedkeys import SignatureError, is_signed_text, parse_signed
from doorphoned.core.clock import Clock
from doorphoned.core.commands import (
    Caller,
    Command,
    CommandError,
    arg_doors,
    arg_int,
    arg_opt_text,
    arg_text,
    arg_text_list,
    installer,
)
from doorphoned.core.presentations import CardTap, CredentialFormatError, PinEntry, QrScan, normalise_card_uid
from doorphoned.core.schedule import ScheduleError, WeeklyWindow, parse_days, parse_local_datetime, parse_time_of_day

REPEATS = ("never", "daily", "weekly")


def user_from_args(user_id: str, args: dict[str, Any], known_doors: frozenset[int]) -> UserRecord:
    """A user record from untrusted arguments (control socket and cloud alike)."""
    try:
        windows = tuple(WeeklyWindow.parse(w) for w in arg_text_list(args, "schedule"))
    except ScheduleError as exc:
        raise CommandError(str(exc)) from exc
    enabled = args.get("enabled", True)
    if not isinstance(enabled, bool):
        raise CommandError("enabled must be true or false")
    return UserRecord(id=user_id, name=arg_text(args, "name"), enabled=enabled, windows=windows,
                      doors=arg_doors(args, "doors", known_doors, allow_all=True),
                      department=arg_text(args, "department", required=False))


def user_json(user: UserRecord, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "department": user.department, "enabled": user.enabled,
            "doors": "all" if user.doors is None else sorted(user.doors),
            "schedule": [str(w) for w in user.windows], **(facts or {})}


MAX_RECIPIENTS = 8


def key_recipients(args: dict[str, Any]) -> tuple[str, ...]:
    """A delivery key's recipients: up to 8 user ids (the users need not exist on this unit: a recipient
    may live in the cloud's directory only), each once."""
    value = args.get("recipients")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_RECIPIENTS or not all(isinstance(v, str) for v in value):
        raise CommandError(f"recipients must be a list of at most {MAX_RECIPIENTS} user ids")
    try:
        ids = tuple(check_user_id(v) for v in value)
    except CredentialFormatError as exc:
        raise CommandError(f"recipients: {exc}") from None
    if len(set(ids)) != len(ids):
        raise CommandError("recipients: a user id is named twice")
    return ids


def key_json(key: TempKeyRecord, uses: dict[int, int] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": key.id, "name": key.name, "doors": sorted(key.doors), "repeat": key.repeat,
        "start": key.start.isoformat(), "end": key.end.isoformat(),
        "window": str(key.window) if key.window else None, "each_door_counts": key.each_door_counts,
        "recipients": list(key.recipients)}
    if uses is not None and key.each_door_counts is not None:
        data["uses"] = {str(d): uses.get(d, 0) for d in sorted(key.doors)}
        data["uses_left"] = {str(d): max(key.each_door_counts - uses.get(d, 0), 0) for d in sorted(key.doors)}
    return data


def decision_json(decision: Decision, at: datetime) -> dict[str, Any]:
    return {
        "granted": decision.granted, "reason": decision.reason.value, "detail": decision.detail,
        "door": decision.door, "credential": decision.credential, "at": at.isoformat(),
        "user": {"id": decision.user.id, "name": decision.user.name} if decision.user else None,
        "key": {"id": decision.key.id, "name": decision.key.name} if decision.key else None,
    }


class CredentialCommands:
    """Users, PINs, cards, temp keys and ``access check`` over the control socket.

    They receive what they work on (the credential store, the gate, the clock) and two questions about
    the site (its doors, its time zone) from the composition root, never the daemon.
    """

    def __init__(self, creds: CredentialStore, gate: AccessGate, clock: Clock,
                 known_doors: Callable[[], frozenset[int]], tz: Callable[[], ZoneInfo]) -> None:
        self.creds = creds
        self._gate = gate
        self._clock = clock
        self._known = known_doors
        self._tz = tz

    def commands(self) -> list[Command]:
        def socket(name: str, handler: Any, fields: tuple[str, ...], summary: str) -> Command:
            return Command(name, None, handler, frozenset(fields), summary)

        return [
            socket("user.add", self.user_add, ("id", "name", "enabled", "schedule", "doors", "department"),
                   "add a user"),
            socket("user.list", self.user_list, ("limit", "offset"), "list users"),
            socket("user.show", self.user_show, ("user",), "one user and their credentials"),
            socket("user.remove", self.user_remove, ("user",), "remove a user"),
            socket("pin.set", self.pin_set, ("user", "pin"), "set a user's private PIN"),
            socket("card.add", self.card_add, ("user", "uid"), "give a user a card"),
            socket("card.remove", self.card_remove, ("user", "uid"), "take a card from a user"),
            socket("phone.add", self.phone_add, ("user", "id", "public_key", "modes", "expires"),
                   "enrol a phone's P-256 public key for a user"),
            socket("phone.list", self.phone_list, ("user",), "list phone keys (of one user)"),
            socket("phone.remove", self.phone_remove, ("id",), "remove a phone key (it stops at once)"),
            socket("tempkey.create", self.tempkey_create,
                   ("name", "doors", "repeat", "start", "end", "from", "to", "days", "count", "recipients"),
                   "create a temp key (with recipients: a delivery key)"),
            socket("tempkey.list", self.tempkey_list, ("limit", "offset"), "list temp keys"),
            socket("tempkey.show", self.tempkey_show, ("id",), "one temp key and its uses"),
            socket("tempkey.remove", self.tempkey_remove, ("id",), "remove a temp key"),
            socket("tempkey.qr", self.tempkey_qr, ("id",), "a temp key's PIN and QR text"),
            socket("access.check", self.access_check, ("door", "at", "pin", "qr", "card"),
                   "what a credential would do at a door, and why (nothing moves)"),
        ]

    def _known_doors(self) -> frozenset[int]:
        return self._known()

    # ------------------------------------------------------------ users
    async def user_add(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        try:
            user_id = check_user_id(args["id"]) if args.get("id") is not None else "u-" + new_key_id()[3:]
        except (CredentialFormatError, TypeError) as exc:
            raise CommandError(str(exc)) from exc
        user = user_from_args(user_id, args, self._known_doors())
        self._run(self.creds.add_user, user, self._clock.now())
        return user_json(user, self.creds.user_facts(user.id))

    async def user_list(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        limit, offset = arg_int(args, "limit", 1, 100_000, 1000), arg_int(args, "offset", 0, 10**9, 0)
        return [user_json(u) for u in self.creds.list_users(limit, offset)]

    async def user_show(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user = self._user(args)
        return user_json(user, self.creds.user_facts(user.id))

    async def user_remove(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user = self._user(args)
        self._run(self.creds.remove_user, user.id)
        return {"removed": user.id}

    def _user(self, args: dict[str, Any]) -> UserRecord:
        user_id = arg_text(args, "user")
        user = self.creds.get_user(user_id)
        if user is None:
            raise CommandError(f"no user {user_id!r}")
        return user

    async def pin_set(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user = self._user(args)
        pin = args.get("pin")
        if not isinstance(pin, str):
            raise CommandError("pin must be text")
        try:
            check_private_pin(pin)
        except CredentialFormatError as exc:
            raise CommandError(str(exc)) from exc
        self._run(self.creds.set_pin, user.id, pin)
        return {"user": user.id, "pin_set": True}

    async def card_add(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user, uid = self._user(args), self._uid(args)
        self._run(self.creds.add_card, user.id, uid, self._clock.now())
        return {"user": user.id, "card": uid}

    async def card_remove(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user, uid = self._user(args), self._uid(args)
        self._run(self.creds.remove_card, user.id, uid)
        return {"user": user.id, "removed": uid}

    @staticmethod
    def _uid(args: dict[str, Any]) -> str:
        try:
            return normalise_card_uid(arg_text(args, "uid", limit=40))
        except CredentialFormatError as exc:
            raise CommandError(str(exc)) from exc

    # ------------------------------------------------------------ phones
    async def phone_add(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user = self._user(args)
        fields = {k: args[k] for k in ("public_key", "modes", "expires") if args.get(k) is not None}
        fields["id"] = args.get("id") if args.get("id") is not None else "p-" + new_key_id()[3:]
        key = read_phone_key(fields, user.id, "local", self._tz())
        if len(self.creds.phone_keys(user.id)) >= MAX_PHONES_PER_USER:
            raise CommandError(f"at most {MAX_PHONES_PER_USER} phones per user")
        self._run(self.creds.add_phone_key, key, self._clock.now())
        return phone_json(key)

    async def phone_list(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        user_id = self._user(args).id if args.get("user") is not None else None
        return [phone_json(k) for k in self.creds.phone_keys(user_id)]

    async def phone_remove(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        key_id = arg_text(args, "id", limit=40)
        self._run(self.creds.remove_phone_key, key_id)
        return {"removed": key_id}

    # ------------------------------------------------------------ temp keys
    async def tempkey_create(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        key = self._new_key(args)
        for _ in range(20):  # a random PIN may collide with one in use: draw another
            pin = new_temp_pin()
            try:
                self.creds.add_temp_key(key, pin, self._clock.now(), created_by=f"uid {installer(caller).uid}")
                break
            except CredentialError as exc:
                if "collides" not in str(exc):
                    raise CommandError(str(exc)) from exc
        else:
            raise CommandError("could not draw a free PIN; try again")
        return {**key_json(key), "pin": pin, "qr": encode_qr(key.id, pin)}

    def _new_key(self, args: dict[str, Any]) -> TempKeyRecord:
        terms = key_terms(args, self._tz(), self._known_doors(), now=self._clock.now())
        return TempKeyRecord(id=new_key_id(), name=arg_text(args, "name"), doors=terms.doors, repeat=terms.repeat,
                             start=terms.start, end=terms.end, window=terms.window, each_door_counts=terms.count,
                             recipients=key_recipients(args))

    async def tempkey_list(self, args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        limit, offset = arg_int(args, "limit", 1, 100_000, 1000), arg_int(args, "offset", 0, 10**9, 0)
        return [key_json(k) for k in self.creds.list_keys(limit, offset)]

    async def tempkey_show(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        key = self._key(args)
        return key_json(key, self.creds.all_key_uses(key.id))

    async def tempkey_remove(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        key = self._key(args)
        self._run(self.creds.remove_key, key.id)
        return {"removed": key.id}

    async def tempkey_qr(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        key = self._key(args)
        pin = self.creds.key_pin(key.id)
        return {"id": key.id, "pin": pin, "qr": encode_qr(key.id, pin)}

    def _key(self, args: dict[str, Any]) -> TempKeyRecord:
        key_id = arg_text(args, "id", limit=40)
        key = self.creds.get_key(key_id)
        if key is None:
            raise CommandError(f"no temp key {key_id!r}")
        return key

    # ------------------------------------------------------------ access check
    async def access_check(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        door = arg_int(args, "door", 1, 16, None)
        at_text = arg_opt_text(args, "at")
        try:
            at = parse_local_datetime(at_text, self._tz()) if at_text else self._clock.now()
        except ScheduleError as exc:
            raise CommandError(str(exc)) from exc
        given = [k for k in ("pin", "qr", "card") if args.get(k) is not None]
        if len(given) != 1 or not isinstance(args[given[0]], str):
            raise CommandError("give exactly one of pin, qr or card (as text)")
        value: str = args[given[0]]
        if given[0] == "pin":
            credential: Any = PinEntry(value, "keypad")
        elif given[0] == "qr":
            credential = QrScan(value, "camera")
        else:
            credential = CardTap(self._uid({"uid": value}), "nfc")
        result = decision_json(self._gate.check(credential, door, at), at)
        if given[0] == "qr" and is_signed_text(value):
            result["signed"] = self._explain_signed(value)
        return result

    def _explain_signed(self, text: str) -> dict[str, Any]:
        """What ``access check`` shows of a signed key beyond the decision: its signature (ok or why not, and
        which trusted key), its terms, its scope, revocation, a synced key of the same id, its uses per door."""
        try:
            signed = parse_signed(text)
        except CredentialFormatError as exc:
            return {"format": "bad", "error": str(exc)}
        view = self._gate.view()
        trust = view.trust()
        terms = signed.terms
        out: dict[str, Any] = {"format": "ok", "signer": signed.signer.hex(), "scope": terms.scope,
                               "scope_ok": terms.scope in trust.scopes, "unit_scopes": sorted(trust.scopes),
                               "trusted_keys": [{"label": k.label, "fingerprint": k.fingerprint.hex()}
                                                for k in trust.keys]}
        try:
            out["signature"], out["trusted_key"] = "ok", trust.signer(signed).label
        except SignatureError as exc:
            out["signature"], out["signature_error"] = exc.reason, str(exc)
            return out  # unauthenticated terms are not shown as if they were the key's
        record = TempKeyRecord(terms.key_id, terms.name or "signed key", terms.doors, terms.repeat, terms.start,
                               terms.end, terms.window, terms.count, terms.recipients, signed_by=out["trusted_key"])
        stored = self.creds.get_key(terms.key_id)
        out["terms"] = key_json(record, self.creds.all_signed_key_uses(terms.key_id))
        out["revoked"] = self.creds.revocation(terms.key_id)
        out["synced_key"] = None if stored is None else key_json(stored, self.creds.all_key_uses(stored.id))
        return out

    @staticmethod
    def _run(func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except (CredentialError, NotFoundError) as exc:
            raise CommandError(str(exc.args[0]) if exc.args else str(exc)) from exc











@dataclass(frozen=True)
class KeyTerms:
    """When and where a temp key opens, read from untrusted arguments."""

    repeat: Repeat
    start: datetime
    end: datetime
    window: WeeklyWindow | None
    count: int | None
    doors: frozenset[int]


def key_terms(args: dict[str, Any], tz: ZoneInfo, known_doors: frozenset[int],
              now: datetime | None = None) -> KeyTerms:
    """A temp key's repeat, validity, daily/weekly window, use count and doors, checked the same way for the
    control socket and the cloud. With ``now`` (the installer's key, made on the unit) a missing start is
    now and an end already past is refused; without it (the cloud's) both times are required."""
    repeat = arg_opt_text(args, "repeat") or "never"
    if repeat not in REPEATS:
        raise CommandError("repeat must be never, daily or weekly")
    start_text, end_text = arg_opt_text(args, "start"), arg_opt_text(args, "end")
    if now is None and (not start_text or not end_text):
        raise CommandError("start and end are required (ISO 8601)")
    if not end_text:
        raise CommandError("end is required (ISO 8601 date/time)")
    try:
        start = parse_local_datetime(start_text, tz) if start_text else now
        end = parse_local_datetime(end_text, tz)
        window = key_window(repeat, args)
    except ScheduleError as exc:
        raise CommandError(str(exc)) from exc
    assert start is not None
    if end <= start:
        raise CommandError("end must be after start")
    if now is not None and end <= now:
        raise CommandError("end is in the past: the key would never open anything")
    if repeat != "never" and args.get("count") is not None:
        raise CommandError("only repeat=never keys have a use count")
    count = arg_int(args, "count", 1, 100, 1) if repeat == "never" else None
    doors = arg_doors(args, "doors", known_doors, allow_all=False)
    assert doors is not None
    return KeyTerms(cast(Repeat, repeat), start, end, window, count, doors)


def key_window(repeat: str, args: dict[str, Any]) -> WeeklyWindow | None:
    """A daily or weekly key's window from its ``from``, ``to`` and ``days`` arguments (socket and cloud alike)."""
    start, end, days = arg_opt_text(args, "from"), arg_opt_text(args, "to"), arg_opt_text(args, "days")
    if repeat == "never":
        if start or end or days:
            raise ScheduleError("repeat=never keys have no --from/--to/--days; use --start/--end")
        return None
    if (start is None) != (end is None):
        raise ScheduleError("give both --from and --to, or neither (all day)")
    if repeat == "daily" and days:
        raise ScheduleError("daily keys have no --days; use repeat=weekly")
    if repeat == "weekly" and not days:
        raise ScheduleError("weekly keys need --days, e.g. mon,wed,fri")
    weekdays = parse_days(days) if days else frozenset(range(7))
    return WeeklyWindow(weekdays, parse_time_of_day(start) if start else 0,
                        parse_time_of_day(end, allow_24=True) if end else 24 * 60)

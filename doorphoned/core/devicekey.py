"""The device secret: the HMAC key PINs are hashed with, and the key temp-key PINs and face templates are sealed with.

It lives in its own file (``<state_dir>/device.key``, mode 0600), not in the database, so a copy of
the database (a backup, a support bundle) does not carry what is needed to brute-force the
8-digit PINs in it. On hardware with a secure element this is where it would be read from instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class DeviceKeyError(RuntimeError):
    pass


class DeviceKey:
    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise DeviceKeyError(f"device key must be {KEY_BYTES} bytes")
        self._hash_key = hmac.new(secret, b"doorphoned pin hash v1", hashlib.sha256).digest()
        self._seal = AESGCM(hmac.new(secret, b"doorphoned seal v1", hashlib.sha256).digest())

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceKey:
        """Read the key, or make a new one atomically (a crash never leaves a half-written key)."""
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return cls(path.read_bytes())

    @property
    def hash_key(self) -> bytes:
        return self._hash_key

    def seal(self, plaintext: str, context: str) -> bytes:
        return self.seal_bytes(plaintext.encode(), context)

    def unseal(self, sealed: bytes, context: str) -> str:
        return self.unseal_bytes(sealed, context).decode()

    def seal_bytes(self, plaintext: bytes, context: str) -> bytes:
        """Binary secrets (a face template's 128 floats): AES-GCM, ``context`` bound as associated data, so
        a sealed value moved to another row (another user's template) does not open."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._seal.encrypt(nonce, plaintext, context.encode())

    def unseal_bytes(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._seal.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
        except Exception as exc:
            raise DeviceKeyError("sealed value does not open with this unit's device key") from exc

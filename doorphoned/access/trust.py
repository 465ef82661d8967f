"""Which cloud keys the unit trusts for offline-signed temp keys, and which scopes it answers to.

The keys come from ``[access] cloud_public_keys`` (inline PEM or files) and from the sync snapshot's
``signing_keys``; the scopes are ``[access] site_id`` and ``cloud.device_id``. The decision reads a
:class:`~doorphoned.access.signedkeys.Trust` per request, so it is built once and kept until the config or
the synced keys change (reading and parsing PEM on every QR would cost more than the signature check).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from doorphoned.access.credstore import CredentialStore
from doorphoned.access.signedkeys import Trust, TrustedKey, load_public_key, read_public_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustSettings:
    """What the configuration says (``[access]`` and the cloud's device id)."""

    public_keys: tuple[str, ...]
    site_id: str
    device_id: str


class TrustProvider:
    def __init__(self, creds: CredentialStore, settings: Callable[[], TrustSettings]) -> None:
        self._creds = creds
        self._settings = settings
        self._built: tuple[TrustSettings, int, Trust] | None = None

    def __call__(self) -> Trust:
        settings, generation = self._settings(), self._creds.signing_generation
        if self._built is None or self._built[:2] != (settings, generation):
            self._built = (settings, generation, self._build(settings))
        return self._built[2]

    def _build(self, settings: TrustSettings) -> Trust:
        keys: list[TrustedKey] = []
        for index, entry in enumerate(settings.public_keys, start=1):
            try:
                keys.append(TrustedKey(f"config {index}", read_public_key(entry)))
            except ValueError as exc:  # checked at start; a file removed since is logged, the others still count
                log.error("access.cloud_public_keys key %d: %s", index, exc)
        for fingerprint, pem in self._creds.signing_keys():
            try:
                keys.append(TrustedKey(f"sync {fingerprint}", load_public_key(pem.encode())))
            except ValueError as exc:
                log.error("synced signing key %s: %s", fingerprint, exc)
        return Trust(tuple(keys), frozenset(s for s in (settings.site_id, settings.device_id) if s))

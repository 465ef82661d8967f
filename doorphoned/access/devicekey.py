"""The device key moved to ``core/devicekey.py`` (issue 12: the face worker seals and opens templates with it
and may not import ``access/``); this name stays for the modules and tests that import it from here."""

from doorphoned.core.devicekey import KEY_BYTES, NONCE_BYTES, DeviceKey, DeviceKeyError

__all__ = ["KEY_BYTES", "NONCE_BYTES", "DeviceKey", "DeviceKeyError"]

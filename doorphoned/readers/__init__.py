"""Credential readers: keypad (serial), NFC (nfcpy), camera QR, BLE (issue: local access control)."""

"""Showing URLs without the secrets they may carry (``rtsp://user:password@camera``, ``?token=``)."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_url(url: str) -> str:
    """Scheme, host, port and path only: fit for a log line."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redact_url(url: str) -> str:
    """The URL with any password and query replaced by ``***`` (``config show``, ``status``)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    user = f"{parts.username}:***@" if parts.password else (f"{parts.username}@" if parts.username else "")
    port = f":{parts.port}" if parts.port else ""
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}{query}"

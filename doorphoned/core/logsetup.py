"""Logging with the installer's levels 1-7 (default 3, higher = more detail).

The levels follow syslog's spirit so journald can colour and filter them: when stderr is the
journal (``$JOURNAL_STREAM``), each line carries a ``<N>`` priority prefix instead of a timestamp.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

NOTICE = 25
TRACE = 5
logging.addLevelName(NOTICE, "NOTICE")
logging.addLevelName(TRACE, "TRACE")

# installer level -> Python level (what is shown at that level and below)
LEVELS = {1: logging.CRITICAL, 2: logging.ERROR, 3: logging.WARNING, 4: NOTICE, 5: logging.INFO,
          6: logging.DEBUG, 7: TRACE}
LEVEL_NAMES = {1: "critical", 2: "error", 3: "warning", 4: "notice", 5: "info", 6: "debug", 7: "trace"}
_SYSLOG_PRIORITY = [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (NOTICE, 5),
                    (logging.INFO, 6), (0, 7)]


def escaped(text: str) -> str:
    """``text`` with control, format (bidi) and surrogate characters escaped, newlines and tabs kept.

    Why: a message can carry text from outside (a camera process's error, a peer's name); a lone surrogate
    would make the UTF-8 log file's write fail and a U+202E or a carriage return would disguise the line.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else ascii(c)[1:-1] for c in text)


class EscapingFormatter(logging.Formatter):
    """The message part escaped (:func:`escaped`); a traceback after it is the daemon's own text."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escaped(record.message)
        return super().formatMessage(record)


class JournalFormatter(EscapingFormatter):
    """``<priority>logger: message``; journald strips the prefix and stores the priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = next(p for level, p in _SYSLOG_PRIORITY if record.levelno >= level)
        return f"<{priority}>{record.name}: {super().format(record)}"


LOG_FILE_BACKUPS = 2
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int, log_file: Path | None = None, max_bytes: int = 0) -> None:
    """stderr (the journal under systemd) and, with ``log_file``, a small rotating copy in the state dir.

    Why a file as well: a support engineer asks the unit for its log (cloud ``log.upload``) without
    SSH access, and it must cover the minutes before a crash and restart.
    """
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(EscapingFormatter(_FORMAT))
    handlers: list[logging.Handler] = [handler]
    if log_file is not None and max_bytes > 0:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            rotating = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes,
                                                            backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
            rotating.setFormatter(EscapingFormatter(_FORMAT))
            handlers.append(rotating)
        except OSError as exc:
            print(f"doorphoned: log file {log_file} not written: {exc}", file=sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = handlers
    set_level(level)


def log_files() -> list[Path]:
    """The rotating log files, oldest first (``doorphoned.log.2``, ``.1``, then the current one)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            current = Path(handler.baseFilename)
            older = [current.with_name(f"{current.name}.{n}") for n in range(LOG_FILE_BACKUPS, 0, -1)]
            return [f for f in [*older, current] if f.exists()]
    return []


def set_level(level: int) -> None:
    """Change the detail at run time (``doorphonectl log level N``, SIGHUP)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be 1-7, got {level}")
    logging.getLogger().setLevel(LEVELS[level])


def current_level() -> int:
    python_level = logging.getLogger().level
    return next((k for k, v in LEVELS.items() if v == python_level), 3)

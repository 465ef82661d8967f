"""Logging with the installer's levels 1-7 (default 3, higher = more detail).

The levels follow syslog's spirit so journald can colour and filter them: when stderr is the
journal (``$JOURNAL_STREAM``), each line carries a ``<N>`` priority prefix instead of a timestamp.
"""

from __future__ import annotations

import logging
import os
import sys

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


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; journald strips the prefix and stores the priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = next(p for level, p in _SYSLOG_PRIORITY if record.levelno >= level)
        return f"<{priority}>{record.name}: {super().format(record)}"


def setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: int) -> None:
    """Change the detail at run time (``doorphonectl log level N``, SIGHUP)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be 1-7, got {level}")
    logging.getLogger().setLevel(LEVELS[level])


def current_level() -> int:
    python_level = logging.getLogger().level
    return next((k for k, v in LEVELS.items() if v == python_level), 3)

"""The ``doorphonectl`` parser, assembled from one module per feature, and ``main()``.

Adding a feature's verbs is adding its module (a ``register(cli)`` function) and one line in ``FEATURES``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from doorphoned import __version__
from doorphoned.control.client import ControlError
from doorphoned.ctl import access, calls, captures, cloud, config, doors, face, monitor, phones, system, users
from doorphoned.ctl.registry import Parser, Registry, one_line

EXIT_FAIL = 1

FEATURES = (system, doors, calls, config, cloud, users, access, monitor, captures, phones, face)
"""Every module whose ``register(cli)`` adds verbs."""

HELP_ORDER = ("status", "relay", "log", "log doors", "log calls", "log level", "config", "doctor", "cloud", "call",
              "hangup", "user", "pin", "card", "tempkey", "access")
"""The order ``--help`` and argparse's "invalid choice" error have always listed these verbs in (modules
interleave in it, and in the shared ``log`` group); verbs not named here follow in registration order."""


def build_parser() -> Parser:
    """The whole CLI: the global options, then every feature's verbs."""
    parser = Parser(prog="doorphonectl", description="Installer CLI of doorphoned.")
    parser.add_argument("--version", action="version", version=f"doorphonectl {__version__}")
    parser.add_argument("--socket", type=Path, help="control socket (default $DOORPHONECTL_SOCKET, "
                        "./var/control.sock, /run/doorphoned/control.sock)")
    cli = Registry()
    for feature in FEATURES:
        feature.register(cli)
    return cli.build(parser, HELP_ORDER)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a daemon error is one line on stderr and exit status 1 (``config validate`` reports its own)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ControlError as exc:
        print(f"doorphonectl: {one_line(str(exc))}", file=sys.stderr)
    except BrokenPipeError:
        pass
    return EXIT_FAIL

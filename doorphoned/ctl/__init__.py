"""``doorphonectl``: the installer's CLI. Talks to the daemon over its control socket.

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr. Every read
command takes ``--json`` for scripts.

One module per feature registers its verbs and formatters on :class:`~doorphoned.ctl.registry.Registry`;
:mod:`doorphoned.ctl.cli` assembles them. ``main`` stays importable from here for the console entry point.
"""

from doorphoned.ctl.cli import build_parser, main

__all__ = ["build_parser", "main"]

"""``doorphone-cloud``: the cloud tool (``cloud/tool.py``) with the signing commands of ``access/signtool.py``.

Composed here because the cloud folder does not import the access folder (scripts/check_imports.py).
"""

from __future__ import annotations

import sys

from doorphoned.access import signtool
from doorphoned.cloud import tool


def main(argv: list[str] | None = None) -> int:
    return tool.main(argv, extra=(signtool.add_commands,))


if __name__ == "__main__":
    sys.exit(main())

"""``python -m doorphoned.ctl``: the same CLI without the console script (e.g. as another uid)."""

import sys

from doorphoned.ctl.cli import main

sys.exit(main())

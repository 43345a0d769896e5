"""``python -m tui.cli``."""

import sys

from . import main

sys.exit(main())

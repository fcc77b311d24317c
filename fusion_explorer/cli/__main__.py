"""``python -m fusion_explorer.cli``."""

import sys

from . import main

sys.exit(main())

"""``python -m elexirion_optimizer``: see elexirion_optimizer.cli."""

import sys

from elexirion_optimizer.cli import main

sys.exit(main())

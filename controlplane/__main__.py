"""``python -m controlplane``: the same as the ``edgefleet`` console script."""

import sys

from controlplane.cli import main

sys.exit(main())

"""``python -m spinefx.cli``: the same as ``spinefx``."""
import sys

from . import main

sys.exit(main())

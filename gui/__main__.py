"""``python -m gui [STORE]``."""

import sys

from .app import main

sys.exit(main())

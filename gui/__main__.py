"""``python -m gui [STORE] [OPTIONS]``: the same as ``framestore gui``."""

import sys

from tools.cli import main

sys.exit(main(["gui", *sys.argv[1:]]))

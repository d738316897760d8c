"""`python -m mlxgpt.inspect VIEW ...`, the same as `mlxgpt inspect VIEW ...`."""

import sys

from mlxgpt.cli import main

sys.exit(main(["inspect", *sys.argv[1:]]))

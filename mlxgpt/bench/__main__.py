"""`python -m mlxgpt.bench ...`: the same parser as `mlxgpt bench ...` (cli.COMMANDS)."""

import sys

from mlxgpt.cli import run, single_command_parser

sys.exit(run(single_command_parser("bench", "python -m mlxgpt.bench"), None))

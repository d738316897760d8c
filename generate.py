#!/usr/bin/env python3
"""Stream text from a trained model: `python generate.py --prompt "HERMIONE:"`. See --help."""

import sys

from mlxgpt.cli import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())

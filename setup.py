"""Everything about the package is in pyproject.toml. This file only stops a build, with one
line that says why, where MLX cannot run (an Intel Mac, an old Python): pip would otherwise fail
later with "No matching distribution found for mlx" and no explanation. The check itself is
mlxgpt/__init__.py's, which `import mlxgpt` runs first thing."""

import os
import sys

if __name__ == "__main__":  # setuptools runs this file as __main__
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import mlxgpt  # noqa: F401  (its first lines refuse, in one line, a Python or a Mac that MLX cannot run on)
    except ImportError as exc:
        sys.exit("error: %s" % exc)

    from setuptools import setup

    setup()

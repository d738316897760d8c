"""mlxgpt: a from-scratch GPT in Apple MLX that you can train on a laptop and look inside.

    import mlxgpt
    model, tokenizer = mlxgpt.load("out/shakespeare")
    for piece in mlxgpt.generate(model, tokenizer, "HERMIONE:", max_new_tokens=200):
        print(piece.text, end="", flush=True)
"""

# This file must parse on old Pythons (no f-strings, no annotations: tests check) so that
# they reach the check below and get its one line instead of a SyntaxError deep inside mlxgpt.
import os
import sys


def _unsupported(version_info, platform, machine):
    """Why mlxgpt cannot run here (one line), or None. Pure: the caller passes sys.version_info,
    sys.platform and the machine (os.uname's, only asked on macOS)."""
    if tuple(version_info[:2]) < (3, 10):
        return "mlxgpt needs Python 3.10 or newer (this is %d.%d)" % tuple(version_info[:2])
    if platform == "darwin" and machine != "arm64":
        return ("mlxgpt needs a Mac with Apple silicon and a native arm64 Python: MLX has no macOS build for %s "
                "(an Intel Mac, or a Python running under Rosetta; check with: python -c "
                "\"import platform; print(platform.machine())\")" % machine)
    return None


# Checked before anything else. os.uname is a system call: no subprocess, nothing set.
_reason = _unsupported(sys.version_info, sys.platform, os.uname()[4] if sys.platform == "darwin" else None)
if _reason:
    raise ImportError(_reason)
del _reason

from mlxgpt.fast.blas import setup_blas as _setup_blas  # noqa: E402

# Must run before anything imports mlx.core (see fast/blas.py for why). It loads a
# library and changes nothing else: no environment variable, no subprocess.
_setup_blas()

__version__ = "0.1.0"

__all__ = ["__version__", "load", "generate"]


def __getattr__(name):
    # Lazy, so that `import mlxgpt.tokenizers` stays free of mlx.
    if name == "load":
        from mlxgpt.checkpoint import load

        return load
    if name == "generate":
        from mlxgpt.generate import generate

        return generate
    raise AttributeError("module 'mlxgpt' has no attribute %r" % (name,))

"""mlxgpt: a from-scratch GPT in Apple MLX that you can train on a laptop and look inside.

    import mlxgpt
    model, tokenizer = mlxgpt.load("out/shakespeare")
    for piece in mlxgpt.generate(model, tokenizer, "HERMIONE:", max_new_tokens=200):
        print(piece.text, end="", flush=True)
"""

from mlxgpt.backend import setup_blas as _setup_blas
from mlxgpt.backend import setup_jit_flags as _setup_jit_flags

# Both must run before anything imports mlx.core (see backend.py for why).
_setup_blas()
_setup_jit_flags()

__version__ = "0.1.0"

__all__ = ["__version__", "load", "generate"]


def __getattr__(name: str):
    # Lazy, so that `import mlxgpt.tokenizers` stays free of mlx.
    if name == "load":
        from mlxgpt.checkpoint import load

        return load
    if name == "generate":
        from mlxgpt.generate import generate

        return generate
    raise AttributeError(f"module 'mlxgpt' has no attribute {name!r}")

"""mlxgpt: a from-scratch GPT in Apple MLX that you can train on a laptop and look inside.

    import mlxgpt
    model, tokenizer = mlxgpt.load("out/shakespeare")
    for piece in mlxgpt.generate(model, tokenizer, "HERMIONE:", max_new_tokens=200):
        print(piece.text, end="", flush=True)
"""

from mlxgpt.fast.blas import setup_blas as _setup_blas

# Must run before anything imports mlx.core (see fast/blas.py for why). It loads a
# library and changes nothing else: no environment variable, no subprocess.
_setup_blas()

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

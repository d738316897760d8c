"""Look inside a trained model: `mlxgpt inspect params|attention|embeddings|positions|next|stream`.

Each view has a pure function that computes numbers from a model (tested on its
own), a Rich rendering for the terminal, and a picture for `--save FILE.png|svg|pdf`
(a matplotlib Figure from mlxgpt/plots.py).
Nothing here is imported by training or generation.
"""

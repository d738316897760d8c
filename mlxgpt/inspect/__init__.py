"""Look inside a trained model: `mlxgpt inspect params|attention|embeddings|positions|next`.

Each view has a pure function that computes numbers from a model (tested on its
own), a Rich rendering for the terminal, and a picture for `--save FILE.svg|png`.
Nothing here is imported by training or generation.
"""

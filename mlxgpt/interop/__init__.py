"""Bridges to the ecosystem: a model trained with mlxgpt is not a dead end.

    export.py        `mlxgpt export --to mlx-lm|hf RUN OUT_DIR`: a standard model directory
                     (config.json, model.safetensors, tokenizer.json) that mlx-lm's `load` /
                     `generate` / `server` / LoRA / quantisation, or Hugging Face transformers'
                     GPT2LMHeadModel, read as their own
    hf_tokenizer.py  our char and SentencePiece tokenizers in Hugging Face `tokenizers` format,
                     with the same ids and the same round trip
    nanogpt.py       `mlxgpt import-nanogpt CKPT.pt [META.pkl] OUT_RUN`: a nanoGPT checkpoint
                     as an mlxgpt run, read without running any of its pickled code

The only place in the installed package, besides bench/, that may import torch (nanoGPT's
checkpoints are torch files). Their optional libraries come with `pip install -e '.[interop]'`.
"""

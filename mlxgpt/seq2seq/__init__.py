"""The original Transformer (Vaswani et al. 2017, "Attention Is All You Need"): an encoder reads
the whole source, a decoder writes the target one token at a time and looks back at the source
through cross-attention. model.py here builds it from the GPT's pieces (mlxgpt/model.py).
"""

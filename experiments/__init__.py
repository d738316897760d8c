"""Small, repeatable experiments, run from the repository root: `python -m experiments.<name> --help`.

Outside the installed package: they may use PyTorch, and they drive mlxgpt the
way a user does (its commands and its public functions).
"""

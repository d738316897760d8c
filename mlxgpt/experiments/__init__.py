"""Small, repeatable experiments: `python -m mlxgpt.experiments.<name> --help`."""

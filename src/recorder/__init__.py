"""recorder: a reproducibility-first experiment recorder for Python and PyTorch."""

"""DARES depth estimation for endoscopy: model, training, evaluation and export (pure PyTorch)."""

__version__ = "0.1.0"

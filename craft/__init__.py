"""craft: train, resume and sample small GPT language models with PyTorch Lightning.

Names are imported on first use, so ``craft.runtime`` (numpy + onnxruntime only) never loads torch.
"""

import importlib

__version__ = "0.1.0"

_WHERE = {
    "GPT": "craft.model",
    "GPTConfig": "craft.model",
    "LanguageModel": "craft.module",
    "TextDataModule": "craft.data",
    "Tokenizer": "craft.data",
    "CharTokenizer": "craft.data",
    "BPETokenizer": "craft.data",
}

__all__ = [*_WHERE, "__version__"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'craft' has no attribute {name!r}")

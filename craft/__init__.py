"""craft: train, resume and sample small GPT language models with PyTorch Lightning."""

from craft.data import CharTokenizer, TextDataModule, Tokenizer
from craft.model import GPT, GPTConfig
from craft.module import LanguageModel

__version__ = "0.1.0"

__all__ = ["GPT", "CharTokenizer", "GPTConfig", "LanguageModel", "TextDataModule", "Tokenizer", "__version__"]

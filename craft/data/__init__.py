from craft.data.datamodule import TextDataModule
from craft.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "TextDataModule", "Tokenizer"]

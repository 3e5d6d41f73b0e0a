from craft.data.datamodule import TextDataModule
from craft.data.tokenizers import CharTokenizer, Tokenizer

__all__ = ["CharTokenizer", "TextDataModule", "Tokenizer"]

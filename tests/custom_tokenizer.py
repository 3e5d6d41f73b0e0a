"""A tokenizer class of the user's own (a char tokenizer under another kind and class)."""

from craft.data.tokenizers import CharTokenizer


class UpperCharTokenizer(CharTokenizer):
    kind = "upper_char"

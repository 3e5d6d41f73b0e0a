"""Tokenizers: text <-> token ids, saved as plain strings so checkpoints stay ``weights_only`` loadable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from craft.errors import CraftError


class Tokenizer(ABC):
    """What the data module and the model need from a tokenizer.

    A tokenizer is *fitted* (its vocabulary known) either from its init arguments or by ``fit``
    on a corpus. ``state()`` returns plain strings/lists/numbers; ``from_state`` rebuilds it.
    """

    @property
    @abstractmethod
    def is_fitted(self) -> bool: ...

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def fit(self, text: str) -> None: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def token_char_lengths(self) -> list[int]:
        """Characters of original text each token id stands for (for bits per character)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What decides how the tokenizer is fitted (part of the cache key)."""

    @abstractmethod
    def state(self) -> dict[str, Any]: ...

    @staticmethod
    def from_state(state: dict[str, Any]) -> Tokenizer:
        kind = state.get("type")
        if kind == "char":
            return CharTokenizer(vocab=list(state["vocab"]))
        raise CraftError(f"unknown tokenizer type {kind!r} in checkpoint; this craft knows: 'char'")


class CharTokenizer(Tokenizer):
    """One token per Unicode character; the vocabulary is the sorted set of the corpus's characters."""

    def __init__(self, vocab: list[str] | None = None) -> None:
        """
        Args:
            vocab: The characters, in id order. Leave empty to build it from the corpus.
        """
        self.vocab: list[str] | None = None
        if vocab:
            bad = [c for c in vocab if len(c) != 1]
            if bad or len(set(vocab)) != len(vocab):
                raise CraftError("CharTokenizer vocab must be distinct single characters")
            self._set_vocab(vocab)

    def _set_vocab(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self._stoi = {c: i for i, c in enumerate(self.vocab)}

    @property
    def is_fitted(self) -> bool:
        return self.vocab is not None

    @property
    def vocab_size(self) -> int:
        return len(self._require())

    def _require(self) -> list[str]:
        if self.vocab is None:
            raise RuntimeError("CharTokenizer is not fitted: call fit(text) or pass vocab")
        return self.vocab

    def fit(self, text: str) -> None:
        self._set_vocab(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        self._require()
        try:
            return [self._stoi[c] for c in text]
        except KeyError:
            unknown = [(i, c) for i, c in enumerate(text) if c not in self._stoi]
            shown = ", ".join(f"{c!r} at {i}" for i, c in unknown[:10])
            more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            raise CraftError(
                f"text has {len(unknown)} character(s) outside the model's vocabulary: {shown}{more}; "
                "remove or replace them"
            ) from None

    def decode(self, ids: list[int]) -> str:
        vocab = self._require()
        return "".join(vocab[i] for i in ids)

    def token_char_lengths(self) -> list[int]:
        return [1] * self.vocab_size

    def settings(self) -> dict[str, Any]:
        return {"type": "char"}

    def state(self) -> dict[str, Any]:
        return {"type": "char", "vocab": list(self._require())}

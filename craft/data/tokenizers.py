"""Tokenizers: text <-> token ids, saved as plain strings so checkpoints stay ``weights_only`` loadable."""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import tokenizers as hf

from craft.errors import ConfigError, CraftError


class Tokenizer(ABC):
    """What the data module and the model need from a tokenizer.

    A tokenizer is *fitted* (its vocabulary known) either from its init arguments or by ``fit``
    on a corpus. ``state()`` is ``{"type": kind, **init_args}``: plain strings, lists and numbers
    whose init arguments rebuild the fitted tokenizer, so the checkpoint carries it and the CLI can
    put it into a config. A subclass sets ``kind``; defining it registers it for ``from_state``.
    A tokenizer that is not built in also records its ``class_path``: a checkpoint that names it
    loads only where the user names that same class (``craft/checkpoint.py``); craft never imports
    a class because saved data names it.
    """

    kind: ClassVar[str]
    # True when encoding a text cut anywhere into pieces gives the ids of the whole (one id per
    # character); else the corpus is cut only where byte-level BPE splits words anyway.
    cuts_anywhere: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Tokenizer._registry[cls.kind] = cls

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

    def fit_stream(self, chunks: Iterable[str], total_bytes: int) -> None:
        """Fit on a corpus given as chunks of text (``total_bytes`` on disk, a hint). The built-in
        tokenizers never hold the whole corpus; this default joins the chunks and calls ``fit``."""
        self.fit("".join(chunks))

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Ids of each text, as arrays: the data module's bulk path (the built-ins override it)."""
        return [np.asarray(self.encode(t), dtype=np.int64) for t in texts]

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def token_char_lengths(self) -> list[int]:
        """Characters of original text each token id stands for (for bits per character).

        Summed over the ids of any text, this is the text's length in characters.
        """

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What decides how the tokenizer is fitted (part of the cache key)."""

    @abstractmethod
    def init_args(self) -> dict[str, Any]:
        """Init arguments that rebuild this tokenizer, fitted."""

    def state(self) -> dict[str, Any]:
        if self.kind in BUILTIN_TOKENIZERS:
            return {"type": self.kind, **self.init_args()}
        return {"type": self.kind, "class_path": class_path(type(self)), **self.init_args()}

    def describe(self) -> str:
        return f"{self.kind} tokenizer with {self.vocab_size} tokens" if self.is_fitted else f"{self.kind} tokenizer"

    @staticmethod
    def class_of(state: dict[str, Any]) -> type[Tokenizer]:
        """The class of a saved state, among the classes already defined: nothing is imported."""
        kind = state.get("type")
        cls = Tokenizer._registry.get(kind)
        if cls is None or state.get("class_path", class_path(cls)) != class_path(cls):
            where = f" ({state['class_path']})" if isinstance(state.get("class_path"), str) else ""
            raise CraftError(
                f"unknown tokenizer type {kind!r}{where} in saved state; this craft knows: "
                f"{sorted(Tokenizer._registry)} (a tokenizer of your own must be named in your config)"
            )
        return cls

    @staticmethod
    def init_args_of(state: dict[str, Any]) -> dict[str, Any]:
        """The init arguments inside a saved state (everything but the type keys)."""
        return {k: v for k, v in state.items() if k not in ("type", "class_path")}

    @staticmethod
    def from_state(state: dict[str, Any]) -> Tokenizer:
        return Tokenizer.class_of(state)(**Tokenizer.init_args_of(state))


BUILTIN_TOKENIZERS = ("char", "bpe")


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class CharTokenizer(Tokenizer):
    """One token per Unicode character; the vocabulary is the sorted set of the corpus's characters."""

    kind = "char"
    cuts_anywhere = True

    def __init__(self, vocab: list[str] | None = None) -> None:
        """
        Args:
            vocab: The characters, in id order. Leave empty to build it from the corpus.
        """
        self.vocab: list[str] | None = None
        self._table = None
        if vocab:
            bad = [c for c in vocab if len(c) != 1]
            if bad or len(set(vocab)) != len(vocab):
                raise CraftError("CharTokenizer vocab must be distinct single characters")
            self._set_vocab(vocab)

    def _set_vocab(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self._stoi = {c: i for i, c in enumerate(self.vocab)}
        self._table: np.ndarray | None = None  # code point -> id, built on first encode_batch

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

    def fit_stream(self, chunks: Iterable[str], total_bytes: int) -> None:
        seen = np.zeros(UNICODE, dtype=bool)
        skip = bytes(range(128, 256))  # ASCII bytes already seen, and every non-ASCII byte
        for chunk in chunks:
            new = chunk.encode("utf-8").translate(None, skip)  # the ASCII not seen yet: C speed
            if new:
                seen[list(set(new))] = True
                skip = bytes(sorted({*skip, *new}))
            if not chunk.isascii():
                cps = codepoints(chunk)
                seen[cps[cps >= 128]] = True
        self._set_vocab([chr(c) for c in np.flatnonzero(seen)])  # code point order = sorted(set(text))

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        if self._table is None:  # code point -> id; the largest value of the dtype marks "not in vocab"
            dtype = np.uint16 if self.vocab_size < 2**16 - 1 else np.uint32
            self._table = np.full(UNICODE, np.iinfo(dtype).max, dtype=dtype)
            self._table[[ord(c) for c in self._require()]] = np.arange(self.vocab_size, dtype=dtype)
        out = []
        for text in texts:
            cps = codepoints(text)
            ids = self._table[cps]
            if len(ids) and ids.max() >= self.vocab_size:
                chars, counts = np.unique(cps[ids >= self.vocab_size], return_counts=True)
                shown = ", ".join(f"{chr(c)!r} ({n}x)" for c, n in zip(chars[:10], counts[:10], strict=True))
                more = f" and {len(chars) - 10} more" if len(chars) > 10 else ""
                raise CraftError(
                    f"{len(chars)} character(s) outside the model's {self.vocab_size}-character vocabulary: "
                    f"{shown}{more}; remove or replace them"
                )
            out.append(ids)
        return out

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

    def init_args(self) -> dict[str, Any]:
        return {"vocab": list(self._require())}


UNICODE = 0x110000


def codepoints(text: str) -> np.ndarray:
    """The code points of ``text`` as a uint32 array (one C-speed encode, no Python loop)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _tiktoken_for(tok: hf.Tokenizer) -> Any:
    """A ``tiktoken.Encoding`` giving ``tok``'s ids, or None (no tiktoken, or not a plain byte-level BPE)."""
    try:
        import tiktoken
    except ImportError:
        return None
    spec = json.loads(tok.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    plain = (
        model.get("type") == "BPE"
        and not (model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"))
        and not model.get("byte_fallback")
        and spec.get("normalizer") is None
        and not spec.get("added_tokens")
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space")
    )
    if not plain:
        return None
    vocab = model["vocab"]
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    made = [vocab.get(a + b) for a, b in (m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"])]
    in_order = all(x is not None for x in made) and all(x < y for x, y in zip(made, made[1:], strict=False))
    if not in_order or any(c not in byte_of for piece in vocab for c in piece):
        return None
    ranks = {bytes(byte_of[c] for c in piece): i for piece, i in vocab.items()}
    if len(ranks) != len(vocab) or sorted(ranks.values()) != list(range(len(ranks))):
        return None
    return tiktoken.Encoding("craft-bpe", pat_str=GPT2_SPLIT, mergeable_ranks=ranks, special_tokens={})


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2), as HF ``tokenizers`` uses it:
    printable Latin-1 bytes stand for themselves, the other 68 bytes for characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) trained on the corpus with Hugging Face ``tokenizers``.

    Any text encodes (it works on UTF-8 bytes, so there is no unknown token) and decodes back
    exactly. Training runs locally on the corpus; nothing is downloaded.
    """

    kind = "bpe"

    def __init__(
        self,
        vocab_size: int = 1024,
        min_frequency: int = 2,
        sample_chars: int | None = None,
        trained: str | None = None,
    ) -> None:
        """
        Args:
            vocab_size: Tokens to learn: 256 byte tokens plus merges (a small corpus may give fewer).
            min_frequency: A pair must occur this often in the corpus to become a merge.
            sample_chars: Train on about this many characters: every k-th chunk of the corpus, spread
                over all of it (default: train on everything). The whole corpus is still encoded.
            trained: The trained tokenizer as Hugging Face JSON. craft fills it from a checkpoint;
                leave it empty to train on the corpus.
        """
        if vocab_size < 256:
            raise ConfigError(f"BPETokenizer vocab_size must be at least 256 (the byte alphabet), got {vocab_size}")
        if min_frequency < 1:
            raise ConfigError(f"BPETokenizer min_frequency must be at least 1, got {min_frequency}")
        if sample_chars is not None and sample_chars < 1:
            raise ConfigError(f"BPETokenizer sample_chars must be positive (or null for all), got {sample_chars}")
        self.sample_chars = sample_chars
        self.requested_vocab_size = vocab_size
        self.min_frequency = min_frequency
        self._char_lengths: list[int] | None = None
        self._fast: Any = None  # tiktoken's encoder for this vocabulary; False where it cannot be used
        self._tok: hf.Tokenizer | None = hf.Tokenizer.from_str(trained) if trained else None

    @property
    def is_fitted(self) -> bool:
        return self._tok is not None

    def _require(self) -> hf.Tokenizer:
        if self._tok is None:
            raise RuntimeError("BPETokenizer is not trained: call fit(text) or pass trained")
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self._require().get_vocab_size()

    def fit(self, text: str) -> None:
        self.fit_stream([text], len(text))

    def fit_stream(self, chunks: Iterable[str], total_bytes: int) -> None:
        if self.sample_chars is not None and total_bytes > self.sample_chars:
            every = math.ceil(total_bytes / self.sample_chars)
            chunks = (c for i, c in enumerate(chunks) if i % every == 0)
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=self.requested_vocab_size,
            min_frequency=self.min_frequency,
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(chunks, trainer)
        self._tok = tok
        self._char_lengths = None
        self._fast = None

    def encode(self, text: str) -> list[int]:
        return self._require().encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        fast = self._fast_encoder()
        if fast is not None:
            batch = fast.encode_ordinary_batch(texts, num_threads=max(1, len(os.sched_getaffinity(0))))
        else:  # the library's parallel batch encoder, without the offsets craft does not use
            batch = [e.ids for e in self._require().encode_batch_fast(texts)]
        return [np.asarray(ids, dtype=np.int64) for ids in batch]

    def _fast_encoder(self) -> Any:
        """tiktoken's encoder over this vocabulary, where tiktoken is installed and the tokenizer is
        the plain byte-level BPE craft trains: about 4x the bulk speed of ``tokenizers``, same ids.

        tiktoken merges the adjacent pair whose joined bytes have the lowest id; ``tokenizers``
        applies the merge listed first. For a merge list learnt by BPE training these agree when each
        merge makes a new token and tokens are numbered in merge order, which is checked here
        (``tests/test_corpus.py`` compares the two on real text and every code point).
        """
        if self._fast is None:
            self._fast = _tiktoken_for(self._require()) or False
        return self._fast or None

    def decode(self, ids: list[int]) -> str:
        return self._require().decode(ids)

    def token_char_lengths(self) -> list[int]:
        # A character counts for the token holding its first UTF-8 byte (bytes 10xxxxxx continue one).
        if self._char_lengths is None:
            byte_of = {c: b for b, c in _bytes_to_unicode().items()}
            tok = self._require()
            lengths = [0] * tok.get_vocab_size()
            for piece, i in tok.get_vocab().items():
                lengths[i] = sum(1 for c in piece if byte_of[c] & 0xC0 != 0x80)
            self._char_lengths = lengths
        return self._char_lengths

    def settings(self) -> dict[str, Any]:
        settings = {"type": self.kind, "vocab_size": self.requested_vocab_size, "min_frequency": self.min_frequency}
        if self.sample_chars is not None:
            settings["sample_chars"] = self.sample_chars
        return settings

    def init_args(self) -> dict[str, Any]:
        args = {"vocab_size": self.requested_vocab_size, "min_frequency": self.min_frequency}
        if self.sample_chars is not None:
            args["sample_chars"] = self.sample_chars
        return {**args, "trained": self._require().to_str()}

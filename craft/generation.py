"""Sampling primitives: temperature, top-k and top-p over one step's logits.

The token loop lives in ``GPT.stream``; the text-level API in ``LanguageModel.generate``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch

from craft.errors import ConfigError, CraftWarning

# Below this a float32 division underflows to 0/0; such temperatures are greedy in all but name.
GREEDY_BELOW = 1e-6


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is picked, and how many. ``temperature=0`` is greedy (argmax).

    Every caller (``LanguageModel``, ``predict``, the sample callback) builds one, so every setting
    is validated here once.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    max_new_tokens: int = 500

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k must be >= 1 or null, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if problems:
            raise ConfigError("invalid sampling settings: " + "; ".join(problems))

    def for_vocab(self, vocab_size: int) -> SamplingConfig:
        """Clamp ``top_k`` to the vocabulary, warning once, instead of failing mid-generation."""
        if self.top_k is not None and self.top_k > vocab_size:
            warnings.warn(
                f"top_k={self.top_k} exceeds the vocabulary ({vocab_size} tokens); using top_k={vocab_size}",
                CraftWarning,
                stacklevel=2,
            )
            return replace(self, top_k=vocab_size)
        return self


def sample_next(
    logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick one token per row of ``logits`` (B, V); returns (B, 1)."""
    if sampling.temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1, keepdim=True)
    probs = filter_logits(logits, sampling).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def filter_logits(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Logits (B, V) scaled by the temperature, with tokens outside top-k / top-p set to -inf."""
    logits = logits.float()
    # Shift so the best logit is 0 before dividing: a tiny temperature then gives -inf, never inf - inf.
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.size(-1):
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token once the mass before it already reaches top_p; the first token always stays.
        drop = (cum - sorted_logits.softmax(dim=-1)) >= sampling.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits

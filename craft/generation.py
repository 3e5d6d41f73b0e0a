"""Generation in layers: sampling primitives (temperature, top-k, top-p over one step's logits), then
the one token loop every caller uses (``stream`` / ``generate``: prefill, one token per step, the
sliding window past ``block_size``, stop conditions), then the text-level API in
``LanguageModel.generate``. ``craft/runtime.py`` mirrors this file without torch (a test keeps them
equal).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from craft.errors import ConfigError, CraftWarning
from craft.model.cache import KVCache

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


# -- the token loop ------------------------------------------------------------------------------

# A decode step: (token (B, 1), its position (1,), the cache) -> logits (B, V). The model's own
# forward is the default; craft/model/decode.py compiles that same forward into one call.
Step = Callable[[torch.Tensor, torch.Tensor, KVCache], torch.Tensor]


@torch.no_grad()
def stream(
    model: nn.Module,
    idx: torch.Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    step: Step | None = None,
    stop: Callable[[torch.Tensor], bool] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield up to ``sampling.max_new_tokens`` new token columns ``(B, 1)``, one per step.

    ``model`` is a ``GPT`` (in eval mode). The ``KVCache`` lives only inside this call. The prompt
    is prefilled in one forward pass; each new token then takes one step. When the context reaches
    ``block_size`` it slides: the newest ``block_size // 2`` tokens are prefilled again (their
    cached keys were computed at positions that no longer hold) and generation goes on. With
    ``use_cache=False`` every step re-runs the whole context, the reference the cached path must
    equal. ``stop`` ends generation after the column it returns True for.
    """
    block = model.config.block_size
    keep = max(1, block // 2)
    ctx = idx[:, -block:]
    cache = KVCache.empty(model.config, idx.size(0), idx.device, next(model.parameters()).dtype) if use_cache else None
    filled = 0  # positions of ctx whose keys and values are in the cache
    positions = model.slots.split(1)  # (1,) each: a step's position, made once per call
    for _ in range(sampling.max_new_tokens):
        if ctx.size(1) > block:
            ctx, filled = ctx[:, -keep:], 0
        if cache is None:
            logits = model(ctx)[0][:, -1]
        elif filled == 0:
            logits = model(ctx, cache=cache)[0][:, -1]  # prefill: positions 0..T-1
        else:
            logits = (step or _eager_step(model))(ctx[:, -1:], positions[filled], cache)
        filled = ctx.size(1)
        nxt = sample_next(logits, sampling, generator)  # (B, 1)
        ctx = torch.cat([ctx, nxt], dim=1)
        yield nxt
        if stop is not None and stop(nxt):
            return


def _eager_step(model: nn.Module) -> Step:
    return lambda token, pos, cache: model(token, cache=cache, input_pos=pos)[0][:, -1]


def generate(
    model: nn.Module,
    idx: torch.Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    step: Step | None = None,
    stop: Callable[[torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """``idx`` followed by the sampled tokens, ``(B, T + new)``: ``stream`` collected."""
    return torch.cat([idx, *stream(model, idx, sampling, generator, use_cache, step, stop)], dim=1)

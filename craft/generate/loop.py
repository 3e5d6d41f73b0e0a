"""The one token loop every torch caller uses: prefill, one token per step through the ``KVCache``,
the sliding window past ``block_size``, stop conditions. ``craft/runtime.py`` mirrors it without
torch, and ``craft/web/craft.js`` in the browser (tests keep them equal)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from craft.generate.sampling import sample_next
from craft.model.cache import KVCache
from craft.sampling import SamplingConfig

# A decode step: (token (B, 1), its position (1,), the cache) -> logits (B, V). The model's own
# forward is the default; craft/generate/compiled.py compiles that same forward into one call.
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

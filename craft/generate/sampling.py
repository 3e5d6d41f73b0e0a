"""The torch sampler: one token per row of a step's logits, by the rule ``craft/sampling.py`` states
(the numpy runtime and the page's ONNX nodes follow it too; a test holds them to equal draws)."""

from __future__ import annotations

import torch

from craft.sampling import SamplingConfig


def sample_next(
    logits: torch.Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick one token per row of ``logits`` (B, V); returns (B, 1). ``uniforms`` (B, 1) in [0, 1)
    are the draws (default: from ``generator``)."""
    if sampling.greedy:
        return logits.argmax(dim=-1, keepdim=True)
    if uniforms is None:
        uniforms = torch.rand((logits.size(0), 1), generator=generator, device=logits.device)
    ranked, order = torch.sort(filter_logits(logits, sampling), dim=-1, descending=True, stable=True)
    probs = ranked.softmax(dim=-1)
    past_u = (probs.cumsum(dim=-1) <= uniforms).sum(dim=-1, keepdim=True)  # the first cdf > u
    last_possible = (probs > 0).sum(dim=-1, keepdim=True) - 1  # where rounding leaves none past u
    return order.gather(-1, torch.minimum(past_u, last_possible))


def filter_logits(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Logits (B, V) scaled by the temperature, with tokens outside top-k / top-p set to -inf."""
    logits = logits.float()
    # Shift so the best logit is 0 before dividing: a tiny temperature then gives -inf, never inf - inf.
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.size(-1):
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1, stable=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the mass before it already reaches top_p; the first token always stays.
        drop = (probs.cumsum(dim=-1) - probs) >= sampling.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits

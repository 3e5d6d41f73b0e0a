"""A decoder-only transformer language model in plain PyTorch (no Lightning in this file).

Read top to bottom: attention -> block -> GPT (forward, generate, parameter count). The config is
``config.py``; norms, MLPs and position schemes are swappable parts in ``blocks.py``, picked by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from craft.generation import SamplingConfig, sample_next
from craft.model.blocks import resolve
from craft.model.config import GPTConfig
from craft.model.kernels import Dropout

if TYPE_CHECKING:
    from craft.model.decode import Decoder


KVCache = list[tuple[torch.Tensor, torch.Tensor] | None]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor, positions: nn.Module, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = positions.rotate(q, k, cache[0].size(2) if cache is not None else 0)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([cache[1], v], dim=2)
        # With a cache, the T new queries sit at the end of the T_past + T keys. A single new
        # query may see every key; a longer chunk needs the causal mask offset by T_past. An
        # exported graph has symbolic shapes, so it always takes the general (masked) path.
        t_past = k.size(2) - T
        exporting = torch.onnx.is_in_onnx_export()
        if t_past == 0 and not exporting:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif T == 1 and not exporting:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            key_pos = torch.arange(k.size(2), device=x.device)
            query_pos = torch.arange(T, device=x.device) + t_past
            mask = key_pos[None, :] <= query_pos[:, None]  # (T, T_past + T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y)), (k, v)


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        norm = resolve("norm", config.norm)
        self.ln_1 = norm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm(config.d_model, bias=config.bias)
        self.mlp = resolve("mlp", config.mlp)(config)

    def forward(self, x: torch.Tensor, positions: nn.Module, cache=None):
        a, cache = self.attn(self.ln_1(x), positions, cache)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, cache


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = resolve("positions", config.positions)(config)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = resolve("norm", config.norm)(config.d_model, bias=config.bias)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance flat.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied head shares the token embedding).

        With ``non_embedding`` position parameters are left out, as in the 6N FLOP estimate.
        """
        n = sum(p.numel() for p in self.parameters())
        return n - sum(p.numel() for p in self.positions.parameters()) if non_embedding else n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N for the matmuls plus 12*L*d*T for attention (PaLM appendix B)."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layers * c.d_model * c.block_size

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start_pos: int = 0,
        all_logits: bool = False,
    ):
        """Return ``(logits, loss)``; with ``cache`` (a list, one entry per layer) it is read and updated.

        Without targets only the last position's logits are computed (generation needs no more),
        unless ``all_logits``.
        """
        B, T = idx.shape
        if not torch.onnx.is_in_onnx_export() and start_pos + T > self.config.block_size:
            raise ValueError(f"sequence of {start_pos + T} tokens exceeds block_size {self.config.block_size}")
        x = self.drop(self.positions.embed(self.tok_emb(idx), start_pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, self.positions, cache[i] if cache is not None else None)
            if cache is not None:
                cache[i] = layer_cache
        x = self.ln_f(x)
        if targets is None:
            return self.head(x if all_logits else x[:, [-1], :]), None  # (B, T or 1, V)
        logits = self.head(x)  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        decoder: Decoder | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield ``max_new_tokens`` new token columns ``(B, 1)``, one per step.

        The KV cache lives only inside this call. When the context reaches ``block_size`` it
        slides: the newest ``block_size // 2`` tokens are re-encoded (cached keys were computed
        at positions that no longer hold) and generation goes on from there. With
        ``use_cache=False`` every step re-runs the same context from scratch, the reference
        the cached path must equal. A ``decoder`` (``craft.model.decode``) takes the one-token
        steps in fixed buffers, in one compiled call each; the context still runs eagerly.
        """
        if decoder is not None and decoder.batch_size != idx.size(0):
            raise ValueError(f"decoder was built for batch {decoder.batch_size}, got {idx.size(0)} prompts")
        sampling = sampling or SamplingConfig()
        block = self.config.block_size
        keep = max(1, block // 2)
        ctx = idx[:, -block:]
        cache: KVCache | None = None
        for _ in range(max_new_tokens):
            if ctx.size(1) > block:
                ctx = ctx[:, -keep:]
                cache = None
            if not use_cache:
                logits, _ = self(ctx)
            elif cache is None:
                cache = [None] * len(self.blocks)
                logits, _ = self(ctx, cache=cache)
                if decoder is not None:
                    decoder.load(cache)
            elif decoder is not None:
                logits = decoder(ctx[:, -1:], ctx.size(1) - 1)
            else:
                logits, _ = self(ctx[:, -1:], cache=cache, start_pos=ctx.size(1) - 1)
            nxt = sample_next(logits[:, -1, :], sampling, generator)  # (B, 1)
            ctx = torch.cat([ctx, nxt], dim=1)
            yield nxt

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        decoder: Decoder | None = None,
    ) -> torch.Tensor:
        """Return ``idx`` followed by ``max_new_tokens`` sampled tokens, ``(B, T + max_new_tokens)``."""
        new = list(self.stream(idx, max_new_tokens, sampling, generator, use_cache, decoder))
        return torch.cat([idx, *new], dim=1)

"""A decoder-only transformer language model in plain PyTorch (no Lightning in this file).

Read top to bottom: attention -> block -> GPT (one forward, parameter count). The config is
``config.py``; norms, MLPs and position schemes are swappable parts in ``blocks.py``, picked by name;
the KV cache is ``cache.py``; the token loop that generates text is ``craft/generate/loop.py``.

One forward serves every path: training and uncached scoring (no cache), and with a ``KVCache``
the prefill of a prompt, each one-token decode step, the compiled decode step and the ONNX export,
which trace this same code.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from craft.model.blocks import QKNorm, ResidualScalars, SoftCap, UNetSkips, ValueEmbedding, resolve
from craft.model.cache import KVCache
from craft.model.config import GPTConfig
from craft.model.kernels import Dropout


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, value_embed: bool = False) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.qk_norm = QKNorm(config) if config.qk_norm else None
        self.value_embed = ValueEmbedding(config) if value_embed else None
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        positions: nn.Module,
        input_pos: torch.Tensor,
        cache: tuple[KVCache, int, torch.Tensor] | None = None,
        idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm is not None:
            q, k = self.qk_norm(q, k)
        if self.value_embed is not None:
            v = self.value_embed(v, idx)
        q, k = positions.rotate(q, k, input_pos)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # The new keys and values go into their slots; the queries see every slot up to their
            # own position (the mask), over the whole fixed-size buffer.
            kv, layer, visible = cache
            y = kv.attend(layer, input_pos, q, k, v, visible)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, value_embed: bool = False) -> None:
        super().__init__()
        norm = resolve("norm", config.norm)
        self.ln_1 = norm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config, value_embed)
        self.ln_2 = norm(config.d_model, bias=config.bias)
        self.mlp = resolve("mlp", config.mlp)(config)

    def forward(
        self, x: torch.Tensor, positions: nn.Module, input_pos: torch.Tensor, cache=None, idx=None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), positions, input_pos, cache, idx)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = resolve("positions", config.positions)(config)
        self.drop = Dropout(config.dropout)
        L = config.n_layers
        self.blocks = nn.ModuleList(
            Block(config, value_embed=config.value_embeds and ValueEmbedding.used_by(i, L)) for i in range(L)
        )
        self.scalars = ResidualScalars(config) if config.scalars else None
        self.skips = UNetSkips(config) if config.unet and config.n_layers >= 2 else None
        self.ln_f = resolve("norm", config.norm)(config.d_model, bias=config.bias)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_head:
            self.head.weight = self.tok_emb.weight  # weight tying
        self.softcap = SoftCap(config.softcap) if config.softcap else None
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance flat;
        # zero_init starts them (and an untied head) at zero instead: each block begins as the identity.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * L))
            if config.zero_init and (name.endswith("proj.weight") or (name == "head.weight" and not config.tie_head)):
                nn.init.zeros_(p)
        # Positions, and which cache slots a query at each position may see (litgpt's mask cache):
        # buffers, so they follow the model's device; not saved, they follow from the config.
        block = config.block_size
        self.register_buffer("slots", torch.arange(block), persistent=False)
        self.register_buffer("causal", torch.ones(block, block, dtype=torch.bool).tril(), persistent=False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (a tied head shares the token embedding).

        With ``non_embedding`` the tables that are looked up, not multiplied, are left out (position
        and value embeddings, and the token embedding when the head is untied), as in the 6N FLOP
        estimate.
        """
        n = sum(p.numel() for p in self.parameters())
        if not non_embedding:
            return n
        lookups = [*self.positions.parameters()]
        lookups += [
            p for b in self.blocks if b.attn.value_embed is not None for p in b.attn.value_embed.emb.parameters()
        ]
        if not self.config.tie_head:
            lookups.append(self.tok_emb.weight)
        return n - sum(p.numel() for p in lookups)

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N for the matmuls plus 12*L*d*T for attention (PaLM appendix B)."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layers * c.d_model * c.block_size

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        input_pos: torch.Tensor | None = None,
        all_logits: bool = False,
        loss_reduction: str = "mean",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(logits, loss)`` for ``idx`` ``(B, T)``; the loss is the mean cross-entropy, or
        with ``loss_reduction="none"`` each target's, ``(B, T)`` (validation sums them per character).

        Without a cache the tokens sit at positions ``0..T-1``. With ``cache`` they sit at
        ``input_pos`` ``(T,)`` (default ``0..T-1``, a prefill); their keys and values are written
        into the cache, and each attends to every cached slot up to its own position.
        Without targets only the last position's logits are computed (generation needs no more),
        unless ``all_logits``.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
        if input_pos is None:
            input_pos = self.slots[:T]
        layer_cache = None
        if cache is not None:
            # (T, block): 0 where a query may see a slot, -inf where not; made additive here, once,
            # rather than by every layer's attention call from a boolean mask.
            visible = torch.where(self.causal[input_pos], 0.0, float("-inf"))
        x = x0 = self.drop(self.positions.embed(self.tok_emb(idx), input_pos))  # (B, T, C)
        saved: list[torch.Tensor] = []  # U-net skips: the encoder half's outputs
        for i, block in enumerate(self.blocks):
            if cache is not None:
                layer_cache = (cache, i, visible)
            if self.skips is not None:
                x = self.skips.pop(i, x, saved)
            if self.scalars is not None:
                x = self.scalars(i, x, x0)
            x = block(x, self.positions, input_pos, layer_cache, idx)
            if self.skips is not None:
                self.skips.push(i, x, saved)
        x = self.ln_f(x)
        logits = self.head(x if targets is not None or all_logits else x[:, [-1], :])  # (B, T or 1, V)
        if self.softcap is not None:
            logits = self.softcap(logits)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=loss_reduction)
        return logits, loss.view_as(targets) if loss_reduction == "none" else loss

"""Swappable parts of the transformer: norms, MLPs and position schemes, chosen by name in the config.

Each kind has a registry of short names. A config may also name any class by its import path
(``norm: mypackage.norms.DyT``), so a new variant is one new module plus one config line: nothing
in ``gpt.py``, ``module.py``, the data code or the CLI changes. Measured memory and speed kernels
(the GELU recompute, the CPU dropout mask) live apart, in ``kernels.py``. The interfaces:

- norm:      ``cls(d_model: int, bias: bool)``, maps ``(B, T, C)`` to ``(B, T, C)``.
- mlp:       ``cls(config: GPTConfig)``, maps ``(B, T, C)`` to ``(B, T, C)``; name the output
             projection ``proj`` to get the scaled residual init.
- positions: ``cls(config: GPTConfig)`` with ``embed(x, pos)`` (on the token embeddings) and
             ``rotate(q, k, pos)`` (on each layer's queries and keys, ``(B, nh, T, hs)``), where
             ``pos`` ``(T,)`` holds the tokens' positions (a tensor, so compiled and exported
             steps take it as an input).
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from craft.errors import ConfigError
from craft.model.kernels import Dropout, GeluProj, ReluSquaredProj

if TYPE_CHECKING:
    from craft.model.config import GPTConfig


# -- norms ---------------------------------------------------------------------------------------


class LayerNorm(nn.LayerNorm):
    def __init__(self, d_model: int, bias: bool = True) -> None:
        super().__init__(d_model, bias=bias)


class RMSNorm(nn.RMSNorm):
    """Scale by the root mean square only: no mean subtraction, no bias (Zhang & Sennrich, 2019)."""

    def __init__(self, d_model: int, bias: bool = True) -> None:
        super().__init__(d_model, eps=1e-5)


class FreeRMSNorm(nn.RMSNorm):
    """RMSNorm without its learned scale: no parameters at all (nanochat's norm)."""

    def __init__(self, d_model: int, bias: bool = True) -> None:
        super().__init__(d_model, eps=1e-5, elementwise_affine=False)


# -- MLPs ----------------------------------------------------------------------------------------


class GeluMLP(nn.Module):
    """d_model -> d_hid -> d_model with GELU: 2 * d_model * d_hid weights."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_hid, bias=config.bias)
        self.proj = nn.Linear(config.d_hid, config.d_model, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if torch.is_grad_enabled():
            return self.dropout(GeluProj.apply(h, self.proj.weight, self.proj.bias))
        return self.dropout(self.proj(F.gelu(h)))  # nothing kept without grad; ONNX export sees plain ops


class ReluSquaredMLP(GeluMLP):
    """GeluMLP's layers (2 * d_model * d_hid weights) with ReLU(x)^2 in place of GELU (So et al.,
    2021, Primer; modded-nanogpt, nanochat): a cheaper and sparser activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if torch.is_grad_enabled():
            return self.dropout(ReluSquaredProj.apply(h, self.proj.weight, self.proj.bias))
        return self.dropout(self.proj(F.relu(h).square()))  # nothing kept without grad; ONNX sees plain ops


def swiglu_width(d_hid: int) -> int:
    """Hidden width of a SwiGLU MLP with as many weights as a GELU MLP of width ``d_hid``.

    SwiGLU has three matrices instead of two, so 2/3 of the width, rounded up to a multiple of 8.
    """
    return math.ceil(2 * d_hid / 3 / 8) * 8


class SwiGLU(nn.Module):
    """Gated MLP, ``proj(silu(gate(x)) * up(x))`` (Shazeer, 2020), at the parameter count of GeluMLP."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        width = swiglu_width(config.d_hid)
        self.gate_up = nn.Linear(config.d_model, 2 * width, bias=config.bias)  # both in one matmul
        self.proj = nn.Linear(width, config.d_model, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, width) each
        return self.dropout(self.proj(F.silu(gate) * up))


# -- positions -----------------------------------------------------------------------------------


class LearnedPositions(nn.Module):
    """A learned vector per position, added to the token embeddings (GPT-2)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.emb = nn.Embedding(config.block_size, config.d_model)

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x + self.emb(pos)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k


class RotaryPositions(nn.Module):
    """Rotary position embedding (Su et al., 2021): queries and keys are rotated by an angle that
    grows with position, so attention scores depend on relative distance. No parameters."""

    def __init__(self, config: GPTConfig, base: float = 10_000.0) -> None:
        super().__init__()
        hs = config.head_size
        if hs % 2:
            raise ConfigError(f"rotary positions need an even head size, got d_model/n_head = {hs}")
        inv_freq = 1.0 / base ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)  # (hs/2,)
        angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)  # (T, hs/2)
        # Buffers, not parameters, and not saved: they follow from the config.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos[pos].to(q.dtype), self.sin[pos].to(q.dtype)  # (T, hs/2)
        return _rotate_half_pairs(q, cos, sin), _rotate_half_pairs(k, cos, sin)


def _rotate_half_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Pair dimension i with i + hs/2 (the GPT-NeoX / Llama layout) and rotate each pair.
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# -- components switched on by a config field --------------------------------------------------


class QKNorm(nn.Module):
    """The config's norm over each head's queries and keys, ``(B, nh, T, hs)`` each (Henry et al.,
    2020; Dehghani et al., 2023): bounded attention logits. With ``rmsnorm`` each has a learned
    scale of head_size, with ``rmsnorm_free`` no parameters (nanochat)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        norm = resolve("norm", config.norm)
        self.q = norm(config.head_size, bias=config.bias)
        self.k = norm(config.head_size, bias=config.bias)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q(q), self.k(k)


class ValueEmbedding(nn.Module):
    """A token embedding of the layer's own, added to its attention values with a learned gate
    (modded-nanogpt's value embeddings, nanochat's ``value_embeds``): vocab_size x d_model + 1
    parameters. ``forward(v, idx)`` takes the values ``(B, nh, T, hs)`` and the tokens ``(B, T)``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.emb = nn.Embedding(config.vocab_size, config.d_model)
        self.gate = nn.Parameter(torch.ones(1))

    def forward(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        B, nh, T, hs = v.shape
        ve = self.emb(idx).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        return v + self.gate.to(v.dtype) * ve

    @staticmethod
    def used_by(layer: int, n_layers: int) -> bool:
        """Every other layer, counted from the last (so the last layer always has one)."""
        return layer % 2 == (n_layers - 1) % 2


class ResidualScalars(nn.Module):
    """Before block i, ``x = resid[i] * x + x0[i] * x0`` with x0 the token embedding (nanochat):
    2 * n_layers parameters, starting at resid 1 and x0 0 (the plain residual stream)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.resid = nn.Parameter(torch.ones(config.n_layers))
        self.x0 = nn.Parameter(torch.zeros(config.n_layers))

    def forward(self, layer: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.resid[layer].to(x.dtype) * x + self.x0[layer].to(x.dtype) * x0


class UNetSkips(nn.Module):
    """The encoder half's outputs fed to the decoder half (modded-nanogpt): block ``i < n`` saves
    its output, and block ``L - n + j`` first adds ``weight[j]`` times the output saved by block
    ``n - 1 - j`` (a stack, last in first out), with ``n = L // 2``; n_layers // 2 parameters,
    starting at 1."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_layers = config.n_layers
        self.weight = nn.Parameter(torch.ones(config.n_layers // 2))

    def pop(self, layer: int, x: torch.Tensor, saved: list[torch.Tensor]) -> torch.Tensor:
        """Before block ``layer``: ``x`` with the matching saved output added (decoder blocks)."""
        j = layer - (self.n_layers - self.weight.numel())
        return x + self.weight[j].to(x.dtype) * saved.pop() if j >= 0 else x

    def push(self, layer: int, x: torch.Tensor, saved: list[torch.Tensor]) -> None:
        """After block ``layer``: keep its output (encoder blocks)."""
        if layer < self.weight.numel():
            saved.append(x)


class SoftCap(nn.Module):
    """``cap * tanh(logits / cap)``: logits squashed smoothly into (-cap, cap) (Gemma 2; nanochat
    uses 15). No parameters."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = float(cap)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.cap * torch.tanh(logits / self.cap)

    def extra_repr(self) -> str:
        return f"cap={self.cap:g}"


# -- lookup --------------------------------------------------------------------------------------

REGISTRY: dict[str, dict[str, type[nn.Module]]] = {
    "norm": {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "rmsnorm_free": FreeRMSNorm},
    "mlp": {"gelu": GeluMLP, "swiglu": SwiGLU, "relu2": ReluSquaredMLP},
    "positions": {"learned": LearnedPositions, "rotary": RotaryPositions},
}


def resolve(kind: str, name: str) -> type[nn.Module]:
    """The class for a config value: a registered short name, or ``package.module.ClassName``."""
    known = REGISTRY[kind]
    if name in known:
        return known[name]
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"{kind} {name!r} cannot be imported: {e}") from None
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
        raise ConfigError(f"{kind} {name!r} is not an nn.Module class")
    raise ConfigError(f"unknown {kind} {name!r}: use one of {sorted(known)} or a class's import path")

"""Optimizers and learning-rate schedules, chosen by name in the config.

- ``adamw``: AdamW on everything; matrices of linear layers decay, norms, biases and embeddings do not.
  Each role (block matrices, embeddings, head, scalars: ``param_role``) may have its own peak, a
  factor on ``lr`` (``lr_mults``; nanochat trains its embeddings at 50x its head's rate), so an LR
  sweep that scales ``lr`` keeps the ratios.
- ``muon``: ``torch.optim.Muon`` (Jordan et al., 2024: momentum orthogonalised by Newton-Schulz) on
  the 2-D matrices inside the blocks, AdamW on the rest (embeddings, head, norms, biases, scalars),
  as modded-nanogpt and nanochat do. Muon is only for hidden matrices: an embedding is a lookup
  table and the head maps to a distribution, and both do better with Adam.

  torch's Newton-Schulz iteration always casts to bfloat16, and torch's CPU bfloat16 ``addmm`` runs
  many times slower than float32 on a CPU without AMX (figures: benchmarks/README.md, "Muon against
  AdamW"). ``Muon`` here is torch's optimizer with its own step, the same iteration (torch's
  coefficients, steps and eps) in float32 on CPU and in torch's bfloat16 elsewhere.

Schedules (a multiplier of each group's peak LR, per step): ``cosine`` (linear warmup, cosine decay
to ``min_lr``) and ``wsd`` (warmup-stable-decay: linear warmup, flat at the peak, then a linear
decay to ``min_lr`` over the last ``decay_fraction`` of the steps; Hägele et al., 2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from craft.errors import ConfigError

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")


def is_muon_matrix(name: str, p: torch.nn.Parameter) -> bool:
    """A block's hidden matrix (qkv, attention and MLP projections): what Muon trains."""
    return name.startswith("blocks.") and param_role(name, p) == "matrix"


def param_role(name: str, p: torch.nn.Parameter) -> str:
    """What a parameter is, for its learning rate: ``matrix`` (a block's weight matrix), ``embed`` (a
    lookup table: token, position and value embeddings; a tied head is the token embedding),
    ``head`` (an untied head) or ``scalar`` (norm scales, biases, residual scalars, gates)."""
    if "emb" in name:
        return "embed"
    if name == "head.weight":
        return "head"
    return "matrix" if p.ndim == 2 else "scalar"


ROLES = ("matrix", "embed", "head", "scalar")


def check_lr_mults(lr_mults: dict[str, float] | None, optimizer: str) -> None:
    """A clear error for an unknown role, a factor that is not positive, or ``matrix`` under Muon."""
    for role, factor in (lr_mults or {}).items():
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r} in model.lr_mults: use any of {list(ROLES)}")
        if not isinstance(factor, (int, float)) or not factor > 0:
            raise ConfigError(f"model.lr_mults.{role} must be a positive number, got {factor!r}")
        if role == "matrix" and optimizer == "muon":
            raise ConfigError(
                "model.lr_mults.matrix has no effect under Muon, which trains the matrices: set model.muon_lr"
            )


def check_settings(
    lr: float,
    min_lr: float,
    warmup_steps: int,
    weight_decay: float,
    betas: Iterable[float],
    muon_lr: float,
    muon_momentum: float,
    decay_fraction: float,
) -> list[str]:
    """Every problem with the optimizer and schedule settings, in words (empty: all usable)."""
    found = []

    def finite(name: str, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            found.append(f"{name} must be a finite number, got {value!r}")
            return False
        return True

    lr_ok = finite("lr", lr)
    if lr_ok and not lr > 0:
        found.append(f"lr must be positive, got {lr}")
        lr_ok = False
    if finite("min_lr", min_lr) and lr_ok and not 0 <= min_lr <= lr:  # the relation only once lr is usable
        found.append(f"min_lr must be in [0, lr] (lr is {lr}), got {min_lr}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        found.append(f"warmup_steps must be a whole number >= 0, got {warmup_steps!r}")
    if finite("weight_decay", weight_decay) and weight_decay < 0:
        found.append(f"weight_decay must be >= 0, got {weight_decay}")
    betas = list(betas) if isinstance(betas, (list, tuple)) else [betas]
    if len(betas) != 2 or not all(finite("betas", b) and 0 <= b < 1 for b in betas):
        found.append(f"betas must be two numbers in [0, 1), got {betas}")
    if finite("muon_lr", muon_lr) and not muon_lr > 0:
        found.append(f"muon_lr must be positive, got {muon_lr}")
    if finite("muon_momentum", muon_momentum) and not 0 <= muon_momentum < 1:
        found.append(f"muon_momentum must be in [0, 1), got {muon_momentum}")
    if finite("decay_fraction", decay_fraction) and not 0 <= decay_fraction <= 1:
        found.append(f"decay_fraction must be in [0, 1], got {decay_fraction}")
    return found


def param_groups(
    model: torch.nn.Module,
    weight_decay: float,
    lr: float | None = None,
    lr_mults: dict[str, float] | None = None,
    skip: Callable[[str, torch.nn.Parameter], bool] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: matrices and an untied head decay; embeddings, norms, biases and scalars do
    not. With ``lr``, each parameter peaks at ``lr`` times its role's factor in ``lr_mults``
    (``param_role``; default 1). ``skip`` leaves parameters out (Muon's).

    One group per (decay, LR) pair, the decaying ones first, each in the model's parameter order: with
    every factor 1 these are the two groups craft has always made, so older checkpoints resume.
    """
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad and not (skip and skip(name, p)):
            role = param_role(name, p)
            peak = 1.0 if lr is None else lr * (lr_mults or {}).get(role, 1.0)
            groups.setdefault((role in ("matrix", "head"), peak), []).append(p)
    out = []
    for (decays, peak), params in sorted(groups.items(), key=lambda kv: not kv[0][0]):  # stable: decaying first
        group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if lr is not None:
            group["lr"] = peak
        out.append(group)
    return out


def newton_schulz(
    grad: torch.Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """torch.optim.Muon's orthogonalization (the same quintic iteration and arguments) in ``dtype``:
    torch's always runs in bfloat16 (``tests/test_optim.py`` holds the two equal there)."""
    a, b, c = ns_coefficients
    x = grad.to(dtype)
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-shape LR (torch.optim.Muon's documented rules): ``original``/None, Keller Jordan's
    sqrt(max(1, rows/cols)); ``match_rms_adamw``, Moonshot's 0.2 sqrt(max(rows, cols))."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * (0.2 * math.sqrt(max(rows, cols)))
    return lr


def run_closure(closure: Callable[[], Any] | None) -> Any:
    """An optimizer step's closure, run with gradients on (its loss), or None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (its arguments, checks, groups and state) with a step of its own, which
    runs the Newton-Schulz iteration in ``ns_dtype``: default float32 on CPU (torch's bfloat16
    ``addmm`` is many times slower there without AMX), bfloat16, torch's own, elsewhere. The step is
    torch's single-tensor step line for line; nothing of torch is patched."""

    def __init__(self, params, *args: Any, ns_dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        super().__init__(params, *args, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group in self.param_groups:
            lr = float(group["lr"])
            momentum, decay = group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                dtype = self.ns_dtype or (torch.float32 if p.device.type == "cpu" else torch.bfloat16)
                update = newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)
                p.mul_(1 - lr * decay)
                p.add_(update, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` and ``torch.optim.AdamW`` stepped as one optimizer, so Lightning's
    automatic optimization, gradient clipping, LR schedulers and checkpoints see one object.

    Its ``param_groups`` are the two optimizers' own group dicts (Muon's first), shared, so a
    scheduler's LR reaches the optimizer that uses it; ``state_dict`` holds both states.
    """

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        super().__init__([*muon.param_groups, *adamw.param_groups], {})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ConfigError(
                "the checkpoint's optimizer state is not Muon + AdamW: resume with the optimizer it was trained with"
            )
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # load_state_dict replaces the inner group dicts: share the new ones again.
        self.param_groups = [*self.muon.param_groups, *self.adamw.param_groups]


def build_optimizer(
    model: torch.nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    betas: Iterable[float],
    muon_lr: float,
    muon_momentum: float,
    muon_adjust_lr: str | None,
    lr_mults: dict[str, float] | None = None,
) -> torch.optim.Optimizer:
    """AdamW on everything, or Muon on the blocks' matrices and AdamW on the rest; AdamW's groups
    peak at ``lr`` times their role's factor in ``lr_mults`` (``embed``, ``head``, ``scalar``,
    and ``matrix`` under AdamW alone; default 1)."""
    if name == "adamw":
        return torch.optim.AdamW(param_groups(model, weight_decay, lr, lr_mults), lr=lr, betas=tuple(betas))
    if name != "muon":
        raise ConfigError(f"unknown optimizer {name!r}: use one of {list(OPTIMIZERS)}")
    matrices = [p for n, p in model.named_parameters() if p.requires_grad and is_muon_matrix(n, p)]
    muon = Muon(matrices, lr=muon_lr, weight_decay=weight_decay, momentum=muon_momentum, adjust_lr_fn=muon_adjust_lr)
    # The AdamW rule above for the rest: an untied head decays.
    adamw = torch.optim.AdamW(
        param_groups(model, weight_decay, lr, lr_mults, skip=is_muon_matrix), lr=lr, betas=tuple(betas)
    )
    return MuonAdamW(muon, adamw)


def lr_schedule(name: str, total: int, warmup: int, floor: float, decay_fraction: float) -> Callable[[int], float]:
    """The multiplier of the peak LR at each step (0-based) of a run of ``total`` steps."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}: use one of {list(SCHEDULES)}")
    if not 0.0 <= decay_fraction <= 1.0:
        raise ConfigError(f"decay_fraction must be in [0, 1], got {decay_fraction!r}")
    warmup = min(warmup, total)
    decay_start = max(warmup, total - round(decay_fraction * total))

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def wsd(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start + 1) / max(1, total - decay_start))
        return 1.0 - (1.0 - floor) * progress

    return cosine if name == "cosine" else wsd

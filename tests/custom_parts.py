"""A part of the user's own, named by import path in a config (``--model.norm tests.custom_parts.DyT``)."""

import torch
import torch.nn as nn


class DyT(nn.Module):
    """Dynamic Tanh in place of a norm (Zhu et al., 2025): ``weight * tanh(alpha * x) + bias``."""

    def __init__(self, d_model: int, bias: bool = True) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.weight * torch.tanh(self.alpha * x)
        return y + self.bias if self.bias is not None else y

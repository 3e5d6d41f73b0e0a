"""Measured memory and speed kernels, kept apart from the catalogue of parts in ``blocks.py``.

Each is a drop-in for a plain PyTorch op with the same results (tests/test_model.py) and is here
because it was measured to save memory or time on a small CPU (benchmarks/README.md): a part in
``blocks.py`` may use one, and a researcher extending the parts never needs to read this file.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a 1-byte mask when training on CPU.

    On CPU, PyTorch's dropout draws float noise with ``bernoulli_`` and keeps that 4-byte tensor
    for the backward pass. This keeps a bool mask drawn with ``torch.rand`` instead: a quarter of
    the memory per dropout site, and faster on a small CPU (measured by
    benchmarks/attention_dropout.py; figures in benchmarks/README.md). Elsewhere (CUDA's fused
    kernel, eval, no grad) it is ``nn.Dropout``. Same distribution, same global generator.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0 < self.p < 1 and x.device.type == "cpu" and torch.is_grad_enabled():
            return _MaskedScale.apply(x, self.p)
        return super().forward(x)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand(x.shape, device=x.device) >= p  # float32 draws whatever x's dtype
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


class GeluProj(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` that keeps only ``h`` for the backward pass.

    Plain autograd keeps two ``(B, T, d_hid)`` tensors per layer, the largest activations: ``h``
    for GELU's gradient and ``gelu(h)`` for the projection's weight gradient. This recomputes
    ``gelu(h)`` in the backward pass instead, one elementwise pass for one fewer buffer: less peak
    memory, and faster on CPU, where each fresh large buffer costs page faults (measured by
    benchmarks/mlp_recompute.py; figures in benchmarks/README.md). Gradients equal autograd's
    (tests/test_model.py).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.gelu(h), weight, bias)  # under autocast, in its dtype

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        grad_2d = grad.reshape(-1, grad.size(-1))
        g = F.gelu(h).to(grad.dtype)
        grad_weight = (grad_2d.t() @ g.reshape(-1, g.size(-1))).to(weight.dtype)
        del g  # one d_hid-wide temporary at a time
        grad_bias = grad_2d.sum(0).to(weight.dtype) if ctx.has_bias else None
        grad_h = (grad @ weight.to(grad.dtype)).to(h.dtype)
        # GELU's gradient written over grad_h in place: no second d_hid-wide buffer.
        torch.ops.aten.gelu_backward.grad_input(grad_h, h, grad_input=grad_h)
        return grad_h, grad_weight, grad_bias


class ReluSquaredProj(torch.autograd.Function):
    """``linear(relu(h) ** 2, weight, bias)`` that keeps only ``relu(h)`` for the backward pass.

    Plain autograd keeps ``relu(h)`` (for ReLU's and the square's gradients) and its square (for
    the projection's weight gradient), two ``(B, T, d_hid)`` tensors, and runs three elementwise
    passes backward (the square's, ReLU's threshold, their product). This keeps ``relu(h)`` alone,
    recomputes the square for the weight gradient, and writes ``h``'s gradient in one pass: the
    gradient of ``relu(h) ** 2`` is ``2 * relu(h)``, with the 2 folded into the (small) weight.
    Gradients equal autograd's (tests/test_model.py); figures in benchmarks/README.md
    (benchmarks/mlp_recompute.py).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        r = F.relu(h)
        ctx.save_for_backward(r, weight)
        ctx.has_bias = bias is not None
        return F.linear(r.square(), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        r, weight = ctx.saved_tensors
        grad_2d = grad.reshape(-1, grad.size(-1))
        a = r.square().to(grad.dtype)
        grad_weight = (grad_2d.t() @ a.reshape(-1, a.size(-1))).to(weight.dtype)
        del a  # one d_hid-wide temporary at a time
        grad_bias = grad_2d.sum(0).to(weight.dtype) if ctx.has_bias else None
        grad_h = grad @ (2 * weight).to(grad.dtype)
        return grad_h.mul_(r.to(grad_h.dtype)).to(r.dtype), grad_weight, grad_bias

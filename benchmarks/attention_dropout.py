"""What dropout costs on CPU, at the got_char shape (batch 64, block 256, d_model 128, 8 heads).

    python benchmarks/attention_dropout.py [--rounds 3]

1. Why craft never drops attention weights: one layer's attention, forward + backward, with and
   without ``dropout_p`` in ``scaled_dot_product_attention``. On CPU, attention dropout leaves the
   fused flash-attention kernel for the unfused math path, which materialises the (T, T) score
   matrix per head.
2. One residual dropout site (p 0.1 on a (64, 256, 128) activation), forward + backward:
   ``nn.Dropout`` against craft's ``Dropout`` (bool mask from ``torch.rand``); got_char has 13 sites.

Prints one JSON line: median milliseconds of each, rounds interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from craft.model.kernels import Dropout  # noqa: E402


def attention_ms(dropout_p: float, batch: int, heads: int, block: int, head_size: int) -> float:
    q, k, v = (torch.randn(batch, heads, block, head_size, requires_grad=True) for _ in range(3))
    F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p).sum().backward()  # warm-up
    start = time.perf_counter()
    F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p).sum().backward()
    return (time.perf_counter() - start) * 1e3


def site_ms(drop: nn.Module, repeats: int = 10) -> float:
    x, grad = torch.randn(64, 256, 128, requires_grad=True), torch.randn(64, 256, 128)
    drop(x).backward(grad)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        drop(x).backward(grad)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    shape = dict(batch=64, heads=8, block=256, head_size=16)
    times: dict[str, list[float]] = {"dropout_0": [], "dropout_0.1": []}
    sites: dict[str, list[float]] = {"nn.Dropout": [], "craft Dropout": []}
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        times["dropout_0"].append(attention_ms(0.0, **shape))
        times["dropout_0.1"].append(attention_ms(0.1, **shape))
        sites["nn.Dropout"].append(site_ms(nn.Dropout(0.1)))
        sites["craft Dropout"].append(site_ms(Dropout(0.1)))
    ms = {k: round(statistics.median(v), 1) for k, v in times.items()}
    slowdown = round(ms["dropout_0.1"] / ms["dropout_0"], 2)
    site = {k: round(statistics.median(v), 2) for k, v in sites.items()}
    out = {"shape": shape, "ms_forward_backward": ms, "slowdown": slowdown, "residual_site_ms": site}
    print(json.dumps({**out, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
